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
from hypothesis import given, settings
from hypothesis import strategies as st

from l2l_ref.meta_train import start_hidden
from l2l_ref.tree import flatten, tree_map
from l2l_ref.unroll import meta_gradient, meta_loss, unroll
from tests import numpy_reference as ref
from tests.strategies import setups

EPS = 1e-5


def project_gradient(phi, groups, problem, config, weights, second_order=False):
    instance = problem.instance()
    hidden = start_hidden(instance.theta0, config)
    grad, L, _, _ = meta_gradient(
        phi, instance.theta0, hidden, instance, 0, weights, groups, config,
        second_order=second_order,
    )  # fmt: skip
    return grad, L


def directional_fd(loss_of_phi, phi, direction):
    """The directional derivative by central differences at steps EPS and EPS/2, combined
    (Richardson) so that the O(EPS²) truncation error cancels: the plain central difference at
    1e-6 missed by 2e-6 relative where log_and_sign's logarithm curves sharply."""

    def central(step):
        plus = tree_map(lambda p, v: p + step * v, phi, direction)
        minus = tree_map(lambda p, v: p - step * v, phi, direction)
        return (loss_of_phi(plus) - loss_of_phi(minus)) / (2 * step)

    return (4 * central(EPS / 2) - central(EPS)) / 3


def inner(a, b):
    fa, fb = flatten(a), flatten(b)
    return sum(float(np.sum(fa[k] * fb[k])) for k in fa)


def assert_close_directional(grad, fd):
    assert abs(grad - fd) <= 1e-6 * max(1.0, abs(grad), abs(fd)), (grad, fd)


@settings(max_examples=100, deadline=None)
@given(setups())
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
        groups,
        config,
    )
    L_ref, losses_ref, theta_ref, *_ = ref.run(phi, groups, problem, config, weights)
    np.testing.assert_allclose([float(f) for f in losses], losses_ref, rtol=1e-12, atol=1e-12)
    for k in theta:
        np.testing.assert_allclose(theta[k], theta_ref[k], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(float(meta_loss(losses, weights)), L_ref, rtol=1e-12)


@settings(max_examples=100, deadline=None)
@given(setups(), st.booleans())
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
@given(setups(), st.integers(0, 2**32 - 1))
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
@given(setups(), st.integers(0, 2**32 - 1))
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
