"""Elementwise functions that the optimizees and the optimizer both use, so that neither
imports the other."""

import autograd.numpy as np


def sigmoid(x):
    """Logistic function, written with tanh so it cannot overflow."""
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def relu(x):
    return np.maximum(x, 0.0)
