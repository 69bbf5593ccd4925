"""Appendix A's preprocessing and the released LogAndSign, against their formulas by hand."""

import math

import numpy as np
import pytest
from autograd import grad

from l2l_ref.preprocessing import LOG_AND_SIGN_EPS, appendix_a, identity, log_and_sign


def column(*values):
    return np.array(values, dtype=float).reshape(-1, 1)


@pytest.mark.parametrize("p", [10.0, 5.0, 1.0])
def test_appendix_a_large_branch(p):
    g = column(0.5, -3.0, 1e3, -0.4)  # all ≥ e^{-1}
    out = appendix_a(g, p)
    expected = [[math.log(abs(v)) / p, math.copysign(1.0, v)] for v in g[:, 0]]
    np.testing.assert_allclose(out, expected, rtol=1e-15)


@pytest.mark.parametrize("p", [10.0, 5.0])
def test_appendix_a_small_branch(p):
    g = column(1e-6, -1e-7, 0.5 * math.exp(-p), -0.99 * math.exp(-p))
    out = appendix_a(g, p)
    expected = [[-1.0, math.exp(p) * v] for v in g[:, 0]]
    np.testing.assert_allclose(out, expected, rtol=1e-14)


def test_appendix_a_at_threshold_takes_log_branch_and_is_continuous():
    p = 10.0
    at = math.exp(-p)
    out = appendix_a(column(at, -at, np.nextafter(at, 0)), p)
    np.testing.assert_allclose(out[0], [math.log(at) / p, 1.0], rtol=1e-15)  # |∇| ≥ e^-p
    np.testing.assert_allclose(out[1], [math.log(at) / p, -1.0], rtol=1e-15)
    np.testing.assert_allclose(out[2], [-1.0, 1.0], rtol=1e-12)  # just below: (−1, e^p ∇) ≈ (−1, 1)
    assert out[0, 0] == pytest.approx(-1.0, abs=1e-15)


def test_appendix_a_zero_and_extremes_are_finite():
    g = column(0.0, -0.0, 1e-300, 5e-324, 1e300, -1e300, np.finfo(float).max)
    out = appendix_a(g, 10.0)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[:4, 0], -1.0)
    np.testing.assert_allclose(out[4:, 0], np.log(np.abs(g[4:, 0])) / 10.0)
    np.testing.assert_array_equal(out[4:, 1], [1.0, -1.0, 1.0])


def test_appendix_a_second_order_derivative_is_finite_at_zero():
    # d/d∇ of the sign component: e^p below the threshold, 0 above; never NaN, even at 0
    d_small = grad(lambda g: appendix_a(g, 10.0)[0, 1])(column(0.0))
    d_large = grad(lambda g: appendix_a(g, 10.0)[0, 0])(column(2.0))
    assert d_small[0, 0] == pytest.approx(math.exp(10.0))
    assert d_large[0, 0] == pytest.approx(1 / (2.0 * 10.0))


def test_log_and_sign_formula():
    k = 5.0
    g = column(0.0, 1e-9, -1e-3, 0.2, -50.0)
    out = log_and_sign(g, k)
    for (log_part, sign_part), v in zip(out, g[:, 0], strict=True):
        assert log_part == pytest.approx(max(math.log(abs(v) + LOG_AND_SIGN_EPS) / k, -1.0))
        assert sign_part == pytest.approx(min(max(v * math.exp(k), -1.0), 1.0))
    assert (
        out[0, 0] == -1.0 and out[4, 1] == -1.0 and out[2, 1] == pytest.approx(-math.exp(5) * 1e-3)
    )


def test_identity_is_identity():
    g = column(1.0, -2.0)
    assert identity(g) is g


def test_log_and_sign_at_extremes_is_finite_and_exact():
    g = column(0.0, 1e-300, 1e300, -1e300, np.finfo(float).max)
    out = log_and_sign(g, 10.0)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[:, 1], [0.0, math.exp(10.0) * 1e-300, 1.0, -1.0, 1.0])
    np.testing.assert_array_equal(out[:2, 0], -1.0)
