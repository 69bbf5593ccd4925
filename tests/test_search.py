"""`l2l-ref search` and `report` (issue 13): the same search.json whichever executor runs the
trials (a local pool, a Dask LocalCluster, a scheduler and a worker started as their own
processes), resuming a search that was stopped, a worker killed during a trial, the report's
statistics against a hand computation, and bad input."""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest

from l2l_ref import machine, report, search
from l2l_ref.cli import main
from l2l_ref.run import RunSpec

SMALL = dict(
    layers=(4,), epochs=3, steps=10, unroll=5, eval_every=1, validation_problems=2,
    test_problems=3, learning_rates=(0.1, 1.0),
)  # fmt: skip
SEEDS, TRIALS, RANGE = [0, 1], 2, (0.02, 0.3)


class Count:
    """A progress bar that counts; optionally stops the search after `stop_after` trials."""

    def __init__(self, stop_after=None):
        self.n, self.stop_after = 0, stop_after

    def update(self):
        self.n += 1
        if self.n == self.stop_after:
            raise KeyboardInterrupt


def run_search(out: Path, executor, progress=None, base=None) -> dict:
    plan = search.Search(base or RunSpec.from_preset(**SMALL), SEEDS, TRIALS, RANGE, out)
    out.mkdir(parents=True, exist_ok=True)
    search.run_trials(plan, executor, progress or Count())
    search.evaluate_selected(plan, executor)
    return json.loads((out / "search.json").read_text())


def without_times(record: dict) -> dict:
    record = json.loads(json.dumps(record))
    for trial in record["trials"].values():
        trial.pop("seconds", None)
    return record


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("pool")
    return out, run_search(out, lambda: search.local_pool(2))


def test_a_search_selects_on_validation_and_compares_once_on_test(reference):
    out, record = reference
    assert len(record["trials"]) == len(SEEDS) * TRIALS
    assert all(t["status"] == "done" for t in record["trials"].values())
    for seed in SEEDS:
        mine = [t for t in record["trials"].values() if t["seed"] == seed]
        best = min(mine, key=lambda t: (t["best_validation"], t["index"]))
        assert record["selection"][str(seed)]["index"] == best["index"]
        assert set(record["test"][str(seed)]) == {"learned", "SGD", "RMSprop", "Adam", "NAG"}
        document = json.loads((out / f"seed-{seed}" / "results.json").read_text())
        assert document["train"]["trial"] == best["index"] and document["seed"] == seed
        assert document["results"] == record["test"][str(seed)]
        for t in mine:  # one run folder per trial, with its training curves, no test results
            trial = json.loads(
                (out / f"seed-{seed}" / f"trial-{t['index']}" / "results.json").read_text()
            )
            assert "results" not in trial and trial["best_validation"] == t["best_validation"]
            assert math.isclose(trial["train"]["meta_lr"], t["meta_lr"])
    # the rates are log-uniform draws from the range, each trial its own
    rates = [t["meta_lr"] for t in record["trials"].values()]
    assert len(set(rates)) == len(rates) and all(RANGE[0] <= r <= RANGE[1] for r in rates)


def test_the_selection_never_looks_at_the_test_problems(reference, tmp_path):
    """Selection reads only the trials' validation losses: with every test problem's loss
    replaced, the same trials are selected."""
    out, record = reference
    plan = search.Search(RunSpec.from_preset(**SMALL), SEEDS, TRIALS, RANGE, out)
    plan.record["test"] = {}
    assert {s: asdict(plan.selected(s)) for s in SEEDS} == {
        s: {k: record["selection"][str(s)][k] for k in ("seed", "index", "meta_lr")} for s in SEEDS
    }


def asdict(trial):
    return {"seed": trial.seed, "index": trial.index, "meta_lr": trial.meta_lr}


def test_dask_local_cluster_gives_the_same_search(reference, tmp_path):
    distributed = pytest.importorskip("distributed", reason="dask is not installed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        record = run_search(tmp_path, lambda: search.dask_executor(cluster.scheduler_address))
    assert without_times(record) == without_times(reference[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dask_scheduler_and_worker_of_their_own_give_the_same_search(reference, tmp_path):
    pytest.importorskip("distributed", reason="dask is not installed")
    dask = Path(sys.executable).parent / "dask"
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "L2L_REF_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    started = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        ),
    ]
    try:
        time.sleep(1.0)
        started.append(
            subprocess.Popen(
                [
                    dask,
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        )
        from distributed import Client

        with Client(address, timeout="20s") as client:
            client.wait_for_workers(1, timeout=60)
        record = run_search(tmp_path, lambda: search.dask_executor(address))
    finally:
        for process in reversed(started):
            process.terminate()
        for process in reversed(started):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    assert without_times(record) == without_times(reference[1])


def test_a_stopped_search_resumes_without_rerunning_what_finished(reference, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_search(tmp_path, lambda: search.local_pool(1), Count(stop_after=1))
    first = json.loads((tmp_path / "search.json").read_text())
    (done,) = [name for name, t in first["trials"].items() if t["status"] == "done"]
    stamp = (tmp_path / done / "checkpoint.npz").stat().st_mtime_ns
    counted = Count()
    record = run_search(tmp_path, lambda: search.local_pool(2), counted)
    assert counted.n == len(SEEDS) * TRIALS - 1  # only the others ran
    assert (tmp_path / done / "checkpoint.npz").stat().st_mtime_ns == stamp
    assert without_times(record) == without_times(reference[1])


def test_a_worker_killed_during_a_trial_runs_it_again(reference, tmp_path):
    made, killed = [], []

    def executor():
        pool, close = search.local_pool(2)
        if not made:  # kill a worker of the first pool as soon as it has one

            def kill():
                deadline = time.monotonic() + 60
                while not pool._processes and time.monotonic() < deadline:
                    time.sleep(0.005)
                victim = next(iter(dict(pool._processes).values()))
                os.kill(victim.pid, signal.SIGKILL)
                killed.append(victim.pid)

            threading.Thread(target=kill, daemon=True).start()
        made.append(pool)
        return pool, close

    base = RunSpec.from_preset(**{**SMALL, "epochs": 30, "eval_every": 10})
    record = run_search(tmp_path, executor, base=base)
    assert killed and len(made) >= 3  # the broken pool was replaced (the third evaluates)
    assert all(t["status"] == "done" for t in record["trials"].values())
    clean = run_search(tmp_path / "clean", lambda: search.local_pool(2), base=base)
    assert without_times(record) == without_times(clean)


def test_an_executor_that_breaks_while_trials_are_submitted_is_replaced(reference, tmp_path):
    """The pool breaks after taking one trial (a worker died before the others were submitted,
    as seen on a fast machine): every trial still runs, to the same record."""
    made = []

    def executor():
        pool, close = search.local_pool(2)
        if not made:
            submit, taken = pool.submit, []

            def breaking(*args):
                if taken:
                    raise BrokenProcessPool("a child process terminated abruptly")
                taken.append(submit(*args))
                return taken[-1]

            pool.submit = breaking
        made.append(pool)
        return pool, close

    record = run_search(tmp_path, executor)
    assert len(made) == 3  # the first pool, its replacement, and the evaluation's
    assert without_times(record) == without_times(reference[1])


def test_a_trial_stopped_midway_goes_on_from_its_state_to_the_same_bits(tmp_path, monkeypatch):
    spec = RunSpec.from_preset(**{**SMALL, "epochs": 6}).replace(seed=0, trial=1, meta_lr=0.1)
    clean = search.run_trial(spec.as_dict())
    saves, save = [], search.save_state

    def stopped_after_three(place, state, *rest):
        save(place, state, *rest)
        saves.append(state.epoch)
        if len(saves) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(search, "save_state", stopped_after_three)
    with pytest.raises(KeyboardInterrupt):
        search.run_trial(spec.as_dict(), str(tmp_path))
    monkeypatch.setattr(search, "save_state", save)
    starts, train = [], search.run.train
    monkeypatch.setattr(
        search.run, "train", lambda *a, **k: starts.append(k["state"].epoch) or train(*a, **k)
    )
    resumed = search.run_trial(spec.as_dict(), str(tmp_path))
    assert starts == [saves[-1]] and 0 < saves[-1] < 6  # went on from the third state
    assert resumed["document"] == clean["document"]
    for key, value in clean["phi"].items():
        assert np.array_equal(resumed["phi"][key], value)


def test_a_trial_gives_the_same_bits_whatever_blas_threads_its_worker_has():
    """A float32 meta-step's products cross OpenBLAS's threading threshold, and their last bits
    depend on the thread count: a run fixes its own (machine.one_blas_thread)."""
    before = machine.blas_threads()
    if before is None:
        pytest.skip("no BLAS thread setting to vary")
    spec = RunSpec.from_preset(
        epochs=2, eval_every=1, validation_problems=2, train_dtype="float32"
    ).as_dict()
    phis = []
    try:
        for threads in (2, 1):
            machine.set_blas_threads(threads)
            phis.append(search.run_trial(spec)["phi"])
    finally:
        machine.set_blas_threads(before)
    assert all(np.array_equal(phis[0][key], phis[1][key]) for key in phis[0])


def test_a_trial_that_fails_is_named(tmp_path):
    """A trial that raises in its worker (here: a backend the worker cannot serve) is recorded
    as failed with its error; its seed has no selection and no test comparison."""
    base = RunSpec.from_preset(**SMALL, backend="cupy")
    record = run_search(tmp_path, lambda: search.local_pool(2), base=base)
    assert len(record["trials"]) == len(SEEDS) * TRIALS
    for trial in record["trials"].values():
        assert trial["status"] == "failed" and trial["error"].startswith(
            "BackendError: backend cupy"
        )
    assert record["selection"] == {"0": None, "1": None} and record["test"] == {}


# --- report ---------------------------------------------------------------------------------


def results_file(folder: Path, seed: int, lstm: list, baselines: dict, epochs=10) -> Path:
    """A made-up results.json: final test losses of the LSTM and of each baseline."""

    def stats(values):
        n, mean = len(values), sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        return mean, sd / math.sqrt(n)

    results = {"learned": {"final_losses": lstm, "final_mean": stats(lstm)[0]}}
    for name, finals in baselines.items():
        differences = [b - a for a, b in zip(lstm, finals, strict=True)]
        mean, stderr = stats(differences)
        results[name] = {
            "final_losses": finals, "final_mean": stats(finals)[0], "learning_rate": 0.1,
            "minus_learned": {"mean": mean, "stderr": stderr,
                           "learned_lower_on": sum(d > 0 for d in differences)},
        }  # fmt: skip
    document = {
        "problem": {"name": "quadratic", "settings": {"dims": 10}}, "preset": "paper",
        "optimizer": {"layers": [20, 20]}, "steps": 100, "seed": seed,
        "train": {"epochs": epochs, "meta_lr": 0.1, "seed": seed, "trial": 0},
        "results": results,
    }  # fmt: skip
    path = folder / f"seed{seed}-{epochs}.json"
    path.write_text(json.dumps(document))
    return path


def test_report_statistics_match_a_hand_computation(tmp_path, capsys):
    lstm = [[1.0, 2.0, 3.0], [1.5, 1.0, 2.0], [2.0, 2.0, 1.0]]
    adam = [[1.5, 2.25, 3.5], [2.0, 1.0, 2.5], [2.0, 2.5, 1.75]]
    sgd = [[2.0, 3.0, 4.0], [2.5, 2.0, 3.0], [3.0, 3.0, 2.0]]
    paths = [
        results_file(tmp_path, seed, lstm[seed], {"SGD": sgd[seed], "Adam": adam[seed]})
        for seed in range(3)
    ]
    (claim,) = report.summarize(report.load(paths))
    # by hand: per-seed mean paired differences against Adam are 1.25/3, 1/3, 1.25/3
    adam_means = [1.25 / 3, 1.0 / 3, 1.25 / 3]
    mean = sum(adam_means) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in adam_means) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    across = claim["across"]["Adam"]
    assert across["mean"] == pytest.approx(mean, rel=1e-12)
    assert across["low"] == pytest.approx(mean - half, rel=1e-9)
    assert across["high"] == pytest.approx(mean + half, rel=1e-9)
    assert across["learned_lower_in"] == 3 and claim["learned_below_every_baseline_in"] == 3
    assert claim["verdict"] == "holds"
    assert main(["report", *map(str, paths), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert (
        "LSTM below every tuned baseline in 3 of 3 seeds; against Adam (the best baseline)" in out
    )
    assert json.loads((tmp_path / "r.json").read_text())["claims"][0]["verdict"] == "holds"


def test_report_separates_experiments_and_refuses_a_seed_twice(tmp_path):
    a = results_file(tmp_path, 0, [1.0, 2.0], {"Adam": [0.5, 1.0]}, epochs=10)
    b = results_file(tmp_path, 0, [1.0, 2.0], {"Adam": [1.5, 3.0]}, epochs=20)
    claims = report.summarize(report.load([a, b]))  # two methods: two claims of one seed each
    assert [c["verdict"] for c in claims] == [
        "does not hold in its one seed (no interval across seeds)",
        "holds in its one seed (no interval across seeds)",
    ]
    with pytest.raises(report.ReportError, match="a seed is given twice"):
        report.summarize(report.load([a, a]))


def test_against_pairs_two_learned_optimizers_on_the_same_problems(tmp_path, capsys):
    """`report --against`: one experiment's learned optimizer against another's, paired by
    seed on the same test problems, by hand; other test problems are refused in one line."""
    this, other = tmp_path / "this", tmp_path / "other"
    this.mkdir(), other.mkdir()
    adam = [[1.5, 2.25, 3.5], [2.0, 1.0, 2.5]]
    mine = [[1.0, 2.0, 3.0], [1.5, 1.0, 2.0]]
    theirs = [[2.0, 2.0, 3.5], [1.5, 2.0, 2.0]]
    a = [results_file(this, s, mine[s], {"Adam": adam[s]}) for s in range(2)]
    b = [results_file(other, s, theirs[s], {"Adam": adam[s]}, epochs=20) for s in range(2)]
    pairing = report.versus(report.load(a), report.load(b))
    first, second = pairing["per_seed"]
    assert first["mean"] == pytest.approx(1.5 / 3) and first["lower_on"] == 2
    assert second["mean"] == pytest.approx(1.0 / 3) and second["lower_on"] == 1
    assert first["log_mean"] == pytest.approx((math.log(2) + math.log(3.5 / 3)) / 3)
    assert pairing["across"]["mean"] == pytest.approx(1.25 / 3)
    assert main(["report", *map(str, a), "--against", *map(str, b)]) == 0
    assert "against minus this" in capsys.readouterr().out
    elsewhere = results_file(tmp_path, 0, theirs[0], {"Adam": [1.0, 1.0, 1.0]}, epochs=30)
    assert main(["report", str(a[0]), "--against", str(elsewhere)]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "ran on other test problems" in message


def test_pooled_rates_make_one_experiment_of_each_seeds_own_optimizer(tmp_path):
    files = []
    for seed, rate in ((0, 0.08), (1, 0.11)):
        path = results_file(tmp_path, seed, [1.0, 2.0], {"Adam": [1.5, 2.5]})
        document = json.loads(path.read_text())
        document["train"]["meta_lr"] = rate
        path.write_text(json.dumps(document))
        files.append(path)
    assert len(report.summarize(report.load(files))) == 2  # two rates: two experiments
    (claim,) = report.summarize(report.load(files, pool_rates=True))
    assert claim["seeds"] == [0, 1] and "pooled" in claim["label"]
    other = results_file(tmp_path, 2, [1.0, 2.0], {"Adam": [1.5, 2.5]}, epochs=20)
    assert len(report.summarize(report.load([*files, other], pool_rates=True))) == 2


def test_a_search_names_the_machines_and_its_folder_is_reported(reference, capsys):
    """Each trial and each seed's comparison names the machine that ran it; `report` takes
    the search's folder for its search.json, and says where the optimizers were trained."""
    out, record = reference
    here = machine.machine()
    assert all(trial["machine"] == here for trial in record["trials"].values())
    for seed in SEEDS:
        document = json.loads((out / f"seed-{seed}" / "results.json").read_text())
        assert document["machine"] == here and document["compared_on"] == here
    assert main(["report", str(out)]) == 0
    assert f"meta-trained on: {machine.describe(here)}" in capsys.readouterr().out


def test_report_names_the_file_a_search_is_missing(reference, tmp_path):
    out, _ = reference
    moved = tmp_path / "search.json"
    shutil.copy(out / "search.json", moved)  # without the seed folders beside it
    missing = r"seed-\d/results.json: no such file \(the search"
    with pytest.raises(report.ReportError, match=missing):
        report.load([moved])


@pytest.mark.parametrize(
    ("df", "t"), [(1, 12.706204736), (2, 4.302652730), (4, 2.776445105), (30, 2.042272456)]
)
def test_student_t_quantiles_match_the_tables(df, t):
    assert report.student_t_quantile(0.975, df) == pytest.approx(t, rel=1e-8)


# --- bad input ------------------------------------------------------------------------------

BAD = {
    "empty range": ["--meta-lr-range", ""],
    "LO > HI": ["--meta-lr-range", "0.3,0.01"],
    "non-positive rate": ["--meta-lr-range", "0,0.1"],
    "three rates": ["--meta-lr-range", "0.1,0.2,0.3"],
    "seed twice": ["--seeds", "1,1"],
    "negative seed": ["--seeds", "-1"],
    "zero trials": ["--trials", "0"],
    "unknown scheduler address": ["--scheduler", "not an address"],
    "unreachable scheduler": ["--scheduler", "tcp://127.0.0.1:9"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_search_input_is_one_line_and_exit_2(case, tmp_path):
    if "scheduler" in case:
        pytest.importorskip("distributed", reason="dask is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "l2l_ref.cli", "search", "--epochs", "1", *BAD[case]],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("l2l-ref: error:"), result.stderr
    assert not list(tmp_path.iterdir())  # nothing was written


def test_a_folder_of_another_search_is_refused(reference, capsys):
    out, _ = reference
    args = ["search", "--trials", "3", "--seeds", "0,1", "--layers", "4", "--epochs", "3",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 2
    assert "holds a search with other settings" in capsys.readouterr().err


def test_a_search_written_before_the_architectures_owned_their_settings_is_taken_up(
    reference, tmp_path
):
    """Records of earlier versions carried lstm-gac's gac_units, at 2, in every optimizer's
    record. A search folder so written is taken up with nothing run again, and its results
    files report as the same experiment as today's."""
    out, record = reference
    old = tmp_path / "old"
    shutil.copytree(out, old)
    written = json.loads((old / "search.json").read_text())
    assert "gac_units" not in written["settings"]["run"]["optimizer"]  # lstm: none of its own
    written["settings"]["run"]["optimizer"]["gac_units"] = 2
    (old / "search.json").write_text(json.dumps(written))
    seed_0 = old / "seed-0" / "results.json"
    results = json.loads(seed_0.read_text())
    results["optimizer"]["gac_units"] = 2
    seed_0.write_text(json.dumps(results))
    counted = Count()
    assert without_times(run_search(old, lambda: search.local_pool(1), counted)) == (
        without_times(record)
    )
    assert counted.n == 0
    pooled = report.load([seed_0, out / "seed-1" / "results.json"], pool_rates=True)
    (claim,) = report.summarize(pooled)  # one experiment, as two of today's files make
    assert claim["seeds"] == [0, 1]
