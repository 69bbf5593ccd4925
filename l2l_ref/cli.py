"""The command line: `l2l-ref train`, `evaluate`, `plot`, `vectors export` and `verify`.

Bad input ends with one line on stderr and exit code 2; a meta-loss that overflows stops
training with exit code 1 and leaves the last good checkpoint on disk.
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as onp
from tqdm import tqdm

from backends import BACKENDS, BackendError, get_backend
from l2l_ref import blocks, checkpoint, plot, presets, vectors, verify
from l2l_ref.baselines import LEARNING_RATES
from l2l_ref.datasets import DEFAULT_DATA_DIR, DatasetError
from l2l_ref.evaluate import evaluate, table, write_json
from l2l_ref.meta_train import NonFiniteMetaLoss, TrainConfig, assign_networks, meta_train
from l2l_ref.problems import ACTIVATIONS, PROBLEMS, make_problem
from l2l_ref.tree import tree_map

# The main job's built-in default: the paper's quadratic family, sized to finish in under
# ten minutes on two CPU cores (docs/results-quadratic.md).
DEFAULT_EPOCHS = 400
DEFAULT_TEST_PROBLEMS = 32


class UsageError(Exception):
    """Bad input: reported in one line with exit code 2."""


class Parser(argparse.ArgumentParser):
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


def build_parser() -> Parser:
    parser = Parser(prog="l2l-ref", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def common(sub):
        sub.add_argument(
            "--backend", default="numpy", help=f"array backend ({', '.join(BACKENDS)})"
        )
        sub.add_argument("--dtype", default="float64", choices=("float64", "float32"))
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

    train = commands.add_parser("train", help="meta-train an optimizer, then evaluate it")
    train.add_argument("--problem", default="quadratic", choices=tuple(PROBLEMS))
    train.add_argument("--preset", default="paper", choices=presets.PRESETS)
    train.add_argument("--epochs", type=positive_int, default=DEFAULT_EPOCHS)
    train.add_argument("--steps", type=positive_int, default=100, help="optimizee steps per run")
    train.add_argument("--unroll", type=positive_int, default=20, help="steps per truncated unroll")
    train.add_argument("--meta-lr", type=float, help="Adam's learning rate on φ (preset's default)")
    train.add_argument("--layers", type=layer_sizes, help="LSTM units per layer, e.g. 20,20")
    train.add_argument(
        "--eval-every",
        type=positive_int,
        default=25,
        help="epochs between validations (early stopping)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--second-order", action="store_true", help="keep ∂∇_t/∂φ (exact second derivatives)"
    )
    train.add_argument(
        "--out", type=Path, help="run folder (default runs/<problem>-<preset>-s<seed>)"
    )
    common(train)
    optimizee(train)

    evaluate_cmd = commands.add_parser("evaluate", help="evaluate a saved optimizer")
    evaluate_cmd.add_argument("checkpoint", type=Path)
    evaluate_cmd.add_argument(
        "--steps", type=positive_int, help="optimizee steps (default: as trained)"
    )
    evaluate_cmd.add_argument(
        "--seed", type=int, help="seed of the test problems (default: as trained)"
    )
    evaluate_cmd.add_argument("--json", type=Path, help="write the results here")
    common(evaluate_cmd)
    optimizee(evaluate_cmd)

    plot_cmd = commands.add_parser("plot", help="loss curves of results files (Figures 4, 5)")
    plot_cmd.add_argument("results", type=Path, nargs="*", help="results.json files")
    plot_cmd.add_argument("-o", "--out", type=Path, required=True, help="PNG file to write")
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
    export.add_argument("--out", type=Path, required=True, help="folder to write into")

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


def optimizee_overrides(args, problem: str) -> dict:
    """The problem settings given on the command line; refuses those the problem lacks."""
    overrides = {}
    for key, problems in OPTIMIZEE_OPTIONS.items():
        value = getattr(args, key)
        if value is None:
            continue
        if problem not in problems:
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"{flag} applies to {' and '.join(problems)}, not to {problem}")
        overrides[key] = value
    return overrides


def device(args) -> tuple:
    """(to_device, to_host) of the backend and dtype the command asked for."""
    backend = get_backend(args.backend)
    return (lambda a: backend.asarray(a, args.dtype)), backend.to_host


def settings_line(problem, preset: str, steps: int, args) -> str:
    grid = args.learning_rates
    tuned = "" if grid == LEARNING_RATES else f", baselines tuned over {','.join(map(str, grid))}"
    return (
        f"{problem.describe()}, preset {preset}, {steps} steps, {args.test_problems} test "
        f"problems, seed {args.seed}, {args.backend} {args.dtype}{tuned}"
    )


def free_folder(base: Path) -> Path:
    """`base`, or base-2, base-3, ...: the first that does not exist yet."""
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def compare(args, problem, phi, groups, opt_config, steps, to_device, to_host) -> dict:
    """The learned optimizer against the tuned baselines, as the command's options ask."""
    return evaluate(
        problem, phi, groups, opt_config, steps, args.test_problems, args.validation_problems,
        args.seed, to_device, to_host, grid=args.learning_rates,
    )  # fmt: skip


def train_command(args) -> int:
    overrides = optimizee_overrides(args, args.problem)
    try:
        problem = presets.problem_for(args.problem, args.preset, overrides)
    except (TypeError, ValueError) as error:
        if isinstance(error, DatasetError):
            raise
        raise UsageError(f"problem {args.problem}: {error}") from None
    opt_config = presets.optimizer_for(args.problem, args.preset)
    if args.layers is not None:
        opt_config = dataclasses.replace(opt_config, layers=args.layers)
    train_settings = presets.training_for(args.problem, args.preset)
    if args.meta_lr is not None:
        train_settings["meta_lr"] = args.meta_lr
    try:
        config = TrainConfig(
            epochs=args.epochs,
            steps=args.steps,
            unroll=args.unroll,
            second_order=args.second_order,
            eval_every=args.eval_every,
            validation_problems=args.validation_problems,
            seed=args.seed,
            **train_settings,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    to_device, to_host = device(args)
    out = args.out or free_folder(Path("runs") / f"{args.problem}-{args.preset}-s{args.seed}")
    path = out / "checkpoint.npz"
    if path.exists():  # never overwrite another run's optimizer
        raise UsageError(f"{out} already holds a checkpoint; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    metadata = {
        "problem": {"name": problem.name, "settings": problem.settings},
        "preset": args.preset,
        "train": dataclasses.asdict(config),
        "dtype": args.dtype,
    }

    def on_best(phi, epoch, validation):
        checkpoint.save(
            path,
            tree_map(to_host, phi),
            opt_config,
            {**metadata, "best_epoch": epoch, "best_validation": validation},
        )

    header = settings_line(problem, args.preset, config.steps, args)
    print(f"training: {header}\n  {opt_config}\n  {config}", file=sys.stderr)
    bar = tqdm(total=config.epochs, unit="epoch", file=sys.stderr, dynamic_ncols=True, disable=None)
    validation = [float("nan")]

    def on_epoch(epoch, meta_loss, score):
        if score is not None:
            validation[0] = score
            if bar.disable:
                print(
                    f"epoch {epoch}: meta-loss {meta_loss:.4g}, validation {score:.4g}",
                    file=sys.stderr,
                )
        bar.set_postfix(meta_loss=f"{meta_loss:.4g}", validation=f"{validation[0]:.4g}")
        bar.update()

    start = time.perf_counter()
    try:
        result = meta_train(problem, opt_config, config, to_device, to_host, on_epoch, on_best)
    except NonFiniteMetaLoss as error:
        bar.close()
        print(
            f"l2l-ref: training stopped: {error}; the last good checkpoint is {path}",
            file=sys.stderr,
        )
        return 1
    bar.close()
    train_seconds = time.perf_counter() - start
    print(
        f"best validation loss {result.best_validation:.4g} at epoch {result.best_epoch} "
        f"({train_seconds:.0f} s); checkpoint {path}",
        file=sys.stderr,
    )

    phi = tree_map(to_device, checkpoint.load(path)[0])
    results = compare(
        args, problem, phi, result.groups, opt_config, config.steps, to_device, to_host
    )
    document = {
        "settings": header,
        **metadata,
        "optimizer": dataclasses.asdict(opt_config),
        "backend": args.backend,
        "test_problems": args.test_problems,
        "best_epoch": result.best_epoch,
        "best_validation": result.best_validation,
        "train_seconds": train_seconds,
        "results": results,
        "training": {"meta_loss": result.meta_losses, "validation": result.validation},
    }
    write_json(out / "results.json", document)
    print(table(results, header))
    print(f"results: {out / 'results.json'}")
    return 0


def evaluate_command(args) -> int:
    phi_host, opt_config, header = checkpoint.load(args.checkpoint)
    try:
        name, settings = header["problem"]["name"], header["problem"]["settings"]
        problem = make_problem(name, {**settings, **optimizee_overrides(args, name)})
        train = header["train"]
        steps = args.steps or train["steps"]
        args.seed = train["seed"] if args.seed is None else args.seed
    except DatasetError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise checkpoint.CheckpointError(f"{args.checkpoint}: bad metadata ({error})") from None
    to_device, to_host = device(args)
    phi = tree_map(to_device, phi_host)
    sample = problem.sample(onp.random.default_rng(0), to_device)
    groups = assign_networks(sample.theta0, problem, opt_config)
    if set(groups.values()) != set(phi):
        raise checkpoint.CheckpointError(
            f"{args.checkpoint}: networks {sorted(phi)} do not serve {problem.name}'s groups"
        )
    results = compare(args, problem, phi, groups, opt_config, steps, to_device, to_host)
    line = settings_line(problem, header["preset"], steps, args)
    if args.json:
        write_json(
            args.json,
            {
                "settings": line,
                "checkpoint": str(args.checkpoint),
                "preset": header["preset"],
                "train": header["train"],
                "best_epoch": header.get("best_epoch"),
                "problem": {"name": problem.name, "settings": problem.settings},
                "optimizer": dataclasses.asdict(opt_config),
                "steps": steps,
                "backend": args.backend,
                "dtype": args.dtype,
                "test_problems": args.test_problems,
                "results": results,
            },
        )
    print(table(results, line))
    return 0


def plot_command(args) -> int:
    if args.preprocessing == bool(args.results):
        raise UsageError("plot: give results files, or --preprocessing alone")
    if args.preprocessing:
        plot.plot_preprocessing(args.out)
        print(args.out)
        return 0
    documents = [plot.load_results(path, args.training) for path in args.results]
    (plot.plot_training if args.training else plot.plot_losses)(documents, args.out)
    print(args.out)
    return 0


def vectors_command(args) -> int:
    for path in vectors.export(args.out):
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
    "plot": plot_command,
    "vectors": vectors_command,
    "verify": verify_command,
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        try:
            blocks.thread_count()
        except ValueError as error:
            raise UsageError(str(error)) from None
        return COMMANDS[args.command](args)
    except (
        UsageError,
        checkpoint.CheckpointError,
        verify.MalformedError,
        plot.PlotError,
        DatasetError,
        BackendError,
        OSError,
    ) as error:
        print(f"l2l-ref: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("l2l-ref: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
