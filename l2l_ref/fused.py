"""The first-order meta-gradient of one unroll, with a hand-written backward pass.

unroll.meta_gradient is the definition: autograd traces every operation of the unroll. With
the paper's ∂∇_t/∂φ = 0 the backward pass takes a simple form, which this module computes
directly, in fewer, larger array operations (tests check it against the definition).

    θ_{t+1} = θ_t + g_t,   g_t = m(∇_t, h_t; φ),   L = Σ_t w_t f(θ_t)

With ∇_t a constant, θ_t reaches L only through f(θ_t) and θ_{t+1}, so the adjoint obeys

    λ_t = ∂L/∂θ_t = w_t ∇f(θ_t) + λ_{t+1},   ∂L/∂g_t = λ_{t+1}.

f(θ_t) and ∇_t read the same minibatch, so ∇f(θ_t) is the ∇_t that the forward pass fed to m:
the optimizee is differentiated once per step (value and gradient together) and never
backpropagated through again. What remains is backpropagation through time in the
coordinatewise LSTM, from the head down the layers and from h_{t+1}, c_{t+1} back to h_t, c_t,
with the fused cell's hand-written backward pass (lstm.cell_backward).
"""

import autograd.numpy as np
from autograd import value_and_grad

from l2l_ref.architectures.lstm import cell_backward, cell_forward
from l2l_ref.errors import ConfigError
from l2l_ref.optimizer import OptimizerConfig
from l2l_ref.preprocessing import PREPROCESSORS
from l2l_ref.problems import Instance
from l2l_ref.tree import tree_map
from l2l_ref.unroll import meta_loss


def network_forward(net: dict, grad, hidden: list, config: OptimizerConfig) -> tuple:
    """architectures.lstm.network for one tensor on raw arrays: the update g (grad's shape),
    the new hidden state, and the tape the backward pass reads (each layer's inputs and gates,
    the head's input)."""
    preprocess = PREPROCESSORS[config.preprocessing][0]
    x = preprocess(np.reshape(grad, (-1, 1)), config.preprocessing_param)
    tape, new_hidden = [], []
    for layer, (h, c) in zip(net["lstm"], hidden, strict=True):
        h_new, c_new, gates, tanh_c = cell_forward(layer["W"], layer["b"], x, h, c)
        tape.append((x, h, c, gates, tanh_c))
        new_hidden.append((h_new, c_new))
        x = h_new
    update = (x @ net["head"]["W"] + net["head"]["b"]) * config.output_scale
    return np.reshape(update, np.shape(grad)), new_hidden, (tape, x)


def network_backward(
    net: dict, tape: tuple, grad_update, carried: list, first: bool, config: OptimizerConfig, acc
) -> list:
    """Backward pass of network_forward for one tensor and step: adds ∂L/∂φ into acc and
    returns ∂L/∂(h_t, c_t) of every layer, which the step before reads (none for the first
    step of the unroll: truncation cuts them)."""
    layers, top = tape
    grad_pre = np.reshape(grad_update, (-1, 1)) * config.output_scale
    acc["head"]["W"] += top.T @ grad_pre
    acc["head"]["b"] += grad_pre.sum(axis=0)
    grad_h = grad_pre @ net["head"]["W"].T
    to_previous = [None] * len(layers)
    for k in reversed(range(len(layers))):
        x, h, c, gates, tanh_c = layers[k]
        wanted = {"W", "b"} | ({"x"} if k > 0 else set()) | (set() if first else {"h", "c"})
        if carried[k] is None:  # the last step: nothing comes back from a later one
            grad_c = np.zeros_like(c)
        else:
            grad_h, grad_c = grad_h + carried[k][0], carried[k][1]
        grads = cell_backward(net["lstm"][k]["W"], x, h, c, gates, tanh_c, grad_h, grad_c, wanted)
        acc["lstm"][k]["W"] += grads["W"]
        acc["lstm"][k]["b"] += grads["b"]
        to_previous[k] = None if first else (grads["h"], grads["c"])
        grad_h = grads.get("x")
    return to_previous


def fused_meta_gradient(
    phi: dict,
    theta: dict,
    hidden: dict,
    instance: Instance,
    t0: int,
    weights,
    groups: dict,
    config: OptimizerConfig,
) -> tuple:
    """unroll.meta_gradient with second_order=False, by the adjoint recursion above.

    Returns ∂L/∂φ, L, θ_{t0+T} and the hidden state, as meta_gradient does.
    """
    if not config.module.HAND_WRITTEN:
        raise ConfigError(
            f"architecture {config.architecture} has no hand-written meta-gradient; "
            "unroll.meta_gradient (traced) serves it"
        )
    loss_and_grad = value_and_grad(instance.loss)
    loss, grads = loss_and_grad(theta, t0)
    hidden = dict(hidden)
    losses, gradients, tapes = [loss], [], []
    for t in range(t0, t0 + len(weights) - 1):
        updates, step_tape = {}, {}
        for name, grad in grads.items():
            net = phi[groups[name]]
            updates[name], hidden[name], step_tape[name] = network_forward(
                net, grad, hidden[name], config
            )
        theta = {name: theta[name] + updates[name] for name in theta}
        tapes.append(step_tape)
        loss, grads = loss_and_grad(theta, t + 1)
        losses.append(loss)
        gradients.append(grads)

    acc = tree_map(np.zeros_like, phi)
    adjoint, carried = None, {name: [None] * len(config.layers) for name in theta}
    for s in reversed(range(len(tapes))):
        w = weights[s + 1]
        term = {name: w * g for name, g in gradients[s].items()}
        adjoint = term if adjoint is None else {n: term[n] + adjoint[n] for n in term}
        for name, tape in tapes[s].items():
            group = groups[name]
            carried[name] = network_backward(
                phi[group], tape, adjoint[name], carried[name], s == 0, config, acc[group]
            )
    return acc, meta_loss(losses, weights), theta, hidden
