"""A PyTorch eager implementation of one meta-step, the peer benchmarks/versus.py times the
reference against: nn.LSTMCell per layer, autograd for the optimizee's gradient and for the
meta-gradient, Torch7's Adam. Its own code (with docs/examples/torch_candidate.py's mapping of
φ); nothing of l2l-ref runs inside it.

Needs torch (the `bench` extra). Never imported by the package.
"""

import math
import sys

import numpy as onp
import torch
from meta_step import HERE, Setup

from l2l_ref.tree import flatten

sys.path.insert(0, str(HERE.parent / "docs" / "examples"))
from torch_candidate import build_networks, make_loss, meta_gradient_in_vector_layout, preprocess


def torch_problem(s: Setup, dtype: str) -> tuple:
    """θ_0 and f(θ, t) of the reference's instance, as torch tensors and torch code."""
    data, name = dict(s.instance.data), "quadratic"
    if "indices" in data:  # the MLP: the images of each step's minibatch, as the reference draws
        steps = range(s.train.unroll + 1)
        indices = onp.stack([data["indices"](t) for t in steps])
        images = data["images"].reshape(len(data["images"]), -1)
        data, name = {"images": images, "labels": data["labels"], "indices": indices}, "tiny-mlp"
    data = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in data.items()}
    theta0 = {k: torch.from_numpy(x.astype(dtype)) for k, x in s.instance.theta0.items()}
    return theta0, make_loss(name, data)


def torch_meta_loss(nets: dict, theta0: dict, f, s: Setup):
    """L(φ) of one unroll from θ_0 and zero state, with ∇_t a constant (the paper's ∂∇_t/∂φ = 0)."""
    config, T = s.config, s.train.unroll
    weights = s.train.unroll_weights()
    theta = dict(theta0)
    hidden = {
        k: [(x.new_zeros(x.numel(), H),) * 2 for H in config.layers] for k, x in theta.items()
    }
    losses = [f(theta, 0)]
    for t in range(T):
        point = {k: x.detach().requires_grad_() for k, x in theta.items()}
        grads = torch.autograd.grad(f(point, t), list(point.values()))
        new_theta = {}
        for (name, x), grad in zip(theta.items(), grads, strict=True):
            cells, head = nets[s.networks[name]]
            column = grad.reshape(-1, 1)
            inputs = preprocess(column, config.preprocessing, config.preprocessing_param)
            states = []
            for cell, state in zip(cells, hidden[name], strict=True):
                h, c = cell(inputs, state)
                states.append((h, c))
                inputs = h
            new_theta[name] = x + (head(inputs) * config.output_scale).reshape(x.shape)
            hidden[name] = states
        theta = new_theta
        losses.append(f(theta, t + 1))
    return sum(w * loss for w, loss in zip(weights, losses, strict=True) if w)


def torch_networks(s: Setup, dtype: str) -> dict:
    """φ as nn.LSTMCell stacks and linear heads (docs/vectors.md's mapping), in dtype."""
    phi = {k: onp.asarray(v, onp.float64) for k, v in flatten(s.phi).items()}
    nets = build_networks(phi, list(s.config.layers), s.config.input_size)
    for cells, head in nets.values():
        for module in (*cells, head):
            module.to(getattr(torch, dtype))
        for cell in cells:  # b is one vector, held in bias_ih; bias_hh stays 0
            cell.bias_hh.requires_grad_(False)
    return nets


def torch_gradient(s: Setup, dtype: str) -> tuple:
    """The meta-loss and the meta-gradient (in the vectors' layout) of one unroll."""
    nets = torch_networks(s, dtype)
    theta0, f = torch_problem(s, dtype)
    L = torch_meta_loss(nets, theta0, f, s)
    L.backward()
    return L.item(), meta_gradient_in_vector_layout(
        nets, list(s.config.layers), s.config.input_size
    )


def torch_meta_step(s: Setup, dtype: str):
    """A closure: one meta-step in PyTorch, ending with Torch7 Adam on φ (as the reference)."""
    theta0, f = torch_problem(s, dtype)
    nets = torch_networks(s, dtype)
    params = [p for cells, head in nets.values() for m in (*cells, head) for p in m.parameters()]
    params = [p for p in params if p.requires_grad]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    count = [0]
    lr, beta1, beta2, eps = s.train.meta_lr, 0.9, 0.999, 1e-8

    def step():
        for p in params:
            p.grad = None
        L = torch_meta_loss(nets, theta0, f, s)
        L.backward()
        count[0] += 1
        scale = lr * math.sqrt(1 - beta2 ** count[0]) / (1 - beta1 ** count[0])
        with torch.no_grad():
            for p, m_p, v_p in zip(params, m, v, strict=True):
                m_p.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v_p.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                p.addcdiv_(m_p, v_p.sqrt().add_(eps), value=-scale)
        return L

    return step
