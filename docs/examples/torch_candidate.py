"""A PyTorch implementation of the method that writes a candidate for `l2l-ref verify`.

It reads only the reference vectors (manifest.json and the .npz files; docs/vectors.md) and
uses nothing of l2l-ref: a worked example of docs/verifying.md. First-order cases only (the
paper's stop-gradient on ∇_t); for the second-order case it writes the forward stages.

    python torch_candidate.py VECTORS_DIR OUT_DIR
    l2l-ref verify OUT_DIR --vectors VECTORS_DIR
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

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


def make_loss(problem, data):
    """f(θ, t) of the case's optimizee, from its data (docs/vectors.md, 'The optimizees')."""
    data = {k: torch.from_numpy(v) for k, v in data.items()}
    if problem == "simple":
        return lambda theta, t: theta["x"] ** 2
    if problem == "quadratic":
        W, y = data["W"], data["y"]
        return lambda theta, t: ((W @ theta["x"][..., None])[..., 0] - y).pow(2).sum(1).mean()

    def mlp(theta, t):
        chosen = data["indices"][t]
        a, layers = data["images"][chosen], len(theta) // 2
        for k in range(layers):
            a = a @ theta[f"W{k}"] + theta[f"b{k}"]
            a = torch.sigmoid(a) if k < layers - 1 else a
        return torch.nn.functional.cross_entropy(a, data["labels"][chosen])

    return mlp


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


def run_case(entry, arrays):
    opt = entry["optimizer"]
    layers, name, p = opt["layers"], opt["preprocessing"], opt["preprocessing_param"]
    n_in = 1 if name == "identity" else 2

    def inputs(prefix):
        return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}

    f = make_loss(entry["problem"]["name"], inputs("input/problem/"))
    phi = inputs("input/phi/")
    theta = {k: torch.from_numpy(v) for k, v in inputs("input/theta0/").items()}
    hidden = {k: [(torch.zeros(x.numel(), H),) * 2 for H in layers] for k, x in theta.items()}
    out = {"loss": [f(theta, 0).item()], **{f"theta/{k}": [x.numpy()] for k, x in theta.items()}}
    record = lambda key, value: out.setdefault(key, []).append(value.detach().numpy().copy())  # noqa: E731
    T, weights, adam = entry["unroll"], entry["weights"], entry["meta_adam"]
    m = v = None
    for k in range(entry["unrolls"]):
        nets = build_networks(phi, layers, n_in)
        losses = [f(theta, k * T)]
        for t in range(k * T, (k + 1) * T):
            point = {name: x.detach().requires_grad_() for name, x in theta.items()}
            grads = torch.autograd.grad(f(point, t), list(point.values()))
            grads = dict(zip(point, grads, strict=True))
            new_theta = {}
            for tensor, grad in grads.items():  # ∇_t is a constant: the paper's stop-gradient
                cells, head = nets[entry["groups"][tensor]]
                x = preprocess(grad.reshape(-1, 1), name, p)
                record(f"grad/{tensor}", grad)
                record(f"preprocessed/{tensor}", x)
                states = []
                for n, (cell, state) in enumerate(zip(cells, hidden[tensor], strict=True)):
                    h, c = cell(x, state)
                    record(f"lstm/{n}/c/{tensor}", c)
                    record(f"lstm/{n}/h/{tensor}", h)
                    states.append((h, c))
                    x = h
                update = (head(x) * opt["output_scale"]).reshape(grad.shape)
                record(f"update/{tensor}", update)
                new_theta[tensor], hidden[tensor] = theta[tensor] + update, states
            theta = new_theta
            losses.append(f(theta, t + 1))
            out["loss"].append(losses[-1].item())
            for tensor, x in theta.items():
                record(f"theta/{tensor}", x)
        L = sum(w * loss for w, loss in zip(weights, losses, strict=True))
        out.setdefault("meta_loss", []).append(L.item())
        if not entry["second_order"]:
            L.backward()
            grad = meta_gradient_in_vector_layout(nets, layers, n_in)
            m = m or {key: 0 * g for key, g in grad.items()}
            v = v or {key: 0 * g for key, g in grad.items()}
            b1, b2, eps = adam["beta1"], adam["beta2"], adam["eps"]
            step = adam["lr"] * math.sqrt(1 - b2 ** (k + 1)) / (1 - b1 ** (k + 1))
            for key, g in grad.items():  # Torch7 Adam: ε added to sqrt(v)
                m[key] = b1 * m[key] + (1 - b1) * g
                v[key] = b2 * v[key] + (1 - b2) * g * g
                phi[key] = phi[key] - step * m[key] / (np.sqrt(v[key]) + eps)
                out.setdefault(f"meta_grad/{key}", []).append(g)
                out.setdefault(f"phi/{key}", []).append(phi[key])
        # truncation: values cross into the next unroll, gradients do not
        theta = {name: x.detach() for name, x in theta.items()}
        hidden = {name: [(h.detach(), c.detach()) for h, c in s] for name, s in hidden.items()}
    return {key: np.stack([np.asarray(x) for x in values]) for key, values in out.items()}


def main(vectors, out):
    vectors, out = Path(vectors), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((vectors / "manifest.json").read_text())
    for entry in manifest["cases"]:
        with np.load(vectors / entry["file"], allow_pickle=False) as npz:
            np.savez(out / entry["file"], **run_case(entry, dict(npz)))
    names = [entry["name"] for entry in manifest["cases"]]
    candidate = {"format": "l2l-ref-vectors", "version": 1, "cases": names}
    (out / "manifest.json").write_text(json.dumps(candidate))


if __name__ == "__main__":
    main(*sys.argv[1:3])
