"""Truncated backpropagation: values cross an unroll boundary, gradients do not
(docs/spec.md §1, §6)."""

import numpy as np
from autograd.tracer import isbox
from hypothesis import assume, given, settings

from l2l_ref.meta_train import start_hidden
from l2l_ref.optimizer import LearnedOptimizer
from l2l_ref.tree import flatten, tree_map
from l2l_ref.unroll import meta_gradient, unroll
from tests import numpy_reference as ref
from tests.strategies import REFERENCE_ARCHITECTURES, setups


def first_unroll(phi, groups, problem, config, T):
    instance = problem.instance()
    _, theta, hidden = unroll(
        phi,
        instance.theta0,
        start_hidden(instance.theta0, config),
        instance,
        0,
        T,
        LearnedOptimizer(config, groups),
    )
    return instance, theta, hidden


@settings(max_examples=30, deadline=None)
@given(setups(max_unroll=3))
def test_two_unrolls_carry_the_values_of_one_long_run(case):
    """A random φ can blow a run up (an NTM-BFGS draw overflowed within six steps): such a
    draw says nothing about the carry, so only runs whose losses stay finite are compared."""
    phi, groups, problem, config, weights = case
    T = len(weights) - 1
    with np.errstate(over="ignore", invalid="ignore"):
        instance, theta, hidden = first_unroll(phi, groups, problem, config, T)
        _, L2, theta2, hidden2 = meta_gradient(
            phi, theta, hidden, instance, T, weights, LearnedOptimizer(config, groups)
        )
        long_losses, long_theta, long_hidden = unroll(
            phi,
            instance.theta0,
            start_hidden(instance.theta0, config),
            instance,
            0,
            2 * T,
            LearnedOptimizer(config, groups),
        )
    assume(np.all(np.isfinite([float(f) for f in long_losses])))
    carried, expected = flatten((theta2, hidden2)), flatten((long_theta, long_hidden))
    assert carried.keys() == expected.keys()
    for key in carried:
        assert not isbox(carried[key])  # a value, not a traced box
        np.testing.assert_array_equal(carried[key], expected[key])
    expected_L2 = sum(w * float(f) for w, f in zip(weights, long_losses[T:], strict=True))
    np.testing.assert_allclose(L2, expected_L2, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(setups(max_unroll=3, architectures=REFERENCE_ARCHITECTURES))
def test_no_gradient_crosses_the_cut(case):
    """The second unroll's exact (second-order) meta-gradient treats the carried θ and hidden
    state as constants: it matches central differences of that unroll's loss with the carry
    frozen, and not those of the loss recomputed through the first unroll."""
    phi, groups, problem, config, weights = case
    T = len(weights) - 1
    instance, theta, hidden = first_unroll(phi, groups, problem, config, T)
    grad, *_ = meta_gradient(
        phi,
        theta,
        hidden,
        instance,
        T,
        weights,
        LearnedOptimizer(config, groups),
        second_order=True,
    )

    def frozen_carry(p):
        carried = ref.CoupledQuadratic(problem.A, problem.y, problem.d, theta)
        return ref.run(p, groups, carried, config, weights, hidden=hidden, t0=T)[0]

    def through_the_cut(p):
        *_, theta_p, hidden_p, _, _ = ref.run(p, groups, problem, config, (0.0,) * (T + 1))
        restarted = ref.CoupledQuadratic(problem.A, problem.y, problem.d, theta_p)
        return ref.run(p, groups, restarted, config, weights, hidden=hidden_p, t0=T)[0]

    rng = np.random.default_rng(0)
    direction = tree_map(lambda p: rng.standard_normal(p.shape), phi)

    def fd(loss, eps=1e-6):
        plus = tree_map(lambda p, v: p + eps * v, phi, direction)
        minus = tree_map(lambda p, v: p - eps * v, phi, direction)
        return (loss(plus) - loss(minus)) / (2 * eps)

    flat_grad, flat_dir = flatten(grad), flatten(direction)
    along = sum(float(np.sum(flat_grad[k] * flat_dir[k])) for k in flat_grad)
    frozen, through = fd(frozen_carry), fd(through_the_cut)
    scale = max(1.0, abs(frozen), abs(through))
    # a kink of the preprocessing (|∇| = e^{-p}, sgn at 0) inside the stencil: differences at
    # two step sizes disagree there, and there is no derivative to compare with
    assume(abs(fd(frozen_carry, 2e-6) - frozen) <= 1e-7 * scale)
    assert abs(along - frozen) <= 1e-6 * scale
    assume(abs(through - frozen) > 1e-3 * scale)  # the cut matters in this case
    assert abs(along - through) > 1e-4 * scale
