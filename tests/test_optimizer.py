"""The coordinatewise LSTM optimizer: its size, initialisation and coordinatewise structure."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l2l_ref.architectures.lstm import truncated_normal
from l2l_ref.backends import get_backend
from l2l_ref.meta_train import init_phi, start_hidden
from l2l_ref.optimizer import (
    LearnedOptimizer,
    OptimizerConfig,
    assign_networks,
    init_network,
    optimizer_step,
)
from l2l_ref.problems import quadratic
from l2l_ref.streams import rng_for
from l2l_ref.tree import flatten
from l2l_ref.unroll import meta_gradient


def n_params(config):
    return sum(v.size for v in flatten(init_network(np.random.default_rng(0), config)).values())


def test_parameter_count_matches_spec():
    # docs/spec.md §2: 5141 with preprocessing (input 2), 5061 without
    assert n_params(OptimizerConfig(preprocessing="appendix_a", preprocessing_param=10)) == 5141
    assert n_params(OptimizerConfig()) == 5061


def test_truncated_normal_is_truncated_at_two_sigma():
    sample = truncated_normal(np.random.default_rng(1), (200_000,), 0.5)
    assert np.abs(sample).max() <= 1.0
    # std of N(0, 1) truncated to [-2, 2] is 0.8796; mean 0
    assert sample.std() == pytest.approx(0.5 * 0.8796, rel=0.01)
    assert abs(sample.mean()) < 0.005


def test_released_initialisation_scales():
    net = init_network(np.random.default_rng(2), OptimizerConfig(layers=(20, 20)))
    first, second, head = net["lstm"][0], net["lstm"][1], net["head"]
    assert first["W"].shape == (21, 80) and second["W"].shape == (40, 80)
    assert np.abs(first["W"]).max() <= 2 / np.sqrt(21)
    assert np.abs(second["W"]).max() <= 2 / np.sqrt(40)
    assert second["W"].std() == pytest.approx(0.8796 / np.sqrt(40), rel=0.05)
    assert np.abs(head["W"]).max() <= 2 / np.sqrt(20)
    np.testing.assert_array_equal(head["b"], 0.0)


def run_steps(phi, grads_per_step, config):
    """Updates of three consecutive optimizer steps on the given gradients."""
    groups = dict.fromkeys(grads_per_step[0], "all")
    hidden = start_hidden(grads_per_step[0], config)
    out = []
    for grads in grads_per_step:
        updates, hidden = optimizer_step(phi, grads, hidden, LearnedOptimizer(config, groups))
        out.append(updates)
    return out


CONFIG = OptimizerConfig(layers=(5, 3), preprocessing="appendix_a", preprocessing_param=10.0)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 30), st.integers(0, 2**32 - 1))
def test_permuting_coordinates_permutes_updates(n, seed):
    rng = np.random.default_rng(seed)
    phi = {"all": init_network(rng, CONFIG)}
    grads = [{"x": rng.standard_normal(n) * 10.0 ** rng.integers(-6, 3)} for _ in range(3)]
    perm = rng.permutation(n)
    plain = run_steps(phi, grads, CONFIG)
    permuted = run_steps(phi, [{"x": g["x"][perm]} for g in grads], CONFIG)
    for a, b in zip(plain, permuted, strict=True):
        np.testing.assert_allclose(b["x"], a["x"][perm], rtol=1e-13, atol=1e-15)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_each_tensor_keeps_its_own_state(n_a, n_b, seed):
    """Spec §6: with two tensors, each coordinate's state is its own, as if run alone."""
    rng = np.random.default_rng(seed)
    phi = {"all": init_network(rng, CONFIG)}
    grads = [{"a": rng.standard_normal(n_a), "b": rng.standard_normal((n_b, 2))} for _ in range(3)]
    together = run_steps(phi, grads, CONFIG)
    alone_a = run_steps(phi, [{"a": g["a"]} for g in grads], CONFIG)
    alone_b = run_steps(phi, [{"b": g["b"]} for g in grads], CONFIG)
    for both, a, b in zip(together, alone_a, alone_b, strict=True):
        np.testing.assert_array_equal(both["a"], a["a"])
        np.testing.assert_array_equal(both["b"], b["b"])


def test_every_lstm_parameter_gets_a_meta_gradient():
    backend = get_backend("numpy")
    to_device = lambda a: backend.asarray(a, "float64")  # noqa: E731
    problem = quadratic(batch=4)
    instance = problem.sample(rng_for(0, "train"), to_device)
    config = OptimizerConfig()
    groups = assign_networks(instance.theta0, problem, config)
    phi = init_phi(rng_for(0, "init"), groups, config, to_device)
    hidden = start_hidden(instance.theta0, config)
    phi_grad, *_ = meta_gradient(
        phi,
        instance.theta0,
        hidden,
        instance,
        0,
        (0.0,) + (1.0,) * 5,
        LearnedOptimizer(config, groups),
    )
    for name, g in flatten(phi_grad).items():
        assert g.shape == flatten(phi)[name].shape
        assert np.all(g != 0), f"{name} has zero meta-gradient entries"


def test_fused_cell_refuses_higher_derivatives():
    from autograd import grad

    from l2l_ref.architectures.lstm import fused_lstm_cell

    rng = np.random.default_rng(0)
    layer = init_network(rng, OptimizerConfig(layers=(3,)))["lstm"][0]
    x, h, c = rng.standard_normal((4, 1)), rng.standard_normal((4, 3)), rng.standard_normal((4, 3))

    def loss(W):
        return np.sum(fused_lstm_cell({"W": W, "b": layer["b"]}, x, (h, c))[0] ** 2)

    grad(loss)(layer["W"])  # first derivatives work
    with pytest.raises(NotImplementedError, match="first derivatives only"):
        grad(lambda W: np.sum(grad(loss)(W) ** 2))(layer["W"])


def two_group_problem():
    """An optimizee whose tensors fall in two parameter groups, as the CIFAR net's do."""
    from l2l_ref.problems import Instance, Problem

    def sample(rng, to_device):
        theta0 = {
            "kernel": to_device(rng.standard_normal((2, 3))),
            "bias": to_device(rng.standard_normal(3)),
        }
        return Instance(
            theta0, lambda theta, t: np.sum(theta["kernel"] ** 2) + np.sum(theta["bias"] ** 4)
        )

    return Problem("two-groups", {}, sample, groups={"kernel": "conv", "bias": "fc"})


@pytest.mark.parametrize("shared", [False, True])
def test_parameter_groups_own_or_share_a_network(shared):
    problem = two_group_problem()
    config = OptimizerConfig(layers=(3,), share_networks=shared)
    instance = problem.sample(np.random.default_rng(0), np.asarray)
    groups = assign_networks(instance.theta0, problem, config)
    phi = init_phi(np.random.default_rng(1), groups, config, np.asarray)
    assert sorted(phi) == (["all"] if shared else ["conv", "fc"])
    hidden = start_hidden(instance.theta0, config)
    phi_grad, *_ = meta_gradient(
        phi, instance.theta0, hidden, instance, 0, (0.0, 1.0, 1.0), LearnedOptimizer(config, groups)
    )
    for network in phi:  # every network is used and learns
        assert all(np.any(g != 0) for g in flatten(phi_grad[network]).values())
    if not shared:  # each network sees only its own tensor: the kernel's gradient alone
        kernel_only = {"conv": phi["conv"]}
        grads = {"kernel": instance.theta0["kernel"]}
        updates, _ = optimizer_step(
            kernel_only,
            grads,
            {"kernel": hidden["kernel"]},
            LearnedOptimizer(config, {"kernel": "conv"}),
        )
        full, _ = optimizer_step(
            phi,
            {**grads, "bias": instance.theta0["bias"]},
            hidden,
            LearnedOptimizer(config, groups),
        )
        np.testing.assert_array_equal(updates["kernel"], full["kernel"])
