"""Problem families: what the optimizer learns to optimize (Section 3).

A family samples instances from a seeded host generator. An instance is one optimizee: its
initial parameters θ_0 (a dict of named tensors) and its loss f(θ, t). The step index t lets a
stochastic loss draw the minibatch of step t, the same one for f(θ_t) and for ∇_t.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from typing import Any

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

from l2l_ref.lstm import sigmoid

ToDevice = Callable[[onp.ndarray], Any]


@dataclass(frozen=True)
class Instance:
    """One optimizee: θ_0 and f(θ, t); `data` holds the host arrays that define f (what the
    reference vectors record so that another implementation can rebuild f)."""

    theta0: dict
    loss: Callable[[dict, int], Any]
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """A family of optimizees, named with every setting that defines it."""

    name: str
    settings: dict
    sample: Callable[[onp.random.Generator, ToDevice], Instance]
    groups: dict[str, str] = field(default_factory=dict)  # tensor -> parameter group

    def group_of(self, tensor: str) -> str:
        return self.groups.get(tensor, "all")

    def describe(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"{self.name} ({settings})" if settings else self.name


def quadratic(
    dims: int = 10, batch: int = 128, distribution: str = "gaussian", init_std: float = 0.01
) -> Problem:
    """Quadratics f(θ) = mean_b ‖W_b θ_b − y_b‖² over a batch of independent problems (§3).

    distribution "gaussian": W, y entries IID N(0, 1) (the paper); "uniform": Uniform[0, 1)
    (the released code). θ_0 ~ N(0, init_std²) as in the released code.
    """
    if distribution not in ("gaussian", "uniform"):
        raise ValueError(f"unknown quadratic distribution {distribution!r} (gaussian or uniform)")
    if dims < 1 or batch < 1:
        raise ValueError("quadratic dims and batch must be at least 1")

    def sample(rng: onp.random.Generator, to_device: ToDevice) -> Instance:
        draw = rng.standard_normal if distribution == "gaussian" else rng.random
        host_W, host_y = draw((batch, dims, dims)), draw((batch, dims))
        W, y = to_device(host_W), to_device(host_y)
        theta0 = {"x": to_device(init_std * rng.standard_normal((batch, dims)))}

        def loss(theta: dict, t: int):
            residual = np.reshape(W @ np.reshape(theta["x"], (batch, dims, 1)), (batch, dims)) - y
            return np.mean(np.sum(residual**2, axis=1))

        return Instance(theta0, loss, {"W": host_W, "y": host_y})

    settings = {"dims": dims, "batch": batch, "distribution": distribution, "init_std": init_std}
    return Problem("quadratic", settings, sample)


def simple() -> Problem:
    """f(x) = x² from x_0 = 1: the problem of the original Torch test (spec §5)."""

    def sample(rng: onp.random.Generator, to_device: ToDevice) -> Instance:
        return Instance({"x": to_device(onp.array(1.0))}, lambda theta, t: theta["x"] ** 2)

    return Problem("simple", {}, sample)


ACTIVATIONS = {"sigmoid": sigmoid, "relu": lambda x: np.maximum(x, 0.0)}


def mlp(
    images: onp.ndarray,
    labels: onp.ndarray,
    hidden: tuple[int, ...] = (20,),
    activation: str = "sigmoid",
    batch: int = 128,
    init_std: float = 0.01,
    name: str = "mlp",
    settings: dict | None = None,
) -> Problem:
    """Cross-entropy of a multi-layer perceptron on minibatches of a labelled image set (§3).

    images: (N, D) floats; labels: (N,) integers in [0, classes). Tensors W0, b0, W1, b1, ...
    with θ_0 ~ N(0, init_std²) as in the released code. The minibatch of step t is `batch`
    distinct images drawn from a generator seeded by (the instance's seed, t): the same for
    f(θ_t) and ∇_t, whatever the order of calls.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r} (choose from {', '.join(ACTIVATIONS)})"
        )
    if not 1 <= batch <= len(images):
        raise ValueError(f"minibatch of {batch} from {len(images)} images")
    classes = int(labels.max()) + 1
    sizes = (images.shape[1], *hidden, classes)
    onehot = onp.eye(classes)[labels]
    act = ACTIVATIONS[activation]

    def sample(rng: onp.random.Generator, to_device: ToDevice) -> Instance:
        theta0 = {}
        for k, (n_in, n_out) in enumerate(pairwise(sizes)):
            theta0[f"W{k}"] = to_device(init_std * rng.standard_normal((n_in, n_out)))
            theta0[f"b{k}"] = to_device(init_std * rng.standard_normal(n_out))
        batch_seed = int(rng.integers(2**63))

        def indices(t: int) -> onp.ndarray:
            return onp.random.default_rng([batch_seed, t]).choice(len(images), batch, replace=False)

        @lru_cache(maxsize=2)  # f(θ_t) and ∇_t read the same minibatch
        def minibatch(t: int) -> tuple:
            chosen = indices(t)
            return to_device(images[chosen]), to_device(onehot[chosen])

        def loss(theta: dict, t: int):
            x, y = minibatch(t)
            for k in range(len(sizes) - 1):
                x = x @ theta[f"W{k}"] + theta[f"b{k}"]
                if k < len(sizes) - 2:
                    x = act(x)
            # log-softmax; the shift by the row maximum changes no value or gradient
            shifted = x - getval(np.max(x, axis=1, keepdims=True))
            log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
            return -np.mean(np.sum(y * log_probs, axis=1))

        data = {"images": images, "labels": labels, "batch_seed": batch_seed, "indices": indices}
        return Instance(theta0, loss, data)

    base = {"hidden": list(hidden), "activation": activation, "batch": batch}
    return Problem(name, {**(settings or {}), **base, "init_std": init_std}, sample)


PROBLEMS = {"quadratic": quadratic, "simple": simple}


def make_problem(name: str, settings: dict) -> Problem:
    """The family `name` with `settings` (as a Problem's .settings records them)."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r} (choose from {', '.join(PROBLEMS)})")
    return PROBLEMS[name](**settings)
