"""Input preprocessing of the optimizee gradient (Appendix A, and the released code's variant).

Each function maps a column of gradients, shape (n, 1), to the LSTM's input rows, shape
(n, input_size). Gradients of very different magnitudes reach the LSTM on a similar scale.
"""

import math

import autograd.numpy as np
import numpy as onp

# float32 machine epsilon, which the released TensorFlow code adds inside the log.
LOG_AND_SIGN_EPS = 1.1920929e-07


def identity(grad, _param: float = 0.0):
    """No preprocessing: the LSTM sees ∇ itself (the paper's quadratic experiments)."""
    return grad


def appendix_a(grad, p: float = 10.0):
    """Appendix A:  ∇ ↦ (log|∇|/p, sgn ∇) if |∇| ≥ e^{-p},  else (−1, e^p ∇).

    The two branches meet at |∇| = e^{-p}, where both give (−1, ±1). The log is taken of
    max(|∇|, e^{-p}) so that the branch np.where discards never computes log 0.
    """
    threshold = math.exp(-p)
    magnitude = np.abs(grad)
    large = magnitude >= threshold
    log_part = np.where(large, np.log(np.maximum(magnitude, threshold)) / p, -1.0)
    # clipping changes nothing where the small branch is taken and keeps e^p ∇ from
    # overflowing where it is not
    sign_part = np.where(large, np.sign(grad), math.exp(p) * np.clip(grad, -threshold, threshold))
    return np.concatenate([log_part, sign_part], axis=1)


def log_and_sign(grad, k: float = 5.0):
    """The released code's LogAndSign(k): (max(ln(|∇| + ε)/k, −1), clip(∇ e^k, −1, 1))."""
    log_part = np.maximum(np.log(np.abs(grad) + LOG_AND_SIGN_EPS) / k, -1.0)
    with onp.errstate(over="ignore"):  # ∇ e^k may overflow to ±inf, which the clip maps to ±1
        sign_part = np.clip(grad * math.exp(k), -1.0, 1.0)
    return np.concatenate([log_part, sign_part], axis=1)


# name -> (function, number of LSTM inputs per coordinate)
PREPROCESSORS = {
    "identity": (identity, 1),
    "appendix_a": (appendix_a, 2),
    "log_and_sign": (log_and_sign, 2),
}
