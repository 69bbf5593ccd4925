"""The command line as a user meets it: a small train and evaluate, and bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

SMALL = [
    "--epochs",
    "4",
    "--steps",
    "10",
    "--unroll",
    "5",
    "--layers",
    "4",
    "--eval-every",
    "2",
    "--validation-problems",
    "2",
    "--test-problems",
    "3",
]


def l2l(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "l2l_ref.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env=env,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = l2l("train", *SMALL, "--out", out)
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.mark.slow
def test_train_writes_checkpoint_results_and_table(trained):
    out, result = trained
    document = json.loads((out / "results.json").read_text())
    assert document["preset"] == "paper"
    assert document["problem"] == {
        "name": "quadratic",
        "settings": {"dims": 10, "batch": 128, "distribution": "gaussian", "init_std": 0.01},
    }
    assert "preset paper" in document["settings"] and "seed 0" in document["settings"]
    results = document["results"]
    assert set(results) == {"learned", "SGD", "RMSprop", "Adam", "NAG"}
    for name, entry in results.items():
        assert len(entry["mean_loss"]) == 11 and len(entry["final_losses"]) == 3
        finals = np.array(entry["final_losses"])
        assert entry["final_mean"] == pytest.approx(finals.mean())
        assert entry["final_stderr"] == pytest.approx(finals.std(ddof=1) / np.sqrt(3))
        assert (name == "learned") != ("learning_rate" in entry)
        if name != "learned":  # paired comparison on the same test problems
            difference = finals - np.array(results["learned"]["final_losses"])
            assert entry["minus_learned"]["mean"] == pytest.approx(difference.mean())
            assert entry["minus_learned"]["stderr"] == pytest.approx(
                difference.std(ddof=1) / np.sqrt(3)
            )
            assert entry["minus_learned"]["learned_lower_on"] == int((difference > 0).sum())
    assert [epoch for epoch, _ in document["training"]["validation"]] == [0, 2, 4]
    assert len(document["training"]["meta_loss"]) == 4
    assert "quadratic (dims=10" in result.stdout and "preset paper" in result.stdout
    assert (out / "checkpoint.npz").exists()


@pytest.mark.slow
def test_every_file_of_a_run_names_the_machine(trained):
    """results.json, the checkpoint and the printed table name the CPU, BLAS kernel and
    NumPy version of the machine that ran (the same as this process's: the same environment)."""
    from l2l_ref import checkpoint, machine

    out, result = trained
    here = machine.machine()
    assert json.loads((out / "results.json").read_text())["machine"] == here
    assert checkpoint.load(out / "checkpoint.npz")[2]["machine"] == here
    assert f"on {machine.describe(here)}" in result.stdout


def evaluate_json(checkpoint, folder, *extra):
    """Run `l2l-ref evaluate` on small settings and return its --json document."""
    small = ["--validation-problems", "2", "--test-problems", "3"]
    result = l2l("evaluate", checkpoint, "--json", folder / "e.json", *small, *extra)
    assert result.returncode == 0, result.stderr
    return json.loads((folder / "e.json").read_text())


@pytest.mark.slow
def test_evaluate_reproduces_the_training_run(trained, tmp_path):
    out, _ = trained
    again = evaluate_json(out / "checkpoint.npz", tmp_path)["results"]
    before = json.loads((out / "results.json").read_text())["results"]
    for name in before:
        assert again[name]["final_losses"] == before[name]["final_losses"]


@pytest.mark.slow
def test_evaluate_longer_horizon(trained, tmp_path):
    out, _ = trained
    document = evaluate_json(out / "checkpoint.npz", tmp_path, "--steps", "20")
    assert len(document["results"]["learned"]["mean_loss"]) == 21
    assert "20 steps" in document["settings"]


@pytest.mark.slow
def test_divergence_stops_training_and_keeps_the_checkpoint(tmp_path):
    result = l2l("train", *SMALL, "--dtype", "float32", "--meta-lr", "1e30", "--out", tmp_path)
    assert result.returncode == 1
    assert "epoch 1, unroll 2" in result.stderr and "Traceback" not in result.stderr
    assert (
        l2l(
            "evaluate",
            tmp_path / "checkpoint.npz",
            "--test-problems",
            "2",
            "--validation-problems",
            "1",
            "--steps",
            "5",
        ).returncode
        == 0
    )


BAD = {
    "unknown problem": ["train", "--problem", "rosenbrock"],
    "unknown preset": ["train", "--preset", "tf"],
    "unknown backend": ["train", "--backend", "jax"],
    "negative epochs": ["train", "--epochs", "-3"],
    "epochs not a number": ["train", "--epochs", "many"],
    "steps not a multiple": ["train", "--steps", "30", "--unroll", "20"],
    "negative meta lr": ["train", "--meta-lr", "-0.1"],
    "nan meta lr": ["train", "--meta-lr", "nan"],
    "one test problem": ["train", "--test-problems", "1"],
    "bad layers": ["train", "--layers", "20,x"],
    "unknown dtype": ["train", "--dtype", "float16"],
    "no command": [],
    "missing checkpoint": ["evaluate", "no/such/file.npz"],
}
BAD_ENVIRONMENT = {"threads not a number": "two", "zero threads": "0"}


def assert_one_line_exit_2(result, folder):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("l2l-ref: error:"), result.stderr
    assert not list(folder.iterdir())  # nothing was written


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2(case, tmp_path):
    assert_one_line_exit_2(l2l(*BAD[case], cwd=tmp_path), tmp_path)


@pytest.mark.parametrize("case", list(BAD_ENVIRONMENT))
def test_bad_thread_setting_is_one_line_and_exit_2(case, tmp_path):
    env = {**os.environ, "L2L_REF_THREADS": BAD_ENVIRONMENT[case]}
    result = l2l("train", "--epochs", "1", cwd=tmp_path, env=env)
    assert_one_line_exit_2(result, tmp_path)
    assert "L2L_REF_THREADS" in result.stderr


@pytest.mark.slow
def test_train_refuses_to_overwrite_a_run(trained):
    out, _ = trained
    before = (out / "checkpoint.npz").read_bytes()
    result = l2l("train", *SMALL, "--out", out)
    assert result.returncode == 2 and "already holds a run" in result.stderr
    assert (out / "checkpoint.npz").read_bytes() == before


def test_corrupt_checkpoint_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    result = l2l("evaluate", bad)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "bad.npz" in result.stderr


@pytest.mark.slow
def test_float64_checkpoint_evaluates_in_float32(trained, tmp_path):
    out, _ = trained
    single = evaluate_json(out / "checkpoint.npz", tmp_path, "--dtype", "float32")
    double = json.loads((out / "results.json").read_text())
    assert "float32" in single["settings"]
    np.testing.assert_allclose(
        single["results"]["learned"]["final_losses"],
        double["results"]["learned"]["final_losses"],
        rtol=1e-3,
    )


@pytest.fixture
def stand_in_backend(monkeypatch):
    """`--backend strict`: the CPU stand-in of CuPy's array (tests/strict_array.py)."""
    from l2l_ref.backends import BACKENDS

    monkeypatch.setitem(BACKENDS, "strict", "tests.strict_array")


@pytest.mark.slow
def test_train_and_evaluate_on_the_stand_in_match_numpy(trained, tmp_path, stand_in_backend):
    """Meta-training and evaluation end to end through the device backend code, and
    checkpoints that move between backends: all bit-identical to the NumPy run."""
    from l2l_ref.cli import main

    numpy_out, _ = trained
    device_out = tmp_path / "device"
    assert main(["train", *SMALL, "--out", str(device_out), "--backend", "strict"]) == 0
    assert (device_out / "checkpoint.npz").read_bytes() == (
        numpy_out / "checkpoint.npz"
    ).read_bytes()
    on_numpy = json.loads((numpy_out / "results.json").read_text())
    on_device = json.loads((device_out / "results.json").read_text())
    assert on_device["backend"] == "strict" and "strict float64" in on_device["settings"]
    assert on_device["results"] == on_numpy["results"]
    assert on_device["training"] == on_numpy["training"]

    # a checkpoint trained on one backend evaluates on the other
    for checkpoint, backend in [(device_out, "numpy"), (numpy_out, "strict")]:
        path = tmp_path / f"{backend}.json"
        args = ["evaluate", str(checkpoint / "checkpoint.npz"), "--backend", backend]
        sizes = ["--validation-problems", "2", "--test-problems", "3"]
        assert main([*args, *sizes, "--json", str(path)]) == 0
        assert json.loads(path.read_text())["results"] == on_numpy["results"]


@pytest.mark.slow
def test_plot_draws_loss_and_training_curves(trained, tmp_path):
    out, _ = trained
    for extra, name in (([], "losses.png"), (["--training"], "training.png")):
        figure = tmp_path / name
        result = l2l("plot", out / "results.json", "-o", figure, *extra)
        assert result.returncode == 0, result.stderr
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
