"""The paper's choice of the meta learning rate (Section 3): a random search, the optimizer
best on validation problems kept, and only that one run on the test problems.

For each seed, K trials: complete meta-trainings, each with its meta learning rate drawn
log-uniformly from a range and its own φ_0 and training problems (l2l_ref.meta_train.rng_for),
all validated on the seed's validation problems. The trial with the lowest mean final
validation loss is the seed's selected optimizer; it alone is compared with the tuned baselines
on the seed's test problems, exactly as `train` does.

Trials are independent tasks submitted to an executor: a local pool of worker processes, or a
Dask cluster. A trial is deterministic from its seed, index and rate, and returns its results
to the process that runs the search, which alone writes files: one folder per trial, and
search.json after every finished trial, so that running the same command again resumes a
search without rerunning what finished.
"""

import json
import math
import multiprocessing
import os
import pickle
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as onp

from l2l_ref import checkpoint, checks, presets, run
from l2l_ref.architectures import current_record
from l2l_ref.checkpoint import CheckpointError
from l2l_ref.comparison import check_results
from l2l_ref.errors import ConfigError, L2LError
from l2l_ref.files import write_json
from l2l_ref.folder import STATE, load_state, owned, restore, save_state
from l2l_ref.machine import check_machine, machine
from l2l_ref.meta_train import NonFiniteMetaLoss
from l2l_ref.optimizer import is_shape, network_shapes
from l2l_ref.run import RunSpec
from l2l_ref.streams import rng_for
from l2l_ref.tree import flatten, tree_map, unflatten_like

FORMAT, VERSION = "l2l-ref-search", 1
ATTEMPTS = 2  # a trial whose worker dies is run once more, then reported as failed
MAX_TRIALS = 100_000  # in one search, all seeds together: each is a whole meta-training


@dataclass(frozen=True)
class Trial:
    """One meta-training of a search."""

    seed: int
    index: int
    meta_lr: float

    @property
    def folder(self) -> str:
        return f"seed-{self.seed}/trial-{self.index}"


def draw_trials(seeds: list[int], trials: int, low: float, high: float) -> list[Trial]:
    """K trials per seed, each with its meta learning rate drawn log-uniformly from [low, high]
    by the trial's own stream: the same plan whoever draws it."""
    if not 0 < low <= high < math.inf:
        raise ConfigError(f"meta learning rate range must be 0 < LO ≤ HI, got {low}, {high}")
    if trials < 1 or not seeds:
        raise ConfigError("a search needs at least one seed and one trial")
    if trials * len(seeds) > MAX_TRIALS:
        raise ConfigError(
            f"{trials * len(seeds):,} trials is more than a search takes ({MAX_TRIALS:,}), each "
            "a whole meta-training"
        )
    plan = []
    for seed in seeds:
        for index in range(trials):
            draw = rng_for(seed, "search", index).uniform(math.log(low), math.log(high))
            plan.append(Trial(seed, index, float(math.exp(draw))))
    return plan


def run_trial(spec: dict, state_folder: str | None = None) -> dict:
    """Meta-train one trial (in a worker): φ as host arrays and the training document. A trial
    whose meta-loss overflows keeps the best φ it validated before, and says so.

    With a state folder (a local pool: the worker sees the search folder), the trial owns that
    folder while it trains (no `train --resume` of it meanwhile), saves its training state
    there after every epoch, as `train` does, and goes on from a state it finds there, so that
    a stopped search continues a trial where it stopped, to the same bits.
    """
    if state_folder is None:
        return _train_trial(RunSpec.from_dict(spec), None)
    with owned(Path(state_folder)):
        return _train_trial(RunSpec.from_dict(spec), Path(state_folder))


def _train_trial(spec: RunSpec, place: Path | None) -> dict:
    problem = spec.make_problem()
    start, diverged = time.perf_counter(), None
    state, on_state = None, None
    if place is not None:
        to_device, to_host = spec.transfers(spec.trained_in)
        try:
            saved, parts, metadata = load_state(place)
            if saved == spec:  # a state of another search's trial is not this trial's
                state = restore(parts, metadata, to_device)
        except CheckpointError:  # none, or not one this version reads: start over
            pass
        on_state = lambda new: save_state(place, new, spec, to_host)  # noqa: E731
    try:
        result = run.train(spec, problem, state=state, on_state=on_state)
    except NonFiniteMetaLoss as error:
        result, diverged = error.result, str(error)
    _, to_host = spec.transfers()
    phi = flatten(tree_map(to_host, result.phi))
    document = run.document(spec, problem, training=result)
    return {
        "phi": {key: onp.asarray(value) for key, value in phi.items()},
        "networks": result.networks,
        "document": document | ({"diverged": diverged} if diverged else {}),
        "seconds": time.perf_counter() - start,
    }


def compare_selected(spec: dict, phi: dict, networks: dict) -> tuple[dict, dict]:
    """The selected trial's optimizer against the tuned baselines on the seed's test problems
    (in a worker), and the machine that compared them."""
    return run.compare(RunSpec.from_dict(spec), phi, networks), machine()


def _start_worker(threads: int, problems: dict) -> None:
    """Worker initializer: the cores shared out between the pool's workers, and every problem
    the search's process knows (a script may register its own under `if __name__ ==
    "__main__":`, which a spawned worker does not run)."""
    os.environ["L2L_REF_THREADS"] = str(threads)
    presets.PROBLEMS.update(problems)


def reachable_by_workers(problem: str) -> None:
    """Refuse, before any work, a problem whose registration cannot be sent to worker
    processes (its family made where a worker cannot import it: a lambda, a function inside
    another)."""
    try:
        pickle.dumps(presets.PROBLEMS[problem])
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise ConfigError(
            f"problem {problem}: its family cannot be sent to the search's worker processes "
            f"({error}); define it at the top level of a module"
        ) from None


def local_pool(workers: int) -> tuple[Executor, Callable]:
    """Worker processes on this machine (started fresh, never forked from a process whose
    thread pools are running), the cores shared out between them; and what shuts them down."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, context, _start_worker, (threads, dict(presets.PROBLEMS)))

    def close():
        # a search that stops (Ctrl-C, SIGTERM) stops its workers too, rather than waiting for
        # their trials; the executor's API cannot, so its processes are ended here
        processes = list((pool._processes or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10)

    return pool, close


SCHEDULER_WAIT = 20  # seconds a scheduler has to answer


def dask_executor(address: str) -> tuple[Executor, Callable]:
    """An executor on the Dask cluster whose scheduler listens at `address`, and a function
    that closes the connection. The address is checked with one plain connection first, and
    the client must be connected within SCHEDULER_WAIT seconds, so that a wrong, silent or
    foreign server is one line, not a client left waiting."""
    try:
        from distributed import Client
        from distributed.comm import parse_address, parse_host_port
    except ImportError:
        raise ConfigError("--scheduler needs Dask: pip install 'l2l-ref[distributed]'") from None
    try:
        protocol, location = parse_address(address)
        if protocol not in ("tcp", "tls"):
            raise ValueError(f"protocol {protocol!r}; expected tcp:// or tls://")
        host, port = parse_host_port(location)
        socket.create_connection((host, port), timeout=10).close()
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        raise ConfigError(f"cannot reach a Dask scheduler at {address!r}: {error}") from None
    probe_scheduler(address)
    client = Client(address, timeout="10s", set_as_default=False)
    return client.get_executor(pure=False), client.close


_PROBE = """import sys
from distributed import Client
client = Client(sys.argv[1], timeout="10s", set_as_default=False)
client.close(timeout=5)
"""


def probe_scheduler(address: str) -> None:
    """Refuse, in one line, an address where no Dask scheduler answers within SCHEDULER_WAIT
    seconds: a silent server, or a foreign one whose bytes a client reads as anything (an
    allocation of exabytes). The client is tried in a process of its own, ended at the time
    limit (or when this one is stopped), so that nothing of a failed client stays behind."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, address], capture_output=True, text=True,
            timeout=SCHEDULER_WAIT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        why = "it did not answer"
    else:
        if result.returncode == 0:
            return
        lines = result.stderr.strip().splitlines()
        why = lines[-1] if lines else f"exit code {result.returncode}"
    raise ConfigError(f"no Dask scheduler answers at {address!r} within {SCHEDULER_WAIT} s ({why})")


class Search:
    """One search folder: its plan, what has finished, and search.json."""

    def __init__(self, base: RunSpec, seeds: list[int], trials: int, lr_range, out: Path):
        self.base, self.out = base, Path(out)
        self.plan = draw_trials(seeds, trials, *lr_range)
        self.settings = {
            "run": base.as_dict(), "seeds": list(seeds), "trials": trials,
            "meta_lr_range": list(lr_range),
        }  # fmt: skip
        self.record = {"format": FORMAT, "version": VERSION, "settings": self.settings}
        self.record |= {"trials": {}, "selection": {}, "test": {}}
        path = self.out / "search.json"
        if path.exists():
            self._resume(path)

    def _resume(self, path: Path) -> None:
        """Take up what search.json says has finished, all of it checked first (nothing is
        written before): a trial whose folder lost its checkpoint runs again, a seed whose
        results.json is gone is compared again."""
        previous = read_record(path)
        written = previous["settings"]["run"]
        written["optimizer"] = current_record(written["optimizer"])  # as written before, or now
        if previous["settings"] != json.loads(json.dumps(self.settings)):
            raise ConfigError(
                f"{self.out} holds a search with other settings; choose another --out"
            )
        plan = {t.folder: t for t in self.plan}
        try:
            for name, entry in previous["trials"].items():
                trial = plan.get(name)
                if trial is None or (entry["seed"], entry["index"]) != (trial.seed, trial.index):
                    raise ConfigError(f"trials[{name!r}] is not a trial of this search's plan")
                if entry["meta_lr"] != trial.meta_lr:
                    raise ConfigError(f"trials[{name!r}] meta_lr is not the plan's")
        except L2LError as error:
            raise L2LError(f"{path}: {error}") from None
        finished = {
            name: entry for name, entry in previous["trials"].items()
            if entry["status"] == "done" and (self.out / name / "checkpoint.npz").exists()
        }  # fmt: skip
        self.record["trials"] = finished
        self.record["test"] = {
            seed: results for seed, results in previous["test"].items()
            if (self.out / f"seed-{seed}" / "results.json").is_file()
        }  # fmt: skip
        self.record["selection"] = previous["selection"]

    def spec(self, trial: Trial) -> RunSpec:
        return self.base.replace(seed=trial.seed, trial=trial.index, meta_lr=trial.meta_lr)

    def pending(self) -> list[Trial]:
        return [
            t for t in self.plan if self.record["trials"].get(t.folder, {}).get("status") != "done"
        ]

    def save(self) -> None:
        write_json(self.out / "search.json", self.record)

    def finish_trial(self, trial: Trial, outcome: dict) -> None:
        """Write a finished trial's folder and record it in search.json."""
        folder = self.out / trial.folder
        folder.mkdir(parents=True, exist_ok=True)
        document = outcome["document"]
        spec = self.spec(trial)
        checkpoint.save(
            folder / "checkpoint.npz", phi_of(outcome["phi"], spec), outcome["networks"],
            spec.optimizer, run.checkpoint_metadata(document),
        )  # fmt: skip
        write_json(folder / "results.json", document)
        (folder / STATE).unlink(missing_ok=True)  # a finished trial is never resumed
        self.record["trials"][trial.folder] = {
            **asdict(trial), "status": "done", "best_validation": document["best_validation"],
            "best_epoch": document["best_epoch"], "seconds": outcome["seconds"],
            "machine": document["machine"],
        }  # fmt: skip
        self.save()

    def fail_trial(self, trial: Trial, error: BaseException) -> None:
        self.record["trials"][trial.folder] = {
            **asdict(trial),
            "status": "failed",
            "error": f"{type(error).__name__}: {error}",
        }
        self.save()

    def selected(self, seed: int) -> Trial | None:
        """The seed's finished trial with the lowest best validation loss (ties: the first)."""
        done = [
            t for t in self.plan
            if t.seed == seed and self.record["trials"].get(t.folder, {}).get("status") == "done"
        ]  # fmt: skip
        if not done:
            return None
        return min(
            done, key=lambda t: (self.record["trials"][t.folder]["best_validation"], t.index)
        )


def read_record(path: Path) -> dict:
    """A search.json, every field checked: the format and version, the settings (a run's), the
    trials (each its seed, index, rate and status, and a finished one its best validation and
    epoch), the selection (per seed none or a finished trial) and the test comparisons (per
    selected seed a comparison's results); anything else is one line naming the field."""
    try:
        record = checks.mapping(json.loads(Path(path).read_text()), "the file")
        if record.get("format") != FORMAT:
            raise ConfigError(f"format is {record.get('format')!r}, not {FORMAT!r}")
        checks.integer(record.get("version"), "version", VERSION, VERSION)
        settings = checks.mapping(record["settings"], "settings")
        spec = RunSpec.from_dict(checks.mapping(settings["run"], "settings.run"))
        seeds = checks.sequence(settings["seeds"], "settings.seeds")
        for k, seed in enumerate(seeds):
            checks.integer(seed, f"settings.seeds[{k}]", 0)
        checks.integer(settings["trials"], "settings.trials", 1)
        low, high = checks.numbers(settings["meta_lr_range"], "settings.meta_lr_range", 2)
        if not 0 < low <= high:
            raise ConfigError(f"settings.meta_lr_range {[low, high]} is not 0 < LO ≤ HI")
        for name, entry in checks.mapping(record["trials"], "trials").items():
            where = f"trials[{name!r}]"
            checks.mapping(entry, where)
            checks.integer(entry["seed"], f"{where}.seed", 0)
            checks.integer(entry["index"], f"{where}.index", 0)
            checks.number(entry["meta_lr"], f"{where}.meta_lr", low=0)
            if "machine" in entry:
                check_machine(entry["machine"], f"{where}.machine")
            if entry["status"] == "done":
                checks.number(entry["best_validation"], f"{where}.best_validation", infinite=True)
                checks.integer(entry["best_epoch"], f"{where}.best_epoch", 0, spec.train.epochs)
            elif entry["status"] != "failed":
                raise ConfigError(f"{where}.status is {entry['status']!r}, not done or failed")
        for seed, choice in checks.mapping(record["selection"], "selection").items():
            if choice is not None:
                name = (
                    f"seed-{seed}/trial-{checks.mapping(choice, f'selection[{seed!r}]')['index']}"
                )
                if record["trials"].get(name, {}).get("status") != "done":
                    raise ConfigError(f"selection[{seed!r}] is no finished trial ({name})")
        for seed, results in checks.mapping(record["test"], "test").items():
            if record["selection"].get(seed) is None:
                raise ConfigError(f"test[{seed!r}] has no selected trial")
            record["test"][seed] = check_results(results, f"test[{seed!r}]")  # today's keys
    except KeyError as error:
        raise L2LError(f"{path}: not a search of l2l-ref (no {error})") from None
    except (OSError, ValueError, TypeError, AttributeError, L2LError) as error:
        raise L2LError(f"{path}: not a search of l2l-ref ({error})") from None
    return record


def phi_of(flat: dict, spec: RunSpec) -> dict:
    """φ from its flattened arrays ('all/lstm/0/W': …), in the structure of spec's networks."""
    names = {key.split("/")[0] for key in flat}
    template = network_shapes(spec.optimizer)
    return {g: unflatten_like(template, flat, g, is_shape) for g in sorted(names)}


def worker_died(error: BaseException, pool: Executor) -> bool:
    """Whether a task failed because its worker process died, not because of the trial: the
    pool says it broke (a task submitted while it was breaking can fail with another error
    first, "OSError: handle is closed", before the pool knows)."""
    return isinstance(error, BrokenProcessPool) or bool(getattr(pool, "_broken", False))


def run_trials(search: Search, executor: Callable, progress, keep_state: bool = False) -> None:
    """Run every pending trial on executors made by `executor()` (each a pair: the executor,
    and what closes it), writing each trial as it finishes. A trial whose worker process died
    runs again on a fresh executor, up to ATTEMPTS times; one that still fails, or fails by
    itself, is recorded as failed by name. (Dask reschedules a task whose worker died by
    itself, and reports it as failed after its own number of attempts.) With keep_state (the
    workers share this machine's files), each trial keeps its training state in its folder
    and a stopped trial goes on from it."""
    attempts = dict.fromkeys(search.pending(), 0)
    place = lambda t: str(search.out / t.folder) if keep_state else None  # noqa: E731
    while attempts:
        pool, close = executor()
        try:
            futures = {}
            for t in attempts:
                try:
                    future = pool.submit(run_trial, search.spec(t).as_dict(), place(t))
                except Exception as error:  # e.g. a worker died while trials were submitted
                    future = Future()
                    future.set_exception(error)
                futures[future] = t
            for future in as_completed(futures):
                trial = futures[future]
                attempts[trial] += 1
                try:
                    outcome = future.result()
                except OSError as error:  # the machine's (a full disk), not the trial's: exit 4
                    if not worker_died(error, pool):
                        raise
                    if attempts[trial] < ATTEMPTS:
                        continue
                    search.fail_trial(trial, error)
                except Exception as error:
                    if worker_died(error, pool) and attempts[trial] < ATTEMPTS:
                        continue
                    search.fail_trial(trial, error)
                else:
                    search.finish_trial(trial, outcome)
                del attempts[trial]
                progress.update()
        finally:
            close()


def evaluate_selected(search: Search, executor: Callable) -> None:
    """For each seed, its selected trial against the tuned baselines on its test problems;
    a seed whose selection and comparison are recorded already is not run again."""
    pool, close = executor()
    submit, futures = pool.submit, {}
    for seed in search.settings["seeds"]:
        trial = search.selected(seed)
        key = str(seed)
        if trial is None:
            search.record["selection"][key] = None
            continue
        choice = {
            **asdict(trial),
            "best_validation": search.record["trials"][trial.folder]["best_validation"],
        }
        if search.record["selection"].get(key) == choice and key in search.record["test"]:
            continue
        search.record["selection"][key] = choice
        phi, _, header = checkpoint.load(search.out / trial.folder / "checkpoint.npz")
        futures[submit(compare_selected, search.spec(trial).as_dict(), phi, header["networks"])] = (
            key,
            trial,
        )
    try:
        for future in as_completed(futures):
            key, trial = futures[future]
            results, compared_on = future.result()
            search.record["test"][key] = results
            document = json.loads((search.out / trial.folder / "results.json").read_text())
            document |= {"results": results, "selected": asdict(trial), "compared_on": compared_on}
            write_json(search.out / f"seed-{key}" / "results.json", document)
    finally:
        close()
    search.save()
