"""The meta-gradient against independent computations (issue: hypothesis-drawn configurations).

- forward values: the plain-NumPy second implementation gives the same losses;
- first order: docs/spec.md §1's closed form (reverse cumulative sum of optimizee gradients,
  backpropagated through the LSTM by hand), and central differences of the loss with the
  optimizee gradients frozen at their recorded values;
- second order: central differences of L(φ) itself, and the hand-written adjoint with the
  optimizee's Hessian-vector products.
"""

import dataclasses

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from l2l_ref.meta_train import start_hidden
from l2l_ref.optimizer import LearnedOptimizer
from l2l_ref.tree import flatten, tree_map
from l2l_ref.unroll import meta_gradient, meta_loss, unroll
from tests import numpy_reference as ref
from tests.strategies import REFERENCE_ARCHITECTURES, setups


def project_gradient(phi, groups, problem, config, weights, second_order=False):
    instance = problem.instance()
    hidden = start_hidden(instance.theta0, config)
    grad, L, _, _ = meta_gradient(
        phi, instance.theta0, hidden, instance, 0, weights, LearnedOptimizer(config, groups),
        second_order=second_order,
    )  # fmt: skip
    return grad, L


def directional_fd(loss_of_phi, phi, direction, first_step=1e-4, shrink=2.0, levels=12):
    """The directional derivative and an estimate of its error, by Ridders' extrapolation:
    central differences at steps first_step / shrink^i, each column of the tableau cancelling
    one more even power of the step; of all the entries, the one that changed least from its
    neighbours, and that change as its error (round-off grows it at the smallest steps).
    A fixed step is not enough: where log_and_sign's logarithm curves sharply (an optimizee
    gradient near e^-p), the central differences at 1e-5 and 5e-6 were 30 off on 630, those at
    1e-7 right to 1e-4 (seed 73 of test_second_order_matches_differences)."""

    def central(step):
        plus = tree_map(lambda p, v: p + step * v, phi, direction)
        minus = tree_map(lambda p, v: p - step * v, phi, direction)
        return (loss_of_phi(plus) - loss_of_phi(minus)) / (2 * step)

    tableau = [[central(first_step)]]
    best, error = tableau[0][0], np.inf
    for i in range(1, levels):
        row = [central(first_step / shrink**i)]
        for j in range(1, i + 1):
            factor = shrink ** (2 * j)
            row.append((factor * row[j - 1] - tableau[i - 1][j - 1]) / (factor - 1))
            change = max(abs(row[j] - row[j - 1]), abs(row[j] - tableau[i - 1][j - 1]))
            if change <= error:
                best, error = row[j], change
        tableau.append(row)
    return best, error


def inner(a, b):
    fa, fb = flatten(a), flatten(b)
    return sum(float(np.sum(fa[k] * fb[k])) for k in fa)


def assert_close_directional(grad, fd_and_error):
    """grad within 1e-6 (relative) of the differences; a draw on which the differences
    themselves are not that accurate (the loss has a kink, as Appendix A's switch at e^-p, or
    curves too sharply within the steps) is rejected as unchecked, never passed."""
    fd, error = fd_and_error
    scale = max(1.0, abs(grad), abs(fd))
    assume(error <= 1e-7 * scale)
    assert abs(grad - fd) <= 1e-6 * scale, (grad, fd, error)


def test_the_differences_settle_where_the_loss_curves_sharply_and_say_when_they_do_not():
    """The checking tool checked: log x near x = 2e-4 (d/dx = 5,000) is found to 1e-9, where
    a central difference at 1e-5 is 0.08% off; a loss with noise of 1e-9 reports its error."""
    phi, direction = {"x": np.array(2e-4)}, {"x": np.array(1.0)}
    fd, error = directional_fd(lambda p: float(np.log(p["x"])), phi, direction, first_step=1e-5)
    assert abs(fd - 5000.0) <= 1e-9 * 5000.0 and error <= 1e-7 * 5000.0
    noise = np.random.default_rng(0)
    _, error = directional_fd(
        lambda p: float(p["x"]) + 1e-9 * noise.standard_normal(), phi, direction
    )
    assert error > 1e-7


@settings(max_examples=100, deadline=None)
@given(setups(architectures=REFERENCE_ARCHITECTURES))
def test_forward_values_match_second_implementation(case):
    phi, groups, problem, config, weights = case
    instance = problem.instance()
    losses, theta, _ = unroll(
        phi,
        instance.theta0,
        start_hidden(instance.theta0, config),
        instance,
        0,
        len(weights) - 1,
        LearnedOptimizer(config, groups),
    )
    L_ref, losses_ref, theta_ref, *_ = ref.run(phi, groups, problem, config, weights)
    np.testing.assert_allclose([float(f) for f in losses], losses_ref, rtol=1e-12, atol=1e-12)
    for k in theta:
        np.testing.assert_allclose(theta[k], theta_ref[k], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(float(meta_loss(losses, weights)), L_ref, rtol=1e-12)


@settings(max_examples=100, deadline=None)
@given(setups(architectures=REFERENCE_ARCHITECTURES), st.booleans())
def test_meta_gradient_matches_the_hand_written_adjoint(case, second_order):
    phi, groups, problem, config, weights = case
    grad, _ = project_gradient(phi, groups, problem, config, weights, second_order)
    expected = ref.meta_gradient(phi, groups, problem, config, weights, second_order=second_order)
    flat, flat_expected = flatten(grad), flatten(expected)
    assert flat.keys() == flat_expected.keys()
    for key in flat:
        np.testing.assert_allclose(
            flat[key], flat_expected[key], rtol=1e-9, atol=1e-11, err_msg=key
        )


@settings(max_examples=60, deadline=None)
@given(setups(architectures=REFERENCE_ARCHITECTURES), st.integers(0, 2**32 - 1))
def test_first_order_matches_differences_with_frozen_gradients(case, seed):
    phi, groups, problem, config, weights = case
    *_, recorded, _ = ref.run(phi, groups, problem, config, weights)
    direction = tree_map(lambda p: np.random.default_rng(seed).standard_normal(p.shape), phi)
    fd = directional_fd(
        lambda p: ref.run(p, groups, problem, config, weights, frozen_grads=recorded)[0],
        phi,
        direction,
    )
    grad, _ = project_gradient(phi, groups, problem, config, weights)
    assert_close_directional(inner(grad, direction), fd)


@settings(max_examples=60, deadline=None)
@given(setups(architectures=REFERENCE_ARCHITECTURES), st.integers(0, 2**32 - 1))
def test_second_order_matches_differences(case, seed):
    phi, groups, problem, config, weights = case
    direction = tree_map(lambda p: np.random.default_rng(seed).standard_normal(p.shape), phi)
    fd = directional_fd(lambda p: ref.run(p, groups, problem, config, weights)[0], phi, direction)
    grad, _ = project_gradient(phi, groups, problem, config, weights, second_order=True)
    assert_close_directional(inner(grad, direction), fd)


@settings(max_examples=30, deadline=None)
@given(setups(), st.booleans())
def test_fused_cell_agrees_with_the_plain_traced_cell(case, second_order):
    """The fused primitive is an optimisation of lstm_cell, not a second definition."""
    phi, groups, problem, config, weights = case
    results = {}
    for cell in ("plain", "fused"):
        cell_config = dataclasses.replace(config, cell=cell)
        results[cell] = project_gradient(phi, groups, problem, cell_config, weights, second_order)
    (grad_plain, L_plain), (grad_fused, L_fused) = results["plain"], results["fused"]
    np.testing.assert_allclose(L_fused, L_plain, rtol=1e-13)
    flat_plain, flat_fused = flatten(grad_plain), flatten(grad_fused)
    for key in flat_plain:
        np.testing.assert_allclose(
            flat_fused[key], flat_plain[key], rtol=1e-10, atol=1e-13, err_msg=key
        )
