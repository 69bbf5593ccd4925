"""Another implementation's outputs for the reference vectors, written as `l2l-ref verify`
reads them: the optimizees' values and gradients by hand, the LSTM and the meta-gradient by
tests/numpy_reference.py (plain NumPy, no autograd), Torch7's Adam and the four baselines
written out here. It runs in float64 or float32.

`bug` plants one known mistake (BUGS; the vectors' manifest says for each case which ones it
catches and where), so that the tests can check that verify reports each where the manifest
says.
"""

import json
import math
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np

from l2l_ref.architectures import LSTM, LSTMGAC, NTMBFGS
from l2l_ref.files import npz_bytes
from l2l_ref.optimizer import OptimizerConfig
from l2l_ref.vectors import FORMAT, VERSION
from tests import numpy_reference as ref


class Simple:
    """f(x) = x²."""

    def __init__(self, data, bug):
        pass

    def value(self, theta, t):
        return theta["x"] ** 2

    def grad(self, theta, t):
        return {"x": 2 * theta["x"]}

    def hvp(self, theta, t, v):
        return {"x": 2 * v["x"]}


class Quadratic:
    """f = mean_b ‖W_b x_b − y_b‖²,  ∇ = (2/B) W_bᵀ r_b,  H v = (2/B) W_bᵀ W_b v_b."""

    def __init__(self, data, bug):
        self.W, self.y = data["W"], data["y"]

    def residual(self, x):
        return np.einsum("bij,bj->bi", self.W, x) - self.y

    def value(self, theta, t):
        return np.mean(np.sum(self.residual(theta["x"]) ** 2, axis=1))

    def grad(self, theta, t):
        r = self.residual(theta["x"])
        return {"x": 2 * np.einsum("bij,bi->bj", self.W, r) / len(r)}

    def hvp(self, theta, t, v):
        Wv = np.einsum("bij,bj->bi", self.W, v["x"])
        return {"x": 2 * np.einsum("bij,bi->bj", self.W, Wv) / len(Wv)}


class Minibatches:
    """The images and one-hot labels of step t's minibatch; softmax cross-entropy."""

    def __init__(self, data, bug):
        self.images, self.labels, self.indices = data["images"], data["labels"], data["indices"]
        self.classes = int(self.labels.max()) + 1
        self.bug = bug

    def batch(self, t):
        chosen = self.indices[t]
        return self.images[chosen], np.eye(self.classes, dtype=self.images.dtype)[
            self.labels[chosen]
        ]

    def cross_entropy(self, logits, onehot):
        """The loss and its gradient with respect to the logits."""
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        n = 1 if self.bug == "cross-entropy summed over the minibatch" else len(probs)
        return -np.sum(onehot * np.log(probs)) / n, (probs - onehot) / n


class MLP(Minibatches):
    """A sigmoid MLP, backpropagated by hand."""

    def forward(self, theta, t):
        images, onehot = self.batch(t)
        layers = len(theta) // 2
        activations = [images.reshape(len(images), -1)]
        for k in range(layers):
            z = activations[-1] @ theta[f"W{k}"] + theta[f"b{k}"]
            activations.append(z if k == layers - 1 else ref.sig(z))
        logits = activations.pop()
        return activations, self.cross_entropy(logits, onehot)

    def value(self, theta, t):
        return self.forward(theta, t)[1][0]

    def grad(self, theta, t):
        activations, (_, dz) = self.forward(theta, t)
        grads = {}
        for k in reversed(range(len(activations))):
            grads[f"W{k}"], grads[f"b{k}"] = activations[k].T @ dz, dz.sum(axis=0)
            if k:
                a = activations[k]
                dz = (dz @ theta[f"W{k}"].T) * a * (1 - a)
        return grads


class ConvNet(Minibatches):
    """The conv net of l2l_ref.problems.conv_net without the biases before batch norm (as the
    vectors' case has it), written as im2col products and backpropagated by hand."""

    def batch_norm(self, x, offset):
        axes = tuple(range(x.ndim - 1))
        n = math.prod(x.shape[:-1])
        centred = x - x.mean(axis=axes)
        ddof = 1 if self.bug == "unbiased batch variance" else 0
        sigma = np.sqrt((centred**2).sum(axis=axes) / (n - ddof) + 1e-3)
        if self.bug == "batch norm's ε added to σ":
            sigma = np.sqrt((centred**2).sum(axis=axes) / n) + 1e-3
        return centred / sigma + offset, (centred / sigma, sigma, axes)

    @staticmethod
    def batch_norm_backward(dy, cache):
        normed, sigma, axes = cache
        mean_dy, mean_dy_normed = dy.mean(axis=axes), (dy * normed).mean(axis=axes)
        return (dy - mean_dy - normed * mean_dy_normed) / sigma, dy.sum(axis=axes)

    def patches(self, x, k):
        """(N, H, W, k, k, C): the k × k window of the SAME-padded x at every pixel."""
        before = (k - 1) // 2
        padded = np.pad(x, ((0, 0), (before, k - 1 - before), (before, k - 1 - before), (0, 0)))
        height, width = x.shape[1:3]
        windows = [[padded[:, i : i + height, j : j + width] for j in range(k)] for i in range(k)]
        return np.stack([np.stack(row, axis=3) for row in windows], axis=3)

    def forward(self, theta, t):
        x, onehot = self.batch(t)
        caches, k_layers = [], sum(1 for name in theta if name.endswith("_offset")) - 1
        for k in range(k_layers):
            kernel = theta[f"conv{k}_W"]
            if self.bug == "convolution, not cross-correlation":
                kernel = kernel[::-1, ::-1]
            cols = self.patches(x, kernel.shape[0])
            z = np.einsum("nhwijc,ijcd->nhwd", cols, kernel)
            normed, bn = self.batch_norm(z, theta[f"conv{k}_offset"])
            a = np.maximum(normed, 0)
            n, height, width, channels = a.shape
            cropped = a[:, : height // 2 * 2, : width // 2 * 2]
            blocks = cropped.reshape(n, height // 2, 2, width // 2, 2, channels)
            pooled = blocks.max(axis=(2, 4))
            caches.append((x.shape, cols, normed, bn, blocks, pooled))
            x = pooled
        flat = x.reshape(len(x), -1)
        normed, bn = self.batch_norm(
            flat @ theta["fc_W"] + theta.get("fc_b", 0), theta["fc_offset"]
        )
        hidden = np.maximum(normed, 0)
        logits = hidden @ theta["out_W"] + theta["out_b"]
        return caches, (flat, normed, bn, hidden), self.cross_entropy(logits, onehot)

    def value(self, theta, t):
        return self.forward(theta, t)[2][0]

    def grad(self, theta, t):
        caches, (flat, normed, bn, hidden), (_, dlogits) = self.forward(theta, t)
        grads = {"out_W": hidden.T @ dlogits, "out_b": dlogits.sum(axis=0)}
        dz, grads["fc_offset"] = self.batch_norm_backward(
            (dlogits @ theta["out_W"].T) * (normed > 0), bn
        )
        grads["fc_W"] = flat.T @ dz
        dx = (dz @ theta["fc_W"].T).reshape(caches[-1][-1].shape)
        for k in reversed(range(len(caches))):
            shape, cols, normed_k, bn_k, blocks, pooled = caches[k]
            at_max = blocks == pooled[:, :, None, :, None, :]  # ties share the gradient
            if self.bug == "the first maximum takes the gradient":  # argmax pooling
                flat = at_max.transpose(0, 1, 3, 5, 2, 4).reshape(*pooled.shape, 4)
                first = np.arange(4) == flat.argmax(axis=-1)[..., None]
                at_max = first.reshape(*pooled.shape, 2, 2).transpose(0, 1, 4, 2, 5, 3)
            share = (
                1
                if self.bug == "every maximum takes the whole gradient"
                else at_max.sum(axis=(2, 4))
            )
            d_blocks = at_max * (dx / share)[:, :, None, :, None, :]
            d_act = np.zeros_like(normed_k)
            n, h2, _, w2, _, c = blocks.shape
            d_act[:, : 2 * h2, : 2 * w2] = d_blocks.reshape(n, 2 * h2, 2 * w2, c)
            dz, grads[f"conv{k}_offset"] = self.batch_norm_backward(d_act * (normed_k > 0), bn_k)
            grads[f"conv{k}_W"] = np.einsum("nhwijc,nhwd->ijcd", cols, dz)
            if k:  # back through the padded windows to the layer's input
                d_cols = np.einsum("nhwd,ijcd->nhwijc", dz, theta[f"conv{k}_W"])
                dx = self.unpatch(d_cols, shape)
        return grads

    @staticmethod
    def unpatch(d_cols, shape):
        k, before = d_cols.shape[3], (d_cols.shape[3] - 1) // 2
        n, height, width, c = shape
        padded = np.zeros((n, height + k - 1, width + k - 1, c), d_cols.dtype)
        for i in range(k):
            for j in range(k):
                padded[:, i : i + height, j : j + width] += d_cols[:, :, :, i, j]
        return padded[:, before : before + height, before : before + width]


PROBLEMS = {"simple": Simple, "quadratic": Quadratic, "tiny-mlp": MLP, "tiny-conv": ConvNet}

# every bug the candidate can plant; a test requires these to be exactly the manifest's claims
PREPROCESSING_BUGS = (
    "p = 5", "e^{-p} for e^p", "no small-gradient branch", "log 0", "no floor at −1",
    "sign for the clip", "log part clipped at 1", "e^{-k} for e^k", "no ε in the log",
    "Appendix A (p = 10) for LogAndSign", "Appendix A (p = k = 5) for LogAndSign",
)  # fmt: skip
POOLING_BUGS = ("the first maximum takes the gradient", "every maximum takes the whole gradient")
CELL_BUGS = ("gate order", "no forget bias", "rows of W swapped")
GAC_BUGS = {
    "no global averaging": lambda h, units: h,
    "average over each tensor alone": lambda h, units: {
        name: ref.average_units({name: v}, units)[name] for name, v in h.items()
    },
    "the mean of each tensor's mean": lambda h, units: {
        name: np.concatenate(
            [
                v[:, :-units],
                np.broadcast_to(
                    sum(u[:, -units:].mean(axis=0) for u in h.values()) / len(h),
                    v[:, -units:].shape,
                ),
            ],
            axis=1,
        )
        for name, v in h.items()
    },
}

NTM_BUGS = (
    "read before write", "M_0 = 0", "writes not scaled by 1/N", "a write head missing",
    "window one step short", "window one step long",
)  # fmt: skip


BUGS = (
    *PREPROCESSING_BUGS, *CELL_BUGS,
    "θ − g for θ + g", "meta-loss from t = 1", "θ reset at the cut", "Adam without bias correction",
    "state zeroed at the cut", "f(θ_0) in the loss", "no stop-gradient", "stop-gradient",
    "both bias gradients added", "meta-gradients accumulated", "PyTorch's Adam",
    "weights one step early", "weights ignored", "cross-entropy summed over the minibatch",
    "shared hidden state", "one buffer updated in place", "no output scale",
    "f(θ_0) left out of the released loss", "one network for every tensor",
    "unbiased batch variance", "convolution, not cross-correlation",
    "RMSprop ε inside the square root", "RMSprop mean square started at ∇²",
    "NAG gradient at θ", "PyTorch's Nesterov", *GAC_BUGS, "cell state averaged too",
    "average on the next layer only", *POOLING_BUGS, "average over every network's tensors",
    "RMSprop α and 1 − α swapped", "output scale before the head bias",
    "batch norm's ε added to σ", *NTM_BUGS,
)  # fmt: skip


def buggy_preprocess(bug):
    """ref.preprocess with one of PREPROCESSING_BUGS."""

    def preprocess(g, name, param):
        g = g.reshape(-1, 1)
        if bug == "Appendix A (p = 10) for LogAndSign":
            name, param = "appendix_a", 10.0
        if bug == "Appendix A (p = k = 5) for LogAndSign" and name == "log_and_sign":
            name = "appendix_a"
        if bug == "p = 5":
            param = 5.0
        magnitude, small = np.abs(g), np.abs(g) < math.exp(-param)
        if name == "appendix_a":
            with np.errstate(divide="ignore", invalid="ignore"):
                log = np.log(magnitude) / param
            scale = math.exp(-param) if bug == "e^{-p} for e^p" else math.exp(param)
            if bug == "no small-gradient branch":
                return np.concatenate([log, np.sign(g)], axis=1)
            if bug == "log 0":  # the branches blended by masks: log 0 · 0 = nan
                return np.concatenate(
                    [log * ~small + -1.0 * small, np.sign(g) * ~small + scale * g * small], axis=1
                )
            return np.concatenate(
                [np.where(small, -1.0, log), np.where(small, scale * g, np.sign(g))], axis=1
            )
        eps = 0.0 if bug == "no ε in the log" else ref.LOG_EPS
        with np.errstate(divide="ignore"):
            log = np.log(magnitude + eps) / param
        if bug != "no floor at −1":
            log = np.maximum(log, -1.0)
        if bug == "log part clipped at 1":
            log = np.minimum(log, 1.0)
        scale = math.exp(-param) if bug == "e^{-k} for e^k" else math.exp(param)
        sign = np.sign(g) if bug == "sign for the clip" else np.clip(g * scale, -1, 1)
        return np.concatenate([log, sign], axis=1).astype(g.dtype)

    return preprocess


def buggy_cell(bug):
    """ref.cell_forward with one of CELL_BUGS."""
    original = ref.cell_forward

    def cell_forward(W, b, x, h, c):
        H = h.shape[1]
        if bug == "gate order":  # blocks i, f, g, o (PyTorch's) read as i, j, f, o
            order = np.r_[0:H, 2 * H : 3 * H, H : 2 * H, 3 * H : 4 * H]
            W, b = W[:, order], b[order]
        if bug == "rows of W swapped":  # [h, x] W instead of [x, h] W
            W = np.concatenate([W[-H:], W[:-H]])
        forget_bias = 0.0 if bug == "no forget bias" else 1.0
        return original(W, b, x, h, c, forget_bias)

    return cell_forward


OWN_SETTINGS = {
    "lstm": (LSTM, ()), "lstm-gac": (LSTMGAC, ("gac_units",)),
    "ntm-bfgs": (NTMBFGS, ("gac_units", "read_heads", "write_heads", "window")),
}  # fmt: skip


def optimizer_config(entry, bug):
    options = entry["optimizer"]
    scale = 1.0 if bug == "no output scale" else options["output_scale"]
    kind, names = OWN_SETTINGS[options["architecture"]]
    return OptimizerConfig(
        tuple(options["layers"]), options["preprocessing"], options["preprocessing_param"],
        scale, architecture=kind(**{name: options[name] for name in names}),
    )  # fmt: skip


def ntm_start(theta, config, bug=None):
    """NTM-BFGS's zero state per tensor: the controller's (h, c) per layer, the previous reads,
    and the writes so far (none)."""
    reads = config.architecture.read_heads
    return {
        name: {"lstm": ref.zero_hidden({name: v}, config)[name],
               "read": np.zeros((v.size, reads), v.dtype), "writes": ()}
        for name, v in theta.items()
    }  # fmt: skip


def ntm_step(phi, groups, problem, config, theta, hidden, t, bug, grads=None):
    """One step of NTM-BFGS as docs/vectors.md describes it, with the memory of each network
    held as a dense N × N matrix rebuilt from the writes of the last `window` steps."""
    grads = problem.grad(theta, t) if grads is None else grads
    reads, heads, window = (
        getattr(config.architecture, k) for k in ("read_heads", "write_heads", "window")
    )
    heads_kept = heads - 1 if bug == "a write head missing" else heads
    stages, new_theta, new_hidden = {}, dict(theta), {}
    for group, names in ref.by_group(list(theta), groups).items():
        net = phi[group]
        x = {}
        for name in names:
            columns = [np.asarray(grads[name]).reshape(-1, 1), *hidden[name]["read"].T[:, :, None]]
            x[name] = np.concatenate(
                [ref.preprocess(col, config.preprocessing, config.preprocessing_param)
                 for col in columns], axis=1,
            )  # fmt: skip
            stages[f"grad/{name}"] = grads[name]
            stages[f"preprocessed/{name}"] = x[name][:, : config.input_size]
        lstm = {name: [] for name in names}
        for depth, layer in enumerate(net["lstm"]):
            h, c = {}, {}
            for name in names:
                h[name], c[name], _ = ref.cell_forward(
                    layer["W"], layer["b"], x[name], *hidden[name]["lstm"][depth]
                )
            x = ref.average_units(h, config.architecture.gac_units)
            for name in names:
                lstm[name].append((x[name], c[name]))
                stages[f"lstm/{depth}/c/{name}"] = c[name]
                stages[f"lstm/{depth}/h/{name}"] = x[name]
        out = {name: x[name] @ net["head"]["W"] + net["head"]["b"] for name in names}
        first_a, first_b = 1 + reads, 1 + reads + heads
        a = {name: o[:, first_a : first_a + heads_kept] for name, o in out.items()}
        b = {name: o[:, first_b : first_b + heads_kept] for name, o in out.items()}
        writes = {name: (*hidden[name]["writes"], (a[name], b[name])) for name in names}
        # the dense memory of the network: its rows in the order of its tensors
        N = sum(len(x[name]) for name in names)
        span = {"window one step short": window - 1, "window one step long": window + 1}.get(
            bug, window
        )
        source = {name: hidden[name]["writes"] if bug == "read before write" else writes[name]
                  for name in names}  # fmt: skip
        steps = len(source[names[0]])
        M = np.zeros((N, N), dtype=out[names[0]].dtype)
        if bug != "M_0 = 0":
            M += np.eye(N)
        for s in range(max(0, steps - span), steps):
            A = np.concatenate([source[name][s][0] for name in names])
            B = np.concatenate([source[name][s][1] for name in names])
            M = M + A @ B.T / (1 if bug == "writes not scaled by 1/N" else N)
        r = np.concatenate([out[name][:, 1 : 1 + reads] for name in names])
        read = M @ r
        rows = np.cumsum([len(x[name]) for name in names])[:-1]
        for name, i in zip(names, np.split(read, rows), strict=True):
            recorded = writes[name][-min(span, window, len(writes[name])) :]
            pad = np.zeros((len(i), (window - len(recorded)) * heads_kept), dtype=i.dtype)
            stages[f"memory/a/{name}"] = np.concatenate([pad, *(w[0] for w in recorded)], axis=1)
            stages[f"memory/b/{name}"] = np.concatenate([pad, *(w[1] for w in recorded)], axis=1)
            stages[f"read/{name}"] = i
            update = (out[name][:, :1] * config.output_scale).reshape(np.shape(theta[name]))
            stages[f"update/{name}"] = update
            new_theta[name] = theta[name] + update
            kept = writes[name][-window - 1 :]  # enough for every bug's span
            new_hidden[name] = {"lstm": lstm[name], "read": i, "writes": kept}
    return stages, new_theta, new_hidden


def ntm_meta_gradient(
    phi, groups, problem, config, weights, theta, hidden, t0, second_order, bug=None
):
    """dL/dφ, first order (the gradients the unroll saw held fixed), by complex steps: each
    entry of φ moved by i·1e-20, dL/dφ = Im L / 1e-20, exact to rounding (no autograd)."""
    assert not second_order
    T, frozen, state, point = len(weights) - 1, [], hidden, theta
    for t in range(T):
        frozen.append(problem.grad(point, t0 + t))
        _, point, state = ntm_step(
            phi, groups, problem, config, point, state, t0 + t, bug, frozen[-1]
        )

    def meta_loss(flat):
        net, point, state = nested_phi(flat), theta, hidden
        losses = [problem.value(point, t0)]
        for t in range(T):
            _, point, state = ntm_step(net, groups, problem, config, point, state, t0 + t, bug,
                                       frozen[t])  # fmt: skip
            losses.append(problem.value(point, t0 + t + 1))
        return sum(w * f for w, f in zip(weights, losses, strict=True))

    flat, step = flat_phi(phi), 1e-20
    grad = {}
    for key, value in flat.items():
        grad[key] = np.zeros(value.shape, value.dtype)
        for index in np.ndindex(value.shape):
            moved = value.astype(np.result_type(value.dtype, np.complex64))
            moved[index] += step * 1j
            grad[key][index] = meta_loss({**flat, key: moved}).imag / step
    return grad


def meta_weights(entry, bug):
    weights = list(entry["weights"])
    if bug in ("f(θ_0) in the loss", "f(θ_0) left out of the released loss"):
        weights[0] = 1.0 - weights[0]
    if bug == "meta-loss from t = 1":
        weights[0] = 0.0
    if bug == "weights one step early":  # w_{t+1} applied to f(θ_t)
        weights = [*weights[1:], 0.0]
    if bug == "weights ignored":
        weights = [weights[0]] + [1.0] * (len(weights) - 1)
    return weights


def step(phi, groups, problem, config, theta, hidden, t, bug):
    """One optimizee step, layer by layer over every network at once (tensor by tensor within
    a layer, each network's communication units averaged over its own tensors): the stages it
    records, θ_{t+1} and the state."""
    grads, stages, new_theta = problem.grad(theta, t), {}, dict(theta)
    new_hidden = {name: [] for name in theta}
    units = ref.gac_units(config)
    average = GAC_BUGS.get(bug, ref.average_units)
    networks = ref.by_group(list(theta), groups)

    def per_network(values):  # each network averages its own tensors, or (bug) all of them
        if bug == "average over every network's tensors":
            return average(values, units)
        out = {}
        for names in networks.values():
            out |= average({name: values[name] for name in names}, units)
        return out

    x = {}
    for names in networks.values():
        for name in names:  # in the case's order of tensors
            x[name] = ref.preprocess(
                np.asarray(grads[name]), config.preprocessing, config.preprocessing_param
            )
            stages[f"grad/{name}"], stages[f"preprocessed/{name}"] = grads[name], x[name]
    for n in range(len(config.layers)):
        h, c = {}, {}
        for group, names in networks.items():
            layer = phi[group]["lstm"][n]
            for name in names:
                h[name], c[name], _ = ref.cell_forward(
                    layer["W"], layer["b"], x[name], *hidden[name][n]
                )
                if bug == "one buffer updated in place":  # the state's rows: views of one buffer
                    h_rows, c_rows = hidden[name][n]
                    h_rows[...], c_rows[...] = h[name], c[name]
        outgoing = per_network(h) if units else h
        if bug == "cell state averaged too" and units:
            c = per_network(c)
        for name in h:
            recurrent = h[name] if bug == "average on the next layer only" else outgoing[name]
            stages[f"lstm/{n}/c/{name}"], stages[f"lstm/{n}/h/{name}"] = c[name], outgoing[name]
            new_hidden[name].append((recurrent, c[name]))
        x = outgoing
    for group, names in networks.items():
        net = phi[group]
        for name in names:
            update = (x[name] @ net["head"]["W"] + net["head"]["b"]) * config.output_scale
            if bug == "output scale before the head bias":
                update = x[name] @ net["head"]["W"] * config.output_scale + net["head"]["b"]
            update = update.reshape(np.shape(grads[name]))
            stages[f"update/{name}"] = update
            new_theta[name] = (
                theta[name] - update if bug == "θ − g for θ + g" else theta[name] + update
            )
    if bug == "one buffer updated in place":
        new_hidden = hidden
    if bug == "shared hidden state":  # every tensor reads the state the first one wrote
        first = next(iter(new_hidden.values()))
        new_hidden = {
            name: [(h[: np.size(theta[name])], c[: np.size(theta[name])]) for h, c in first]
            for name in new_hidden
        }
    return stages, new_theta, new_hidden


def start_state(theta, config, bug):
    """Zero state for every tensor; with the bug "one buffer updated in place", every
    tensor's rows are the first rows of one shared buffer."""
    if bug != "one buffer updated in place":
        return ref.zero_hidden(theta, config)
    rows = max(np.size(v) for v in theta.values())
    dtype = next(iter(theta.values())).dtype
    buffer = [(np.zeros((rows, H), dtype), np.zeros((rows, H), dtype)) for H in config.layers]
    return {
        name: [(h[: np.size(v)], c[: np.size(v)]) for h, c in buffer] for name, v in theta.items()
    }


def flat_phi(phi: dict) -> dict:
    flat = {}
    for group, net in phi.items():
        for n, layer in enumerate(net["lstm"]):
            flat.update({f"{group}/lstm/{n}/{k}": v for k, v in layer.items()})
        flat.update({f"{group}/head/{k}": v for k, v in net["head"].items()})
    return flat


def nested_phi(flat: dict) -> dict:
    """{'all/lstm/0/W': a, ...} → {'all': {'lstm': [{'W': a}], 'head': {...}}}."""
    phi = {}
    for key, value in sorted(flat.items()):
        group, part, *rest = key.split("/")
        net = phi.setdefault(group, {"lstm": [], "head": {}})
        if part == "head":
            net["head"][rest[0]] = value
        else:
            while len(net["lstm"]) <= int(rest[0]):
                net["lstm"].append({})
            net["lstm"][int(rest[0])][rest[1]] = value
    return phi


def adam(params, grads, state, lr, beta1, beta2, eps, bug=None):
    """Torch7 adam on dicts of arrays (ε added to sqrt(v)); state (m, v, n)."""
    m, v, n = state or (
        {k: 0 * g for k, g in grads.items()},
        {k: 0 * g for k, g in grads.items()},
        0,
    )
    n += 1
    m = {k: beta1 * m[k] + (1 - beta1) * g for k, g in grads.items()}
    v = {k: beta2 * v[k] + (1 - beta2) * g * g for k, g in grads.items()}
    new = {}
    for k in params:
        if bug == "PyTorch's Adam":  # ε added to the bias-corrected sqrt(v̂)
            denominator = np.sqrt(v[k] / (1 - beta2**n)) + eps
            new[k] = params[k] - lr / (1 - beta1**n) * m[k] / denominator
        elif bug == "Adam without bias correction":
            new[k] = params[k] - lr * m[k] / (np.sqrt(v[k]) + eps)
        else:
            new[k] = params[k] - lr * math.sqrt(1 - beta2**n) / (1 - beta1**n) * m[k] / (
                np.sqrt(v[k]) + eps
            )
    return new, (m, v, n)


def run_meta_case(entry, arrays, bug, dtype):
    inputs = {k.removeprefix("input/"): v for k, v in arrays.items() if k.startswith("input/")}
    cast = lambda a: a.astype(dtype) if a.dtype.kind == "f" else a  # noqa: E731
    data = {k.split("/", 1)[1]: cast(v) for k, v in inputs.items() if k.startswith("problem/")}
    theta = {k.split("/", 1)[1]: cast(v) for k, v in inputs.items() if k.startswith("theta0/")}
    flat = {k.split("/", 1)[1]: cast(v) for k, v in inputs.items() if k.startswith("phi/")}
    problem = PROBLEMS[entry["problem"]["name"]](data, bug)
    config, weights = optimizer_config(entry, bug), meta_weights(entry, bug)
    groups = dict(entry["groups"])
    if bug == "one network for every tensor":
        groups = dict.fromkeys(groups, "fc")
    second_order = entry["second_order"] != (bug in ("no stop-gradient", "stop-gradient"))
    T, meta_adam = entry["unroll"], entry["meta_adam"]

    out = {"loss": [problem.value(theta, 0)], **{f"theta/{k}": [v] for k, v in theta.items()}}

    def add(key, value):
        out.setdefault(key, []).append(value)

    ntm = isinstance(config.architecture, NTMBFGS)
    hidden = ntm_start(theta, config) if ntm else start_state(theta, config, bug)
    state, previous = None, None
    for k in range(entry["unrolls"]):
        phi = nested_phi(flat)
        if bug == "state zeroed at the cut":
            hidden = ref.zero_hidden(theta, config)
        start_theta, start_hidden = theta, hidden
        if bug == "θ reset at the cut":
            theta = start_theta = {name: out[f"theta/{name}"][0] for name in theta}
        losses = [problem.value(theta, k * T)]
        for t in range(k * T, (k + 1) * T):
            stages, theta, hidden = (ntm_step if ntm else step)(
                phi, groups, problem, config, theta, hidden, t, bug
            )
            for key, value in stages.items():
                add(key, value)
            losses.append(problem.value(theta, t + 1))
            for name, value in theta.items():
                add(f"theta/{name}", value)
            add("loss", losses[-1])
        add("meta_loss", sum(w * f for w, f in zip(weights, losses, strict=True)))
        if ntm:
            grad = ntm_meta_gradient(
                phi, groups, problem, config, weights, start_theta, start_hidden, k * T,
                second_order, bug,
            )  # fmt: skip
        else:
            grad = flat_phi(
                ref.meta_gradient(
                    phi, groups, problem, config, weights, start_theta, start_hidden, k * T,
                    second_order,
                )
            )  # fmt: skip
        if bug == "both bias gradients added":
            grad = {
                key: 2 * g if "/lstm/" in key and key.endswith("/b") else g
                for key, g in grad.items()
            }
        if bug == "meta-gradients accumulated" and previous is not None:
            grad = {key: g + previous[key] for key, g in grad.items()}
        previous = grad
        flat, state = adam(
            flat, grad, state, meta_adam["lr"], meta_adam["beta1"], meta_adam["beta2"],
            meta_adam["eps"], bug,
        )  # fmt: skip
        for key in grad:
            add(f"meta_grad/{key}", grad[key])
            add(f"phi/{key}", flat[key])
    return out


def run_baselines_case(entry, arrays, bug, dtype):
    data = {
        k.split("/", 2)[2]: v.astype(dtype) if v.dtype.kind == "f" else v
        for k, v in arrays.items()
        if k.startswith("input/problem/")
    }
    theta0 = {
        k.split("/", 2)[2]: v.astype(dtype)
        for k, v in arrays.items()
        if k.startswith("input/theta0/")
    }
    problem = PROBLEMS[entry["problem"]["name"]](data, bug)
    out = {}
    for name, settings in entry["baselines"].items():
        lr, theta = settings["lr"], dict(theta0)
        memory = {k: 0 * v for k, v in theta.items()}  # mean square, velocity
        moments = None

        def add(part, tree, name=name):
            for tensor, value in tree.items():
                out.setdefault(f"baseline/{name}/{part}/{tensor}", []).append(value)

        for t in range(entry["steps"] + 1):
            add("theta", theta)
            out.setdefault(f"baseline/{name}/loss", []).append(problem.value(theta, t))
            if t == entry["steps"]:
                break
            if name == "NAG":
                mu = settings["momentum"]
                ahead = theta if bug == "NAG gradient at θ" else {
                    k: theta[k] + mu * memory[k] for k in theta
                }  # fmt: skip
                g = problem.grad(ahead, t)
                if bug == "PyTorch's Nesterov":  # buf ← μ buf + ∇;  θ ← θ − lr (∇ + μ buf)
                    memory = {k: mu * memory[k] + g[k] for k in theta}
                    theta = {k: theta[k] - lr * (g[k] + mu * memory[k]) for k in theta}
                else:
                    memory = {k: mu * memory[k] - lr * g[k] for k in theta}
                    theta = {k: theta[k] + memory[k] for k in theta}
                add("grad", g)
                add("velocity", memory)
                continue
            g = problem.grad(theta, t)
            add("grad", g)
            if name == "SGD":
                theta = {k: theta[k] - lr * g[k] for k in theta}
            elif name == "RMSprop":
                alpha, eps = settings["alpha"], settings["eps"]
                if bug == "RMSprop mean square started at ∇²" and t == 0:
                    memory = {k: g[k] * g[k] for k in theta}
                elif bug == "RMSprop α and 1 − α swapped":
                    memory = {k: (1 - alpha) * memory[k] + alpha * g[k] * g[k] for k in theta}
                else:
                    memory = {k: alpha * memory[k] + (1 - alpha) * g[k] * g[k] for k in theta}
                if bug == "RMSprop ε inside the square root":
                    theta = {k: theta[k] - lr * g[k] / np.sqrt(memory[k] + eps) for k in theta}
                else:
                    theta = {k: theta[k] - lr * g[k] / (np.sqrt(memory[k]) + eps) for k in theta}
                add("mean_square", memory)
            else:  # Adam
                theta, moments = adam(
                    theta,
                    g,
                    moments,
                    lr,
                    settings["beta1"],
                    settings["beta2"],
                    settings["eps"],
                    bug,
                )
                add("m", moments[0])
                add("v", moments[1])
    return out


def run_case(entry: dict, arrays: dict, bug: str | None = None, dtype="float64") -> dict:
    """Every stage of one case as this implementation computes it."""
    with ExitStack() as stack:
        if bug in PREPROCESSING_BUGS:
            stack.enter_context(mock.patch.object(ref, "preprocess", buggy_preprocess(bug)))
        if bug in CELL_BUGS:
            stack.enter_context(mock.patch.object(ref, "cell_forward", buggy_cell(bug)))
        stack.enter_context(np.errstate(all="ignore"))
        run = run_meta_case if entry["kind"] == "meta" else run_baselines_case
        out = run(entry, arrays, bug, np.dtype(dtype))
    return {key: np.stack([np.asarray(x, dtype=dtype) for x in vals]) for key, vals in out.items()}


def write_candidate(
    vectors: Path, out: Path, bug: str | None = None, cases=None, dtype: str = "float64"
) -> Path:
    """Run every (or the named) case of `vectors` and write a candidate folder."""
    manifest = json.loads((vectors / "manifest.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for entry in manifest["cases"]:
        if cases is not None and entry["name"] not in cases:
            continue
        with np.load(vectors / entry["file"], allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        (out / entry["file"]).write_bytes(npz_bytes(run_case(entry, arrays, bug, dtype)))
        names.append(entry["name"])
    candidate = {"format": FORMAT, "version": VERSION, "cases": names}
    (out / "manifest.json").write_text(json.dumps(candidate))
    return out
