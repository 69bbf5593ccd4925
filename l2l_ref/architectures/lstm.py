"""The coordinatewise LSTM optimizer m(∇, h; φ) of Section 2.1.

One small network with parameters φ is applied to every coordinate of θ as a row of a batch;
every coordinate keeps its own hidden state. The network is a stack of LSTM layers (the
released code's Sonnet cell, docs/spec.md §2), a linear head to one output and an output scale.

φ for one network is a dict:
    {"lstm": [{"W": (n_in + H, 4H), "b": (4H,)}, ...],   gate order i, j, f, o
     "head": {"W": (H_last, 1), "b": (1,)}}
where row block [:n_in] of W multiplies the layer input x and [n_in:] the previous h.

The cell's definition is lstm_cell, traced operation by operation; beside it, the same cell
computed by hand-written kernels (cell_forward, cell_backward: one block of coordinates, held
one per column), which tests hold to the definition: as one autograd primitive
(fused_lstm_cell, over blocks on the cores), and in l2l_ref.fused's hand-written meta-gradient
of a whole unroll.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from operator import add
from typing import TYPE_CHECKING, ClassVar

import autograd.numpy as np
import numpy as onp
from autograd.extend import defvjp_argnums, primitive
from autograd.tracer import isbox

from l2l_ref.activations import sigmoid
from l2l_ref.architectures.architecture import Architecture
from l2l_ref.blocks import coordinate_blocks, run_blocks
from l2l_ref.preprocessing import PREPROCESSORS

if TYPE_CHECKING:
    from l2l_ref.architectures import OptimizerConfig

FORGET_BIAS = 1.0


def truncated_normal(rng: onp.random.Generator, shape: tuple, stddev: float) -> onp.ndarray:
    """N(0, stddev²) truncated at two standard deviations by redrawing (TF's truncated_normal)."""
    sample = rng.standard_normal(shape)
    outside = onp.abs(sample) > 2.0
    while outside.any():
        sample[outside] = rng.standard_normal(int(outside.sum()))
        outside = onp.abs(sample) > 2.0
    return stddev * sample


def tape_bytes(unroll: int, coordinates: int, layers: tuple, n_in: int, itemsize: int) -> int:
    """What the hand-written meta-gradient keeps for its backward pass (l2l_ref.fused's tape):
    for each step and coordinate, per layer [x; h], the four gates, c and tanh(c'), and ∇_t:
    T · N · (7 ΣH + (ΣH − H_last) + n_in + 1) · b (docs/performance.md)."""
    units = sum(layers)
    inputs = units - (layers[-1] if layers else 0) + n_in  # each layer's x: n_in, then H below
    return unroll * coordinates * (7 * units + inputs + 1) * itemsize


# autograd's tape of a traced unroll against the hand-written one: measured 1.35 times with the
# fused cell (first or second order, LSTM or LSTM+GAC) and 2.0 times with the plain cell, on the
# MNIST MLP (tests/test_architectures.py holds the estimate to the measured peak)
TRACED_TAPE = 1.5


def layer_shapes(layers: tuple, n_in: int, outputs: int) -> dict:
    """The shape of every array of LSTM layers of `layers` units on `n_in` inputs and a linear
    head to `outputs`, without allocating any."""
    lstm = []
    for units in layers:
        lstm.append({"W": (n_in + units, 4 * units), "b": (4 * units,)})
        n_in = units
    return {"lstm": lstm, "head": {"W": (n_in, outputs), "b": (outputs,)}}


def init_shaped(rng: onp.random.Generator, shapes: dict, init: str) -> dict:
    """φ of the LSTM layers and head of `shapes` (layer_shapes' layout), as the released code
    initialises them (docs/spec.md §2).

    LSTM W and b ~ truncated normal with σ = 1/sqrt(layer input size + H); head W ~ truncated
    normal with σ = 1/sqrt(H); head b = 0. With init="zero-head" the head W is 0 too (drawn
    all the same, so that the LSTM layers are the released init's), and the untrained
    optimizer's update is exactly 0; with init="zeros" every entry is 0 (docs/spec.md §5's test).
    """

    def draw(shape, stddev, head=False):
        if init == "zeros":
            return onp.zeros(shape)
        sample = truncated_normal(rng, shape, stddev)
        return onp.zeros(shape) if head and init == "zero-head" else sample

    lstm = []
    for layer in shapes["lstm"]:
        stddev = 1.0 / onp.sqrt(layer["W"][0])  # the layer's input size + H
        lstm.append({"W": draw(layer["W"], stddev), "b": draw(layer["b"], stddev)})
    W = shapes["head"]["W"]
    head = {"W": draw(W, 1.0 / onp.sqrt(W[0]), head=True), "b": onp.zeros(shapes["head"]["b"])}
    return {"lstm": lstm, "head": head}


def zero_state(template, layers: tuple) -> list:
    """Zero (h, c) of every layer for the coordinates of one parameter tensor `template`."""
    n = template.size
    return [
        (np.zeros_like(template, shape=(n, units)), np.zeros_like(template, shape=(n, units)))
        for units in layers
    ]


def layer_stages(state: list) -> dict:
    """The LSTM state of one tensor as the reference vectors record it: "lstm/{layer}/h" and
    "lstm/{layer}/c" (docs/vectors.md)."""
    return {
        f"lstm/{layer}/{part}": value
        for layer, (h, c) in enumerate(state)
        for part, value in (("h", h), ("c", c))
    }


def layers_label(layers: tuple) -> str:
    """ "LSTM 20×20": the layer sizes ("no LSTM": the head alone)."""
    return "LSTM " + ("×".join(map(str, layers)) or "no LSTM")


def lstm_cell(layer: dict, x, state: tuple) -> tuple:
    """Sonnet's LSTM cell (docs/spec.md §2).

    z = [x, h] W + b;  i, j, f, o = split(z, 4)
    c' = σ(f + forget_bias) ⊙ c + σ(i) ⊙ tanh(j);  h' = σ(o) ⊙ tanh(c')
    """
    h, c = state
    z = np.concatenate([x, h], axis=1) @ layer["W"] + layer["b"]
    i, j, f, o = np.split(z, 4, axis=1)
    c = sigmoid(f + FORGET_BIAS) * c + sigmoid(i) * np.tanh(j)
    h = sigmoid(o) * np.tanh(c)
    return h, (h, c)


def halved_gates(W, b) -> tuple:
    """W and b of lstm_cell laid out for cell_forward: transposed to (4H, n_in + H) and (4H, 1),
    the forget bias added, the sigmoid gates' rows halved (exact in floating point), so that
    one tanh serves all four gates: σ(z) = (tanh(z/2) + 1)/2."""
    H = W.shape[1] // 4
    W_half, b_half = W.T.copy(), onp.reshape(b, (-1, 1)).copy()
    b_half[2 * H : 3 * H] += FORGET_BIAS
    for gate in (slice(0, H), slice(2 * H, 4 * H)):
        W_half[gate] *= 0.5
        b_half[gate] *= 0.5
    return W_half, b_half


def cell_forward(W_half, b_half, xh, c, gates, c_new, tanh_c, h_new) -> None:
    """lstm_cell's equations on raw arrays for one block of coordinates, feature-major: each
    array holds a coordinate per column, so that every operation runs along contiguous rows.

    xh (n_in + H, m) is [x; h], c (H, m) the cell state, (W_half, b_half) from halved_gates.
    Writes the gates (4H, m) [σ(i), tanh(j), σ(f + 1), σ(o)], c', tanh(c') and h' into the
    arrays given, which cell_backward reads back.
    """
    H = c.shape[0]
    if type(gates) is onp.ndarray:  # the product straight into the gates: no copy
        onp.matmul(W_half, xh, out=gates)
    else:  # assigned: CuPy's dispatch of NumPy's matmul may decline out=
        gates[...] = W_half @ xh
    gates += b_half
    onp.tanh(gates, out=gates)
    for gate in (slice(0, H), slice(2 * H, 4 * H)):
        gates[gate] *= 0.5
        gates[gate] += 0.5
    i, j, f, o = (gates[k * H : (k + 1) * H] for k in range(4))
    onp.multiply(f, c, out=c_new)
    c_new += i * j
    onp.tanh(c_new, out=tanh_c)
    onp.multiply(o, tanh_c, out=h_new)


def cell_backward(W, xh, c, gates, tanh_c, grad_h, grad_c, inputs: bool = True) -> tuple:
    """The backward pass of cell_forward for one block, derived by hand from lstm_cell's
    equations (feature-major, as cell_forward).

    From ∂L/∂h' and ∂L/∂c' (None: zero) gives ∂L/∂W (n_in + H, 4H), ∂L/∂b (4H,), ∂L/∂[x; h]
    (None unless `inputs`) and ∂L/∂c, the block's share of the sums over coordinates.
    """
    H = c.shape[0]
    i, j, f, o = (gates[k * H : (k + 1) * H] for k in range(4))
    # ∂L/∂c' through h' = σ(o) tanh(c'), plus what reaches c' from the next step
    grad_c_new = tanh_c * tanh_c
    onp.subtract(1.0, grad_c_new, out=grad_c_new)
    grad_c_new *= o
    grad_c_new *= grad_h
    if grad_c is not None:
        grad_c_new += grad_c
    # ∂L/∂z = ∂L/∂gate ⊙ gate'(z): σ' = σ − σ², tanh' = 1 − tanh²
    grad_z = gates * gates
    onp.subtract(i, grad_z[:H], out=grad_z[:H])
    onp.subtract(1.0, grad_z[H : 2 * H], out=grad_z[H : 2 * H])
    onp.subtract(gates[2 * H :], grad_z[2 * H :], out=grad_z[2 * H :])
    grad_z[:H] *= grad_c_new * j
    grad_z[H : 2 * H] *= grad_c_new * i
    grad_z[2 * H : 3 * H] *= grad_c_new * c
    grad_z[3 * H :] *= grad_h * tanh_c
    grad_xh = W @ grad_z if inputs else None
    return xh @ grad_z.T, grad_z.sum(axis=1), grad_xh, grad_c_new * f


def rows_forward(W, b, x, h, c) -> tuple:
    """cell_forward for coordinates as rows, x (n, n_in), h and c (n, H), as lstm_cell takes
    them, in blocks on the cores (l2l_ref.blocks): h', c' (n, H) and the tape for
    rows_backward."""
    n, H = h.shape
    W_half, b_half = halved_gates(W, b)
    xh = onp.concatenate([x, h], axis=1).T.copy()
    c = c.T.copy()
    gates = onp.empty_like(c, shape=(4 * H, n))
    c_new, tanh_c, h_new = (onp.empty_like(c) for _ in range(3))

    def forward(cols):
        cell_forward(
            W_half, b_half, xh[:, cols], c[:, cols],
            gates[:, cols], c_new[:, cols], tanh_c[:, cols], h_new[:, cols],
        )  # fmt: skip

    run_blocks(forward, coordinate_blocks(n, 4 * H * gates.dtype.itemsize, h))
    return h_new.T, c_new.T, (xh, c, gates, tanh_c)


def rows_backward(W, tape, grad_h, grad_c, wanted: set) -> dict:
    """The backward pass of rows_forward: the gradients named in `wanted` among "W", "b", "x",
    "h", "c" (the last three: ∂L/∂ of the cell's inputs), from ∂L/∂h' and ∂L/∂c' (n, H)."""
    xh, c, gates, tanh_c = tape
    H, n = c.shape
    grad_h, grad_c = grad_h.T.copy(), grad_c.T.copy()
    inputs = bool(wanted & {"x", "h"})
    grad_xh = onp.empty_like(xh) if inputs else None
    grad_c_old = onp.empty_like(c)

    def backward(cols):
        W_part, b_part, grad_xh_part, grad_c_part = cell_backward(
            W, xh[:, cols], c[:, cols], gates[:, cols], tanh_c[:, cols],
            grad_h[:, cols], grad_c[:, cols], inputs,
        )  # fmt: skip
        if inputs:
            grad_xh[:, cols] = grad_xh_part
        grad_c_old[:, cols] = grad_c_part
        return W_part, b_part

    partial = run_blocks(backward, coordinate_blocks(n, 4 * H * gates.dtype.itemsize, c))
    # partial sums added in block order: the same result whatever ran the blocks
    W_grad, b_grad = (reduce(add, parts) for parts in zip(*partial, strict=True))
    n_in = xh.shape[0] - H
    grads = {"W": W_grad, "b": b_grad, "c": grad_c_old.T}
    if inputs:
        grads |= {"x": grad_xh[:n_in].T, "h": grad_xh[n_in:].T}
    return {name: grads[name] for name in wanted}


def _cell_values(W, b, x, h, c) -> tuple:
    h_new, c_new, tape = rows_forward(W, b, x, h, c)
    return (h_new, c_new, *tape)


fused_lstm_cell_values = primitive(_cell_values)


def _fused_lstm_cell_vjp(argnums, ans, args, kwargs):
    W = args[0]
    names = [("W", "b", "x", "h", "c")[n] for n in argnums]

    def vjp(g):
        grad_h, grad_c = g[:2]
        if isbox(grad_h) or isbox(grad_c):
            raise NotImplementedError(
                "fused_lstm_cell has first derivatives only; "
                "use OptimizerConfig(cell='plain') for higher orders"
            )
        grads = rows_backward(W, ans[2:], grad_h, grad_c, set(names))
        return [grads[name] for name in names]

    return vjp


defvjp_argnums(fused_lstm_cell_values, _fused_lstm_cell_vjp)


def fused_lstm_cell(layer: dict, x, state: tuple) -> tuple:
    """lstm_cell computed by one primitive with a hand-written gradient: the same values (a
    test checks both against each other), a fraction of the autograd graph nodes."""
    h, c = fused_lstm_cell_values(layer["W"], layer["b"], x, *state)[:2]
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


@dataclass(frozen=True)
class LSTM(Architecture):
    """The coordinatewise LSTM of Section 2.1, with no settings beyond the configuration's
    layers: every coordinate a row of its own through `network`."""

    NAME: ClassVar[str] = "LSTM"  # in tables of results
    # a coordinate's update depends on its own gradients only
    COORDINATEWISE: ClassVar[bool] = True

    def network_shapes(self, config: OptimizerConfig) -> dict:
        """LSTM layers on the preprocessed gradient and a head to the update."""
        return layer_shapes(config.layers, config.input_size, 1)

    def init_network(self, rng: onp.random.Generator, config: OptimizerConfig) -> dict:
        """φ of one network, on the host, initialised as the released code does
        (docs/spec.md §2): init_shaped on network_shapes."""
        return init_shaped(rng, self.network_shapes(config), config.init)

    def start(self, template, config: OptimizerConfig) -> list:
        """Zero (h, c) of every layer."""
        return zero_state(template, config.layers)

    def state_stages(self, state: list) -> dict:
        return layer_stages(state)

    def step(
        self, net: dict, columns: dict, hidden: dict, config: OptimizerConfig
    ) -> tuple[dict, dict]:
        """m for the tensors one network serves: each tensor's column of gradients through
        `network`, independently of the others (coordinatewise)."""
        updates, new_hidden = {}, {}
        for name, column in columns.items():
            updates[name], new_hidden[name] = network(net, column, hidden[name], config)
        return updates, new_hidden

    def hand_written(self, config: OptimizerConfig, second_order: bool = False) -> bool:
        """l2l_ref.fused has the LSTM's first-order meta-gradient by hand, for the fused cell
        (the plain cell is the traced definition, and the second order is autograd's)."""
        return config.cell == "fused" and not second_order

    def memory_bytes(
        self,
        config: OptimizerConfig,
        unroll: int,
        coordinates: int,
        itemsize: int,
        second_order: bool = False,
    ) -> int:
        """Bytes the meta-gradient of one unroll keeps for `coordinates`: the tape (tape_bytes,
        or autograd's, TRACED_TAPE times that, where the unroll is traced) and the hidden
        states."""
        tape = tape_bytes(unroll, coordinates, config.layers, config.input_size, itemsize)
        hidden = 6 * coordinates * sum(config.layers) * itemsize
        traced = not self.hand_written(config, second_order)
        return (int(TRACED_TAPE * tape) if traced else tape) + hidden

    def label(self, config: OptimizerConfig) -> str:
        """The optimizer in words: "LSTM 20×20"."""
        return layers_label(config.layers)
