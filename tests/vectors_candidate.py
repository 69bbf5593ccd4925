"""Another implementation's outputs for the reference vectors, written as `l2l-ref verify`
reads them, computed by tests/numpy_reference.py (plain NumPy, no autograd, hand-written
gradients of the optimizees and spec §1's closed-form first-order meta-gradient).

`bugs` switches on the mistakes of spec §6 and §4 one at a time, so that the tests can check
that verify catches each where it first shows.
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from l2l_ref.lstm import OptimizerConfig
from l2l_ref.vectors import FORMAT, VERSION, npz_bytes
from tests import numpy_reference as ref

BUGS = (
    "gate order", "p = 5", "shared hidden state", "f(θ_0) in the loss", "no output scale",
    "state zeroed at the cut", "PyTorch's Adam",
)  # fmt: skip


class Simple:
    """f(x) = x²."""

    def __init__(self, inputs, theta0):
        self.theta0 = theta0

    def value(self, theta, t):
        return float(theta["x"] ** 2)

    def grad(self, theta, t):
        return {"x": 2 * theta["x"]}


class Quadratic:
    """f = mean_b ‖W_b x_b − y_b‖²,  ∇ = (2/B) W_bᵀ r_b."""

    def __init__(self, inputs, theta0):
        self.W, self.y, self.theta0 = inputs["W"], inputs["y"], theta0

    def residual(self, theta):
        return np.einsum("bij,bj->bi", self.W, theta["x"]) - self.y

    def value(self, theta, t):
        return float(np.mean(np.sum(self.residual(theta) ** 2, axis=1)))

    def grad(self, theta, t):
        r = self.residual(theta)
        return {"x": 2 * np.einsum("bij,bi->bj", self.W, r) / len(r)}


class MLP:
    """Softmax cross-entropy of a sigmoid MLP on the minibatch indices[t], backpropagated by
    hand."""

    def __init__(self, inputs, theta0):
        self.images, self.labels = inputs["images"], inputs["labels"]
        self.indices, self.theta0 = inputs["indices"], theta0
        self.layers = len(theta0) // 2

    def forward(self, theta, t):
        chosen = self.indices[t]
        activations = [self.images[chosen].reshape(len(chosen), -1)]
        for k in range(self.layers):
            z = activations[-1] @ theta[f"W{k}"] + theta[f"b{k}"]
            activations.append(z if k == self.layers - 1 else 1 / (1 + np.exp(-z)))
        logits = activations.pop()
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        onehot = np.eye(probs.shape[1])[self.labels[chosen]]
        return activations, probs, onehot

    def value(self, theta, t):
        _, probs, onehot = self.forward(theta, t)
        return float(-np.mean(np.sum(onehot * np.log(probs), axis=1)))

    def grad(self, theta, t):
        activations, probs, onehot = self.forward(theta, t)
        dz = (probs - onehot) / len(probs)
        grads = {}
        for k in reversed(range(self.layers)):
            grads[f"W{k}"], grads[f"b{k}"] = activations[k].T @ dz, dz.sum(axis=0)
            if k:
                a = activations[k]
                dz = (dz @ theta[f"W{k}"].T) * a * (1 - a)
        return grads


PROBLEMS = {"simple": Simple, "quadratic": Quadratic, "tiny-mlp": MLP}


def nested_phi(flat: dict) -> dict:
    """{'all/lstm/0/W': a, ...} → {'all': {'lstm': [{'W': a}], 'head': {...}}}."""
    phi = {}
    for key, value in sorted(flat.items()):
        group, part, *rest = key.split("/")
        net = phi.setdefault(group, {"lstm": [], "head": {}})
        if part == "head":
            net["head"][rest[0]] = value
        else:
            layer = int(rest[0])
            while len(net["lstm"]) <= layer:
                net["lstm"].append({})
            net["lstm"][layer][rest[1]] = value
    return phi


def flat_phi(phi: dict) -> dict:
    flat = {}
    for group, net in phi.items():
        for n, layer in enumerate(net["lstm"]):
            flat.update({f"{group}/lstm/{n}/{k}": v for k, v in layer.items()})
        flat.update({f"{group}/head/{k}": v for k, v in net["head"].items()})
    return flat


def swap_gates(phi: dict) -> dict:
    """φ read with the gates in PyTorch's order i, f, g, o instead of i, j, f, o."""

    def swap(a):
        i, j, f, o = np.split(a, 4, axis=-1)
        return np.concatenate([i, f, j, o], axis=-1)

    return {
        g: {**net, "lstm": [{k: swap(v) for k, v in layer.items()} for layer in net["lstm"]]}
        for g, net in phi.items()
    }


def shared_rows(hidden: dict) -> dict:
    """The bug of spec §6: every tensor's state read from the same rows of one buffer (an
    offset never advanced), so a tensor sees the state another tensor just wrote."""
    names = list(hidden)
    for name in names[1:]:
        n = len(hidden[name][0][0]) if hidden[name] else 0
        hidden[name] = [(h0[:n], c0[:n]) for h0, c0 in hidden[names[0]]]
    return hidden


def run_case(entry: dict, arrays: dict, bug: str | None = None) -> dict:
    """The stages of one case as this implementation computes them (first order only: for a
    second-order case, the forward stages)."""
    inputs = {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith("input/problem/")}
    theta0 = {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith("input/theta0/")}
    phi = nested_phi(
        {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith("input/phi/")}
    )
    problem = PROBLEMS[entry["problem"]["name"]](inputs, theta0)
    options = entry["optimizer"]
    config = OptimizerConfig(
        tuple(options["layers"]), options["preprocessing"], options["preprocessing_param"],
        options["output_scale"],
    )  # fmt: skip
    weights = list(entry["weights"])
    if bug == "p = 5":
        config = replace(config, preprocessing_param=5.0)
    if bug == "no output scale":
        config = replace(config, output_scale=1.0)
    if bug == "f(θ_0) in the loss":
        weights[0] = 1.0
    adam = entry["meta_adam"]
    groups, T = entry["groups"], entry["unroll"]

    out = {"loss": [problem.value(theta0, 0)], **{f"theta/{k}": [v] for k, v in theta0.items()}}

    def add(key, value):
        out.setdefault(key, []).append(value)

    theta = theta0
    hidden = {
        name: [(np.zeros((x.size, H)), np.zeros((x.size, H))) for H in config.layers]
        for name, x in theta0.items()
    }
    m = v = None
    for k in range(entry["unrolls"]):
        net = swap_gates(phi) if bug == "gate order" else phi
        if bug == "state zeroed at the cut":
            hidden = {name: [(0 * h, 0 * c) for h, c in s] for name, s in hidden.items()}
        start_theta, start_hidden = theta, hidden
        for t in range(k * T, (k + 1) * T):  # one step at a time, to record every stage
            if bug == "shared hidden state":
                hidden = shared_rows(hidden)
            _, losses, theta, hidden, grads, caches = ref.run(
                net, groups, problem, config, [0.0, 0.0], hidden, t0=t, theta=theta
            )
            for name, g in grads[0].items():
                layer_caches, _, preprocessed, update = caches[0][name]
                add(f"grad/{name}", g)
                add(f"preprocessed/{name}", preprocessed)
                for n, (_, _, _, _, o, _, c) in enumerate(layer_caches):
                    add(f"lstm/{n}/c/{name}", c)
                    add(f"lstm/{n}/h/{name}", o * np.tanh(c))
                add(f"update/{name}", update.reshape(np.shape(g)))
                add(f"theta/{name}", theta[name])
            add("loss", losses[1])
        add("meta_loss", sum(w * f for w, f in zip(weights, out["loss"][k * T :], strict=True)))
        if entry["second_order"]:
            continue
        grad = ref.first_order_meta_gradient(
            net, groups, problem, config, weights, theta=start_theta, hidden=start_hidden, t0=k * T
        )
        if bug == "gate order":
            grad = swap_gates(grad)  # back to the i, j, f, o layout of the vectors
        flat_grad, flat = flat_phi(grad), flat_phi(phi)
        m = m or {key: 0 * g for key, g in flat_grad.items()}
        v = v or {key: 0 * g for key, g in flat_grad.items()}
        b1, b2, eps = adam["beta1"], adam["beta2"], adam["eps"]
        step = adam["lr"] * (1 - b2 ** (k + 1)) ** 0.5 / (1 - b1 ** (k + 1))
        for key, g in flat_grad.items():  # Torch7 adam
            m[key] = b1 * m[key] + (1 - b1) * g
            v[key] = b2 * v[key] + (1 - b2) * g * g
            if bug == "PyTorch's Adam":  # ε added to the bias-corrected sqrt(v̂)
                v_hat = v[key] / (1 - b2 ** (k + 1))
                flat[key] = flat[key] - adam["lr"] / (1 - b1 ** (k + 1)) * m[key] / (
                    np.sqrt(v_hat) + eps
                )
            else:
                flat[key] = flat[key] - step * m[key] / (np.sqrt(v[key]) + eps)
            add(f"meta_grad/{key}", g)
            add(f"phi/{key}", flat[key])
        phi = nested_phi(flat)
    return {key: np.stack([np.asarray(x, dtype=float) for x in vals]) for key, vals in out.items()}


def write_candidate(vectors: Path, out: Path, bug: str | None = None, cases=None) -> Path:
    """Run every (or the named) case of `vectors` and write a candidate folder."""
    manifest = json.loads((vectors / "manifest.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for entry in manifest["cases"]:
        if cases is not None and entry["name"] not in cases:
            continue
        with np.load(vectors / entry["file"], allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        (out / entry["file"]).write_bytes(npz_bytes(run_case(entry, arrays, bug)))
        names.append(entry["name"])
    candidate = {"format": FORMAT, "version": VERSION, "cases": names}
    (out / "manifest.json").write_text(json.dumps(candidate))
    return out
