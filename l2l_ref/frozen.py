"""The learned optimizer run with φ frozen (no meta-gradient): what validation, the test
comparison and the figures run. learned(φ, m) is it as an optimizer with the baselines'
interface, and run_optimizer runs it by their loop, step by step: the definition;
run_on_each runs many instances at once by the hand-written kernels where the architecture has
them (l2l_ref.fused.run_frozen, held to the definition by tests/test_fused.py).
"""

from collections.abc import Callable
from operator import add

import numpy as onp

from l2l_ref.baselines import optimize
from l2l_ref.fused import run_frozen
from l2l_ref.optimizer import LearnedOptimizer, optimizer_step, start_hidden
from l2l_ref.problems import Instance
from l2l_ref.tree import tree_map


def learned(phi: dict, m: LearnedOptimizer) -> tuple[Callable, Callable]:
    """The learned optimizer m with φ frozen as an optimizer of the baselines' kind (init,
    step): init(θ_0) is m's zero state, step(θ_t, h_t, grad_fn, lr) is Eq. 1's θ_t + g_t with
    [g_t, h_{t+1}] = m(∇_t, h_t; φ). It takes no learning rate: its step size is learned."""

    def init(theta: dict):
        return start_hidden(theta, m.config)

    def step(theta: dict, hidden, grad_fn: Callable, lr: None) -> tuple:
        updates, hidden = optimizer_step(phi, grad_fn(theta), hidden, m)
        return tree_map(add, theta, updates), hidden

    return init, step


def run_optimizer(
    phi: dict, instance: Instance, steps: int, m: LearnedOptimizer, to_host: Callable = onp.asarray
) -> onp.ndarray:
    """Losses f(θ_0), ..., f(θ_steps) of the learned optimizer, φ frozen, on one instance: the
    baselines' run loop (baselines.optimize) with the learned optimizer as its (init, step), ∇f
    traced."""
    return optimize(learned(phi, m), None, instance, steps, to_host, traced=True)


def run_on_each(
    phi: dict, instances: list, steps: int, m: LearnedOptimizer, to_host: Callable = onp.asarray
) -> onp.ndarray:
    """run_optimizer on each instance, a row of losses each: all at once by the hand-written
    kernels (fused.run_frozen) where the architecture's rule says so, the same numbers up to
    rounding (tests/test_fused.py); else one by one."""
    if m.config.architecture.hand_written(m.config):
        return run_frozen(phi, instances, steps, m, to_host)
    return onp.stack([run_optimizer(phi, inst, steps, m, to_host) for inst in instances])
