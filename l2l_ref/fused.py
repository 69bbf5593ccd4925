"""The first-order meta-gradient of one unroll, with a hand-written backward pass.

unroll.meta_gradient is the definition: autograd traces every operation of the unroll. With
the paper's ∂∇_t/∂φ = 0 the backward pass takes a simple form, which this module computes
directly, in fewer, larger array operations (tests check it against the definition).

    θ_{t+1} = θ_t + g_t,   g_t = m(∇_t, h_t; φ),   L = Σ_t w_t f(θ_t)

With ∇_t a constant, θ_t reaches L only through f(θ_t) and θ_{t+1}, so the adjoint obeys

    λ_t = ∂L/∂θ_t = w_t ∇f(θ_t) + λ_{t+1},   ∂L/∂g_t = λ_{t+1}.

f(θ_t) and ∇_t read the same minibatch, so ∇f(θ_t) is the ∇_t that the forward pass fed to m:
the optimizee is differentiated once per step (value and gradient together, by hand where the
problem has it: Instance.value_and_grad) and never backpropagated through again. What
remains is backpropagation through time in the coordinatewise LSTM, from the head down the
layers and from h_{t+1}, c_{t+1} back to h_t, c_t.

Because every coordinate is independent in m, the coordinates of all the tensors one network
serves are laid side by side, one per column (feature-major), and cut into blocks
(l2l_ref.blocks). A block's forward pass runs all the layers and the head of a step; its
backward pass runs the whole unroll back, since the adjoints λ_t are known once the forward
pass has ended; and each block's tape is one set of contiguous arrays, kept in a workspace
that the next unroll of the same shapes reuses.
"""

from functools import reduce
from operator import add

import autograd.numpy as np
import numpy as onp

from l2l_ref.architectures.lstm import LSTM, cell_backward, cell_forward, halved_gates
from l2l_ref.blocks import coordinate_blocks, run_blocks
from l2l_ref.errors import ConfigError
from l2l_ref.optimizer import LearnedOptimizer, OptimizerConfig
from l2l_ref.preprocessing import PREPROCESSORS
from l2l_ref.problems import Instance, value_and_gradient
from l2l_ref.unroll import meta_loss


def network_columns(theta: dict, networks: dict) -> dict:
    """{network: the names of the tensors it serves, in θ's order}."""
    columns = {}
    for name in theta:
        columns.setdefault(networks[name], []).append(name)
    return columns


def side_by_side(tensors: dict, names) -> object:
    """The coordinates of the tensors `names`, one after another, as one flat array."""
    return np.concatenate([np.reshape(tensors[name], (-1,)) for name in names])


def tape_arrays(like, steps: int, input_size: int, layers: tuple, n: int) -> list:
    """One block's tape for an unroll of `steps`: per layer, [x; h] of every step and the
    next (steps + 1, n_in + H, n), the gates (steps, 4H, n), c of every step and the next
    (steps + 1, H, n) and tanh(c') (steps, H, n). The head reads the last rows of the top
    entry's xh at s + 1: h of the top layer, or without layers the inputs themselves."""
    empty = lambda *shape: onp.empty_like(like, shape=shape)  # noqa: E731
    if not layers:
        return [{"xh": empty(steps + 1, input_size, n)}]
    tape, n_in = [], input_size
    for H in layers:
        tape.append(
            {
                "xh": empty(steps + 1, n_in + H, n),
                "gates": empty(steps, 4 * H, n),
                "c": empty(steps + 1, H, n),
                "tanh_c": empty(steps, H, n),
            }
        )
        n_in = H
    return tape


def block_tapes(
    workspace: dict | None, group: str, like, steps: int, config: OptimizerConfig, blocks: list
) -> list:
    """The tapes of network `group`'s blocks, from `workspace` where an earlier unroll left
    arrays of the same shapes (reused: no fresh memory to fault in at every unroll), else new
    ones, then kept there."""
    input_size = PREPROCESSORS[config.preprocessing][1]
    key = (group, like.dtype.str, type(like), steps, input_size, config.layers)
    key += tuple((cols.start, cols.stop) for cols in blocks)
    if workspace is not None and key in workspace:
        return workspace[key]
    tapes = [
        tape_arrays(like, steps, input_size, config.layers, cols.stop - cols.start)
        for cols in blocks
    ]
    if workspace is not None:
        workspace[key] = tapes
    return tapes


def fused_meta_gradient(
    phi: dict,
    theta: dict,
    hidden: dict,
    instance: Instance,
    t0: int,
    weights,
    m: LearnedOptimizer,
    *,
    workspace: dict | None = None,
) -> tuple:
    """unroll.meta_gradient with second_order=False, by the adjoint recursion above.

    Returns ∂L/∂φ, L, θ_{t0+T} and the hidden state, as meta_gradient does; none of them
    shares memory with `workspace`, a dict the caller keeps between unrolls (or None).
    """
    config = m.config
    if type(config.architecture) is not LSTM:  # the kernels are the plain LSTM's
        raise ConfigError(
            f"{config.architecture.NAME} has no hand-written meta-gradient; "
            "unroll.meta_gradient (traced) serves it"
        )
    steps, columns = len(weights) - 1, network_columns(theta, m.networks)
    loss_and_grad = value_and_gradient(instance)
    loss, grads = loss_and_grad(theta, t0)
    losses, gradients = [loss], []
    served, width = {}, max((4 * H for H in config.layers), default=1)
    for group, names in columns.items():
        like = side_by_side(theta, names)
        blocks = coordinate_blocks(len(like), width * like.dtype.itemsize, like)
        tapes = block_tapes(workspace, group, like, steps, config, blocks)
        start_tapes(tapes, blocks, [hidden[name] for name in names])
        halved = [halved_gates(layer["W"], layer["b"]) for layer in phi[group]["lstm"]]
        sizes = {name: np.size(theta[name]) for name in names}
        served[group] = (sizes, blocks, tapes, halved)

    for s in range(steps):
        updates = {}
        for group, (sizes, blocks, tapes, halved) in served.items():
            update = forward_step(
                phi[group]["head"], halved, side_by_side(grads, sizes), blocks, tapes, s, config
            )
            parts = split(update, sizes)
            updates |= {name: np.reshape(parts[name], np.shape(theta[name])) for name in sizes}
        theta = {name: theta[name] + updates[name] for name in theta}
        loss, grads = loss_and_grad(theta, t0 + s + 1)
        losses.append(loss)
        gradients.append(grads)

    phi_grad, new_hidden = {}, {}
    for group, (sizes, blocks, tapes, _) in served.items():
        grad_columns = [side_by_side(grads, sizes) for grads in gradients]
        phi_grad[group] = backward_unroll(phi[group], grad_columns, weights, blocks, tapes, config)
        new_hidden |= end_state(tapes, sizes, steps, len(config.layers))
    return phi_grad, meta_loss(losses, weights), theta, new_hidden


def split(flat, sizes: dict) -> dict:
    """side_by_side undone: {name: the next sizes[name] entries of `flat` along its first
    axis}."""
    parts, offset = {}, 0
    for name, size in sizes.items():
        parts[name] = flat[offset : offset + size]
        offset += size
    return parts


def start_tapes(tapes: list, blocks: list, hidden: list) -> None:
    """The carried state (h, c) of every layer, per tensor (n, H), into step 0 of the tapes."""
    for k in range(len(hidden[0])):
        h = np.concatenate([state[k][0] for state in hidden]).T
        c = np.concatenate([state[k][1] for state in hidden]).T
        H = c.shape[0]
        for tape, cols in zip(tapes, blocks, strict=True):
            tape[k]["xh"][0, -H:] = h[:, cols]
            tape[k]["c"][0] = c[:, cols]


def end_state(tapes: list, sizes: dict, steps: int, layers: int) -> dict:
    """The state the unroll ends in, per tensor as the tensor's (h, c) of every layer (n, H):
    copies, never views of the tapes."""
    states = {name: [] for name in sizes}
    for k in range(layers):
        H = tapes[0][k]["c"].shape[1]
        h = np.concatenate([tape[k]["xh"][steps, -H:] for tape in tapes], axis=1).T
        c = np.concatenate([tape[k]["c"][steps] for tape in tapes], axis=1).T
        h_parts, c_parts = split(h, sizes), split(c, sizes)
        for name in sizes:
            states[name].append((h_parts[name].copy(), c_parts[name].copy()))
    return states


def forward_step(head: dict, halved: list, grad, blocks: list, tapes: list, s: int, config):
    """Step s of m for one network's coordinates (grad: ∇_s, flat), block by block: every
    layer's cell into the tapes, then the head. Returns the update g_s, flat."""
    preprocess = PREPROCESSORS[config.preprocessing][0]
    update = np.empty_like(grad)

    def forward(b):
        cols, tape = blocks[b], tapes[b]
        x = preprocess(np.reshape(grad[cols], (-1, 1)), config.preprocessing_param).T
        for k, (W_half, b_half) in enumerate(halved):
            xh, H = tape[k]["xh"], tape[k]["c"].shape[1]
            xh[s, :-H] = x
            h_new = xh[s + 1, -H:]
            cell_forward(
                W_half, b_half, xh[s], tape[k]["c"][s],
                tape[k]["gates"][s], tape[k]["c"][s + 1], tape[k]["tanh_c"][s], h_new,
            )  # fmt: skip
            x = h_new
        if not halved:
            tape[0]["xh"][s + 1] = x
        update[cols] = ((head["W"].T @ x + head["b"][:, None]) * config.output_scale)[0]

    run_blocks(forward, range(len(blocks)))
    return update


def backward_unroll(net: dict, grad_columns: list, weights, blocks, tapes, config) -> dict:
    """∂L/∂φ of one network: each block backpropagates through the whole unroll, from the
    adjoints λ_{s+1} (∂L/∂g_s) down the head and the layers and back through time; the blocks'
    shares are added in block order (the same sums whatever thread ran a block)."""
    layers = net["lstm"]

    def backward(b):
        cols, tape = blocks[b], tapes[b]
        shares = {"lstm": [{"W": 0.0, "b": 0.0} for _ in layers], "head": {"W": 0.0, "b": 0.0}}
        adjoint, carried = None, [None] * len(layers)
        for s in reversed(range(len(grad_columns))):
            term = weights[s + 1] * grad_columns[s][cols]
            adjoint = term if adjoint is None else term + adjoint
            grad_update = np.reshape(adjoint * config.output_scale, (1, -1))
            top = tape[-1]["xh"][s + 1, -len(net["head"]["W"]) :]
            shares["head"]["W"] = shares["head"]["W"] + top @ grad_update.T
            shares["head"]["b"] = shares["head"]["b"] + grad_update.sum(axis=1)
            grad_h = net["head"]["W"] @ grad_update
            for k in reversed(range(len(layers))):
                H = tape[k]["c"].shape[1]
                grad_c = None
                if carried[k] is not None:
                    grad_h, grad_c = grad_h + carried[k][0], carried[k][1]
                grad_W, grad_b, grad_xh, grad_c = cell_backward(
                    layers[k]["W"], tape[k]["xh"][s], tape[k]["c"][s], tape[k]["gates"][s],
                    tape[k]["tanh_c"][s], grad_h, grad_c, inputs=k > 0 or s > 0,
                )  # fmt: skip
                shares["lstm"][k]["W"] = shares["lstm"][k]["W"] + grad_W
                shares["lstm"][k]["b"] = shares["lstm"][k]["b"] + grad_b
                # truncation: nothing goes back from the unroll's first step
                carried[k] = (grad_xh[-H:], grad_c) if s > 0 else None
                grad_h = grad_xh[:-H] if k > 0 else None
        return shares

    shares = run_blocks(backward, range(len(blocks)))
    return {
        "lstm": [
            {key: reduce(add, [share["lstm"][k][key] for share in shares]) for key in ("W", "b")}
            for k in range(len(layers))
        ],
        "head": {key: reduce(add, [share["head"][key] for share in shares]) for key in ("W", "b")},
    }


def run_frozen(phi: dict, instances: list, steps: int, m: LearnedOptimizer, to_host) -> onp.ndarray:
    """meta_train.run_optimizer on several instances at once, by the hand-written kernels:
    the losses f(θ_0), ..., f(θ_steps) of each instance (a row each) under the frozen φ.

    No gradient flows, so no tape is kept: each block holds the state (h, c) of its
    coordinates and the cell overwrites it step by step. The coordinates of every instance's
    tensors that one network serves lie side by side, as one batch of blocks (the optimizer
    is coordinatewise: the instances do not interact).
    """
    config = m.config
    if type(config.architecture) is not LSTM:
        raise ConfigError(f"{config.architecture.NAME} has no hand-written forward pass")
    thetas = [dict(instance.theta0) for instance in instances]
    evaluations = [value_and_gradient(instance) for instance in instances]
    columns = network_columns(thetas[0], m.networks)
    input_size = PREPROCESSORS[config.preprocessing][1]
    width = max((4 * H for H in config.layers), default=1)
    served = {}
    for group, names in columns.items():
        keys = [(i, name) for i in range(len(thetas)) for name in names]
        sizes = {key: np.size(thetas[key[0]][key[1]]) for key in keys}
        like = thetas[0][names[0]]
        n = sum(sizes.values())
        blocks = coordinate_blocks(n, width * like.dtype.itemsize, like)
        states = [frozen_state(like, input_size, config.layers, b.stop - b.start) for b in blocks]
        halved = [halved_gates(layer["W"], layer["b"]) for layer in phi[group]["lstm"]]
        served[group] = (sizes, blocks, states, halved)
    losses = onp.empty((len(instances), steps + 1))
    for t in range(steps + 1):
        grads = []
        for i, (theta, evaluate) in enumerate(zip(thetas, evaluations, strict=True)):
            if t == steps:  # the last loss needs no gradient
                losses[i, t] = float(to_host(instances[i].loss(theta, t)))
                continue
            loss, grad = evaluate(theta, t)
            losses[i, t] = float(to_host(loss))
            grads.append(grad)
        if t == steps:
            break
        for group, (sizes, blocks, states, halved) in served.items():
            flat = np.concatenate([np.reshape(grads[i][name], (-1,)) for i, name in sizes])
            update = frozen_step(phi[group]["head"], halved, flat, blocks, states, config)
            for (i, name), part in split(update, sizes).items():
                thetas[i][name] = thetas[i][name] + np.reshape(part, np.shape(thetas[i][name]))
    return losses


def frozen_state(like, input_size: int, layers: tuple, n: int) -> list:
    """One block's state for run_frozen, zero: per layer [x; h] (n_in + H, n), c (H, n), and
    the cell's scratch arrays, the gates (4H, n) and tanh(c') (H, n)."""
    state, n_in = [], input_size
    for H in layers:
        zeros = lambda *shape: onp.zeros_like(like, shape=shape)  # noqa: E731
        state.append({"xh": zeros(n_in + H, n), "c": zeros(H, n), "gates": zeros(4 * H, n),
                      "tanh_c": zeros(H, n)})  # fmt: skip
        n_in = H
    return state


def frozen_step(head: dict, halved: list, grad, blocks: list, states: list, config) -> object:
    """One step of m for one network's coordinates under a frozen φ, block by block, the
    state updated in place: c' overwrites c, h' the h part of [x; h] (cell_forward reads both
    before it writes them). Returns the update g, flat."""
    preprocess = PREPROCESSORS[config.preprocessing][0]
    update = np.empty_like(grad)

    def forward(b):
        cols = blocks[b]
        x = preprocess(np.reshape(grad[cols], (-1, 1)), config.preprocessing_param).T
        for (W_half, b_half), layer in zip(halved, states[b], strict=True):
            xh, c, H = layer["xh"], layer["c"], layer["c"].shape[0]
            xh[:-H] = x
            x = xh[-H:]
            cell_forward(W_half, b_half, xh, c, layer["gates"], c, layer["tanh_c"], x)
        update[cols] = ((head["W"].T @ x + head["b"][:, None]) * config.output_scale)[0]

    run_blocks(forward, range(len(blocks)))
    return update
