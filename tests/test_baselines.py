"""The hand-designed baselines against closed forms, and their tuning protocol."""

import math

import numpy as np
import pytest

from l2l_ref import comparison as evaluate_module
from l2l_ref.backends import get_backend
from l2l_ref.baselines import (
    BASELINES,
    LEARNING_RATES,
    adam_update,
    run_baseline,
    tune_learning_rate,
)
from l2l_ref.optimizer import OptimizerConfig, init_network
from l2l_ref.problems import Instance, quadratic, simple
from l2l_ref.streams import rng_for

BACKEND = get_backend("numpy")


def to_device(a):
    return BACKEND.asarray(a, "float64")


def half_square(a, x0=1.0):
    """f(x) = a x² / 2 from x_0: ∇ = a x."""
    return Instance({"x": np.array(x0)}, lambda theta, t: 0.5 * a * theta["x"] ** 2)


def test_sgd_closed_form():
    lr, a = 0.1, 3.0
    losses = run_baseline("SGD", lr, half_square(a), 10, BACKEND.to_host)
    expected = [0.5 * a * (1 - lr * a) ** (2 * t) for t in range(11)]
    np.testing.assert_allclose(losses, expected, rtol=1e-13)


def test_nag_matches_its_linear_recurrence_matrix():
    # on f = a x²/2: [x', v'] = M [x, v], M = [[1-lr a, μ(1-lr a)], [-lr a, μ(1-lr a)]]
    lr, a, mu = 0.05, 2.0, 0.9
    M = np.array([[1 - lr * a, mu * (1 - lr * a)], [-lr * a, mu * (1 - lr * a)]])
    losses = run_baseline("NAG", lr, half_square(a), 12, BACKEND.to_host)
    for t in (1, 5, 12):
        x = (np.linalg.matrix_power(M, t) @ [1.0, 0.0])[0]
        assert losses[t] == pytest.approx(0.5 * a * x**2, rel=1e-12)


def test_adam_is_kingma_ba_with_epsilon_scaled_as_torch7():
    """Torch7's form equals m̂ / (sqrt(v̂) + ε / sqrt(1 − β2^t)) with bias-corrected moments."""
    rng = np.random.default_rng(0)
    x, m, v = np.zeros(4), np.zeros(4), np.zeros(4)
    state = {"m": np.zeros(4), "v": np.zeros(4), "t": 0}
    params = np.zeros(4)
    for t in range(1, 6):
        g = rng.standard_normal(4) * 1e-6
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
        x = x - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8 / math.sqrt(1 - 0.999**t))
        params, state = adam_update(params, g, state, 0.1)
    np.testing.assert_allclose(params, x, rtol=1e-12)


def test_rmsprop_first_step_is_ten_learning_rates():
    # m = 0.01 ∇², so the first step is lr ∇ / (0.1 |∇| + ε) ≈ 10 lr sign(∇)
    losses = run_baseline("RMSprop", 0.01, half_square(1.0, x0=2.0), 1, BACKEND.to_host)
    x1 = 2.0 - 0.01 * 2.0 / (0.1 * 2.0 + 1e-8)
    assert losses[1] == pytest.approx(0.5 * x1**2, rel=1e-12)


def test_tuning_finds_the_one_step_learning_rate():
    # SGD on x² from 1: lr = 0.5 lands on the minimum in one step
    lr, finals = tune_learning_rate(
        "SGD",
        [simple().sample(None, to_device)],
        5,
        BACKEND.to_host,
        grid=(0.1, 0.2, 0.5, 1.0, 2.0),
    )
    assert lr == 0.5 and finals[0.5] == {"mean_final": 0.0, "diverged": 0}
    assert finals[2.0]["mean_final"] == pytest.approx((1 - 4.0) ** 10)  # |1 − 2·lr| = 3
    assert finals[2.0]["diverged"] == 1 and finals[1.0]["diverged"] == 0  # 1 → −1 → 1: level


def test_diverging_rates_count_as_infinite():
    problem = quadratic(batch=2)
    instance = problem.sample(np.random.default_rng(0), to_device)
    _, finals = tune_learning_rate("SGD", [instance], 100, BACKEND.to_host, grid=(1e6,))
    assert finals[1e6] == {"mean_final": float("inf"), "diverged": 1}


def test_tuning_passes_over_a_rate_that_diverges_on_one_validation_problem():
    """SGD on x² from 1 and on 100 x² from 1e-3, 20 steps. lr 0.011 ends at 0.41 on the first
    and blows the second up by |1 − 2.2|^40 ≈ 1,470 times its start (to 0.15); lr 0.005 ends at
    0.67 and 0. The first rate's mean is the lower (0.28 against 0.33), but it diverged on a
    validation problem: tuning takes the second."""
    wide = Instance({"x": to_device(np.array(1.0))}, lambda theta, t: theta["x"] ** 2)
    steep = Instance({"x": to_device(np.array(1e-3))}, lambda theta, t: 100 * theta["x"] ** 2)
    lr, finals = tune_learning_rate("SGD", [wide, steep], 20, BACKEND.to_host, grid=(0.011, 0.005))
    assert finals[0.011]["diverged"] == 1 and finals[0.005]["diverged"] == 0
    assert finals[0.011]["mean_final"] < finals[0.005]["mean_final"]
    assert lr == 0.005


def test_grid_is_logarithmic_three_per_decade():
    ratios = np.diff(np.log10(LEARNING_RATES))
    assert LEARNING_RATES[0] == 1e-4 and LEARNING_RATES[-1] == 10
    assert np.all((ratios > 0.2) & (ratios < 0.45))


def test_baselines_are_tuned_on_validation_problems_only(monkeypatch):
    problem = quadratic(batch=2)
    seen = []
    real_tune = evaluate_module.tune_learning_rate

    def spy(name, validation, *args, **kwargs):
        seen.extend(inst.loss({"x": np.ones((2, 10))}, 0) for inst in validation)
        return real_tune(name, validation, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "tune_learning_rate", spy)
    config = OptimizerConfig(layers=(2,))
    phi = {"all": init_network(np.random.default_rng(0), config)}
    results = evaluate_module.evaluate(
        problem, phi, {"x": "all"}, config, steps=3, test_problems=2, validation_problems=2,
        seed=5, to_device=to_device, to_host=BACKEND.to_host, grid=(0.1, 1.0),
    )  # fmt: skip
    rng_val, rng_test = rng_for(5, "validation"), rng_for(5, "test")
    at_ones = {"x": np.ones((2, 10))}
    validation = [problem.sample(rng_val, to_device).loss(at_ones, 0) for _ in range(2)]
    test = [problem.sample(rng_test, to_device).loss(at_ones, 0) for _ in range(2)]
    assert set(seen) == set(validation) and not set(seen) & set(test)
    assert set(results) == {"learned", *BASELINES}
    for name in BASELINES:
        assert results[name]["learning_rate"] in (0.1, 1.0)
        assert len(results[name]["mean_loss"]) == 4
