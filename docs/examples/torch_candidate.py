"""A PyTorch implementation of the method that writes a candidate for `l2l-ref verify`.

It reads only the reference vectors (manifest.json and the .npz files; docs/vectors.md) and
uses nothing of l2l-ref: a worked example of docs/verifying.md. Every case: first and second
order (the paper's stop-gradient on ∇_t, or not), the conv net with its two networks, and the
four baselines.

    python torch_candidate.py VECTORS_DIR OUT_DIR
    l2l-ref verify OUT_DIR
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

torch.set_default_dtype(torch.float64)


def preprocess(grad, name, p):
    """(n, 1) gradients → the LSTM's (n, input size) inputs."""
    if name == "identity":
        return grad
    if name == "appendix_a":
        large = grad.abs() >= math.exp(-p)
        log = torch.where(large, grad.abs().clamp_min(math.exp(-p)).log() / p, -1.0)
        sign = torch.where(large, grad.sign(), math.exp(p) * grad)
        return torch.cat([log, sign], dim=1)
    log = ((grad.abs() + 1.1920929e-07).log() / p).clamp_min(-1.0)  # log_and_sign
    return torch.cat([log, (grad * math.exp(p)).clamp(-1.0, 1.0)], dim=1)


def batch_norm(x, offset, dims):
    """Normalised with the minibatch's mean and biased variance, ε 0.001, plus an offset."""
    centred = x - x.mean(dim=dims, keepdim=True)
    return centred / (centred.pow(2).mean(dim=dims, keepdim=True) + 1e-3).sqrt() + offset


def make_loss(problem, data):
    """f(θ, t) of the case's optimizee, from its data (docs/vectors.md, 'The optimizees')."""
    data = {k: torch.from_numpy(v) for k, v in data.items()}
    if problem == "simple":
        return lambda theta, t: theta["x"] ** 2
    if problem == "quadratic":
        W, y = data["W"], data["y"]
        return lambda theta, t: ((W @ theta["x"][..., None])[..., 0] - y).pow(2).sum(1).mean()

    def minibatch(t):
        chosen = data["indices"][t]
        return data["images"][chosen], data["labels"][chosen]

    def mlp(theta, t):
        a, labels = minibatch(t)
        layers = len(theta) // 2
        for k in range(layers):
            a = a @ theta[f"W{k}"] + theta[f"b{k}"]
            a = torch.sigmoid(a) if k < layers - 1 else a
        return functional.cross_entropy(a, labels)

    def conv(theta, t):
        images, labels = minibatch(t)
        x = images.permute(0, 3, 1, 2)  # NHWC → NCHW
        k = 0
        while f"conv{k}_W" in theta:
            kernel = theta[f"conv{k}_W"].permute(3, 2, 0, 1)  # (k, k, in, out) → (out, in, k, k)
            size = kernel.shape[-1]
            x = functional.conv2d(
                functional.pad(x, ((size - 1) // 2, size // 2) * 2), kernel
            )  # SAME
            x = batch_norm(x, theta[f"conv{k}_offset"][:, None, None], (0, 2, 3))
            x = functional.max_pool2d(functional.relu(x), 2)
            k += 1
        x = x.permute(0, 2, 3, 1).reshape(len(x), -1)  # flattened in N, h, w, C order
        x = functional.relu(batch_norm(x @ theta["fc_W"], theta["fc_offset"], (0,)))
        return functional.cross_entropy(x @ theta["out_W"] + theta["out_b"], labels)

    return {"tiny-mlp": mlp, "tiny-conv": conv}[problem]


# the vectors' gate blocks are i, j, f, o; PyTorch's are i, f, g(= j), o
def torch_order(H):
    return np.r_[0:H, 2 * H : 3 * H, H : 2 * H, 3 * H : 4 * H]


def build_networks(phi, layers, n_in):
    """nn.LSTMCell stacks and linear heads holding φ (docs/vectors.md, 'Mapping φ')."""
    nets = {}
    for group in {key.split("/")[0] for key in phi}:
        cells, size = [], n_in
        for n, H in enumerate(layers):
            W, b, perm = phi[f"{group}/lstm/{n}/W"], phi[f"{group}/lstm/{n}/b"], torch_order(H)
            cell = torch.nn.LSTMCell(size, H)
            with torch.no_grad():
                cell.weight_ih.copy_(torch.from_numpy(W[:size, perm].T))
                cell.weight_hh.copy_(torch.from_numpy(W[size:, perm].T))
                bias = b[perm].copy()
                bias[H : 2 * H] += 1.0  # the forget bias
                cell.bias_ih.copy_(torch.from_numpy(bias))
                cell.bias_hh.zero_()
            cells.append(cell)
            size = H
        head = torch.nn.Linear(size, 1)
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(phi[f"{group}/head/W"].T))
            head.bias.copy_(torch.from_numpy(phi[f"{group}/head/b"]))
        nets[group] = (cells, head)
    return nets


def meta_gradient_in_vector_layout(nets, layers, n_in):
    """The .grad of every module, mapped back to the vectors' φ layout."""
    grads = {}
    for group, (cells, head) in nets.items():
        size = n_in
        for n, (cell, H) in enumerate(zip(cells, layers, strict=True)):
            perm, W, b = torch_order(H), np.zeros((size + H, 4 * H)), np.zeros(4 * H)
            W[:size, perm] = cell.weight_ih.grad.numpy().T
            W[size:, perm] = cell.weight_hh.grad.numpy().T
            b[perm] = cell.bias_ih.grad.numpy()  # = bias_hh.grad: both add to z, b is one vector
            grads[f"{group}/lstm/{n}/W"], grads[f"{group}/lstm/{n}/b"] = W, b
            size = H
        grads[f"{group}/head/W"] = head.weight.grad.numpy().T
        grads[f"{group}/head/b"] = head.bias.grad.numpy()
    return grads


def by_network(groups):
    """{network: its tensors, in the case's order}."""
    members = {}
    for tensor, network in groups.items():
        members.setdefault(network, []).append(tensor)
    return members


def global_average(h, units):
    """LSTM+GAC: the last `units` units of every tensor's h replaced by their mean over all
    the rows of all the tensors one network serves."""
    rows = sum(len(v) for v in h.values())
    mean = sum(v[:, -units:].sum(0) for v in h.values()) / rows
    return {k: torch.cat([v[:, :-units], mean.expand(len(v), units)], dim=1) for k, v in h.items()}


class Torch7Adam:
    """Adam as Torch7's optim computes it: ε added to sqrt(v), not to the bias-corrected one."""

    def __init__(self, lr, beta1, beta2, eps):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m, self.v, self.n = {}, {}, 0

    def step(self, params, grads):
        self.n += 1
        b1, b2 = self.beta1, self.beta2
        size = self.lr * math.sqrt(1 - b2**self.n) / (1 - b1**self.n)
        for key, g in grads.items():
            self.m[key] = b1 * self.m.get(key, 0 * g) + (1 - b1) * g
            self.v[key] = b2 * self.v.get(key, 0 * g) + (1 - b2) * g * g
            params[key] = params[key] - size * self.m[key] / (self.v[key] ** 0.5 + self.eps)
        return params


def inputs(arrays, prefix):
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def run_meta_case(entry, arrays):
    opt = entry["optimizer"]
    layers, name, p = opt["layers"], opt["preprocessing"], opt["preprocessing_param"]
    n_in = 1 if name == "identity" else 2
    f = make_loss(entry["problem"]["name"], inputs(arrays, "input/problem/"))
    phi = inputs(arrays, "input/phi/")
    theta0 = inputs(arrays, "input/theta0/")
    theta = {k: torch.from_numpy(theta0[k]) for k in entry["tensors"]}  # the case's order
    hidden = {k: [(torch.zeros(x.numel(), H),) * 2 for H in layers] for k, x in theta.items()}
    out = {"loss": [f(theta, 0).item()], **{f"theta/{k}": [x.numpy()] for k, x in theta.items()}}
    record = lambda key, value: out.setdefault(key, []).append(value.detach().numpy().copy())  # noqa: E731
    T, weights, second_order = entry["unroll"], entry["weights"], entry["second_order"]
    adam = Torch7Adam(**entry["meta_adam"])
    for k in range(entry["unrolls"]):
        nets = build_networks(phi, layers, n_in)
        losses = [f(theta, k * T)]
        for t in range(k * T, (k + 1) * T):
            if second_order:  # ∇_t a function of φ through θ_t
                point = {n: x if x.requires_grad else x.requires_grad_() for n, x in theta.items()}
            else:  # the paper's stop-gradient: ∇_t a constant
                point = {n: x.detach().requires_grad_() for n, x in theta.items()}
            grads = torch.autograd.grad(
                f(point, t), list(point.values()), create_graph=second_order
            )
            theta, new_theta = point if second_order else theta, {}
            grads = dict(zip(point, grads, strict=True))
            for members in by_network(entry["groups"]).values():
                cells, head = nets[entry["groups"][members[0]]]
                x = {}
                for tensor in members:
                    x[tensor] = preprocess(grads[tensor].reshape(-1, 1), name, p)
                    record(f"grad/{tensor}", grads[tensor])
                    record(f"preprocessed/{tensor}", x[tensor])
                states = {tensor: [] for tensor in members}
                for n, cell in enumerate(cells):  # layer by layer over the network's tensors
                    h, c = {}, {}
                    for tensor in members:
                        h[tensor], c[tensor] = cell(x[tensor], hidden[tensor][n])
                    if opt["architecture"] == "lstm-gac":
                        h = global_average(h, opt["gac_units"])
                    for tensor in members:
                        record(f"lstm/{n}/c/{tensor}", c[tensor])
                        record(f"lstm/{n}/h/{tensor}", h[tensor])
                        states[tensor].append((h[tensor], c[tensor]))
                    x = h
                for tensor in members:
                    update = (head(x[tensor]) * opt["output_scale"]).reshape(grads[tensor].shape)
                    record(f"update/{tensor}", update)
                    new_theta[tensor], hidden[tensor] = theta[tensor] + update, states[tensor]
            theta = new_theta
            losses.append(f(theta, t + 1))
            out["loss"].append(losses[-1].item())
            for tensor, x in theta.items():
                record(f"theta/{tensor}", x)
        L = sum(w * loss for w, loss in zip(weights, losses, strict=True))
        out.setdefault("meta_loss", []).append(L.item())
        L.backward()
        grad = meta_gradient_in_vector_layout(nets, layers, n_in)
        phi = adam.step(phi, grad)
        for key in sorted(grad):
            out.setdefault(f"meta_grad/{key}", []).append(grad[key])
            out.setdefault(f"phi/{key}", []).append(phi[key])
        # truncation: values cross into the next unroll, gradients do not
        theta = {n: x.detach() for n, x in theta.items()}
        hidden = {n: [(h.detach(), c.detach()) for h, c in s] for n, s in hidden.items()}
    return out


def run_baselines_case(entry, arrays):
    f = make_loss(entry["problem"]["name"], inputs(arrays, "input/problem/"))
    theta0 = inputs(arrays, "input/theta0/")
    out = {}

    def gradient(theta, t):
        point = {k: torch.from_numpy(v).requires_grad_() for k, v in theta.items()}
        grads = torch.autograd.grad(f(point, t), list(point.values()))
        return {k: g.numpy() for k, g in zip(point, grads, strict=True)}

    for name, s in entry["baselines"].items():
        theta = {k: theta0[k].copy() for k in entry["tensors"]}
        memory = {k: 0 * v for k, v in theta.items()}  # RMSprop's mean square, NAG's velocity
        adam = Torch7Adam(s["lr"], s.get("beta1"), s.get("beta2"), s.get("eps"))

        def add(part, tree, name=name):
            for tensor, value in tree.items():
                out.setdefault(f"baseline/{name}/{part}/{tensor}", []).append(value.copy())

        for t in range(entry["steps"] + 1):
            add("theta", theta)
            point = {k: torch.from_numpy(v) for k, v in theta.items()}
            out.setdefault(f"baseline/{name}/loss", []).append(f(point, t).item())
            if t == entry["steps"]:
                break
            if name == "NAG":  # ∇ at θ + μv;  v ← μv − lr ∇;  θ ← θ + v
                g = gradient({k: theta[k] + s["momentum"] * memory[k] for k in theta}, t)
                memory = {k: s["momentum"] * memory[k] - s["lr"] * g[k] for k in theta}
                theta = {k: theta[k] + memory[k] for k in theta}
                add("grad", g)
                add("velocity", memory)
                continue
            g = gradient(theta, t)
            add("grad", g)
            if name == "SGD":
                theta = {k: theta[k] - s["lr"] * g[k] for k in theta}
            elif name == "RMSprop":  # m ← αm + (1 − α)∇²;  θ ← θ − lr ∇/(sqrt(m) + ε)
                memory = {k: s["alpha"] * memory[k] + (1 - s["alpha"]) * g[k] ** 2 for k in theta}
                theta = {
                    k: theta[k] - s["lr"] * g[k] / (memory[k] ** 0.5 + s["eps"]) for k in theta
                }
                add("mean_square", memory)
            else:
                theta = adam.step(theta, g)
                add("m", adam.m)
                add("v", adam.v)
    return out


def main(vectors, out):
    vectors, out = Path(vectors), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((vectors / "manifest.json").read_text())
    for entry in manifest["cases"]:
        with np.load(vectors / entry["file"], allow_pickle=False) as npz:
            run = run_meta_case if entry["kind"] == "meta" else run_baselines_case
            stages = run(entry, dict(npz))
        np.savez(out / entry["file"], **{k: np.stack(v) for k, v in stages.items()})
    names = [entry["name"] for entry in manifest["cases"]]
    candidate = {"format": "l2l-ref-vectors", "version": 4, "cases": names}
    (out / "manifest.json").write_text(json.dumps(candidate))


if __name__ == "__main__":
    main(*sys.argv[1:3])
