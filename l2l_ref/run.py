"""A run: everything that defines one meta-training and its evaluation, in one record, and the
results document written for it. `train`, `evaluate` and `search` all build their runs and
documents here; the command line only parses and prints.
"""

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as onp

from l2l_ref import checks, presets
from l2l_ref.architectures import make, registry_name
from l2l_ref.backends import get_backend
from l2l_ref.baselines import LEARNING_RATES
from l2l_ref.blocks import subnormals_flushed
from l2l_ref.checkpoint import CheckpointError
from l2l_ref.checks import field_types
from l2l_ref.comparison import check_results, evaluate
from l2l_ref.errors import ConfigError
from l2l_ref.machine import available_memory, check_machine, machine, one_blas_thread
from l2l_ref.meta_train import TrainConfig, TrainResult, TrainState, meta_train
from l2l_ref.optimizer import (
    OptimizerConfig,
    assign_networks,
    is_shape,
    network_shapes,
)
from l2l_ref.problems import Problem
from l2l_ref.tree import flatten, tree_map

DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class RunSpec:
    """One run: the problem family (a preset's, with `settings` on top), the optimizer, the
    meta-training protocol, the final comparison and where the arrays live."""

    problem: str = "quadratic"
    preset: str = "paper"
    settings: dict = field(default_factory=dict)  # problem settings over the preset's
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test_problems: int = 32
    learning_rates: tuple[float, ...] = LEARNING_RATES  # the baselines' tuning grid
    backend: str = "numpy"
    dtype: str = "float64"
    train_dtype: str | None = None  # meta-training's precision; None: dtype

    def __post_init__(self):
        field_types(self)
        presets.entry(self.problem, self.preset)
        if self.test_problems < 2:
            raise ConfigError("need at least 2 test problems for a standard error")
        if not self.learning_rates or not all(0 < r < math.inf for r in self.learning_rates):
            raise ConfigError(f"learning rates must be positive, got {self.learning_rates}")
        for dtype in (self.dtype, self.train_dtype or self.dtype):
            if dtype not in DTYPES:
                raise ConfigError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")

    @classmethod
    def from_preset(
        cls, problem: str = "quadratic", preset: str = "paper", settings=None, layers=None,
        meta_lr=None, architecture=None, architecture_settings=None, **options,
    ) -> "RunSpec":  # fmt: skip
        """The run a preset defines for `problem`; `architecture` the registry name of m's
        architecture (default the preset's), `architecture_settings` ({name: value}) its own
        settings, on top of the preset's where the architecture is the preset's;
        `options` are TrainConfig's fields and RunSpec's own (test_problems, learning_rates,
        backend, dtype, train_dtype); an option of None takes the preset's value."""
        options = {k: v for k, v in options.items() if v is not None}
        options.setdefault("train_dtype", presets.entry(problem, preset).train_dtype)
        optimizer = presets.optimizer_for(problem, preset)
        changes = {"layers": None if layers is None else tuple(layers)}
        changes = {k: v for k, v in changes.items() if v is not None}
        preset_architecture = registry_name(optimizer.architecture)
        kept = architecture in (None, preset_architecture)
        own = (optimizer.architecture.settings() if kept else {}) | (architecture_settings or {})
        changes["architecture"] = make(architecture or preset_architecture, own)
        optimizer = dataclasses.replace(optimizer, **changes)
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        protocol = presets.training_for(problem, preset)
        if meta_lr is not None:
            protocol["meta_lr"] = meta_lr
        protocol |= {k: v for k, v in options.items() if k in train_fields}
        rest = {k: v for k, v in options.items() if k not in train_fields}
        return cls(
            problem, preset, dict(settings or {}), optimizer, TrainConfig(**protocol), **rest
        )

    def replace(self, **train_fields) -> "RunSpec":
        """This run with other TrainConfig fields (a search's trial: seed, trial, meta_lr)."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **train_fields))

    def make_problem(self) -> Problem:
        """The problem family, with the preset's settings and this run's on top."""
        try:
            return presets.problem_for(self.problem, self.preset, self.settings)
        except TypeError as error:  # a setting the family does not take
            raise ConfigError(f"problem {self.problem}: {error}") from None

    @property
    def trained_in(self) -> str:
        """The precision of meta-training."""
        return self.train_dtype or self.dtype

    def transfers(self, dtype: str | None = None) -> tuple[Callable, Callable]:
        """(to_device, to_host) of this run's backend, in `dtype` (default: the run's)."""
        backend, dtype = get_backend(self.backend), dtype or self.dtype
        return (lambda a: backend.asarray(a, dtype)), backend.to_host

    def describe(self, problem: Problem, steps: int | None = None, seed: int | None = None) -> str:
        """The line that heads every table and file of this run."""
        grid = self.learning_rates
        tuned = (
            "" if grid == LEARNING_RATES else f", baselines tuned over {','.join(map(str, grid))}"
        )
        seed = self.train.seed if seed is None else seed
        trial = f", trial {self.train.trial}" if self.train.trial else ""
        trained = self.trained_in
        precision = f" (meta-trained in {trained})" if trained != self.dtype else ""
        architecture = registry_name(self.optimizer.architecture)
        optimizer = "" if architecture == "lstm" else f", optimizer {architecture}"
        return (
            f"{problem.describe()}{optimizer}, preset {self.preset}, "
            f"{steps or self.train.steps} steps, "
            f"{self.test_problems} test problems, seed {seed}{trial}, "
            f"{self.backend} {self.dtype}{precision}{tuned}"
        )

    def as_dict(self) -> dict:
        return {
            **{k: getattr(self, k) for k in ("problem", "preset", "settings")},
            "optimizer": self.optimizer.record(),
            "train": dataclasses.asdict(self.train),
            "test_problems": self.test_problems,
            "learning_rates": list(self.learning_rates),
            "backend": self.backend,
            "dtype": self.dtype,
            "train_dtype": self.train_dtype,
        }

    @classmethod
    def from_dict(cls, record: dict) -> "RunSpec":
        train = dict(record["train"])
        if train.get("weights") is not None:
            train["weights"] = tuple(train["weights"])
        return cls(
            record["problem"], record["preset"], dict(record["settings"]),
            OptimizerConfig.from_record(record["optimizer"]), TrainConfig(**train),
            record["test_problems"],
            tuple(record["learning_rates"]), record["backend"], record["dtype"],
            record["train_dtype"],
        )  # fmt: skip


def from_checkpoint(
    path, header: dict, optimizer: OptimizerConfig, settings_for: Callable, **options
) -> tuple[RunSpec, Problem]:
    """The run a checkpoint's optimizer was trained in, and its problem family, with the
    problem settings `settings_for(problem name)` and the RunSpec and validation `options` on
    top; metadata that does not describe such a run is refused (CheckpointError) before any
    work: its problem, preset and protocol, its best epoch, and the tensor → network map,
    which must name exactly the tensors of the problem it was trained on."""
    try:
        problem = checks.mapping(header["problem"], "problem")
        checks.text(problem["name"], "problem.name")
        checks.mapping(problem["settings"], "problem.settings")
        if header.get("best_epoch") is not None:
            checks.integer(header["best_epoch"], "best_epoch", 0)
        train = dict(checks.mapping(header["train"], "train"))
        if train.get("weights") is not None:
            train["weights"] = tuple(train["weights"])
        train["validation_problems"] = options.pop("validation_problems")
        overrides = settings_for(problem["name"])
        spec = RunSpec(
            problem["name"], header["preset"], {**problem["settings"], **overrides},
            optimizer, TrainConfig(**train), **options,
        )  # fmt: skip
        made = spec.make_problem()
        # the net it was trained on: another --hidden is another net, its other settings (the
        # data's folder on this machine) are this run's
        trained_on = (
            dataclasses.replace(
                spec,
                settings={
                    **problem["settings"],
                    **overrides,
                    "hidden": problem["settings"]["hidden"],
                },
            ).make_problem()
            if "hidden" in overrides
            else made
        )
        tensors = trained_on.sample(onp.random.default_rng(0), onp.asarray, "train").theta0
        if set(header["networks"]) != set(tensors):
            raise ConfigError(
                f"networks names {sorted(header['networks'])}, but the problem it was trained "
                f"on has the tensors {sorted(tensors)}"
            )
    except KeyError as error:
        raise CheckpointError(f"{path}: bad metadata (no {error})") from None
    except (TypeError, ValueError, AttributeError, ConfigError) as error:
        raise CheckpointError(f"{path}: bad metadata ({error})") from None
    return spec, made


def train(
    spec: RunSpec,
    problem: Problem | None = None,
    on_epoch: Callable | None = None,
    on_best: Callable | None = None,
    state: TrainState | None = None,
    on_state: Callable | None = None,
) -> TrainResult:
    """Meta-train the run's optimizer (Section 3; l2l_ref.meta_train) in its training
    precision, from `state` if given."""
    to_device, to_host = spec.transfers(spec.trained_in)
    problem = problem or spec.make_problem()
    with subnormals_flushed(spec.trained_in == "float32"), one_blas_thread():
        return meta_train(
            problem, spec.optimizer, spec.train, to_device, to_host, on_epoch, on_best, state,
            on_state,
        )  # fmt: skip


def memory_estimate(spec: RunSpec, problem: Problem) -> int:
    """Bytes a run needs at its peak, roughly: what the architecture's meta-gradient keeps (its
    memory_bytes: the tape and the hidden states, on the path its `hand_written` chooses for
    training too), φ with its Adam moments and gradients, and the validation and test
    problems."""
    first, second = (
        problem.sample(onp.random.default_rng(k), onp.asarray, "train") for k in (0, 1)
    )
    coordinates = sum(onp.size(x) for x in first.theta0.values())
    own = [
        v
        for k, v in first.data.items()
        if isinstance(v, onp.ndarray) and v is not second.data.get(k)
    ]
    instance = sum(onp.asarray(x).nbytes for x in first.theta0.values()) + sum(
        a.nbytes for a in own
    )
    width = onp.dtype(spec.dtype).itemsize
    meta_gradient = spec.optimizer.architecture.memory_bytes(
        spec.optimizer, spec.train.unroll, coordinates, width, spec.train.second_order
    )
    parameters = sum(
        math.prod(shape)
        for shape in flatten(network_shapes(spec.optimizer), is_leaf=is_shape).values()
    ) * len(set(assign_networks(first.theta0, problem, spec.optimizer).values()))
    problems = (spec.train.validation_problems + spec.test_problems) * instance
    return meta_gradient + 8 * parameters * width + problems


def check_memory(spec: RunSpec, problem: Problem) -> None:
    """Refuse, before allocating anything, a run whose estimate exceeds the memory here."""
    needed, available = memory_estimate(spec, problem), available_memory()
    if available is not None and needed > available:
        raise ConfigError(
            f"this run needs about {needed / 2**30:.1f} GiB of memory (the optimizer's tape "
            f"over an unroll, φ and the problems), and {available / 2**30:.1f} GiB are available"
        )


def compare(
    spec: RunSpec,
    phi_host: dict,
    networks: dict,
    problem: Problem | None = None,
    steps: int | None = None,
    seed: int | None = None,
) -> dict:
    """The learned optimizer φ against the tuned baselines on the run's test problems (§3)."""
    to_device, to_host = spec.transfers()
    phi = tree_map(to_device, phi_host)
    with subnormals_flushed(spec.dtype == "float32"), one_blas_thread():
        return evaluate(
            problem or spec.make_problem(), phi, networks, spec.optimizer,
            steps=steps or spec.train.steps, test_problems=spec.test_problems,
            validation_problems=spec.train.validation_problems,
            seed=spec.train.seed if seed is None else seed, to_device=to_device,
            to_host=to_host, grid=spec.learning_rates,
        )  # fmt: skip


CHECKPOINT_FIELDS = ("problem", "preset", "train", "dtype", "best_epoch", "best_validation")


def checkpoint_metadata(document: dict) -> dict:
    """What a checkpoint keeps of its run, taken from the run's results document (the one
    record of a run: `document`), so that `train` and `search` write the same fields, which
    from_checkpoint reads back; and the machine that trained it."""
    return {key: document[key] for key in (*CHECKPOINT_FIELDS, "machine")}


def check_document(document) -> dict:
    """A results document (`document`'s) as read back from a file, every field that `report`
    and `plot` read checked: the seed, the problem with its settings, the preset, the
    optimizer, the horizon, the protocol and the comparison's results
    (comparison.check_results, which brings them to today's keys in place). Raises
    ConfigError naming the field."""
    checks.mapping(document, "the file")
    checks.integer(document["seed"], "seed", 0)
    problem = checks.mapping(document["problem"], "problem")
    checks.text(problem["name"], "problem.name")
    checks.mapping(problem["settings"], "problem.settings")
    checks.text(document["preset"], "preset")
    optimizer = checks.mapping(document["optimizer"], "optimizer")
    for k, units in enumerate(checks.sequence(optimizer["layers"], "optimizer.layers")):
        checks.integer(units, f"optimizer.layers[{k}]", 1)
    checks.integer(document["steps"], "steps", 1)
    train = checks.mapping(document["train"], "train")
    checks.integer(train["epochs"], "train.epochs", 1)
    checks.number(train["meta_lr"], "train.meta_lr", low=0)
    document["results"] = check_results(document["results"])  # today's keys
    for key in ("machine", "compared_on"):
        if key in document:
            check_machine(document[key], key)
    return document


def document(
    spec: RunSpec,
    problem: Problem,
    results: dict | None = None,
    training: TrainResult | None = None,
    steps: int | None = None,
    seed: int | None = None,
    **extra,
) -> dict:
    """The results document of a run: its settings (the line and every field), the machine
    that computed it (l2l_ref.machine), the comparison's results, and the training curves if
    it was trained here."""
    record = {
        "settings": spec.describe(problem, steps, seed),
        "problem": {"name": problem.name, "settings": problem.settings},
        "preset": spec.preset,
        "optimizer": spec.optimizer.record(),
        "train": dataclasses.asdict(spec.train),
        "backend": spec.backend,
        "dtype": spec.dtype,
        "train_dtype": spec.trained_in,
        "test_problems": spec.test_problems,
        "steps": steps or spec.train.steps,
        "seed": spec.train.seed if seed is None else seed,
        "machine": machine(),
        **extra,
    }
    if training is not None:
        record |= {
            "best_epoch": training.best_epoch,
            "best_validation": training.best_validation,
            "training": {"meta_loss": training.meta_losses, "validation": training.validation},
        }
    if results is not None:
        record["results"] = results
    return record
