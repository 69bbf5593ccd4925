"""The coordinatewise LSTM optimizer m(∇, h; φ) of Section 2.1.

One small network with parameters φ is applied to every coordinate of θ as a row of a batch;
every coordinate keeps its own hidden state. The network is a stack of LSTM layers (the
released code's Sonnet cell, spec §2), a linear head to one output and an output scale.

φ for one network is a dict:
    {"lstm": [{"W": (n_in + H, 4H), "b": (4H,)}, ...],   gate order i, j, f, o
     "head": {"W": (H_last, 1), "b": (1,)}}
where row block [:n_in] of W multiplies the layer input x and [n_in:] the previous h.

The cell's definition is lstm_cell, traced operation by operation; beside it, the same cell as
one autograd primitive (cell_forward, cell_backward: hand-written, in row blocks on the cores),
which tests hold to the definition. l2l_ref.fused builds the hand-written meta-gradient of a
whole unroll from these kernels.
"""

from __future__ import annotations

from functools import reduce
from operator import add
from typing import TYPE_CHECKING

import autograd.numpy as np
import numpy as onp
from autograd.extend import defvjp_argnums, primitive
from autograd.tracer import isbox

from l2l_ref.blocks import row_blocks, run_blocks
from l2l_ref.preprocessing import PREPROCESSORS

if TYPE_CHECKING:
    from l2l_ref.architectures import OptimizerConfig

FORGET_BIAS = 1.0


def sigmoid(x):
    """Logistic function, written with tanh so it cannot overflow."""
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def truncated_normal(rng: onp.random.Generator, shape: tuple, stddev: float) -> onp.ndarray:
    """N(0, stddev²) truncated at two standard deviations by redrawing (TF's truncated_normal)."""
    sample = rng.standard_normal(shape)
    outside = onp.abs(sample) > 2.0
    while outside.any():
        sample[outside] = rng.standard_normal(int(outside.sum()))
        outside = onp.abs(sample) > 2.0
    return stddev * sample


# a coordinate's update depends on its own gradients only; and φ has a hand-written
# first-order meta-gradient (l2l_ref.fused)
COORDINATEWISE, HAND_WRITTEN = True, True


def network_shapes(config: OptimizerConfig) -> dict:
    """The shape of every array of one network's φ, without allocating any."""
    lstm, n_in = [], config.input_size
    for units in config.layers:
        lstm.append({"W": (n_in + units, 4 * units), "b": (4 * units,)})
        n_in = units
    return {"lstm": lstm, "head": {"W": (n_in, 1), "b": (1,)}}


def init_network(rng: onp.random.Generator, config: OptimizerConfig) -> dict:
    """φ of one network, on the host, initialised as the released code does (spec §2).

    LSTM W and b ~ truncated normal with σ = 1/sqrt(layer input size + H); head W ~ truncated
    normal with σ = 1/sqrt(H); head b = 0. With init="zeros" every entry is 0 (spec §5's test).
    """

    def draw(shape, stddev):
        if config.init == "zeros":
            return onp.zeros(shape)
        return truncated_normal(rng, shape, stddev)

    lstm, n_in = [], config.input_size
    for units in config.layers:
        stddev = 1.0 / onp.sqrt(n_in + units)
        lstm.append({"W": draw((n_in + units, 4 * units), stddev), "b": draw((4 * units,), stddev)})
        n_in = units
    head = {"W": draw((n_in, 1), 1.0 / onp.sqrt(n_in)), "b": onp.zeros(1)}
    return {"lstm": lstm, "head": head}


def start(template, config: OptimizerConfig) -> list:
    """Zero (h, c) of every layer for the coordinates of one parameter tensor `template`."""
    n = template.size
    return [
        (np.zeros_like(template, shape=(n, units)), np.zeros_like(template, shape=(n, units)))
        for units in config.layers
    ]


def lstm_cell(layer: dict, x, state: tuple) -> tuple:
    """Sonnet's LSTM cell (spec §2).

    z = [x, h] W + b;  i, j, f, o = split(z, 4)
    c' = σ(f + forget_bias) ⊙ c + σ(i) ⊙ tanh(j);  h' = σ(o) ⊙ tanh(c')
    """
    h, c = state
    z = np.concatenate([x, h], axis=1) @ layer["W"] + layer["b"]
    i, j, f, o = np.split(z, 4, axis=1)
    c = sigmoid(f + FORGET_BIAS) * c + sigmoid(i) * np.tanh(j)
    h = sigmoid(o) * np.tanh(c)
    return h, (h, c)


def cell_forward(W, b, x, h, c) -> tuple:
    """lstm_cell's equations on raw arrays (no tracing), worked through in row blocks
    (l2l_ref.blocks).

    Returns h', c', the gates (n, 4H) [σ(i), tanh(j), σ(f + 1), σ(o)] and tanh(c') (n, H),
    which cell_backward reads.
    """
    H = h.shape[1]
    # σ(z) = (tanh(z/2) + 1)/2: halving the sigmoid gates' columns of W and b (exact) lets one
    # tanh serve all four gates
    W_half, b_half = W.copy(), b.copy()
    b_half[2 * H : 3 * H] += FORGET_BIAS
    for block in (slice(0, H), slice(2 * H, 4 * H)):
        W_half[:, block] *= 0.5
        b_half[block] *= 0.5
    gates = onp.empty_like(x, shape=(x.shape[0], 4 * H))
    h_new, c_new, tanh_c = (onp.empty_like(c) for _ in range(3))

    def forward(rows):
        z = gates[rows]
        # one product with [x, h]: a product with few columns (x) costs as much as a wide one;
        # assigned, not written with out=, which CuPy's dispatch of NumPy's matmul may decline
        z[...] = onp.concatenate([x[rows], h[rows]], axis=1) @ W_half
        z += b_half
        onp.tanh(z, out=z)
        for block in (slice(0, H), slice(2 * H, 4 * H)):
            z[:, block] *= 0.5
            z[:, block] += 0.5
        i, j, f, o = (z[:, k * H : (k + 1) * H] for k in range(4))
        onp.multiply(f, c[rows], out=c_new[rows])
        c_new[rows] += i * j
        onp.tanh(c_new[rows], out=tanh_c[rows])
        onp.multiply(o, tanh_c[rows], out=h_new[rows])

    run_blocks(forward, row_blocks(x, 4 * H * gates.dtype.itemsize))
    return h_new, c_new, gates, tanh_c


def cell_backward(W, x, h, c, gates, tanh_c, grad_h, grad_c, wanted: set) -> dict:
    """The cell's backward pass, derived by hand from lstm_cell's equations, in row blocks.

    From ∂L/∂h' and ∂L/∂c' gives the gradients named in `wanted` among "W", "b", "x", "h",
    "c" (the last three: ∂L/∂ of the cell's inputs x, h and c).
    """
    n_in, H = x.shape[1], h.shape[1]
    inputs = {"x": x, "h": h, "c": c}
    grads = {name: onp.empty_like(value) for name, value in inputs.items() if name in wanted}

    def backward(rows):
        i, j, f, o = (gates[rows, k * H : (k + 1) * H] for k in range(4))
        tc, gh = tanh_c[rows], grad_h[rows]
        # ∂L/∂c' through h' = σ(o) tanh(c'), plus what reaches c' from the next step
        gc = tc * tc
        onp.subtract(1.0, gc, out=gc)
        gc *= o
        gc *= gh
        gc += grad_c[rows]
        # ∂L/∂z = ∂L/∂gate ⊙ gate'(z): σ' = σ − σ², tanh' = 1 − tanh²
        grad_z = gates[rows] * gates[rows]
        onp.subtract(i, grad_z[:, :H], out=grad_z[:, :H])
        onp.subtract(1.0, grad_z[:, H : 2 * H], out=grad_z[:, H : 2 * H])
        onp.subtract(gates[rows, 2 * H :], grad_z[:, 2 * H :], out=grad_z[:, 2 * H :])
        grad_z[:, :H] *= gc * j
        grad_z[:, H : 2 * H] *= gc * i
        grad_z[:, 2 * H : 3 * H] *= gc * c[rows]
        grad_z[:, 3 * H :] *= gh * tc
        if "x" in grads:
            grad_xh = grad_z @ W.T
            grads["x"][rows] = grad_xh[:, :n_in]
            if "h" in grads:
                grads["h"][rows] = grad_xh[:, n_in:]
        elif "h" in grads:
            grads["h"][rows] = grad_z @ W[n_in:].T
        if "c" in grads:
            onp.multiply(gc, f, out=grads["c"][rows])
        if "W" in wanted:
            return onp.concatenate([x[rows], h[rows]], axis=1).T @ grad_z, grad_z.sum(axis=0)
        return (grad_z.sum(axis=0),)

    partial = run_blocks(backward, row_blocks(x, 4 * H * gates.dtype.itemsize))
    # partial sums added in block order: the same result whatever ran the blocks
    sums = [reduce(add, parts) for parts in zip(*partial, strict=True)]
    grads["b"] = sums[-1]
    if "W" in wanted:
        grads["W"] = sums[0]
    return grads


fused_lstm_cell_values = primitive(cell_forward)


def _fused_lstm_cell_vjp(argnums, ans, args, kwargs):
    W, _, x, h, c = args
    names = [("W", "b", "x", "h", "c")[n] for n in argnums]

    def vjp(g):
        grad_h, grad_c = g[:2]
        if isbox(grad_h) or isbox(grad_c):
            raise NotImplementedError(
                "fused_lstm_cell has first derivatives only; "
                "use OptimizerConfig(cell='plain') for higher orders"
            )
        grads = cell_backward(W, x, h, c, *ans[2:], grad_h, grad_c, set(names))
        return [grads[name] for name in names]

    return vjp


defvjp_argnums(fused_lstm_cell_values, _fused_lstm_cell_vjp)


def fused_lstm_cell(layer: dict, x, state: tuple) -> tuple:
    """lstm_cell computed by one primitive with a hand-written gradient: the same values (a
    test checks both against each other), a fraction of the autograd graph nodes."""
    h, c, _, _ = fused_lstm_cell_values(layer["W"], layer["b"], x, *state)
    return h, (h, c)


CELLS = {"plain": lstm_cell, "fused": fused_lstm_cell}


def network(net: dict, grad, hidden: list, config: OptimizerConfig) -> tuple:
    """m(∇, h; φ) for one column of coordinates: preprocess, LSTM layers, head, output scale.

    grad: (n, 1); hidden: one (h, c) per layer, each (n, H). Returns g of shape (n, 1) and
    the new hidden state.
    """
    preprocess = PREPROCESSORS[config.preprocessing][0]
    x = preprocess(grad, config.preprocessing_param)
    cell, new_hidden = CELLS[config.cell], []
    for layer, state in zip(net["lstm"], hidden, strict=True):
        x, state = cell(layer, x, state)
        new_hidden.append(state)
    update = (x @ net["head"]["W"] + net["head"]["b"]) * config.output_scale
    return update, new_hidden


def step(net: dict, columns: dict, hidden: dict, config: OptimizerConfig) -> tuple[dict, dict]:
    """m for the tensors one network serves: each tensor's column of gradients through
    `network`, independently of the others (coordinatewise)."""
    updates, new_hidden = {}, {}
    for name, column in columns.items():
        updates[name], new_hidden[name] = network(net, column, hidden[name], config)
    return updates, new_hidden
