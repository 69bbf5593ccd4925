"""A second implementation of the method, in plain NumPy without autograd, for the tests.

It shares no code with l2l_ref: its own LSTM cell, preprocessing and unroll, and a
hand-written backward pass through time for the meta-gradient. With the paper's ∂∇_t/∂φ = 0
the adjoint of θ obeys docs/spec.md §1's closed form, λ_s = w_s ∇f(θ_s) + λ_{s+1} with ∂L/∂g_s =
λ_{s+1}; with second derivatives kept it gains H(θ_s) · ∂L/∂∇_s, the Hessian-vector product
of f with what the network's input passes back (problems that give `hvp`). It works in the
dtype of its inputs (float64 or float32).

The tests' optimizee here: several tensors coupled through one residual,

    f(θ, t) = ‖Σ_k A_k vec(θ_k) − y − t d‖²,     ∇_{θ_k} f = 2 A_kᵀ r,   H = 2 AᵀA.
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

    def hvp(self, theta, t, v):
        Av = sum(self.A[k] @ np.reshape(v[k], -1) for k in self.A)
        return {k: np.reshape(2 * self.A[k].T @ Av, np.shape(theta[k])) for k in self.A}

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


LOG_EPS = 1.1920929e-07


def preprocess(g, name, param):
    """The input map of the paper's Appendix A, the released LogAndSign, or identity."""
    g = g.reshape(-1, 1)
    if name == "identity":
        return g
    if name == "appendix_a":
        out = np.empty((g.shape[0], 2), dtype=g.dtype)
        for n, v in enumerate(g[:, 0]):
            if abs(v) >= math.exp(-param):
                out[n] = (math.log(abs(v)) / param, np.sign(v))
            else:
                out[n] = (-1.0, math.exp(param) * v)
        return out
    if name == "log_and_sign":
        log = np.maximum(np.log(np.abs(g) + LOG_EPS) / param, -1.0)
        return np.concatenate([log, np.clip(g * math.exp(param), -1, 1)], axis=1)
    raise ValueError(name)


def preprocess_backward(g, name, param, d_out):
    """∂L/∂∇ from ∂L/∂(preprocessed input), (n, input size) → (n,)."""
    g = g.reshape(-1)
    if name == "identity":
        return d_out[:, 0]
    if name == "appendix_a":
        large = np.abs(g) >= math.exp(-param)
        safe = np.where(large, g, 1.0)
        return np.where(large, d_out[:, 0] / (param * safe), math.exp(param) * d_out[:, 1])
    if name == "log_and_sign":
        log_slope = np.sign(g) / (param * (np.abs(g) + LOG_EPS))
        floored = np.log(np.abs(g) + LOG_EPS) / param < -1.0
        clipped = np.abs(g * math.exp(param)) > 1.0
        return np.where(floored, 0.0, log_slope * d_out[:, 0]) + np.where(
            clipped, 0.0, math.exp(param) * d_out[:, 1]
        )
    raise ValueError(name)


def cell_forward(W, b, x, h, c, forget_bias=1.0):
    """One Sonnet LSTM cell, gate order i, j, f, o; returns h, c and a cache."""
    xh = np.concatenate([x, h], axis=1)
    H = h.shape[1]
    z = xh @ W + b
    i, j, f, o = (
        sig(z[:, :H]),
        np.tanh(z[:, H : 2 * H]),
        sig(z[:, 2 * H : 3 * H] + forget_bias),
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


def zero_hidden(theta, config):
    return {
        k: [(np.zeros((v.size, H), v.dtype), np.zeros((v.size, H), v.dtype)) for H in config.layers]
        for k, v in theta.items()
    }


def by_group(names, groups) -> dict:
    """{group: [its tensors, in the order of `names`]}."""
    members = {}
    for name in names:
        members.setdefault(groups[name], []).append(name)
    return members


def average_units(h: dict, units: int) -> dict:
    """LSTM+GAC: the last `units` columns of every tensor's h replaced by their mean over the
    rows of all of them."""
    mean = sum(v[:, -units:].sum(axis=0) for v in h.values()) / sum(len(v) for v in h.values())
    out = {}
    for name, v in h.items():
        v = v.copy()
        v[:, -units:] = mean
        out[name] = v
    return out


def gac_units(config) -> int:
    return getattr(config.architecture, "gac_units", 0)


def run(phi, groups, problem, config, weights, hidden=None, frozen_grads=None, t0=0, theta=None):
    """Unroll len(weights) − 1 steps from θ (default θ_0) at step t0; returns L, per-step
    losses, θ, hidden, the gradients seen, caches. caches[t][tensor] = (layer caches, top
    layer's h, preprocessed input, update).

    phi: {group: {"lstm": [{"W", "b"}], "head": {"W", "b"}}} as NumPy arrays. With
    frozen_grads, ∇_t is read from it instead of computed at θ_t. Layer by layer over the
    tensors of a network together, so that LSTM+GAC can average over all of them.
    """
    theta = {k: np.array(v) for k, v in (theta or problem.theta0).items()}
    T = len(weights) - 1
    hidden = zero_hidden(theta, config) if hidden is None else hidden
    units = gac_units(config)
    losses, grads_seen, caches = [problem.value(theta, t0)], [], []
    for t in range(T):
        grads = frozen_grads[t] if frozen_grads is not None else problem.grad(theta, t0 + t)
        grads_seen.append(grads)
        step_caches, new_hidden = {}, {}
        for group, names in by_group(list(theta), groups).items():
            net = phi[group]
            x = {
                k: preprocess(
                    np.asarray(grads[k]), config.preprocessing, config.preprocessing_param
                )
                for k in names
            }
            inputs, layer_caches = dict(x), {k: [] for k in names}
            new_hidden |= {k: [] for k in names}
            for depth, layer in enumerate(net["lstm"]):
                h, c = {}, {}
                for k in names:
                    h[k], c[k], cache = cell_forward(
                        layer["W"], layer["b"], x[k], *hidden[k][depth]
                    )
                    layer_caches[k].append(cache)
                x = average_units(h, units) if units else h
                for k in names:
                    new_hidden[k].append((x[k], c[k]))
            for k in names:
                update = (x[k] @ net["head"]["W"] + net["head"]["b"]) * config.output_scale
                step_caches[k] = (layer_caches[k], x[k], inputs[k], update)
                theta[k] = theta[k] + update.reshape(np.shape(theta[k]))
        hidden = new_hidden
        caches.append(step_caches)
        losses.append(problem.value(theta, t0 + t + 1))
    L = sum(w * f for w, f in zip(weights, losses, strict=True))
    return L, losses, theta, hidden, grads_seen, caches


def meta_gradient(
    phi, groups, problem, config, weights, theta=None, hidden=None, t0=0, second_order=False
):
    """dL/dφ of the unroll from θ (default θ_0) and hidden state at step t0, by the adjoint
    recursion of the module docstring and backpropagation through time (through the GAC
    averages too: each row of an averaged unit receives the mean of their adjoints)."""
    start = {k: np.array(v) for k, v in (theta or problem.theta0).items()}
    _, _, _, _, grads_seen, caches = run(
        phi, groups, problem, config, weights, hidden, t0=t0, theta=start
    )
    T, units = len(weights) - 1, gac_units(config)
    thetas = [start]  # θ_t for t = 0..T
    for t in range(T):
        thetas.append(
            {k: thetas[-1][k] + caches[t][k][3].reshape(np.shape(thetas[-1][k])) for k in start}
        )
    out = {
        g: {
            "lstm": [{k: np.zeros_like(v) for k, v in layer.items()} for layer in net["lstm"]],
            "head": {k: np.zeros_like(v) for k, v in net["head"].items()},
        }
        for g, net in phi.items()
    }
    final = problem.grad(thetas[T], t0 + T)
    adjoint = {k: weights[T] * np.reshape(final[k], -1) for k in start}  # λ_T
    dh_next = {k: [0.0] * len(config.layers) for k in start}
    dc_next = {k: [0.0] * len(config.layers) for k in start}
    for s in reversed(range(T)):
        d_grad = {}
        for group, names in by_group(list(start), groups).items():
            net, grad_net = phi[group], out[group]
            dx = {}
            for k in names:
                top = caches[s][k][1]
                d_out = adjoint[k].reshape(-1, 1) * config.output_scale  # ∂L/∂g_s = λ_{s+1}
                grad_net["head"]["W"] += top.T @ d_out
                grad_net["head"]["b"] += d_out.sum(axis=0)
                dx[k] = d_out @ net["head"]["W"].T
            for n in reversed(range(len(config.layers))):
                dh = {k: dx[k] + dh_next[k][n] for k in names}  # ∂L/∂ of the layer's output
                if units:
                    dh = average_units(dh, units)
                for k in names:
                    dW, db, dx[k], dh_next[k][n], dc_next[k][n] = cell_backward(
                        net["lstm"][n]["W"], caches[s][k][0][n], dh[k], dc_next[k][n]
                    )
                    grad_net["lstm"][n]["W"] += dW
                    grad_net["lstm"][n]["b"] += db
            for k in names:
                g = np.asarray(grads_seen[s][k])
                d_grad[k] = preprocess_backward(
                    g, config.preprocessing, config.preprocessing_param, dx[k]
                ).reshape(np.shape(g))
        seen = problem.grad(thetas[s], t0 + s)
        adjoint = {k: weights[s] * np.reshape(seen[k], -1) + adjoint[k] for k in start}
        if second_order:
            hv = problem.hvp(thetas[s], t0 + s, d_grad)
            adjoint = {k: adjoint[k] + np.reshape(hv[k], -1) for k in start}
    return out
