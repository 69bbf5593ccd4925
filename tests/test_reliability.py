"""Reliability (issue 15): a run killed at any moment continues with `--resume` to the same
bytes as the run uninterrupted; one process per run folder; signals stop like Ctrl-C; I/O
failures lose nothing finished; every bad input is one line with a documented exit code."""

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2l_ref import cli, files, folder
from l2l_ref.cli import main

SMALL = [
    "--epochs", "12", "--steps", "10", "--unroll", "5", "--layers", "4", "--eval-every", "3",
    "--validation-problems", "2", "--test-problems", "3", "--learning-rates", "0.1,1",
]  # fmt: skip
EXIT_CODES = {0, 1, 2, 3, 4}


def l2l(*args, cwd=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "l2l_ref.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout,
    )  # fmt: skip


def dispositions(ignored=()):
    """The child's signals as a terminal's foreground job has them, whatever this test process
    inherited (a shell's background job ignores SIGINT; nohup ignores SIGHUP), but `ignored`."""

    def reset():
        stopping = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping)
        for signum in stopping:
            signal.signal(signum, signal.SIG_IGN if signum in ignored else signal.SIG_DFL)

    return reset


def start(*args, ignored=()):
    return subprocess.Popen(
        [sys.executable, "-m", "l2l_ref.cli", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=dispositions(ignored),
    )  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    result = l2l("train", *SMALL, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def assert_same_run(a: Path, b: Path):
    assert (a / "checkpoint.npz").read_bytes() == (b / "checkpoint.npz").read_bytes()
    assert (a / "results.json").read_bytes() == (b / "results.json").read_bytes()
    assert not list(b.glob(".*.tmp"))


@pytest.mark.slow
def test_killed_again_and_again_a_run_resumes_to_the_same_bytes(tmp_path):
    """SIGKILL at random moments (inside epochs, validations, state and checkpoint writes),
    each time continued with --resume, or started over where no state had been saved yet."""
    longer = [*SMALL, "--epochs", "300", "--eval-every", "7"]
    began = time.monotonic()
    whole = l2l("train", *longer, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    # each attempt lives for under half the uninterrupted run, on a fast machine or a busy one
    # alike, so at least three attempts are needed
    seconds = time.monotonic() - began
    out, rng = tmp_path / "run", random.Random(7)
    kills = 0
    for _ in range(15):
        if (out / folder.STATE).exists():
            process = start("train", "--resume", out)
        else:
            process = start("train", *longer, "--out", out)
        try:
            process.wait(timeout=rng.uniform(0.2, 0.45) * seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
            if (out / "results.json").exists():  # the run finished just before the kill arrived
                break
            kills += 1
            continue
        assert process.returncode == 0, process.stderr.read()
        break
    else:
        result = l2l("train", "--resume", out)
        assert result.returncode == 0, result.stderr
    assert kills >= 2
    assert_same_run(tmp_path / "whole", out)


def test_a_kill_inside_an_atomic_write_leaves_the_last_good_files(
    uninterrupted, tmp_path, monkeypatch, capsys
):
    """Stopped between writing a temporary file and renaming it (the state's, the
    checkpoint's, several times over): the temporary files are cleaned up by the next run on
    the folder, and the run resumes to the same bytes."""
    out = tmp_path / "run"
    real_replace, calls = os.replace, {"n": 0}

    def stopped_on(numbers):
        def replace(source, target):
            calls["n"] += 1
            if calls["n"] in numbers:
                raise KeyboardInterrupt  # as a kill would, after the temporary file is written
            real_replace(source, target)

        return replace

    monkeypatch.setattr(os, "replace", stopped_on({3}))
    assert main(["train", *SMALL, "--out", str(out)]) == 130
    for stop in ({4}, {2}, {9}):
        calls["n"] = 0
        monkeypatch.setattr(os, "replace", stopped_on(stop))
        assert main(["train", "--resume", str(out)]) == 130
    monkeypatch.setattr(os, "replace", real_replace)
    assert main(["train", "--resume", str(out)]) == 0
    capsys.readouterr()
    assert_same_run(uninterrupted, out)


def test_a_second_run_on_a_folder_is_refused_and_a_killed_ones_lock_does_not_block(tmp_path):
    out = tmp_path / "run"
    first = start("train", *SMALL, "--epochs", "5000", "--out", out)
    try:
        deadline = time.time() + 60
        while not (out / folder.STATE).exists() and time.time() < deadline:
            time.sleep(0.1)
        second = l2l("train", *SMALL, "--out", out)
        assert second.returncode == 2 and "already holds a run" in second.stderr
        resumed = l2l("train", "--resume", out)
        assert resumed.returncode == 2, resumed.stderr
        (line,) = resumed.stderr.strip().splitlines()
        assert f"in use by another l2l-ref process (pid {first.pid})" in line
    finally:
        first.kill()
        first.wait(timeout=30)
    resumed = start("train", "--resume", out)  # the killed run's lock is gone with it
    time.sleep(3)
    assert resumed.poll() is None, resumed.stderr.read()
    resumed.kill()
    resumed.wait(timeout=30)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signals_stop_like_ctrl_c(signum, tmp_path):
    out = tmp_path / "run"
    process = start("train", *SMALL, "--epochs", "5000", "--out", out)
    deadline = time.time() + 60
    # epoch 0 writes the state, then the checkpoint: wait for both (a busy machine showed it)
    saved = (out / folder.STATE, out / "checkpoint.npz")
    while not all(path.exists() for path in saved) and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert (
        stderr.strip().splitlines()[-1] == f"l2l-ref: interrupted ({signal.Signals(signum).name})"
    )
    assert "Traceback" not in stderr and not list(out.glob(".*.tmp"))
    assert (out / "checkpoint.npz").exists() and (out / folder.STATE).exists()


def test_a_run_under_nohup_is_not_stopped_by_sighup(tmp_path):
    out = tmp_path / "run"
    process = start("train", *SMALL, "--epochs", "30", "--out", out, ignored=(signal.SIGHUP,))
    deadline = time.time() + 60
    while not (out / folder.STATE).exists() and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert (out / "results.json").exists()


SIGNAL_AGAIN_DURING_CLEANUP = """
import os, signal, sys
from l2l_ref import cli
finish = cli.remove_unfinished
def cleanup():
    os.kill(os.getpid(), signal.SIGTERM)  # a second signal (kill, or timeout passing one on)
    finish()
cli.remove_unfinished = cleanup
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_second_signal_during_the_cleanup_is_no_traceback(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-c", SIGNAL_AGAIN_DURING_CLEANUP, "train", *map(str, SMALL)]
    process = subprocess.Popen(
        [*command, "--epochs", "5000", "--out", str(out)], stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while not (out / folder.STATE).exists() and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1] == "l2l-ref: interrupted (SIGTERM)"
    assert "Traceback" not in stderr


def test_a_full_disk_after_training_loses_no_table(tmp_path, monkeypatch, capsys):
    def full(path, document):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(cli, "write_json", full)
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(tmp_path / "run")]) == 4
    captured = capsys.readouterr()
    assert "optimizer  learning rate" in captured.out and "LSTM" in captured.out
    assert captured.err.strip().splitlines()[-1].startswith("l2l-ref: I/O error: [Errno 28]")
    assert (tmp_path / "run" / "checkpoint.npz").exists()


def test_an_unwritable_place_for_evaluate_is_refused_before_the_evaluation(uninterrupted):
    result = l2l("evaluate", uninterrupted / "checkpoint.npz", "--json", "/proc/l2l-ref/e.json")
    assert result.returncode == 4 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("l2l-ref: I/O error")


def test_an_untrained_best_optimizer_is_said(tmp_path):
    result = l2l("train", *SMALL, "--epochs", "3", "--meta-lr", "10000", "--out", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    assert "no epoch improved on the untrained optimizer" in result.stderr


def test_a_diverging_run_prints_no_warnings(tmp_path):
    result = l2l(
        "train", *SMALL, "--dtype", "float32", "--meta-lr", "1e30", "--out", tmp_path / "r"
    )
    assert result.returncode == 1
    assert "Warning" not in result.stderr and "warn" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("l2l-ref: training stopped")


# --- bad input: named regressions ------------------------------------------------------------


def idx(path: Path, magic: int, array: np.ndarray):
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def tiny_idx(folder: Path, n=20, size=1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        idx(folder / f"{split}-images-idx3-ubyte", 0x803, rng.integers(0, 255, (n, size, size)))
        idx(folder / f"{split}-labels-idx1-ubyte", 0x801, np.arange(n) % 3)
    return folder


def checkpoint_with(path: Path, source: Path, **fields) -> Path:
    with np.load(source, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    metadata = json.loads(str(arrays["metadata"]))
    for key, value in fields.items():
        if value is None:
            metadata.pop(key)
        else:
            metadata[key] = value
    arrays["metadata"] = np.array(json.dumps(metadata))
    np.savez(path, **arrays)
    return path


def regressions(tmp_path: Path, good: Path) -> dict:
    results = json.loads((good.parent / "results.json").read_text())
    results["results"]["learned"]["mean_loss"][3] = "many"
    (tmp_path / "string.json").write_text(json.dumps(results))
    np.save(tmp_path / "array.npy", np.zeros(3))
    broken = tmp_path / "manifest"
    broken.mkdir()
    manifest = json.loads((Path(cli.vectors.DEFAULT_FOLDER) / "manifest.json").read_text())
    del manifest["cases"][1]["name"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    steps = {**json.loads(str(np.load(good)["metadata"]))["train"], "steps": -5}
    tiny = tiny_idx(tmp_path / "tiny")
    one_pixel = tiny_idx(tmp_path / "one-pixel", n=200, size=1)
    full_size = tiny_idx(tmp_path / "full-size", n=20, size=28)
    return {
        "negative seed": ["train", "--seed", "-1"],
        "a minibatch larger than the images": ["train", "--problem", "mnist", "--batch", "6000",
                                               "--data-dir", str(tiny)],
        "a small image set with the default batch": ["train", "--problem", "mnist",
                                                     "--data-dir", str(tiny)],
        "298 GiB of LSTM": ["train", "--layers", "100000"],
        "an unroll that cannot fit": ["train", "--steps", "1000000", "--unroll", "1000000",
                                      "--layers", "2000"],
        "evaluate a .npy": ["evaluate", str(tmp_path / "array.npy")],
        "metadata a list": ["evaluate", str(checkpoint_with(tmp_path / "a.npz", good, groups=[1]))],
        "groups a number": ["evaluate", str(checkpoint_with(tmp_path / "b.npz", good, groups=3))],
        "no preset": ["evaluate", str(checkpoint_with(tmp_path / "c.npz", good, preset=None))],
        "train.steps -5": ["evaluate", str(checkpoint_with(tmp_path / "d.npz", good, train=steps))],
        "a conv net on 1×1 images": ["train", "--problem", "cifar", "--data-dir", str(one_pixel),
                                     "--batch", "4"],
        "a string in a curve": ["plot", str(tmp_path / "string.json"), "-o",
                                str(tmp_path / "p.png")],
        "a reference case without a name": ["verify", str(broken), "--vectors", str(broken)],
        "an empty --out": ["train", "--out", ""],
        "--resume with other settings": ["train", "--resume", str(good.parent), "--epochs", "3"],
        "--resume a folder that is not a run": ["train", "--resume", str(tmp_path)],
        "584 GiB of MLP, refused by the allocator": ["train", "--problem", "mnist", "--hidden",
                                                     "100000000", "--data-dir", str(full_size),
                                                     "--batch", "4"],
        "--out a file": ["train", "--out", str(tmp_path / "array.npy")],
        "an empty scheduler address": ["search", "--scheduler", ""],
        "vectors export into a file": ["vectors", "export", "--out", str(tmp_path / "array.npy")],
        "evaluate --json into the current folder": ["evaluate", str(good), "--json", ""],
        "plot into a folder": ["plot", str(good.parent / "results.json"), "-o", str(tmp_path)],
        "plot into a file that is not a PNG": ["plot", str(good.parent / "results.json"), "-o",
                                               str(tmp_path / "figure.txt")],
    }  # fmt: skip


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_named_bad_inputs_are_one_line_and_exit_2(uninterrupted, tmp_path, monkeypatch):
    cases = regressions(tmp_path, uninterrupted / "checkpoint.npz")
    monkeypatch.chdir(tmp_path)
    for name, argv in cases.items():
        before = set(Path(tmp_path).rglob("*"))
        code, _, err = run_main(argv)
        assert code == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("l2l-ref: error:"), (name, err)
        assert set(Path(tmp_path).rglob("*")) == before, f"{name}: wrote something"
    assert "GiB" in run_main(cases["an unroll that cannot fit"])[2]


# --- bad input: any command line ----------------------------------------------------------------

NASTY = st.sampled_from(
    ["", "x", "-1", "0", "1", "2", "1e3", "nan", "inf", "-inf", "1e-320", "1e30", "0.1,", ",",
     "1,2", "1,1", "0,0.1", "0.3,0.01", "none", "20,x", "2,0", "tcp://127.0.0.1:9", "float16",
     "quadratic", "mnist", "cifar", "paper", "deepmind", "cupy", "numpy"]
)  # fmt: skip
FLAGS = {
    "train": ["--problem", "--preset", "--epochs", "--steps", "--unroll", "--meta-lr", "--layers",
              "--eval-every", "--seed", "--backend", "--dtype", "--test-problems",
              "--learning-rates", "--validation-problems", "--batch", "--hidden", "--classes",
              "--activation", "--meta-lr-schedule", "--data-dir", "--resume"],
    "search": ["--trials", "--seeds", "--meta-lr-range", "--scheduler", "--epochs", "--layers",
               "--workers", "--problem"],
    "evaluate": ["--steps", "--seed", "--dtype", "--backend", "--test-problems", "--hidden"],
    "plot": ["-o"],
    "report": ["--json"],
    "verify": ["--dtype", "--rtol", "--atol", "--cases", "--vectors"],
}  # fmt: skip
TINY = [
    "--epochs", "1", "--steps", "4", "--unroll", "2", "--layers", "2", "--eval-every", "1",
    "--validation-problems", "1", "--test-problems", "2", "--learning-rates", "0.1",
]  # fmt: skip


@st.composite
def command_lines(draw, files):
    command = draw(st.sampled_from(sorted(FLAGS)))
    argv = [command]
    if command in ("evaluate", "plot", "report", "verify"):
        argv.append(draw(st.sampled_from(files)))
    if command in ("train", "search"):
        argv += TINY + (["--trials", "1", "--workers", "1"] if command == "search" else [])
    for flag in draw(st.lists(st.sampled_from(FLAGS[command]), max_size=3)):
        argv += [flag, draw(NASTY | st.sampled_from(files))]
    if command == "plot" and "-o" not in argv:
        argv += ["-o", "figure.png"]
    return argv


@pytest.mark.slow
def test_any_command_line_ends_in_a_documented_exit_code(uninterrupted, tmp_path_factory):
    """Commands drawn with flags of every kind and value and corrupted files: the exit code is
    one of the documented ones, and nothing ends in a traceback (an exception escaping main
    fails this test)."""
    place = tmp_path_factory.mktemp("anything")
    good = uninterrupted / "checkpoint.npz"
    files = [str(good), str(uninterrupted / "results.json"), str(uninterrupted), "no/such/file"]
    files += [argv[1] for argv in regressions(place, good).values() if len(argv) > 1][:8]
    os.chdir(place)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(command_lines(files))
    def check(argv):
        code, _, err = run_main(argv)
        assert code in EXIT_CODES, (argv, code, err)
        assert "Traceback" not in err
        if code == 2:
            assert err.strip().splitlines()[-1].startswith("l2l-ref: error:"), (argv, err)

    try:
        check()
    finally:
        os.chdir(Path(__file__).parent.parent)


def test_a_search_owns_its_folder_and_each_trial_its_own(tmp_path):
    """`search` refuses a folder another process owns (a running train, a running search);
    a trial that trains in its folder owns it, so that `train --resume` of it is refused
    meanwhile; both in one line, exit 2."""
    from l2l_ref import search
    from l2l_ref.run import RunSpec

    out = tmp_path / "search"
    with folder.owned(out):  # as a running train or search holds it
        refused = l2l("search", *SMALL, "--trials", "1", "--out", out)
    assert refused.returncode == 2, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert f"{out} is in use by another l2l-ref process" in line
    trial = tmp_path / "trial"
    spec = RunSpec.from_preset(epochs=1, eval_every=1, validation_problems=2).as_dict()
    with folder.owned(trial), pytest.raises(folder.FolderInUse):
        search.run_trial(spec, str(trial))
    search.run_trial(spec, str(trial))  # free again: it trains
    assert (trial / folder.STATE).exists()


def test_a_signal_during_a_write_arrives_when_it_is_done(tmp_path, monkeypatch):
    """The command line's handler lets a stopping signal that comes while a file is written in
    once the file is whole, and then stops the program."""
    entry = {signum: signal.getsignal(signum) for signum in (*cli.STOPPING, signal.SIGALRM)}
    fsync = os.fsync

    def signalled_fsync(fd):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)  # the handler runs here, inside the write, and three alarms after it
        fsync(fd)

    monkeypatch.setattr(os, "fsync", signalled_fsync)
    signal.signal(signal.SIGTERM, cli.stop)
    try:
        with pytest.raises(cli.Stopped) as stopped:
            files.write_atomically(tmp_path / "whole", b"done")
            time.sleep(2)  # stopped here, by the next alarm
        assert stopped.value.signum == signal.SIGTERM
        assert (tmp_path / "whole").read_bytes() == b"done"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["whole"]
    finally:
        cli.stopped()
        for signum, handler in entry.items():
            signal.signal(signum, handler)


def test_a_stop_that_a_library_swallows_is_raised_again():
    """autograd's `wraps` catches BaseException while it names a function, so a Stopped raised
    there vanished and the run went on (test_signals_stop_like_ctrl_c's run hung so in 7 of
    about 1,070 tries on a loaded machine). The handler raises it again every 0.1 s until main
    has it."""
    entry = {signum: signal.getsignal(signum) for signum in (*cli.STOPPING, signal.SIGALRM)}
    signal.signal(signal.SIGTERM, cli.stop)
    start = time.monotonic()
    try:
        with pytest.raises(cli.Stopped):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler raises here
            except BaseException:
                pass  # as autograd.wrap_util.wraps does
            time.sleep(10)  # the program goes on, until SIGALRM raises it again
        assert time.monotonic() - start < 2
    finally:
        cli.stopped()
        for signum, handler in entry.items():
            signal.signal(signum, handler)
