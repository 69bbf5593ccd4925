"""The learned optimizer run with φ frozen (no meta-gradient): what validation, the test
comparison and the figures run. run_optimizer is the definition, Eq. 1 traced step by step;
run_on_each runs many instances at once by the hand-written kernels where the architecture has
them (l2l_ref.fused.run_frozen, held to the definition by tests/test_fused.py).
"""

from collections.abc import Callable

import numpy as onp

from l2l_ref.fused import run_frozen
from l2l_ref.optimizer import OptimizerConfig, hand_written, start_hidden
from l2l_ref.problems import Instance
from l2l_ref.unroll import unroll


def run_optimizer(
    phi: dict,
    instance: Instance,
    steps: int,
    groups: dict,
    config: OptimizerConfig,
    to_host: Callable = onp.asarray,
) -> onp.ndarray:
    """Losses f(θ_0), ..., f(θ_steps) of the learned optimizer, φ frozen, on one instance."""
    theta0 = instance.theta0
    losses, _, _ = unroll(
        phi, theta0, start_hidden(theta0, config), instance, 0, steps, groups, config
    )
    return onp.array([float(to_host(loss)) for loss in losses])


def run_on_each(
    phi: dict,
    instances: list,
    steps: int,
    groups: dict,
    config: OptimizerConfig,
    to_host: Callable = onp.asarray,
) -> onp.ndarray:
    """run_optimizer on each instance, a row of losses each: all at once by the hand-written
    kernels (fused.run_frozen) where the architecture has them and the cell is the fused one,
    the same numbers up to rounding (tests/test_fused.py); else one by one."""
    if hand_written(config):
        return run_frozen(phi, instances, steps, groups, config, to_host)
    return onp.stack(
        [run_optimizer(phi, inst, steps, groups, config, to_host) for inst in instances]
    )
