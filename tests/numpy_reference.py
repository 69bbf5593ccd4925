"""A second implementation of the method, in plain NumPy without autograd, for the tests.

It shares no code with l2l_ref: its own LSTM cell, preprocessing and unroll, a hand-written
backward pass through time for the first-order meta-gradient (spec §1: ∂L/∂g_s is the reverse
cumulative sum Σ_{t>s} w_t ∇f(θ_t), backpropagated through the LSTM over the fixed inputs),
and a test optimizee with closed-form gradients: several tensors coupled through one residual,

    f(θ, t) = ‖Σ_k A_k vec(θ_k) − y − t d‖²,     ∇_{θ_k} f = 2 A_kᵀ r.
"""

import math
from dataclasses import dataclass

import autograd.numpy as anp
import numpy as np

from l2l_ref.problems import Instance


@dataclass
class CoupledQuadratic:
    A: dict  # tensor name -> (m, size)
    y: np.ndarray
    d: np.ndarray
    theta0: dict

    def residual(self, theta, t):
        return sum(self.A[k] @ np.reshape(theta[k], -1) for k in self.A) - self.y - t * self.d

    def value(self, theta, t):
        r = self.residual(theta, t)
        return float(r @ r)

    def grad(self, theta, t):
        r = self.residual(theta, t)
        return {k: np.reshape(2 * self.A[k].T @ r, np.shape(theta[k])) for k in self.A}

    def instance(self, to_device=np.copy) -> Instance:
        """The same function for l2l_ref, written with autograd.numpy, its arrays moved by
        `to_device`."""
        A = {k: to_device(a) for k, a in self.A.items()}
        y, d = to_device(self.y), to_device(self.d)

        def loss(theta, t):
            r = sum(A[k] @ anp.reshape(theta[k], -1) for k in A) - y - t * d
            return anp.sum(r**2)

        return Instance({k: to_device(v) for k, v in self.theta0.items()}, loss)


def coupled_quadratic(rng: np.random.Generator, shapes: dict, m: int = 4) -> CoupledQuadratic:
    A = {k: rng.standard_normal((m, math.prod(s))) / math.sqrt(m) for k, s in shapes.items()}
    theta0 = {k: rng.standard_normal(s) for k, s in shapes.items()}
    return CoupledQuadratic(A, rng.standard_normal(m), 0.1 * rng.standard_normal(m), theta0)


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def preprocess(g, name, param):
    """The input map of the paper's Appendix A, the released LogAndSign, or identity."""
    g = g.reshape(-1, 1)
    if name == "identity":
        return g
    if name == "appendix_a":
        out = np.empty((g.shape[0], 2))
        for n, v in enumerate(g[:, 0]):
            if abs(v) >= math.exp(-param):
                out[n] = (math.log(abs(v)) / param, np.sign(v))
            else:
                out[n] = (-1.0, math.exp(param) * v)
        return out
    if name == "log_and_sign":
        log = np.maximum(np.log(np.abs(g) + 1.1920929e-07) / param, -1.0)
        return np.concatenate([log, np.clip(g * math.exp(param), -1, 1)], axis=1)
    raise ValueError(name)


def cell_forward(W, b, x, h, c):
    """One Sonnet LSTM cell, gate order i, j, f, o, forget bias 1; returns h, c and a cache."""
    xh = np.concatenate([x, h], axis=1)
    H = h.shape[1]
    z = xh @ W + b
    i, j, f, o = (
        sig(z[:, :H]),
        np.tanh(z[:, H : 2 * H]),
        sig(z[:, 2 * H : 3 * H] + 1),
        sig(z[:, 3 * H :]),
    )
    c_new = f * c + i * j
    h_new = o * np.tanh(c_new)
    return h_new, c_new, (xh, i, j, f, o, c, c_new)


def cell_backward(W, cache, dh, dc):
    """Gradients of one cell: (dW, db, dx, dh_prev, dc_prev) from dL/dh_new, dL/dc_new."""
    xh, i, j, f, o, c, c_new = cache
    tc = np.tanh(c_new)
    dc = dc + dh * o * (1 - tc**2)
    dz = np.concatenate(
        [dc * j * i * (1 - i), dc * i * (1 - j**2), dc * c * f * (1 - f), dh * tc * o * (1 - o)],
        axis=1,
    )
    dxh = dz @ W.T
    n_in = xh.shape[1] - c.shape[1]
    return xh.T @ dz, dz.sum(axis=0), dxh[:, :n_in], dxh[:, n_in:], dc * f


def run(phi, groups, problem, config, weights, hidden=None, frozen_grads=None, t0=0, theta=None):
    """Unroll len(weights) − 1 steps from θ (default θ_0) at step t0; returns L, per-step
    losses, θ, hidden, inputs, caches. caches[t][tensor] = (layer caches, top layer's h,
    preprocessed input, update).

    phi: {group: {"lstm": [{"W", "b"}], "head": {"W", "b"}}} as NumPy arrays. With
    frozen_grads, ∇_t is read from it instead of computed at θ_t.
    """
    theta = {k: np.array(v, dtype=float) for k, v in (theta or problem.theta0).items()}
    T = len(weights) - 1
    if hidden is None:
        hidden = {
            k: [(np.zeros((v.size, H)), np.zeros((v.size, H))) for H in config.layers]
            for k, v in theta.items()
        }
    losses, grads_seen, caches = [problem.value(theta, t0)], [], []
    for t in range(T):
        grads = frozen_grads[t] if frozen_grads is not None else problem.grad(theta, t0 + t)
        grads_seen.append(grads)
        step_caches, new_hidden = {}, {}
        for k, g in grads.items():
            net = phi[groups[k]]
            x = preprocess(np.asarray(g), config.preprocessing, config.preprocessing_param)
            inputs = x
            layer_caches, states = [], []
            for layer, (h, c) in zip(net["lstm"], hidden[k], strict=True):
                h, c, cache = cell_forward(layer["W"], layer["b"], x, h, c)
                layer_caches.append(cache)
                states.append((h, c))
                x = h
            update = (x @ net["head"]["W"] + net["head"]["b"]) * config.output_scale
            step_caches[k] = (layer_caches, x, inputs, update)
            new_hidden[k] = states
            theta[k] = theta[k] + update.reshape(np.shape(theta[k]))
        hidden = new_hidden
        caches.append(step_caches)
        losses.append(problem.value(theta, t0 + t + 1))
    L = sum(w * f for w, f in zip(weights, losses, strict=True))
    return L, losses, theta, hidden, grads_seen, caches


def first_order_meta_gradient(phi, groups, problem, config, weights, theta=None, hidden=None, t0=0):
    """dL/dφ with ∂∇_t/∂φ = 0, by spec §1's closed form and backpropagation through time,
    for the unroll from θ (default θ_0) and hidden state at step t0."""
    _, _, _, _, _, caches = run(phi, groups, problem, config, weights, hidden, t0=t0, theta=theta)
    T = len(weights) - 1
    # θ_t for t = 1..T, to get ∇f(θ_t) for the reverse cumulative sum
    thetas = [{k: np.array(v, dtype=float) for k, v in (theta or problem.theta0).items()}]
    for t in range(T):
        thetas.append(
            {
                k: thetas[-1][k]
                + (
                    (caches[t][k][1] @ phi[groups[k]]["head"]["W"] + phi[groups[k]]["head"]["b"])
                    * config.output_scale
                ).reshape(np.shape(thetas[-1][k]))
                for k in thetas[-1]
            }
        )
    dg = [None] * T  # dL/dg_s = Σ_{t=s+1..T} w_t ∇f(θ_t)
    running = {k: np.zeros(np.size(v)) for k, v in problem.theta0.items()}
    for s in reversed(range(T)):
        grad_next = problem.grad(thetas[s + 1], t0 + s + 1)
        running = {k: running[k] + weights[s + 1] * np.reshape(grad_next[k], -1) for k in running}
        dg[s] = {k: v.copy() for k, v in running.items()}

    out = {
        g: {
            "lstm": [
                {"W": np.zeros_like(layer["W"]), "b": np.zeros_like(layer["b"])}
                for layer in net["lstm"]
            ],
            "head": {"W": np.zeros_like(net["head"]["W"]), "b": np.zeros_like(net["head"]["b"])},
        }
        for g, net in phi.items()
    }
    for k in problem.theta0:
        net, grad_net = phi[groups[k]], out[groups[k]]
        n_layers = len(net["lstm"])
        dh_next = [0.0] * n_layers
        dc_next = [0.0] * n_layers
        for s in reversed(range(T)):
            layer_caches, top = caches[s][k][:2]
            d_out = dg[s][k].reshape(-1, 1) * config.output_scale
            grad_net["head"]["W"] += top.T @ d_out
            grad_net["head"]["b"] += d_out.sum(axis=0)
            dx = d_out @ net["head"]["W"].T
            for n in reversed(range(n_layers)):
                dW, db, dx, dh_next[n], dc_next[n] = cell_backward(
                    net["lstm"][n]["W"], layer_caches[n], dx + dh_next[n], dc_next[n]
                )
                grad_net["lstm"][n]["W"] += dW
                grad_net["lstm"][n]["b"] += db
    return out
