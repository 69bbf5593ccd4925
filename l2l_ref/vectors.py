"""Reference vectors: every stage of small computations of the method, for other
implementations to check themselves against (docs/vectors.md documents the format; `l2l-ref
verify` compares).

A meta case is one epoch of a few truncated unrolls on one optimizee: from θ_0 and zero hidden
state, each unroll runs T steps of Eq. 1, gives the meta-loss of Eq. 3 and its meta-gradient,
and one meta-Adam step on φ; θ and the hidden state carry over to the next unroll. The baselines
case runs the four hand-designed optimizers of Section 3 for a few steps. Each case stores all
its inputs (φ, θ_0, the problem's data, minibatch indices) and the float64 value of every
stage, each array indexed by step (or by unroll) along its first axis; and names, for each bug
it is there to catch, the stage where verify reports it first (tests plant every one of them).
"""

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import autograd.numpy as np
import numpy as onp
from autograd import grad

from l2l_ref.architectures import LSTMGAC, NTMBFGS
from l2l_ref.baselines import BASELINES, adam_init, adam_update
from l2l_ref.files import npz_bytes, write_atomically
from l2l_ref.optimizer import (
    LearnedOptimizer,
    OptimizerConfig,
    assign_networks,
    init_phi,
    start_hidden,
)
from l2l_ref.preprocessing import PREPROCESSORS
from l2l_ref.problems import Instance, Problem, conv_net, mlp, quadratic, simple
from l2l_ref.tree import flatten
from l2l_ref.unroll import meta_gradient
from l2l_ref.vector_format import (
    ADAM,
    BASELINE_HYPER,
    BASELINE_STATES,
    DEFAULT_FOLDER,
    FORMAT,
    TOLERANCE,
    VERSION,
)  # fmt: skip

__all__ = ["CASES", "DEFAULT_FOLDER", "FORMAT", "TOLERANCE", "VERSION", "compute", "export"]


@dataclass(frozen=True)
class Catch:
    """A bug a case is there to expose, and where verify reports it first: the step (or
    unroll), the stage and, where the stage has several, the tensor (an optimizee tensor, or
    a path of φ)."""

    bug: str
    where: str
    stage: str
    tensor: str | None = None
    float32: bool = True  # also caught at the float32 tolerance
    why: str = ""  # when float32 is False: why not

    def describe(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


@dataclass(frozen=True)
class Case:
    """One reference meta-training computation and what it is there to catch."""

    name: str
    description: str
    catches: tuple[Catch, ...]
    problem: Problem
    optimizer: OptimizerConfig
    weights: tuple[float, ...]  # w_0..w_T of every unroll
    unrolls: int = 2
    meta_lr: float = 0.1
    second_order: bool = False
    seed: int = 0
    problem_formula: str = ""
    kind: str = "meta"

    @property
    def unroll(self) -> int:
        return len(self.weights) - 1

    @property
    def steps(self) -> int:
        return self.unroll * self.unrolls


@dataclass(frozen=True)
class BaselinesCase:
    """The four baselines (Torch7 definitions, docs/spec.md §3) run from one θ_0 at fixed rates."""

    name: str
    description: str
    catches: tuple[Catch, ...]
    problem: Problem
    learning_rates: dict = field(default_factory=dict)
    steps: int = 6
    seed: int = 0
    problem_formula: str = ""
    kind: str = "baselines"


# each baseline's fixed hyper-parameters and the named parts of its state, each a dict of
# tensors (the names in BASELINE_STATES)
_STATE_PARTS = {
    "mean_square": lambda state: state, "m": lambda state: state["m"],
    "v": lambda state: state["v"], "velocity": lambda state: state,
}  # fmt: skip
BASELINE_SETTINGS = {
    name: (BASELINE_HYPER[name], {part: _STATE_PARTS[part] for part in parts})
    for name, parts in BASELINE_STATES.items()
}


def _images(seed: int = 7, n: int = 16, d: int = 8, classes: int = 3) -> tuple:
    """A labelled set of n random 'images' of d pixels, every class present. Pixel 0 is black
    in every image (its weights get exactly zero gradients, like MNIST's border pixels) and
    pixel 1 is dim (gradients below Appendix A's e^{-10})."""
    rng = onp.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    labels[:classes] = onp.arange(classes)
    images = rng.random((n, d))
    images[:, 0] = 0.0
    images[:, 1] *= 1e-3
    return images, labels


def _conv_images(seed: int = 11, n: int = 6, size: int = 5, classes: int = 3) -> tuple:
    """n random single-channel size × size images for the conv net, every class present."""
    rng = onp.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    labels[:classes] = onp.arange(classes)
    return rng.random((n, size, size, 1)), labels


def tied_conv() -> Problem:
    """The conv-net case's optimizee on images of small integers (0, 1, 2) with a first
    kernel of small integers (−1, 0, 1) at θ_0: the convolution's sums are exact, and batch
    norm and ReLU map equal numbers to equal numbers, so that at step 0 many 2 × 2 pooling
    windows have their maximum twice or more, at a positive value, over different inputs (a
    test counts them); which of the tied positions gets the gradient then changes the
    kernel's gradient."""
    rng = onp.random.default_rng(3)
    images = rng.integers(0, 3, (6, 6, 6, 1)).astype(float)
    kernel = rng.integers(-1, 2, (3, 3, 1, 2)).astype(float)
    base = conv_net(
        {"train": (images, onp.arange(6) % 3)}, (2,), 3, 4, batch=4, init_std=0.3,
        name="tiny-conv", biases=False,
    )  # fmt: skip

    def sample(rng, to_device, split="train") -> Instance:
        instance = base.sample(rng, to_device, split)
        theta0 = {**instance.theta0, "conv0_W": to_device(kernel)}
        return Instance(theta0, instance.loss, instance.data)

    settings = {**base.settings, "data": "integers 0-2, conv0_W integers −1..1"}
    return Problem(base.name, settings, sample, base.groups)


def designed_quadratic() -> Problem:
    """The quadratic family's f (batch of 2, 10 dimensions) on data chosen so that its
    gradients reach the LSTM with every magnitude the preprocessing treats differently: W_b is
    diagonal with entries from 0 (a coordinate whose gradient is exactly 0 at every step) to
    30, y has both signs, so that ∇ = W_bᵀ(W_b x_b − y_b) spans 1e-8 … 1e3 around the
    thresholds e^{±5} of LogAndSign(5)."""
    a = onp.array(
        [[0.0, 1e-4, 1e-3, 0.02, 0.08, 0.3, 1.0, 3.0, 12.0, 30.0],
         [0.0, 3e-4, 3e-3, 0.05, 0.1, 0.5, 2.0, 6.0, 20.0, 25.0]]
    )  # fmt: skip
    y = onp.array(
        [[1.0, 1e-4, -2.0, 0.3, -0.09, 0.02, -0.5, 1.5, -8.0, 9.0],
         [-1.0, -2e-4, 1.0, -0.2, 0.08, -0.04, 0.8, -1.2, 10.0, -6.0]]
    )  # fmt: skip
    W = onp.stack([onp.diag(row) for row in a])
    settings = {**quadratic(dims=10, batch=2).settings, "distribution": "designed"}

    def sample(rng, to_device, split="train") -> Instance:
        W_device, y_device = to_device(W), to_device(y)

        def loss(theta, t):
            residual = np.reshape(W_device @ np.reshape(theta["x"], (2, 10, 1)), (2, 10))
            return np.mean(np.sum((residual - y_device) ** 2, axis=1))

        theta0 = {"x": to_device(0.01 * rng.standard_normal((2, 10)))}
        return Instance(theta0, loss, {"W": W, "y": y})

    return Problem("quadratic", settings, sample)


QUADRATIC = "f(θ) = mean_b ‖W_b x_b − y_b‖², θ = {x: (B, d)}, W: (B, d, d), y: (B, d)"
MLP = (
    "f(θ, t) = mean over the minibatch indices[t] of −log softmax(logits)[label]; "
    "logits = act(… act(images W0 + b0) …) W_L + b_L, act only between layers"
)
CONV = (
    "f(θ, t) = mean cross-entropy on the minibatch indices[t]: per conv layer k, "
    "x ← maxpool2(relu(bn(conv_same(x, conv{k}_W) + conv{k}_b, conv{k}_offset))); "
    "x ← relu(bn(flatten(x) fc_W + fc_b, fc_offset)); logits = x out_W + out_b"
)


def plain(**settings) -> OptimizerConfig:
    """The optimizer of a case. The vectors hold the definition's values: the plain traced cell
    and the traced meta-gradient, never the fused versions (whose rounding may change)."""
    return OptimizerConfig(cell="plain", **settings)


PAPER = plain()
PAPER_WEIGHTS = (0.0,) + (1.0,) * 5  # Σ_{t=1..T} f, T = 5
SMALL_QUADRATIC = quadratic(dims=10, batch=2)
IMAGES, LABELS = _images()
TINY_MLP = mlp({"train": (IMAGES, LABELS)}, hidden=(5,), batch=4, name="tiny-mlp")
# LSTM+GAC with mlp-preprocessed's preprocessing and scale
TINY_GAC = plain(
    preprocessing="appendix_a", preprocessing_param=10.0, output_scale=0.1, architecture=LSTMGAC()
)
PREPROCESSED_INPUT = "preprocessed input"
FIRST_C = "LSTM layer 0 c"
CASES = (
    Case(
        "torch-simple",
        "docs/spec.md §5, the original Torch test: f(x) = x², x_0 = 1, no LSTM layer (g = w·∇ + b, "
        "w = b = 0), Σ_{t=0..5} f, meta-Adam lr 0.01; two unrolls of 5; "
        "loss[10] = f(x_5) of the second unroll = 0.73253262 (Torch, float32: 0.7325327)",
        (
            Catch("θ − g for θ + g", "step 6", "θ_t", "x"),
            Catch("meta-loss from t = 1", "unroll 0", "meta-loss"),
            Catch("Adam without bias correction", "unroll 0", "φ after meta-Adam", "all/head/W"),
        ),
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
        (
            Catch("gate order", "step 0", FIRST_C, "x"),
            Catch("no forget bias", "step 1", FIRST_C, "x"),
            Catch("rows of W swapped", "step 0", FIRST_C, "x"),
            Catch("state zeroed at the cut", "step 5", FIRST_C, "x"),
            Catch("θ reset at the cut", "step 5", "gradient ∇_t", "x"),
            Catch("f(θ_0) in the loss", "unroll 0", "meta-loss"),
            Catch("no stop-gradient", "unroll 0", "meta-gradient", "all/head/W"),
            Catch("both bias gradients added", "unroll 0", "meta-gradient", "all/lstm/0/b"),
            Catch("meta-gradients accumulated", "unroll 1", "meta-gradient", "all/head/W"),
            Catch(
                "PyTorch's Adam",
                "unroll 0",
                "φ after meta-Adam",
                "all/lstm/0/W",
                float32=False,
                why="the smallest sqrt(v) is 3.9e-8, so ε/sqrt(v) reaches 0.25 and φ moves by "
                "1.3e-3 of the stage's scale at all/lstm/0/W (3.6e-2 at all/lstm/1/W): a float32 "
                "candidate diverges there, but by 1.3 times the tolerance, short of the factor 2 "
                "a claim needs; the baselines case catches it in float32 with that margin",
            ),
        ),
        SMALL_QUADRATIC,
        PAPER,
        PAPER_WEIGHTS,
        problem_formula=QUADRATIC,
    ),
    Case(
        "quadratic-second-order",
        "quadratic-paper with the exact second derivatives (∂∇_t/∂φ kept); one unroll",
        (Catch("stop-gradient", "unroll 0", "meta-gradient", "all/head/W"),),
        SMALL_QUADRATIC,
        PAPER,
        PAPER_WEIGHTS,
        unrolls=1,
        second_order=True,
        problem_formula=QUADRATIC,
    ),
    Case(
        "quadratic-weights",
        "quadratic-paper with non-uniform weights w = (0, 0.5, 0, 2, 1, 0.25)",
        (
            Catch("weights one step early", "unroll 0", "meta-loss"),
            Catch("weights ignored", "unroll 0", "meta-loss"),
        ),
        SMALL_QUADRATIC,
        PAPER,
        (0.0, 0.5, 0.0, 2.0, 1.0, 0.25),
        problem_formula=QUADRATIC,
    ),
    Case(
        "mlp-preprocessed",
        "MLP 8-5-3 sigmoid, tensors W0 (8, 5), b0 (5,), W1 (5, 3), b1 (3,), one network for "
        "all, minibatches of 4 of 16 images; Appendix A preprocessing p = 10, output scale 0.1; "
        "pixel 0 is black (exactly zero gradients), pixel 1 dim (gradients below e^{-p})",
        (
            Catch("cross-entropy summed over the minibatch", "step 0", "loss f(θ_t)"),
            Catch("shared hidden state", "step 1", FIRST_C, "b0"),
            Catch("one buffer updated in place", "step 0", FIRST_C, "b0"),
            Catch("p = 5", "step 0", PREPROCESSED_INPUT, "W0"),
            Catch("e^{-p} for e^p", "step 0", PREPROCESSED_INPUT, "W0"),
            Catch("no small-gradient branch", "step 0", PREPROCESSED_INPUT, "W0"),
            Catch("log 0", "step 0", PREPROCESSED_INPUT, "W0"),
            Catch("no output scale", "step 0", "update g_t", "W0"),
            # the head's bias is 0 at φ_0: where the scale is applied shows once meta-Adam moved it
            Catch("output scale before the head bias", "step 5", "update g_t", "W0"),
        ),
        TINY_MLP,
        plain(preprocessing="appendix_a", preprocessing_param=10.0, output_scale=0.1),
        PAPER_WEIGHTS,
        # meta-gradient entries of 1e-7 make Adam's step sensitive to their rounding; a small
        # step keeps φ well-conditioned for float32 implementations
        meta_lr=0.01,
        problem_formula=MLP,
    ),
    Case(
        "mlp-gac",
        "mlp-preprocessed's optimizee and preprocessing with LSTM+GAC: in each layer the last "
        "2 of 20 units send the mean of their h over every coordinate of the four tensors",
        (
            Catch("no global averaging", "step 0", "LSTM layer 0 h", "W0"),
            Catch("average over each tensor alone", "step 0", "LSTM layer 0 h", "W0"),
            Catch("cell state averaged too", "step 0", FIRST_C, "W0"),
            Catch("average on the next layer only", "step 1", FIRST_C, "W0"),
            Catch("the mean of each tensor's mean", "step 0", "LSTM layer 0 h", "W0"),
        ),
        TINY_MLP,
        TINY_GAC,
        PAPER_WEIGHTS,
        meta_lr=0.01,
        problem_formula=MLP,
    ),
    Case(
        "deepmind-quadratic",
        "the released code's preset: Uniform[0, 1) quadratic, LogAndSign k = 5, "
        "Σ_{t=0..T} f, meta-Adam lr 0.001 (its gradients are all large and negative: "
        "log-and-sign exercises the preprocessing)",
        (
            Catch("f(θ_0) left out of the released loss", "unroll 0", "meta-loss"),
            Catch("Appendix A (p = 10) for LogAndSign", "step 0", PREPROCESSED_INPUT, "x"),
        ),
        quadratic(dims=10, batch=2, distribution="uniform"),
        plain(preprocessing="log_and_sign", preprocessing_param=5.0),
        (1.0,) * 6,
        meta_lr=0.001,
        problem_formula=QUADRATIC,
    ),
    Case(
        "log-and-sign",
        "LogAndSign k = 5 (the released preprocessing) on a quadratic of designed data "
        "whose gradients span 1e-8 … 1e3 with both signs and exact zeros, across e^{-5} "
        "(the floor and the clip) and e^5 (the log above 1)",
        (
            Catch("no floor at −1", "step 0", PREPROCESSED_INPUT, "x"),
            Catch("sign for the clip", "step 0", PREPROCESSED_INPUT, "x"),
            Catch("log part clipped at 1", "step 0", PREPROCESSED_INPUT, "x"),
            Catch("e^{-k} for e^k", "step 0", PREPROCESSED_INPUT, "x"),
            Catch(
                "no ε in the log",
                "step 0",
                PREPROCESSED_INPUT,
                "x",
                float32=False,
                why="where the floor does not apply (|∇| > e^{-5}) ε moves ln(|∇| + ε)/5 by "
                "at most 3.5e-6, below the float32 tolerance",
            ),
            Catch(
                "Appendix A (p = k = 5) for LogAndSign",
                "step 0",
                PREPROCESSED_INPUT,
                "x",
                float32=False,
                why="at p = k the two maps differ only where LogAndSign adds ε inside the log "
                "and where it clips e^k ∇ (|∇| near e^{-5}): by up to 2.9e-6 of the stage here, "
                "below the float32 tolerance",
            ),
        ),
        designed_quadratic(),
        plain(preprocessing="log_and_sign", preprocessing_param=5.0),
        PAPER_WEIGHTS,
        problem_formula=QUADRATIC,
    ),
    Case(
        "conv-net",
        "the CIFAR conv net (one 3×3 convolution of 2 channels, batch norm, ReLU, max pool; a "
        "fully connected layer of 4 with batch norm and ReLU; 3 classes; without the biases "
        "before batch norm, whose gradients are round-off of 0) on 5×5 images, minibatches of "
        "4; two networks (2×8 LSTMs): conv (the convolution kernels) and fc (every other "
        "tensor); Appendix A, output scale 0.1",
        (
            Catch("one network for every tensor", "step 0", FIRST_C, "conv0_W"),
            Catch("unbiased batch variance", "step 0", "loss f(θ_t)"),
            Catch("convolution, not cross-correlation", "step 0", "loss f(θ_t)"),
            Catch(
                "batch norm's ε added to σ",
                "step 0",
                "loss f(θ_t)",
                float32=False,
                why="sqrt(var + ε) against sqrt(var) + ε moves the loss by 4.4e-4, below the "
                "float32 tolerance; a float32 candidate diverges first in the kernel's gradient "
                "(step 0, gradient ∇_t, conv0_W, by 0.33)",
            ),
        ),
        conv_net(
            {"train": _conv_images()},
            (2,),
            3,
            4,
            batch=4,
            init_std=0.3,
            name="tiny-conv",
            biases=False,
        ),
        plain(
            layers=(8, 8), preprocessing="appendix_a", preprocessing_param=10.0, output_scale=0.1
        ),
        PAPER_WEIGHTS,
        # batch norm over 4 images cancels many gradients exactly (an offset whose channel is
        # active everywhere, a weight whose input is constant over the batch), leaving
        # round-off that Appendix A magnifies by e^10; seed 7 is the first draw without any
        seed=7,
        problem_formula=CONV,
    ),
    Case(
        "conv-ties",
        "conv-net on images of small integers with a first kernel of small integers "
        "(tied_conv): at step 0 the 2 × 2 max pooling has ties at positive values, over "
        "different inputs, in many windows; the pooling's gradient is shared equally between "
        "the tied positions",
        (
            Catch("the first maximum takes the gradient", "step 0", "gradient ∇_t", "conv0_W"),
            Catch("every maximum takes the whole gradient", "step 0", "gradient ∇_t", "conv0_W"),
        ),
        tied_conv(),
        plain(
            layers=(8, 8), preprocessing="appendix_a", preprocessing_param=10.0, output_scale=0.1
        ),
        PAPER_WEIGHTS,
        unrolls=1,
        # as in conv-net, batch norm's exact cancellations leave round-off that Appendix A
        # magnifies; seed 4 is the first draw whose float32 candidate stays within 1/20 of the
        # tolerance (seeds 0-11 tried)
        seed=4,
        problem_formula=CONV,
    ),
    Case(
        "mlp-gac-networks",
        "mlp-gac with two networks: one serves W0 and b1, the other b0 and W1 (each network "
        "has tensors of both layers: the output layer's gradients sum to exactly 0 over its "
        "coordinates, which would leave a network of it alone a head bias gradient of "
        "round-off); each network's communication units average over its own tensors only",
        (Catch("average over every network's tensors", "step 0", "LSTM layer 0 h", "W0"),),
        dataclasses.replace(TINY_MLP, groups={"W0": "a", "b1": "a", "b0": "b", "W1": "b"}),
        TINY_GAC,
        PAPER_WEIGHTS,
        unrolls=1,
        meta_lr=0.01,
        problem_formula=MLP,
    ),
    Case(
        "quadratic-ntm-bfgs",
        "NTM-BFGS on quadratic-paper's problems (N = 20 coordinates): a controller of one "
        "LSTM+GAC layer of 6 units (the last 2 averaged), 1 read and 3 write heads, a window "
        "of 2 steps of writes in a run of 10, M_0 = I, writes scaled by 1/N; output scale 0.1; "
        "two unrolls of 5",
        (
            Catch("read before write", "step 0", "read i_t", "x"),
            Catch("M_0 = 0", "step 0", "read i_t", "x"),
            Catch("writes not scaled by 1/N", "step 0", "read i_t", "x"),
            Catch("a write head missing", "step 0", "memory a", "x"),
            Catch("window one step short", "step 1", "memory a", "x"),
            Catch("window one step long", "step 2", "read i_t", "x"),
        ),
        SMALL_QUADRATIC,
        plain(layers=(6,), output_scale=0.1, architecture=NTMBFGS(window=2)),
        PAPER_WEIGHTS,
        problem_formula=QUADRATIC,
    ),
    BaselinesCase(
        "baselines",
        "SGD, RMSprop, Adam and NAG as Torch7's optim computes them, 6 steps each from the "
        "same θ_0 of the tiny MLP (black and dim pixels as in mlp-preprocessed)",
        (
            Catch("cross-entropy summed over the minibatch", "step 0", "SGD loss f(θ_t)"),
            Catch("RMSprop ε inside the square root", "step 1", "RMSprop θ_t", "W0"),
            Catch("RMSprop mean square started at ∇²", "step 0", "RMSprop mean square", "W0"),
            Catch("RMSprop α and 1 − α swapped", "step 0", "RMSprop mean square", "W0"),
            Catch("Adam without bias correction", "step 1", "Adam θ_t", "W0"),
            Catch("PyTorch's Adam", "step 1", "Adam θ_t", "W0"),
            Catch("NAG gradient at θ", "step 1", "NAG gradient ∇_t", "W0"),
            Catch("PyTorch's Nesterov", "step 0", "NAG velocity", "W0"),
        ),
        # θ_0 ~ N(0, 0.05²): the layers' gradients within a factor of 10 of each other
        mlp({"train": (IMAGES, LABELS)}, hidden=(5,), batch=4, init_std=0.05, name="tiny-mlp"),
        {"SGD": 0.5, "RMSprop": 0.01, "Adam": 0.01, "NAG": 0.2},
        problem_formula=MLP,
    ),
)


def _stack(records: list) -> onp.ndarray:
    return onp.stack([onp.asarray(r, dtype=onp.float64) for r in records])


def _host(array) -> onp.ndarray:
    return onp.array(array, dtype=onp.float64)


def _sample(case) -> tuple[Instance, onp.random.Generator]:
    rng = onp.random.default_rng(case.seed)
    return case.problem.sample(rng, _host), rng


def _inputs(instance: Instance, steps: int) -> dict:
    arrays = {f"input/theta0/{k}": onp.asarray(v) for k, v in instance.theta0.items()}
    for key, value in instance.data.items():
        if isinstance(value, onp.ndarray):
            arrays[f"input/problem/{key}"] = value
    if "indices" in instance.data:  # the minibatch of every step t = 0..S
        draw = instance.data["indices"]
        arrays["input/problem/indices"] = onp.stack([draw(t) for t in range(steps + 1)])
    return arrays


def compute(case: Case) -> dict[str, onp.ndarray]:
    """Inputs and expected float64 stages of one meta case (keys as docs/vectors.md lists
    them)."""
    instance, rng = _sample(case)
    networks = assign_networks(instance.theta0, case.problem, case.optimizer)
    phi = init_phi(rng, networks, case.optimizer, _host)
    preprocess, _ = PREPROCESSORS[case.optimizer.preprocessing]

    arrays = {f"input/phi/{k}": v for k, v in flatten(phi).items()}
    arrays.update(_inputs(instance, case.steps))
    stages: dict[str, list] = {"loss": [instance.loss(instance.theta0, 0)]}
    stages.update({f"theta/{k}": [v] for k, v in instance.theta0.items()})

    def add(key, value):
        stages.setdefault(key, []).append(value)

    def record(t, grads, updates, hidden, theta, loss):
        for name, gradient in grads.items():
            add(f"grad/{name}", gradient)
            add(
                f"preprocessed/{name}",
                preprocess(onp.reshape(gradient, (-1, 1)), case.optimizer.preprocessing_param),
            )
            for key, value in case.optimizer.architecture.state_stages(hidden[name]).items():
                add(f"{key}/{name}", value)
            add(f"update/{name}", updates[name])
            add(f"theta/{name}", theta[name])
        add("loss", loss)

    theta, hidden = instance.theta0, start_hidden(instance.theta0, case.optimizer)
    adam = adam_init(phi)
    for k in range(case.unrolls):
        phi_grad, L, theta, hidden = meta_gradient(
            phi, theta, hidden, instance, k * case.unroll, case.weights,
            LearnedOptimizer(case.optimizer, networks), second_order=case.second_order,
            on_step=record,
        )  # fmt: skip
        phi, adam = adam_update(phi, phi_grad, adam, case.meta_lr, **ADAM)
        add("meta_loss", L)
        for key, value in flatten(phi_grad).items():
            add(f"meta_grad/{key}", value)
        for key, value in flatten(phi).items():
            add(f"phi/{key}", value)
    arrays.update({key: _stack(values) for key, values in stages.items()})
    return arrays


def compute_baselines(case: BaselinesCase) -> dict[str, onp.ndarray]:
    """Inputs and expected stages of the baselines case."""
    instance, _ = _sample(case)
    arrays = _inputs(instance, case.steps)
    for name, lr in case.learning_rates.items():
        arrays |= baseline_stages(name, lr, instance, case.steps)
    return arrays


def baseline_stages(name: str, lr: float, instance: Instance, steps: int) -> dict:
    """For one baseline: θ_t and f(θ_t) for t = 0..steps, the gradient it read at step t
    (NAG's at its look-ahead point) and its state after step t."""
    init, step = BASELINES[name]
    gradient = grad(instance.loss)
    stages: dict[str, list] = {}
    theta, state = instance.theta0, init(instance.theta0)
    read = {}  # the gradient each step read

    def add(part: str, tree: dict):
        for tensor, value in tree.items():
            stages.setdefault(f"baseline/{name}/{part}/{tensor}", []).append(value)

    for t in range(steps + 1):
        add("theta", theta)
        stages.setdefault(f"baseline/{name}/loss", []).append(instance.loss(theta, t))
        if t == steps:
            break
        theta, state = step(theta, state, lambda x, t=t: read.setdefault(t, gradient(x, t)), lr)
        add("grad", read[t])
        for part, of_state in BASELINE_SETTINGS[name][1].items():
            add(part, of_state(state))
    return {key: _stack(values) for key, values in stages.items()}


def describe(case, arrays: dict) -> dict:
    """The manifest entry of a case: everything besides arrays needed to recompute it."""
    theta0 = {
        k.removeprefix("input/theta0/"): list(v.shape)
        for k, v in arrays.items()
        if k.startswith("input/theta0/")
    }
    entry = {
        "name": case.name,
        "kind": case.kind,
        "file": f"{case.name}.npz",
        "description": case.description,
        "catches": [catch.describe() for catch in case.catches],
        "problem": {
            "name": case.problem.name,
            "settings": case.problem.settings,
            "formula": case.problem_formula,
        },
        "tensors": theta0,
        "steps": case.steps,
    }
    if case.kind == "baselines":
        entry["baselines"] = {
            name: {"lr": lr, **BASELINE_SETTINGS[name][0]}
            for name, lr in case.learning_rates.items()
        }
    else:
        entry |= {
            "optimizer": case.optimizer.record(),
            "groups": assign_networks(theta0, case.problem, case.optimizer),
            "unroll": case.unroll,
            "unrolls": case.unrolls,
            "weights": list(case.weights),
            "second_order": case.second_order,
            "meta_adam": {"lr": case.meta_lr, **ADAM},
        }
    entry["arrays"] = {key: list(value.shape) for key, value in sorted(arrays.items())}
    return entry


def export(out: Path, cases=CASES) -> list[Path]:
    """Write manifest.json and one .npz per case into `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    entries, written = [], []
    for case in cases:
        arrays = compute_baselines(case) if case.kind == "baselines" else compute(case)
        entries.append(describe(case, arrays))
        path = out / f"{case.name}.npz"
        write_atomically(path, npz_bytes(arrays))
        written.append(path)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "dtype": "float64",
        "tolerance": TOLERANCE,
        "cases": entries,
    }
    path = out / "manifest.json"
    write_atomically(path, (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode())
    return [path, *written]
