"""Problem families: what the optimizer learns to optimize (Section 3).

A family samples instances from a seeded host generator. An instance is one optimizee: its
initial parameters θ_0 (a dict of named tensors) and its loss f(θ, t). The step index t lets a
stochastic loss draw the minibatch of step t, the same one for f(θ_t) and for ∇_t. Families on
data sample from one split of it: "train" for meta-training, "validation" and "test" for the
problems of early stopping, baseline tuning and the final comparison (held-out images).
"""

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import autograd.numpy as np
import numpy as onp
from autograd import value_and_grad
from autograd.tracer import getval

from l2l_ref import checks, datasets
from l2l_ref.activations import relu, sigmoid
from l2l_ref.datasets import DEFAULT_DATA_DIR
from l2l_ref.errors import ConfigError
from l2l_ref.machine import available_memory
from l2l_ref.streams import rng_for

ToDevice = Callable[[onp.ndarray], Any]


@dataclass(frozen=True)
class Instance:
    """One optimizee: θ_0 and f(θ, t); `data` holds the host arrays that define f (what the
    reference vectors record so that another implementation can rebuild f).

    `value_and_grad(θ, t)`, if given, is (f(θ, t), ∇f(θ, t)) written by hand, a faster
    equivalent of autograd's value_and_grad(loss) (a test holds each to it); the fast paths
    use it (value_and_gradient), the traced definitions never do."""

    theta0: dict
    loss: Callable[[dict, int], Any]
    data: dict = field(default_factory=dict)
    value_and_grad: Callable[[dict, int], tuple] | None = None


def value_and_gradient(instance: Instance) -> Callable[[dict, int], tuple]:
    """(θ, t) -> (f(θ, t), ∇f(θ, t)): the instance's own, else autograd's."""
    return instance.value_and_grad or value_and_grad(instance.loss)


@dataclass(frozen=True)
class Problem:
    """A family of optimizees, named with every setting that defines it."""

    name: str
    settings: dict
    sample: Callable[..., Instance]  # (rng, to_device, split="train") -> Instance
    groups: dict[str, str] = field(default_factory=dict)  # tensor -> parameter group

    def group_of(self, tensor: str) -> str:
        return self.groups.get(tensor, "all")

    def describe(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"{self.name} ({settings})" if settings else self.name


def host_float64(array) -> onp.ndarray:
    """The default device: host NumPy arrays in float64."""
    return onp.array(array, dtype=onp.float64)


def checked_sample(problem: Problem, rng, to_device: ToDevice, split: str) -> Instance:
    """problem.sample(rng, to_device, split), with the contract of a problem family checked,
    so that a mistake in a family of one's own is one line naming it rather than an error
    deep inside an unroll: sample takes (rng, to_device, split) and returns an Instance; θ_0
    is a dict of float arrays; loss takes (θ, t)."""
    name = f"problem {problem.name}"
    try:
        inspect.signature(problem.sample).bind(rng, to_device, split)
    except TypeError:
        raise ConfigError(f"{name}: sample must take (rng, to_device, split)") from None
    except ValueError:  # a builtin without a signature: let the call say
        pass
    instance = problem.sample(rng, to_device, split)
    if not isinstance(instance, Instance):
        raise ConfigError(f"{name}: sample returned {type(instance).__name__}, not an Instance")
    theta0 = instance.theta0
    if not isinstance(theta0, dict) or not theta0:
        raise ConfigError(
            f"{name}: θ_0 must be a dict of named arrays (e.g. {{'w': …}}), "
            f"not {type(theta0).__name__}"
        )
    for key, value in theta0.items():
        kind = getattr(getattr(value, "dtype", None), "kind", None)
        if kind != "f":
            raise ConfigError(
                f"{name}: θ_0[{key!r}] must be a float array made by to_device, "
                f"not {getattr(value, 'dtype', type(value).__name__)}"
            )
    try:
        inspect.signature(instance.loss).bind(theta0, 0)
    except TypeError:
        raise ConfigError(f"{name}: loss must take (theta, t), t the step") from None
    except ValueError:
        pass
    return instance


def draw_problems(
    problem: Problem, seed: int, split: str, count: int, to_device: ToDevice
) -> list[Instance]:
    """The first `count` problems of a seed's `split` ("validation" or "test"), each split
    from its own stream (streams.rng_for): early stopping and the tuning of the baselines see
    the same validation problems because both draw them here."""
    rng = rng_for(seed, split)
    return [checked_sample(problem, rng, to_device, split) for _ in range(count)]


def check_fits(numbers: int, what: str) -> None:
    """Refuse, before drawing anything, a problem whose instance alone (`numbers` float64s)
    exceeds the memory this machine has available (settings read from a file can be any)."""
    available = available_memory()
    if available is not None and numbers * 8 > available:
        raise ConfigError(
            f"{what}: one instance needs {numbers * 8 / 2**30:.3g} GiB, and "
            f"{available / 2**30:.1f} GiB are available"
        )


def quadratic(
    dims: int = 10, batch: int = 128, distribution: str = "gaussian", init_std: float = 0.01
) -> Problem:
    """Quadratics f(θ) = mean_b ‖W_b θ_b − y_b‖² over a batch of independent problems (§3).

    distribution "gaussian": W, y entries IID N(0, 1) (the paper); "uniform": Uniform[0, 1)
    (the released code). θ_0 ~ N(0, init_std²) as in the released code.
    """
    if distribution not in ("gaussian", "uniform"):
        raise ConfigError(f"unknown quadratic distribution {distribution!r} (gaussian or uniform)")
    checks.integer(dims, "quadratic dims", 1)
    checks.integer(batch, "quadratic batch", 1)
    check_fits(batch * dims * (dims + 2), f"a quadratic of {batch} × {dims} dimensions")

    def sample(rng: onp.random.Generator, to_device: ToDevice, split: str = "train") -> Instance:
        draw = rng.standard_normal if distribution == "gaussian" else rng.random
        host_W, host_y = draw((batch, dims, dims)), draw((batch, dims))
        W, y = to_device(host_W), to_device(host_y)
        theta0 = {"x": to_device(init_std * rng.standard_normal((batch, dims)))}

        def loss(theta: dict, t: int):
            return np.mean(np.sum(quadratic_residual(theta["x"], W, y) ** 2, axis=1))

        def loss_and_gradient(theta: dict, t: int) -> tuple:
            return quadratic_value_and_grad(theta["x"], W, y)

        return Instance(theta0, loss, {"W": host_W, "y": host_y}, loss_and_gradient)

    settings = {"dims": dims, "batch": batch, "distribution": distribution, "init_std": init_std}
    return Problem("quadratic", settings, sample)


def quadratic_residual(x, W, y):
    """W_b θ_b − y_b for each problem b of the batch: θ (B, D), W (B, D, D), y (B, D)."""
    batch, dims = np.shape(x)
    return np.reshape(W @ np.reshape(x, (batch, dims, 1)), (batch, dims)) - y


def quadratic_value_and_grad(x, W, y) -> tuple:
    """f(θ) = mean_b ‖W_b θ_b − y_b‖² and ∇f = (2/B) W_bᵀ (W_b θ_b − y_b) by hand, with
    autograd's arithmetic step for step, so that the fast paths' gradient is the same bits as
    autograd's (a test holds them equal): its chain runs in float64 whatever θ's precision
    (the mean divides by a NumPy integer, 1/B in float64), then is rounded to θ's dtype."""
    batch, dims = np.shape(x)
    residual = quadratic_residual(x, W, y)
    loss = np.mean(np.sum(residual**2, axis=1))
    # ∂loss/∂residual: 1/B from the mean, times 2 from the square (exact), times the residual
    adjoint = (onp.float64(1 / batch) * 2) * residual
    gradient = np.matmul(np.swapaxes(W, 1, 2), np.reshape(adjoint, (batch, dims, 1)))
    return loss, {"x": np.reshape(gradient, (batch, dims)).astype(x.dtype)}


def simple() -> Problem:
    """f(x) = x² from x_0 = 1: the problem of the original Torch test (docs/spec.md §5)."""

    def sample(rng: onp.random.Generator, to_device: ToDevice, split: str = "train") -> Instance:
        return Instance({"x": to_device(onp.array(1.0))}, lambda theta, t: theta["x"] ** 2)

    return Problem("simple", {}, sample)


ACTIVATIONS = {"sigmoid": sigmoid, "relu": relu}


def mlp(
    splits: dict,
    hidden: tuple[int, ...] = (20,),
    activation: str = "sigmoid",
    batch: int = 128,
    init_std: float = 0.01,
    name: str = "mlp",
    settings: dict | None = None,
) -> Problem:
    """Cross-entropy of a multi-layer perceptron on minibatches of a labelled image set (§3).

    splits: {split: (images (N, ...), labels (N,) integers in [0, classes))}; images are
    flattened. Tensors W0, b0, W1, b1, ... with θ_0 ~ N(0, init_std²) as in the released code.
    The minibatch of step t is `batch` distinct images drawn from a generator seeded by (the
    instance's seed, t): the same for f(θ_t) and ∇_t, whatever the order of calls.
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"unknown activation {activation!r} (choose from {', '.join(ACTIVATIONS)})"
        )
    for k, units in enumerate(hidden):
        checks.integer(units, f"hidden[{k}]", 1)
    checks.integer(batch, "batch", 1)
    check_batch(splits, batch)
    classes = int(max(labels.max() for _, labels in splits.values())) + 1
    sizes = (int(onp.prod(splits["train"][0].shape[1:])), *hidden, classes)
    check_fits(sum(a * b + b for a, b in pairwise(sizes)), f"an MLP of sizes {list(sizes)}")
    act = ACTIVATIONS[activation]

    def sample(rng: onp.random.Generator, to_device: ToDevice, split: str = "train") -> Instance:
        theta0 = {}
        for k, (n_in, n_out) in enumerate(pairwise(sizes)):
            theta0[f"W{k}"] = to_device(init_std * rng.standard_normal((n_in, n_out)))
            theta0[f"b{k}"] = to_device(init_std * rng.standard_normal(n_out))
        minibatch, data = minibatches(rng, splits, split, classes, batch, to_device)

        def loss(theta: dict, t: int):
            images, y = minibatch(t)
            x = np.reshape(images, (batch, -1))
            for k in range(len(sizes) - 1):
                x = x @ theta[f"W{k}"] + theta[f"b{k}"]
                if k < len(sizes) - 2:
                    x = act(x)
            return cross_entropy(x, y)

        def loss_and_gradient(theta: dict, t: int) -> tuple:
            images, y = minibatch(t)
            return mlp_value_and_grad(theta, np.reshape(images, (batch, -1)), y, activation)

        return Instance(theta0, loss, data, loss_and_gradient)

    base = {"hidden": list(hidden), "activation": activation, "batch": batch}
    return Problem(name, {**(settings or {}), **base, "init_std": init_std}, sample)


def check_batch(splits: dict, batch: int) -> None:
    """A minibatch of `batch` distinct images must fit in every split."""
    smallest = min(splits, key=lambda split: len(splits[split][0]))
    if not 1 <= batch <= len(splits[smallest][0]):
        raise ConfigError(
            f"minibatch of {batch} images, but the {smallest} split has {len(splits[smallest][0])}"
        )


def minibatches(
    rng: onp.random.Generator, splits: dict, split: str, classes: int, batch: int, to_device
) -> tuple:
    """The minibatches of one instance on the images of `split`: minibatch(t) gives the images
    and one-hot labels of step t, `batch` distinct images drawn from a generator seeded by
    (the instance's seed, t), so f(θ_t) and ∇_t read the same ones whatever the order of calls.
    Also returns the host data that define them (Instance.data)."""
    images, labels = splits[split]
    batch_seed = int(rng.integers(2**63))

    def indices(t: int) -> onp.ndarray:
        return onp.random.default_rng([batch_seed, t]).choice(len(images), batch, replace=False)

    @lru_cache(maxsize=2)  # f(θ_t) and ∇_t read the same minibatch
    def minibatch(t: int) -> tuple:
        chosen = indices(t)
        return to_device(images[chosen]), to_device(onp.eye(classes)[labels[chosen]])

    return minibatch, {
        "images": images,
        "labels": labels,
        "batch_seed": batch_seed,
        "indices": indices,
    }


def mlp_value_and_grad(theta: dict, x, onehot, activation: str) -> tuple:
    """The MLP's cross-entropy and its gradient by hand-written backpropagation: the loss of
    `mlp` and autograd's gradient of it (tests hold them to each other). θ's tensors may carry
    leading axes of their own (several nets at once, one per index): W (..., n_in, n_out), b
    (..., n_out); the loss then has those axes."""
    layers = len([k for k in theta if k.startswith("W")])
    inputs, a = [], x
    for k in range(layers):
        inputs.append(a)
        a = a @ theta[f"W{k}"] + theta[f"b{k}"][..., None, :]
        if k < layers - 1:
            a = ACTIVATIONS[activation](a)
    shifted = a - np.max(a, axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    loss = -np.mean(np.sum(onehot * log_probs, axis=-1), axis=-1)
    delta = (np.exp(log_probs) - onehot) / np.shape(x)[0]  # ∂loss/∂logits
    grads = {}
    for k in reversed(range(layers)):
        grads[f"W{k}"] = np.swapaxes(inputs[k], -1, -2) @ delta
        grads[f"b{k}"] = np.sum(delta, axis=-2)
        if k > 0:
            below = inputs[k]  # act(z) of the layer below
            slope = below * (1.0 - below) if activation == "sigmoid" else (below > 0)
            delta = (delta @ np.swapaxes(theta[f"W{k}"], -1, -2)) * slope
    return loss, {name: grads[name] for name in theta}


def cross_entropy(logits, onehot):
    """Mean softmax cross-entropy of rows of logits against one-hot labels."""
    # the shift by the row maximum changes no value or gradient of the log-softmax
    shifted = logits - getval(np.max(logits, axis=1, keepdims=True))
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return -np.mean(np.sum(onehot * log_probs, axis=1))


def mnist(
    data_dir: str = str(DEFAULT_DATA_DIR),
    hidden: tuple[int, ...] = (20,),
    activation: str = "sigmoid",
    batch: int = 128,
    init_std: float = 0.01,
) -> Problem:
    """The paper's MNIST optimizee (§3): an MLP, base net 784-20-10 sigmoid, on the IDX image
    set in data_dir (MNIST or Fashion-MNIST; by default Debian's Fashion-MNIST)."""
    _, splits = datasets.load(Path(data_dir))
    settings = {"data_dir": str(Path(data_dir).resolve())}
    return mlp(splits, tuple(hidden), activation, batch, init_std, "mnist", settings)


def conv2d(x, kernel):
    """Convolution (cross-correlation) with stride 1 and SAME zero padding, as a sum over the
    kernel's offsets: x (N, H, W, C_in), kernel (k, k, C_in, C_out) → (N, H, W, C_out)."""
    k, (n, height, width, channels) = kernel.shape[0], x.shape
    before, after = (k - 1) // 2, k // 2
    rows = [np.zeros_like(x, shape=(n, pad, width, channels)) for pad in (before, after)]
    x = np.concatenate([rows[0], x, rows[1]], axis=1)
    columns = [
        np.zeros_like(x, shape=(n, height + k - 1, pad, channels)) for pad in (before, after)
    ]
    x = np.concatenate([columns[0], x, columns[1]], axis=2)
    out = 0.0
    for i in range(k):
        for j in range(k):
            out = out + x[:, i : i + height, j : j + width, :] @ kernel[i, j]
    return out


def max_pool(x):
    """2 × 2 max pooling with stride 2 (VALID: an odd last row or column is dropped)."""
    n, height, width, channels = x.shape
    x = x[:, : height // 2 * 2, : width // 2 * 2, :]
    return np.max(np.reshape(x, (n, height // 2, 2, width // 2, 2, channels)), axis=(2, 4))


def batch_norm(x, offset, eps: float = 1e-3):
    """Batch normalisation over every axis but the last, with a learned offset and no scale
    (the released code's), in training mode: the statistics of the minibatch itself."""
    axes = tuple(range(x.ndim - 1))
    centred = x - np.mean(x, axis=axes, keepdims=True)
    return centred / np.sqrt(np.mean(centred**2, axis=axes, keepdims=True) + eps) + offset


def conv_net(
    splits: dict,
    channels: tuple[int, ...] = (16, 16, 16),
    kernel: int = 5,
    fc: int = 32,
    batch: int = 128,
    init_std: float = 0.01,
    name: str = "conv",
    settings: dict | None = None,
    biases: bool = True,
) -> Problem:
    """The paper's CIFAR optimizee (§3, the released code's sizes): convolutions (k × k,
    stride 1, SAME) each with bias, batch normalisation, ReLU and 2 × 2 max pooling; a fully
    connected layer with bias, batch normalisation and ReLU; a linear output layer; softmax
    cross-entropy. Two parameter groups: "conv" (the convolution kernels) and "fc" (the rest),
    one optimizer network each.

    The biases before batch normalisation change nothing (the normalisation subtracts every
    constant), so their gradients are 0 in exact arithmetic and round-off in practice; the
    released code has them (22,682 parameters). biases=False leaves them out."""
    images, _ = splits["train"]
    for k, count in enumerate(channels):
        checks.integer(count, f"channels[{k}]", 1)
    for setting, value in (("kernel", kernel), ("fc", fc), ("batch", batch)):
        checks.integer(value, setting, 1)
    check_batch(splits, batch)
    classes = int(max(labels.max() for _, labels in splits.values())) + 1
    height, width, depth = images.shape[1:]
    if min(height, width) < 2 ** len(channels):
        raise ConfigError(
            f"images of {height}×{width} pixels are too small for {len(channels)} "
            f"convolution layers with 2×2 pooling (at least {2 ** len(channels)} each way)"
        )
    for _ in channels:
        height, width = height // 2, width // 2
    shapes = {}
    for k, (c_in, c_out) in enumerate(pairwise((depth, *channels))):
        shapes[f"conv{k}_W"] = (kernel, kernel, c_in, c_out)
        shapes |= {f"conv{k}_b": (c_out,)} if biases else {}
        shapes[f"conv{k}_offset"] = (c_out,)
    shapes["fc_W"] = (height * width * channels[-1], fc)
    shapes |= {"fc_b": (fc,)} if biases else {}
    shapes |= {"fc_offset": (fc,), "out_W": (fc, classes), "out_b": (classes,)}
    check_fits(sum(math.prod(s) for s in shapes.values()), f"a conv net of {list(channels)}")
    bias = (lambda theta, name: theta[name]) if biases else (lambda theta, name: 0.0)
    groups = {t: "conv" if t.startswith("conv") and t.endswith("_W") else "fc" for t in shapes}

    def sample(rng: onp.random.Generator, to_device: ToDevice, split: str = "train") -> Instance:
        theta0 = {k: to_device(init_std * rng.standard_normal(s)) for k, s in shapes.items()}
        minibatch, data = minibatches(rng, splits, split, classes, batch, to_device)

        def loss(theta: dict, t: int):
            x, y = minibatch(t)
            for k in range(len(channels)):
                x = conv2d(x, theta[f"conv{k}_W"]) + bias(theta, f"conv{k}_b")
                x = max_pool(relu(batch_norm(x, theta[f"conv{k}_offset"])))
            x = np.reshape(x, (batch, -1)) @ theta["fc_W"] + bias(theta, "fc_b")
            x = relu(batch_norm(x, theta["fc_offset"]))
            return cross_entropy(x @ theta["out_W"] + theta["out_b"], y)

        return Instance(theta0, loss, data)

    base = {"channels": list(channels), "kernel": kernel, "fc": fc, "batch": batch}
    base |= {} if biases else {"biases": False}
    return Problem(name, {**(settings or {}), **base, "init_std": init_std}, sample, groups)


def cifar(
    data_dir: str = str(DEFAULT_DATA_DIR),
    classes: int = 10,
    channels: tuple[int, ...] = (16, 16, 16),
    kernel: int = 5,
    fc: int = 32,
    batch: int = 128,
    init_std: float = 0.01,
) -> Problem:
    """The paper's CIFAR optimizee on the images in data_dir: CIFAR-10's binary files, or any
    IDX image set; classes < 10 keeps labels 0 … classes − 1 (CIFAR-5, CIFAR-2)."""
    _, splits = datasets.load(Path(data_dir))
    if classes < 10:
        splits = datasets.label_subset(splits, classes)
    settings = {"data_dir": str(Path(data_dir).resolve()), "classes": classes}
    return conv_net(splits, tuple(channels), kernel, fc, batch, init_std, "cifar", settings)
