"""Spec §5: the original Torch implementation's own test, through this project's meta-training.

f(x) = x² from x_0 = 1; an optimizer with no LSTM layer (update w·∇ + b, w = b = 0); no
preprocessing; unroll 5; meta-loss Σ_{t=0..5} f(x_t) with the gradient stopped; meta-Adam at
learning rate 0.01; one epoch of two unrolls. Expected: f(x_5) of the second unroll 0.7325327
and x_5 = 0.8559, numbers printed by that implementation, not computed here.

That implementation ran in single precision: in float32 its seven printed digits come out
exactly; in float64 the same trajectory gives f(x_5) = 0.73253262, within float32's rounding
(about 1e-7) of the printed value.
"""

import pytest

from l2l_ref.backends import get_backend
from l2l_ref.baselines import adam_init
from l2l_ref.meta_train import TrainConfig, init_phi, start_hidden, train_epoch
from l2l_ref.optimizer import LearnedOptimizer, OptimizerConfig, assign_networks
from l2l_ref.problems import simple
from l2l_ref.streams import rng_for
from l2l_ref.unroll import meta_gradient


@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 5e-8), ("float64", 2e-7)])
def test_torch_golden_cost_and_x5(dtype, tolerance):
    backend = get_backend("numpy")
    to_device = lambda a: backend.asarray(a, dtype)  # noqa: E731
    problem = simple()
    instance = problem.sample(rng_for(0, "train"), to_device)
    config = OptimizerConfig(layers=(), init="zeros")
    train = TrainConfig(epochs=1, steps=10, unroll=5, meta_lr=0.01, initial_weight=1.0)
    groups = assign_networks(instance.theta0, problem, config)
    phi = init_phi(rng_for(0, "init"), groups, config, to_device)

    phi, _, losses, theta = train_epoch(
        phi, adam_init(phi), instance, LearnedOptimizer(config, groups), train, backend.to_host
    )

    x5 = float(theta["x"])
    assert x5 == pytest.approx(0.8559, abs=5e-5)
    assert float(instance.loss(theta, 10)) == pytest.approx(0.7325327, abs=tolerance)
    # first unroll: x stays at 1, so the meta-loss is six terms of 1
    assert losses[0] == pytest.approx(6.0)


def test_torch_golden_first_meta_gradient():
    """dL/dw = 60 and dL/db = 30 in the first unroll, as the spec states."""
    backend = get_backend("numpy")
    to_device = lambda a: backend.asarray(a, "float64")  # noqa: E731
    problem = simple()
    instance = problem.sample(rng_for(0, "train"), to_device)
    config = OptimizerConfig(layers=(), init="zeros")
    groups = assign_networks(instance.theta0, problem, config)
    phi = init_phi(rng_for(0, "init"), groups, config, to_device)
    hidden = start_hidden(instance.theta0, config)
    phi_grad, L, _, _ = meta_gradient(
        phi, instance.theta0, hidden, instance, 0, (1.0,) * 6, LearnedOptimizer(config, groups)
    )
    assert L == 6.0
    assert phi_grad["all"]["head"]["W"].item() == pytest.approx(60.0, rel=1e-12)
    assert phi_grad["all"]["head"]["b"].item() == pytest.approx(30.0, rel=1e-12)
