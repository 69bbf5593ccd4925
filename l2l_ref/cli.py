"""The command line: `l2l-ref train`, `evaluate`, `search`, `report`, `plot`, `vectors export`
and `verify`. It parses and prints; runs, documents and files are made by the modules.

Bad input ends with one line on stderr and exit code 2 (every l2l_ref.errors.L2LError); a
meta-loss that overflows stops training with exit code 1 and leaves the last good checkpoint.
"""

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as onp
from tqdm import tqdm

from l2l_ref import (
    blocks,
    checkpoint,
    folder,
    machine,
    plot,
    presets,
    report,
    run,
    search,
    vectors,
    verify,
)  # fmt: skip
from l2l_ref.architectures import ARCHITECTURES, optimizer_name
from l2l_ref.backends import BACKENDS
from l2l_ref.baselines import LEARNING_RATES
from l2l_ref.comparison import table
from l2l_ref.datasets import DEFAULT_DATA_DIR
from l2l_ref.errors import L2LError
from l2l_ref.files import remove_unfinished, write_json, writing
from l2l_ref.meta_train import SCHEDULES, NonFiniteMetaLoss
from l2l_ref.optimizer import assign_networks
from l2l_ref.problems import ACTIVATIONS
from l2l_ref.tree import tree_map

DEFAULT_TEST_PROBLEMS = 32


class UsageError(L2LError):
    """Bad command-line input."""


class Parser(argparse.ArgumentParser):
    """argparse's parser, but bad input raises UsageError, and an option is only ever its own
    whole name: no abbreviations (`search --seed 1` would be taken for `--seeds 1`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        raise UsageError(message)


def at_least(minimum: int):
    """An argparse type: an integer no smaller than `minimum`."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


positive_int = at_least(1)


def layer_sizes(text: str) -> tuple[int, ...]:
    """'20,20' -> (20, 20); '' or 'none' -> () (no LSTM layer)."""
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(positive_int(part) for part in text.split(","))


def learning_rates(text: str) -> tuple[float, ...]:
    """'0.01,0.1,1' -> (0.01, 0.1, 1.0); each rate positive and finite."""
    rates = tuple(float(part) for part in text.split(","))
    if not all(0 < rate < float("inf") for rate in rates):
        raise argparse.ArgumentTypeError(f"learning rates must be positive, got {text}")
    return rates


def seed_list(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]: distinct non-negative integers."""
    seeds = [at_least(0)(part) for part in text.split(",")]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"a seed is given twice in {text}")
    return seeds


def folder_path(text: str) -> Path:
    """A folder to write into: not an empty name (which would be the current folder), not a
    file."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty name; name the folder")
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return Path(text)


def file_path(text: str) -> Path:
    """A file to write: a name, not a folder."""
    if not text.strip() or Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file name")
    return Path(text)


def png_path(text: str) -> Path:
    """A PNG file to write."""
    if Path(text).suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"{text!r}: the figure is a PNG; name it *.png")
    return file_path(text)


def scheduler_address(text: str) -> str:
    """A Dask scheduler's address: not an empty one (which would mean the local pool)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty address; name the scheduler")
    return text


def rate_range(text: str) -> tuple[float, float]:
    """'0.01,0.3' -> (0.01, 0.3), with 0 < LO ≤ HI."""
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected LO,HI, got {text}")
    low, high = (float(part) for part in parts)
    if not 0 < low <= high < float("inf"):
        raise argparse.ArgumentTypeError(f"need 0 < LO ≤ HI, got {text}")
    return low, high


def build_parser() -> Parser:
    parser = Parser(prog="l2l-ref", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def comparison(sub):
        sub.add_argument(
            "--backend", default="numpy", help=f"array backend ({', '.join(BACKENDS)})"
        )
        sub.add_argument("--dtype", default="float64", choices=run.DTYPES)
        sub.add_argument(
            "--test-problems",
            type=at_least(2),
            default=DEFAULT_TEST_PROBLEMS,
            help="fresh problems for the final comparison",
        )
        sub.add_argument(
            "--learning-rates",
            type=learning_rates,
            default=LEARNING_RATES,
            help="the baselines' tuning grid, e.g. 0.01,0.1,1 (default 1e-4 … 10, 3 per decade)",
        )
        sub.add_argument(
            "--validation-problems",
            type=positive_int,
            default=8,
            help="problems for early stopping and for tuning the baselines",
        )

    def optimizee(sub):
        sub.add_argument(
            "--data-dir", help=f"mnist, cifar: image files (default {DEFAULT_DATA_DIR})"
        )
        sub.add_argument("--hidden", type=layer_sizes, help="mnist: hidden units, e.g. 40,40")
        sub.add_argument("--activation", choices=tuple(ACTIVATIONS), help="mnist: activation")
        sub.add_argument("--classes", type=at_least(2), help="cifar: keep labels below this")
        sub.add_argument("--batch", type=positive_int, help="mnist, cifar: minibatch size (128)")

    def training(sub):
        sub.add_argument("--problem", default="quadratic", choices=tuple(presets.PROBLEMS))
        sub.add_argument(
            "--preset",
            default="paper",
            help="paper, deepmind (the released code), or another the problem registers "
            "(mnist, cifar: paper-scale-0.01)",
        )
        sub.add_argument("--epochs", type=positive_int, help="(the preset's default)")
        sub.add_argument("--steps", type=positive_int, default=100, help="optimizee steps per run")
        sub.add_argument(
            "--unroll", type=positive_int, default=20, help="steps per truncated unroll"
        )
        sub.add_argument("--layers", type=layer_sizes, help="LSTM units per layer, e.g. 20,20")
        sub.add_argument(
            "--architecture", choices=tuple(ARCHITECTURES), help="the optimizer (default lstm)"
        )
        for name, (owners, setting) in architecture_settings().items():
            sub.add_argument(
                flag(name), type=type(setting.default),
                help=f"{', '.join(owners)}: {setting.metadata['help']} ({setting.default})",
            )  # fmt: skip
        sub.add_argument(
            "--eval-every",
            type=positive_int,
            help="epochs between validations, early stopping (the preset's default)",
        )
        sub.add_argument(
            "--train-dtype",
            choices=run.DTYPES,
            help="the precision of meta-training (the preset's default; else --dtype)",
        )
        sub.add_argument(
            "--meta-lr-schedule", choices=tuple(SCHEDULES), help="(the preset's default)"
        )
        sub.add_argument(
            "--second-order", action="store_true", help="keep ∂∇_t/∂φ (exact second derivatives)"
        )
        comparison(sub)
        optimizee(sub)

    train = commands.add_parser("train", help="meta-train an optimizer, then evaluate it")
    train.add_argument("--meta-lr", type=float, help="Adam's learning rate on φ (preset's default)")
    train.add_argument("--seed", type=at_least(0), default=0)
    train.add_argument(
        "--out", type=folder_path, help="run folder (default runs/<problem>-<preset>-s<seed>)"
    )
    train.add_argument("--resume", type=Path, metavar="DIR", help="continue the stopped run in DIR")
    training(train)

    search_cmd = commands.add_parser(
        "search",
        help="the paper's random search over the meta learning rate, selection on validation",
    )
    search_cmd.add_argument("--trials", type=positive_int, default=2, help="trials per seed")
    search_cmd.add_argument(
        "--seeds", type=seed_list, default=[0], help="seeds, each its own search, e.g. 0,1,2"
    )
    search_cmd.add_argument(
        "--meta-lr-range",
        type=rate_range,
        help="LO,HI: meta learning rates drawn log-uniformly (default: the preset's)",
    )
    search_cmd.add_argument(
        "--workers",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="local worker processes (default: the number of cores)",
    )
    search_cmd.add_argument(
        "--scheduler",
        type=scheduler_address,
        help="ADDRESS of a Dask scheduler, e.g. tcp://10.0.0.5:8786",
    )
    search_cmd.add_argument(
        "--out",
        type=folder_path,
        help="search folder (default runs/search-<problem>-<preset>-s<seeds>)",
    )
    training(search_cmd)

    evaluate_cmd = commands.add_parser("evaluate", help="evaluate a saved optimizer")
    evaluate_cmd.add_argument("checkpoint", type=Path)
    evaluate_cmd.add_argument(
        "--steps", type=positive_int, help="optimizee steps (default: as trained)"
    )
    evaluate_cmd.add_argument(
        "--seed", type=at_least(0), help="seed of the test problems (default: as trained)"
    )
    evaluate_cmd.add_argument("--json", type=file_path, help="write the results here")
    comparison(evaluate_cmd)
    optimizee(evaluate_cmd)

    report_cmd = commands.add_parser(
        "report", help="claims judged over seeds: paired differences and their intervals"
    )
    report_cmd.add_argument(
        "results", type=Path, nargs="+", help="results.json or search.json files"
    )
    report_cmd.add_argument(
        "--pool-rates",
        action="store_true",
        help="count results files that differ only in their meta learning rate as one "
        "experiment (each seed's selected optimizer, evaluated anew)",
    )
    report_cmd.add_argument(
        "--against",
        type=Path,
        nargs="+",
        metavar="RESULTS",
        help="another experiment's files: its learned optimizer against this one's, paired "
        "on each seed's test problems",
    )
    report_cmd.add_argument("--json", type=file_path, help="write the report here")

    plot_cmd = commands.add_parser("plot", help="loss curves of results files (Figures 4, 5)")
    plot_cmd.add_argument(
        "results", type=Path, nargs="*", help="results.json files, or one search.json"
    )
    plot_cmd.add_argument("-o", "--out", type=png_path, required=True, help="PNG file to write")
    plot_cmd.add_argument(
        "--training", action="store_true", help="the meta-loss and validation curves instead"
    )
    plot_cmd.add_argument(
        "--preprocessing",
        action="store_true",
        help="no results: what the input preprocessing does to gradients (Appendix A)",
    )

    vectors_cmd = commands.add_parser("vectors", help="the reference vectors")
    vectors_actions = vectors_cmd.add_subparsers(dest="action", required=True, parser_class=Parser)
    export = vectors_actions.add_parser("export", help="compute and write every case")
    export.add_argument("--out", type=folder_path, required=True, help="folder to write into")

    verify_cmd = commands.add_parser(
        "verify",
        help="check another implementation's outputs",
        description="Exit 0: every stage of every case agrees; 1: a stage diverges or is "
        "missing; 2: malformed input; 3: partial (--cases, --partial) and what was checked "
        "agrees.",
    )
    verify_cmd.add_argument("candidate", type=Path, help="folder: manifest.json + <case>.npz")
    verify_cmd.add_argument(
        "--vectors",
        type=Path,
        default=vectors.DEFAULT_FOLDER,
        help="reference vectors folder (default: the vectors installed with l2l-ref, "
        f"{vectors.DEFAULT_FOLDER})",
    )
    verify_cmd.add_argument(
        "--dtype",
        choices=tuple(vectors.TOLERANCE),
        default="float64",
        help="the candidate's precision: sets the tolerance "
        + "; ".join(
            f"{k}: rtol {v['rtol']:g}, atol {v['atol']:g}" for k, v in vectors.TOLERANCE.items()
        ),
    )
    verify_cmd.add_argument("--rtol", type=float, help="relative tolerance (overrides --dtype)")
    verify_cmd.add_argument("--atol", type=float, help="absolute tolerance (overrides --dtype)")
    verify_cmd.add_argument(
        "--cases", type=lambda text: text.split(","), help="check only these cases (partial)"
    )
    verify_cmd.add_argument(
        "--partial",
        action="store_true",
        help="accept cases and stages the candidate does not give (reported; never a pass)",
    )
    return parser


# which optimizee settings each command-line option sets, and for which problems
OPTIMIZEE_OPTIONS = {
    "data_dir": ("mnist", "cifar"),
    "hidden": ("mnist",),
    "activation": ("mnist",),
    "classes": ("cifar",),
    "batch": ("mnist", "cifar"),
}


def optimizee_settings(args, problem: str) -> dict:
    """The problem settings given on the command line; refuses those the problem lacks."""
    settings = {}
    for key, problems in OPTIMIZEE_OPTIONS.items():
        value = getattr(args, key)
        if value is None:
            continue
        if problem not in problems:
            raise UsageError(f"{flag(key)} applies to {' and '.join(problems)}, not to {problem}")
        settings[key] = value
    return settings


def architecture_settings() -> dict:
    """Every registered architecture's own settings: {name: (the architectures that have it,
    its field)} (the first architecture's field where several share a name)."""
    found = {}
    for architecture, kind in ARCHITECTURES.items():
        for setting in dataclasses.fields(kind):
            owners, first = found.get(setting.name, ((), setting))
            found[setting.name] = ((*owners, architecture), first)
    return found


def flag(name: str) -> str:
    """The command-line flag of a setting: gac_units → --gac-units."""
    return "--" + name.replace("_", "-")


def spec_from_args(args, seed: int = 0, meta_lr: float | None = None) -> run.RunSpec:
    """The run that `train`'s or `search`'s options describe."""
    architecture = args.architecture or "lstm"
    given = {}
    for name, (owners, _) in architecture_settings().items():
        if getattr(args, name) is None:
            continue
        if architecture not in owners:
            raise UsageError(
                f"{flag(name)} is a setting of --architecture {' and '.join(owners)}, not of "
                f"{architecture}"
            )
        given[name] = getattr(args, name)
    return run.RunSpec.from_preset(
        args.problem, args.preset, optimizee_settings(args, args.problem), args.layers,
        meta_lr, args.architecture, given, epochs=args.epochs, steps=args.steps,
        unroll=args.unroll,
        second_order=args.second_order, eval_every=args.eval_every,
        validation_problems=args.validation_problems, seed=seed,
        meta_lr_schedule=args.meta_lr_schedule, test_problems=args.test_problems,
        learning_rates=args.learning_rates, backend=args.backend, dtype=args.dtype,
        train_dtype=args.train_dtype,
    )  # fmt: skip


def free_folder(base: Path) -> Path:
    """`base`, or base-2, base-3, ...: the first that does not exist yet."""
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def progress_bar(total: int, unit: str, initial: int = 0) -> tqdm:
    return tqdm(
        total=total, initial=initial, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=None
    )


def train_command(args) -> int:
    if args.resume:
        return resume_command(args)
    spec = spec_from_args(args, args.seed, args.meta_lr)
    problem = spec.make_problem()
    spec.transfers()  # a backend this machine cannot serve is refused before anything is written
    run.check_memory(spec, problem)
    out = args.out or free_folder(Path("runs") / f"{args.problem}-{args.preset}-s{args.seed}")
    for name in ("checkpoint.npz", folder.STATE):  # never overwrite another run
        if (out / name).exists():
            raise UsageError(f"{out} already holds a run; choose another --out (or --resume it)")
    with folder.owned(out):
        if (out / folder.STATE).exists():  # another run started there since the check above
            raise UsageError(f"{out} already holds a run; choose another --out (or --resume it)")
        return train_in(out, spec, problem)


def resume_command(args) -> int:
    """`train --resume DIR`: the run in DIR goes on from its last saved state, with the
    settings it was started with."""
    defaults = vars(build_parser().parse_args(["train"]))
    given = [k for k, v in vars(args).items() if k != "resume" and v != defaults[k]]
    if given:
        flags = ", ".join(map(flag, given))
        raise UsageError(f"--resume continues a run with its own settings; drop {flags}")
    out = args.resume
    if not (out / folder.STATE).is_file():
        raise UsageError(f"{out}: no {folder.STATE} to resume from (not a run of l2l-ref train)")
    with folder.owned(out):
        spec, parts, metadata = folder.load_state(out)
        if (out / "results.json").exists():
            raise UsageError(f"{out}: the run finished (results.json); nothing to resume")
        problem = spec.make_problem()
        tensors = problem.sample(onp.random.default_rng(0), onp.asarray, "train").theta0
        folder.check_networks(
            out, folder.networks_of(metadata), assign_networks(tensors, problem, spec.optimizer)
        )
        state = folder.restore(parts, metadata, spec.transfers(spec.trained_in)[0])
        return train_in(out, spec, problem, state)


def train_in(out: Path, spec: run.RunSpec, problem, state=None) -> int:
    """Meta-train in the run folder `out` (owned), from `state` if given; save the best φ and
    the state as training goes; then compare, print and write the results."""
    path = out / "checkpoint.npz"
    _, to_host = spec.transfers(spec.trained_in)

    def on_best(best):
        metadata = run.checkpoint_metadata(run.document(spec, problem, training=best))
        checkpoint.save(path, tree_map(to_host, best.phi), best.networks, spec.optimizer, metadata)

    if state is not None:  # the best φ of the state, whatever a kill left of the checkpoint
        on_best(state.result)
    header = spec.describe(problem)
    print(f"training: {header}\n  {spec.optimizer}\n  {spec.train}", file=sys.stderr)
    bar = progress_bar(spec.train.epochs, "epoch", state.epoch if state else 0)
    validation = [float("nan")]

    def on_epoch(epoch, meta_loss, score):
        if score is not None:
            validation[0] = score
            if bar.disable:  # one write: a stop cannot fall between the line and its end
                line = f"epoch {epoch}: meta-loss {meta_loss:.4g}, validation {score:.4g}\n"
                sys.stderr.write(line)
        bar.set_postfix(meta_loss=f"{meta_loss:.4g}", validation=f"{validation[0]:.4g}")
        bar.update()

    def on_state(new_state):
        folder.save_state(out, new_state, spec, to_host)

    start = time.perf_counter()
    try:
        result = run.train(spec, problem, on_epoch, on_best, state, on_state)
    except NonFiniteMetaLoss as error:
        bar.close()
        print(
            f"l2l-ref: training stopped: {error}; the last good checkpoint is {path}",
            file=sys.stderr,
        )
        return 1
    bar.close()
    print(
        f"best validation loss {result.best_validation:.4g} at epoch {result.best_epoch} "
        f"({time.perf_counter() - start:.0f} s); checkpoint {path}",
        file=sys.stderr,
    )
    if result.best_epoch == 0:
        print(
            "l2l-ref: note: no epoch improved on the untrained optimizer; what follows compares "
            "the untrained φ of epoch 0",
            file=sys.stderr,
        )
    results = run.compare(spec, checkpoint.load(path)[0], result.networks, problem)
    document = run.document(spec, problem, results, result)
    print(
        table(results, heading(document), optimizer_name(document["optimizer"]))
    )  # before writing: a full disk loses nothing
    write_json(out / "results.json", document)
    print(f"results: {out / 'results.json'}")
    return 0


def heading(document: dict) -> str:
    """A results table's heading: the run's settings, and the machine that computed it."""
    return f"{document['settings']}\non {machine.describe(document['machine'])}"


def evaluate_command(args) -> int:
    phi_host, optimizer, header = checkpoint.load(args.checkpoint)
    spec, problem = run.from_checkpoint(
        args.checkpoint, header, optimizer, lambda name: optimizee_settings(args, name),
        test_problems=args.test_problems, learning_rates=args.learning_rates,
        backend=args.backend, dtype=args.dtype, validation_problems=args.validation_problems,
    )  # fmt: skip
    run.check_memory(spec, problem)  # sizes that cannot fit are refused before any work
    if args.json:  # an unwritable place is found out before the evaluation, not after
        folder.check_writable(args.json.parent)
    results = run.compare(spec, phi_host, header["networks"], problem, args.steps, args.seed)
    document = run.document(
        spec, problem, results, steps=args.steps, seed=args.seed,
        checkpoint=str(args.checkpoint), best_epoch=header.get("best_epoch"),
    )  # fmt: skip
    print(table(results, heading(document), optimizer_name(document["optimizer"])))
    if args.json:
        write_json(args.json, document)
    return 0


def search_command(args) -> int:
    base = spec_from_args(args)
    base.transfers()
    run.check_memory(base, base.make_problem())  # each trial's run, as train refuses it
    search.reachable_by_workers(args.problem)
    lr_range = args.meta_lr_range or presets.search_range(args.problem, args.preset)
    seeds = "-".join(map(str, args.seeds))
    out = args.out or Path("runs") / f"search-{args.problem}-{args.preset}-s{seeds}"
    if args.scheduler:
        executor = lambda: search.dask_executor(args.scheduler)  # noqa: E731
        executor()[1]()  # an address that does not answer is refused before any work
    else:
        executor = lambda: search.local_pool(args.workers)  # noqa: E731
    with folder.owned(out):  # one search at a time in a folder, and no train beside it
        plan = search.Search(base, args.seeds, args.trials, lr_range, out)
        return search_in(plan, args, executor)


def search_in(plan: search.Search, args, executor) -> int:
    """Run the search `plan` in its folder (owned): its trials, the selection, the comparison
    of each seed's selected optimizer, the table."""
    out, lr_range = plan.out, plan.settings["meta_lr_range"]
    plan.save()
    where = args.scheduler or f"{args.workers} local workers"
    print(
        f"search: {len(plan.plan)} trials ({args.trials} per seed, seeds "
        f"{','.join(map(str, args.seeds))}), meta learning rate {lr_range[0]:g} … "
        f"{lr_range[1]:g}, on {where}; {len(plan.plan) - len(plan.pending())} finished before",
        file=sys.stderr,
    )
    bar = progress_bar(len(plan.plan), "trial", len(plan.plan) - len(plan.pending()))
    try:
        search.run_trials(plan, executor, bar, keep_state=not args.scheduler)
    finally:
        bar.close()
    search.evaluate_selected(plan, executor)
    print(search_table(plan))
    failed = [name for name, t in plan.record["trials"].items() if t["status"] == "failed"]
    for name in failed:
        print(f"l2l-ref: trial {name} failed: {plan.record['trials'][name]['error']}")
    print(f"search: {out / 'search.json'}")
    return 1 if failed else 0


def search_table(plan: search.Search) -> str:
    """Every trial, then each seed's selected optimizer against the baselines."""
    lines = [f"{'trial':<18} {'meta lr':>9} {'best validation':>16} {'at epoch':>9}"]
    for trial in plan.plan:
        entry = plan.record["trials"].get(trial.folder, {"status": "not run"})
        if entry["status"] == "done":
            lines.append(
                f"{trial.folder:<18} {trial.meta_lr:>9.4g} {entry['best_validation']:>16.4g} "
                f"{entry['best_epoch']:>9}"
            )
        else:
            lines.append(f"{trial.folder:<18} {trial.meta_lr:>9.4g} {entry['status']:>16}")
    for seed, results in plan.record["test"].items():
        chosen = plan.record["selection"][seed]
        document = json.loads((plan.out / f"seed-{seed}" / "results.json").read_text())
        learned = optimizer_name(document["optimizer"])
        selected = (
            f"seed {seed}: selected trial {chosen['index']} (meta lr {chosen['meta_lr']:.4g})"
        )
        lines += ["", selected, table(results, heading(document), learned)]
    return "\n".join(lines)


def report_command(args) -> int:
    entries = report.load(args.results, args.pool_rates)
    claims = report.summarize(entries)
    print(report.render(claims))
    document = {"claims": claims}
    if args.against:
        pairing = report.versus(entries, report.load(args.against, args.pool_rates))
        print("\n" + report.render_versus(pairing))
        document["against"] = pairing
    if args.json:
        write_json(args.json, document)
    return 0


def plot_command(args) -> int:
    if args.preprocessing == bool(args.results):
        raise UsageError("plot: give results files, or --preprocessing alone")
    if args.preprocessing:
        plot.plot_preprocessing(args.out)
    elif len(args.results) == 1 and plot.is_search(args.results[0]):
        plot.plot_search(plot.load_search(args.results[0]), args.out)
    else:
        documents = [plot.load_results(path, args.training) for path in args.results]
        (plot.plot_training if args.training else plot.plot_losses)(documents, args.out)
    print(args.out)
    return 0


def vectors_command(args) -> int:
    with folder.owned(args.out):  # one writer at a time, as for every folder a command fills
        written = vectors.export(args.out)
    for path in written:
        print(path)
    return 0


def verify_command(args) -> int:
    """Exit 0 when every stage of every case agrees, 1 when one diverges or is missing, 3 when
    the check was partial (2: malformed, in main)."""
    tolerance = vectors.TOLERANCE[args.dtype]
    rtol = tolerance["rtol"] if args.rtol is None else args.rtol
    atol = tolerance["atol"] if args.atol is None else args.atol
    if not (rtol >= 0 and atol >= 0):
        raise UsageError("tolerances must be non-negative numbers")
    result = verify.verify(args.candidate, args.vectors, rtol, atol, args.cases, args.partial)
    text, code = verify.report(result, rtol, atol)
    print(text)
    return code


COMMANDS = {
    "train": train_command,
    "evaluate": evaluate_command,
    "search": search_command,
    "report": report_command,
    "plot": plot_command,
    "vectors": vectors_command,
    "verify": verify_command,
}


class Stopped(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP: the program stops (temporary files removed)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop(signum, frame):
    """Ctrl-C, SIGTERM, SIGHUP: stop the program (Stopped) where it is, or, inside a write,
    once the file is whole. Until main has the Stopped, it is raised again every 0.1 s
    (SIGALRM): after the write, and where a library swallowed it (autograd's `wraps` catches
    BaseException while it names a function, and the run went on)."""
    for other in STOPPING:  # the program is stopping already: a second signal waits
        signal.signal(other, signal.SIG_IGN)
    _ALARM.append(signal.signal(signal.SIGALRM, lambda _, where: stop_at(signum, where)))
    signal.setitimer(signal.ITIMER_REAL, 0.1, 0.1)
    stop_at(signum, frame)


_ALARM: list = []  # SIGALRM's handler before stop took it


def stop_at(signum: int, frame) -> None:
    if not writing(frame):
        raise Stopped(signum)


def stopped() -> None:
    """main has the Stopped: no more of them, and SIGALRM as it was."""
    if _ALARM:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, _ALARM.pop())


def one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"l2l-ref: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 1 a result that failed (a diverged meta-loss, a divergent
    candidate, failed trials); 2 bad input; 3 a partial verify; 4 an I/O error (a full disk,
    a read-only folder); 128 + the signal's number when stopped (130 for Ctrl-C)."""
    entry = {signum: signal.getsignal(signum) for signum in STOPPING}
    for signum in STOPPING:
        if entry[signum] != signal.SIG_IGN:  # ignored on entry (nohup): that choice stands
            signal.signal(signum, stop)
    warnings.showwarning = one_line_warning
    try:
        args = build_parser().parse_args(argv)
        blocks.thread_count()  # a bad L2L_REF_THREADS is refused before any work
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as interrupt:
        stopped()
        return interrupted(interrupt)
    except Exception as error:
        stopped()
        # an interruption inside a library's cleanup can surface as another error
        cause = error.__context__
        while cause is not None and not isinstance(cause, KeyboardInterrupt):
            cause = cause.__context__
        if cause is not None:
            return interrupted(cause)
        if isinstance(error, L2LError):
            print(f"l2l-ref: error: {error}", file=sys.stderr)
            return 2
        if isinstance(error, MemoryError):
            print(f"l2l-ref: error: not enough memory: {error}", file=sys.stderr)
            return 2
        if isinstance(error, OSError):
            print(f"l2l-ref: I/O error: {error}", file=sys.stderr)
            return 4
        raise
    finally:
        stopped()
        for signum in STOPPING:  # the cleanup finishes, whatever signal comes now
            signal.signal(signum, signal.SIG_IGN)
        try:
            remove_unfinished()
        finally:
            for signum, handler in entry.items():
                if handler is not None:
                    signal.signal(signum, handler)


def interrupted(interrupt: KeyboardInterrupt) -> int:
    signum = getattr(interrupt, "signum", signal.SIGINT)
    print(f"l2l-ref: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
    return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
