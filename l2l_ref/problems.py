"""Problem families: what the optimizer learns to optimize (Section 3).

A family samples instances from a seeded host generator. An instance is one optimizee: its
initial parameters θ_0 (a dict of named tensors) and its loss f(θ, t). The step index t lets a
stochastic loss draw the minibatch of step t, the same one for f(θ_t) and for ∇_t.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import autograd.numpy as np
import numpy as onp

ToDevice = Callable[[onp.ndarray], Any]


@dataclass(frozen=True)
class Instance:
    """One optimizee: θ_0 and f(θ, t)."""

    theta0: dict
    loss: Callable[[dict, int], Any]


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
        W, y = to_device(draw((batch, dims, dims))), to_device(draw((batch, dims)))
        theta0 = {"x": to_device(init_std * rng.standard_normal((batch, dims)))}

        def loss(theta: dict, t: int):
            residual = np.reshape(W @ np.reshape(theta["x"], (batch, dims, 1)), (batch, dims)) - y
            return np.mean(np.sum(residual**2, axis=1))

        return Instance(theta0, loss)

    settings = {"dims": dims, "batch": batch, "distribution": distribution, "init_std": init_std}
    return Problem("quadratic", settings, sample)


def simple() -> Problem:
    """f(x) = x² from x_0 = 1: the problem of the original Torch test (spec §5)."""

    def sample(rng: onp.random.Generator, to_device: ToDevice) -> Instance:
        return Instance({"x": to_device(onp.array(1.0))}, lambda theta, t: theta["x"] ** 2)

    return Problem("simple", {}, sample)


PROBLEMS = {"quadratic": quadratic, "simple": simple}


def make_problem(name: str, settings: dict) -> Problem:
    """The family `name` with `settings` (as a Problem's .settings records them)."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r} (choose from {', '.join(PROBLEMS)})")
    return PROBLEMS[name](**settings)
