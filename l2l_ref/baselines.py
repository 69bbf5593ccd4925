"""Hand-designed optimizers: the tuned baselines of Section 3, and Adam on φ.

Each is written as Torch7's `optim` package computes it, with its default hyper-parameters
(docs/spec.md §3); only the learning rate is tuned, on validation problems.

A baseline is a pair (init, step): init(θ) gives its state, step(θ, state, grad_fn, lr)
gives the next θ and state, where grad_fn(θ) is ∇f at θ. The learned optimizer with φ frozen is
one more pair of that kind (frozen.learned), run by the same loop (optimize).
"""

from collections.abc import Callable, Sequence

import autograd.numpy as np
import numpy as onp
from autograd import value_and_grad

from l2l_ref.divergence import diverged
from l2l_ref.problems import Instance, value_and_gradient
from l2l_ref.tree import tree_map

# log grid of learning rates, three per decade, 1e-4 .. 10
LEARNING_RATES = tuple(
    float(f"{m}e{e}") for e in range(-4, 2) for m in (1, 2, 5) if m * 10.0**e <= 10
)


def _zeros(theta: dict) -> dict:
    return tree_map(np.zeros_like, theta)


def sgd_init(theta: dict) -> tuple:
    return ()


def sgd_step(theta: dict, state: tuple, grad_fn: Callable, lr: float) -> tuple:
    """θ ← θ − lr ∇."""
    return tree_map(lambda x, g: x - lr * g, theta, grad_fn(theta)), state


def rmsprop_init(theta: dict) -> dict:
    return _zeros(theta)


def rmsprop_step(
    theta: dict,
    mean_square: dict,
    grad_fn: Callable,
    lr: float,
    alpha: float = 0.99,
    eps: float = 1e-8,
) -> tuple:
    """Torch7 rmsprop: m ← α m + (1 − α) ∇²;  θ ← θ − lr ∇ / (sqrt(m) + ε), m_0 = 0."""
    grads = grad_fn(theta)
    mean_square = tree_map(lambda m, g: alpha * m + (1 - alpha) * g * g, mean_square, grads)
    theta = tree_map(lambda x, g, m: x - lr * g / (np.sqrt(m) + eps), theta, grads, mean_square)
    return theta, mean_square


def adam_init(theta: dict) -> dict:
    return {"m": _zeros(theta), "v": _zeros(theta), "t": 0}


def adam_update(
    params,
    grads,
    state: dict,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> tuple:
    """Torch7 adam (Kingma & Ba with ε added to sqrt(v), not to the bias-corrected sqrt(v̂)):

    m ← β1 m + (1 − β1) ∇;  v ← β2 v + (1 − β2) ∇²
    θ ← θ − lr sqrt(1 − β2^t) / (1 − β1^t) · m / (sqrt(v) + ε)

    Used for the baseline and as the meta-optimizer on φ.
    """
    t = state["t"] + 1
    m = tree_map(lambda m, g: beta1 * m + (1 - beta1) * g, state["m"], grads)
    v = tree_map(lambda v, g: beta2 * v + (1 - beta2) * g * g, state["v"], grads)
    step = lr * (1 - beta2**t) ** 0.5 / (1 - beta1**t)
    params = tree_map(lambda p, m, v: p - step * m / (np.sqrt(v) + eps), params, m, v)
    return params, {"m": m, "v": v, "t": t}


def adam_step(theta: dict, state: dict, grad_fn: Callable, lr: float) -> tuple:
    return adam_update(theta, grad_fn(theta), state, lr)


def nag_init(theta: dict) -> dict:
    return _zeros(theta)


def nag_step(
    theta: dict, velocity: dict, grad_fn: Callable, lr: float, momentum: float = 0.9
) -> tuple:
    """Nesterov's accelerated gradient: ∇ at θ + μv;  v ← μv − lr ∇;  θ ← θ + v."""
    grads = grad_fn(tree_map(lambda x, v: x + momentum * v, theta, velocity))
    velocity = tree_map(lambda v, g: momentum * v - lr * g, velocity, grads)
    return tree_map(np.add, theta, velocity), velocity


BASELINES = {
    "SGD": (sgd_init, sgd_step),
    "RMSprop": (rmsprop_init, rmsprop_step),
    "Adam": (adam_init, adam_step),
    "NAG": (nag_init, nag_step),
}


def optimize(
    optimizer: tuple[Callable, Callable],
    lr: float | None,
    instance: Instance,
    steps: int,
    to_host: Callable,
    *,
    traced: bool = False,
) -> onp.ndarray:
    """Losses f(θ_0), ..., f(θ_steps) of an optimizer (init, step) at learning rate lr on one
    instance (Eq. 1's loop for any optimizer): a baseline, or the learned optimizer with φ
    frozen (frozen.learned), which has no learning rate. `traced`: ∇f by autograd, as the
    definitions take it, never the instance's hand-written gradient."""
    init, step = optimizer
    evaluate = value_and_grad(instance.loss) if traced else value_and_gradient(instance)
    theta, state = instance.theta0, init(instance.theta0)
    losses = []
    for t in range(steps):
        # f(θ_t) comes with ∇f(θ_t); a step that asks for the gradient elsewhere (NAG's
        # look-ahead) has it computed there
        loss, gradient = evaluate(theta, t)
        losses.append(loss)
        theta, state = step(
            theta,
            state,
            lambda x, t=t, here=theta, g=gradient: g if x is here else evaluate(x, t)[1],
            lr,
        )
    losses.append(instance.loss(theta, steps))
    return onp.array([float(to_host(loss)) for loss in losses])


def run_baseline(
    name: str, lr: float, instance: Instance, steps: int, to_host: Callable
) -> onp.ndarray:
    """Losses f(θ_0), ..., f(θ_steps) of baseline `name` at learning rate lr on one instance."""
    return optimize(BASELINES[name], lr, instance, steps, to_host)


def mean_final(curves: onp.ndarray) -> float:
    """The mean final loss of a row of loss curves per problem, +inf where that mean overflows
    or is not finite: what early stopping and the tuning of a baseline both minimise, on the
    same validation problems."""
    with onp.errstate(all="ignore"):
        final = onp.mean(curves[:, -1])
    return float(final) if onp.isfinite(final) else float("inf")


def tune_learning_rate(
    name: str,
    validation: Sequence[Instance],
    steps: int,
    to_host: Callable,
    grid: Sequence[float] = LEARNING_RATES,
) -> tuple[float, dict]:
    """The learning rate of `grid` with the lowest mean final loss on the validation problems,
    among the rates that diverge on none of them (l2l_ref.divergence; if every rate diverges
    somewhere, among all): a rate that blows up on one validation problem in eight would blow
    up on test problems too (docs/conventions.md, "Divergence").

    A mean that overflows or is not finite counts as +inf. Returns the rate and, for every rate
    tried, the mean final loss and on how many validation problems it diverged.
    """
    table = {}
    with onp.errstate(all="ignore"):
        for lr in grid:
            curves = onp.stack(
                [run_baseline(name, lr, inst, steps, to_host) for inst in validation]
            )
            table[lr] = {
                "mean_final": mean_final(curves),
                "diverged": int(diverged(curves[:, 0], curves[:, -1]).sum()),
            }
    stable = [lr for lr in grid if table[lr]["diverged"] == 0] or list(grid)
    return min(stable, key=lambda lr: table[lr]["mean_final"]), table
