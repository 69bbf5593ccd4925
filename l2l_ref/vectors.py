"""Reference vectors: every stage of small meta-training runs, for other implementations to
check themselves against (docs/vectors.md documents the format; `l2l-ref verify` compares).

A case is one epoch of a few truncated unrolls on one optimizee: from θ_0 and zero hidden
state, each unroll runs T steps of Eq. 1, gives the meta-loss of Eq. 3 and its meta-gradient,
and one meta-Adam step on φ; θ and the hidden state carry over to the next unroll. Each case
stores all its inputs (φ, θ_0, the problem's data, minibatch indices) and the float64 value of
every stage, each array indexed by step (or by unroll) along its first axis.
"""

import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as onp

from l2l_ref.baselines import adam_init, adam_update
from l2l_ref.checkpoint import write_atomically
from l2l_ref.lstm import OptimizerConfig
from l2l_ref.meta_train import assign_networks, init_phi, start_hidden
from l2l_ref.preprocessing import PREPROCESSORS
from l2l_ref.problems import Problem, mlp, quadratic, simple
from l2l_ref.tree import flatten
from l2l_ref.unroll import meta_gradient

FORMAT = "l2l-ref-vectors"
VERSION = 1
ADAM = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}  # Torch7 adam, ε added to sqrt(v)


@dataclass(frozen=True)
class Case:
    """One reference computation and what it is there to catch."""

    name: str
    description: str
    catches: str
    problem: Problem
    optimizer: OptimizerConfig
    weights: tuple[float, ...]  # w_0..w_T of every unroll
    unrolls: int = 2
    meta_lr: float = 0.1
    second_order: bool = False
    seed: int = 0
    problem_formula: str = ""
    notes: dict = field(default_factory=dict)

    @property
    def unroll(self) -> int:
        return len(self.weights) - 1

    @property
    def steps(self) -> int:
        return self.unroll * self.unrolls


def _tiny_images(seed: int = 7, n: int = 16, d: int = 8, classes: int = 3) -> tuple:
    """A labelled set of n random 'images' of d pixels, every class present."""
    rng = onp.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    labels[:classes] = onp.arange(classes)
    return rng.random((n, d)), labels


QUADRATIC = "f(θ) = mean_b ‖W_b x_b − y_b‖², θ = {x: (B, d)}, W: (B, d, d), y: (B, d)"
MLP = (
    "f(θ, t) = mean over the minibatch indices[t] of −log softmax(logits)[label]; "
    "logits = act(… act(images W0 + b0) …) W_L + b_L, act only between layers"
)


def plain(**settings) -> OptimizerConfig:
    """The optimizer of a case. The vectors hold the definition's values: the plain traced cell
    and the traced meta-gradient, never the fused versions (whose rounding may change)."""
    return OptimizerConfig(cell="plain", **settings)


PAPER = plain()
PAPER_WEIGHTS = (0.0,) + (1.0,) * 5  # Σ_{t=1..T} f, T = 5
SMALL_QUADRATIC = quadratic(dims=10, batch=2)
IMAGES, LABELS = _tiny_images()
CASES = (
    Case(
        "torch-simple",
        "spec §5, the original Torch test: f(x) = x², x_0 = 1, no LSTM layer (g = w·∇ + b, "
        "w = b = 0), Σ_{t=0..5} f, meta-Adam lr 0.01; two unrolls of 5",
        "the update rule θ + g, the meta-loss sum, Torch7's Adam, truncation; "
        "loss[10] = f(x_5) of the second unroll = 0.7325326 (Torch, float32: 0.7325327)",
        simple(),
        plain(layers=(), init="zeros"),
        (1.0,) * 6,
        meta_lr=0.01,
        problem_formula="f(θ) = x², θ = {x: ()}",
    ),
    Case(
        "quadratic-paper",
        "the paper's quadratic preset, 2×20 LSTM, no preprocessing, Σ_{t=1..T} f; "
        "2 problems of 10 dimensions, two unrolls of 5",
        "gate order, forget bias, weight layout, initial state, stop-gradient on ∇_t",
        SMALL_QUADRATIC,
        PAPER,
        PAPER_WEIGHTS,
        problem_formula=QUADRATIC,
    ),
    Case(
        "quadratic-second-order",
        "quadratic-paper with the exact second derivatives (∂∇_t/∂φ kept)",
        "Hessian-vector products of f in the meta-gradient; forward stages equal quadratic-paper's",
        SMALL_QUADRATIC,
        PAPER,
        PAPER_WEIGHTS,
        unrolls=1,  # so that a first-order implementation can check every forward stage
        second_order=True,
        problem_formula=QUADRATIC,
    ),
    Case(
        "quadratic-weights",
        "quadratic-paper with non-uniform weights w = (0, 0.5, 0, 2, 1, 0.25)",
        "weights applied to the wrong f(θ_t) (off by one), weights ignored",
        SMALL_QUADRATIC,
        PAPER,
        (0.0, 0.5, 0.0, 2.0, 1.0, 0.25),
        problem_formula=QUADRATIC,
    ),
    Case(
        "several-tensors",
        "softmax regression, tensors W0 (8, 3) and b0 (3,), minibatches of 4 of 16 images; "
        "one network serves both tensors",
        "hidden-state rows shared between tensors or misaligned (spec §6)",
        mlp({"train": (IMAGES, LABELS)}, hidden=(), batch=4, name="tiny-mlp"),
        PAPER,
        PAPER_WEIGHTS,
        problem_formula=MLP,
    ),
    Case(
        "mlp-preprocessed",
        "MLP 8-5-3 sigmoid, minibatches of 4; Appendix A preprocessing p = 10, output scale 0.1",
        "p = 5 for 10, e^p wrong, log 0, the small-gradient branch, output scale forgotten",
        mlp({"train": (IMAGES, LABELS)}, hidden=(5,), batch=4, name="tiny-mlp"),
        plain(preprocessing="appendix_a", preprocessing_param=10.0, output_scale=0.1),
        PAPER_WEIGHTS,
        problem_formula=MLP,
    ),
    Case(
        "deepmind-quadratic",
        "the released code's preset: Uniform[0, 1) quadratic, LogAndSign k = 5, "
        "Σ_{t=0..T} f, meta-Adam lr 0.001",
        "the released preprocessing (ε inside the log, clipping), f(θ_0) in the meta-loss value",
        quadratic(dims=10, batch=2, distribution="uniform"),
        plain(preprocessing="log_and_sign", preprocessing_param=5.0),
        (1.0,) * 6,
        meta_lr=0.001,
        problem_formula=QUADRATIC,
    ),
)


def _stack(records: list) -> onp.ndarray:
    return onp.stack([onp.asarray(r, dtype=onp.float64) for r in records])


def compute(case: Case) -> dict[str, onp.ndarray]:
    """Inputs and expected float64 stages of one case (keys as docs/vectors.md lists them)."""
    rng = onp.random.default_rng(case.seed)
    instance = case.problem.sample(rng, lambda a: onp.array(a, dtype=onp.float64))
    groups = assign_networks(instance.theta0, case.problem, case.optimizer)
    phi = init_phi(rng, groups, case.optimizer, lambda a: onp.array(a, dtype=onp.float64))
    preprocess, _ = PREPROCESSORS[case.optimizer.preprocessing]

    arrays = {f"input/phi/{k}": v for k, v in flatten(phi).items()}
    arrays.update({f"input/theta0/{k}": onp.asarray(v) for k, v in instance.theta0.items()})
    for key, value in instance.data.items():
        if isinstance(value, onp.ndarray):
            arrays[f"input/problem/{key}"] = value
    if "indices" in instance.data:  # the minibatch of every step t = 0..S
        draw = instance.data["indices"]
        arrays["input/problem/indices"] = onp.stack([draw(t) for t in range(case.steps + 1)])

    stages: dict[str, list] = {"loss": [instance.loss(instance.theta0, 0)]}
    stages.update({f"theta/{k}": [v] for k, v in instance.theta0.items()})

    def add(key, value):
        stages.setdefault(key, []).append(value)

    def record(t, grads, updates, hidden, theta, loss):
        for name, grad in grads.items():
            add(f"grad/{name}", grad)
            add(
                f"preprocessed/{name}",
                preprocess(onp.reshape(grad, (-1, 1)), case.optimizer.preprocessing_param),
            )
            for layer, (h, c) in enumerate(hidden[name]):
                add(f"lstm/{layer}/h/{name}", h)
                add(f"lstm/{layer}/c/{name}", c)
            add(f"update/{name}", updates[name])
            add(f"theta/{name}", theta[name])
        add("loss", loss)

    theta, hidden = instance.theta0, start_hidden(instance.theta0, case.optimizer)
    adam = adam_init(phi)
    for k in range(case.unrolls):
        phi_grad, L, theta, hidden = meta_gradient(
            phi, theta, hidden, instance, k * case.unroll, case.weights, groups,
            case.optimizer, case.second_order, record,
        )  # fmt: skip
        phi, adam = adam_update(phi, phi_grad, adam, case.meta_lr, **ADAM)
        add("meta_loss", L)
        for key, value in flatten(phi_grad).items():
            add(f"meta_grad/{key}", value)
        for key, value in flatten(phi).items():
            add(f"phi/{key}", value)
    arrays.update({key: _stack(values) for key, values in stages.items()})
    return arrays


def describe(case: Case, arrays: dict) -> dict:
    """The manifest entry of a case: everything besides arrays needed to recompute it."""
    theta0 = {
        k[len("input/theta0/") :]: list(v.shape)
        for k, v in arrays.items()
        if k.startswith("input/theta0/")
    }
    return {
        "name": case.name,
        "file": f"{case.name}.npz",
        "description": case.description,
        "catches": case.catches,
        "problem": {
            "name": case.problem.name,
            "settings": case.problem.settings,
            "formula": case.problem_formula,
        },
        "optimizer": asdict(case.optimizer),
        "groups": assign_networks(theta0, case.problem, case.optimizer),
        "tensors": theta0,
        "unroll": case.unroll,
        "unrolls": case.unrolls,
        "steps": case.steps,
        "weights": list(case.weights),
        "second_order": case.second_order,
        "meta_adam": {"lr": case.meta_lr, **ADAM},
        "arrays": {key: list(value.shape) for key, value in sorted(arrays.items())},
    }


def npz_bytes(arrays: dict) -> bytes:
    """An .npz archive of `arrays` whose bytes depend on the arrays only (sorted names, fixed
    timestamps), so that re-exporting unchanged vectors changes no file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as entry:
                onp.lib.format.write_array(entry, onp.asarray(arrays[key]), allow_pickle=False)
    return buffer.getvalue()


def export(out: Path, cases=CASES) -> list[Path]:
    """Write manifest.json and one .npz per case into `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    entries, written = [], []
    for case in cases:
        arrays = compute(case)
        entries.append(describe(case, arrays))
        path = out / f"{case.name}.npz"
        write_atomically(path, npz_bytes(arrays))
        written.append(path)
    manifest = {"format": FORMAT, "version": VERSION, "dtype": "float64", "cases": entries}
    path = out / "manifest.json"
    write_atomically(path, (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode())
    return [path, *written]
