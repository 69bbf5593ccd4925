"""NTM-BFGS: a coordinatewise LSTM+GAC controller with an external memory M in the role of
BFGS's inverse-Hessian approximation (the paper's appendix on information sharing, and its
limited-memory form NTM-L-BFGS).

At step t the controller, the LSTM layers of LSTM+GAC (architectures.lstm_gac) on each
coordinate, receives the preprocessed gradient ∇_t and the preprocessed results i_{t-1} of its
read heads at the previous step. A linear head gives, per coordinate, the update u_t, one read
vector r per read head and one pair (a, b) per write head. Then, in this order:

    write:   M_{t+1} = M_t + (1/N) Σ_heads a_t b_tᵀ
    read:    i_t = M_{t+1} r_t            (the memory as just written)
    update:  g_t = u_t · output_scale

N is the number of coordinates the network serves. M is never formed: it is held as its writes,
M_t = I + (1/N) Σ_s Σ_heads a_s b_sᵀ over the last `window` steps, so that M r = r +
A (Bᵀ r)/N costs O(window × heads × N), and each coordinate keeps its own rows of A and B.
Over a trajectory no longer than the window (the paper's 100 steps with the default) this is
NTM-BFGS's M exactly; a shorter window is the paper's NTM-L-BFGS. Where the paper leaves a
choice open, this is what is done (docs/conventions.md, "NTM-BFGS", says why):

- M_0 = I (BFGS's H_0), and the writes scaled by 1/N, so that a controller that sees only its
  own coordinate and the GAC averages can write BFGS's update without knowing N;
- one read head and three write heads by default (the paper's BFGS sketch), 2 GAC units;
- the update is the controller's own output; the read feeds the controller at the next step;
- the controller receives the gradient and the previous reads, both preprocessed alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import autograd.numpy as np
import numpy as onp

from l2l_ref.architectures import lstm, lstm_gac
from l2l_ref.architectures.architecture import Architecture, between, setting
from l2l_ref.preprocessing import PREPROCESSORS

if TYPE_CHECKING:
    from collections.abc import Callable

    from l2l_ref.architectures import OptimizerConfig

__all__ = ["NTMBFGS", "controller", "memory_read", "memory_write", "ntm_step"]


def memory_write(memory: dict, a: dict, b: dict) -> dict:
    """M_{t+1} = M_t + (1/N) Σ_heads a bᵀ in window form: each tensor's rows of A and B lose
    the oldest step's columns and gain this step's (a, b: {tensor: (n, W)})."""
    return {
        name: (
            np.concatenate([A[:, np.shape(a[name])[1] :], a[name]], axis=1),
            np.concatenate([B[:, np.shape(b[name])[1] :], b[name]], axis=1),
        )
        for name, (A, B) in memory.items()
    }


def memory_read(memory: dict, r: dict) -> dict:
    """i = M r = r + A (Bᵀ r) / N for every read head at once (r: {tensor: (n, R)}), the sum
    Bᵀ r over the rows of every tensor the network serves."""
    N = sum(np.shape(x)[0] for x in r.values())
    coefficients = sum(B.T @ r[name] for name, (_, B) in memory.items()) / N
    return {name: r[name] + A @ coefficients for name, (A, _) in memory.items()}


def controller(net: dict, x: dict, state: dict, config: OptimizerConfig) -> tuple[dict, dict]:
    """The LSTM+GAC layers and the linear head: {tensor: (n, 1 + R + 2W) outputs} and the new
    (h, c) per layer."""
    units = config.architecture.gac_units
    x, state = lstm_gac.layers(net["lstm"], x, state, config.cell, units)
    return {name: h @ net["head"]["W"] + net["head"]["b"] for name, h in x.items()}, state


def ntm_step(
    control: Callable, net: dict, columns: dict, hidden: dict, config: OptimizerConfig
) -> tuple[dict, dict]:
    """One step of NTM-BFGS (config.architecture) with the controller
    `control(net, x, state, config)`: inputs, write, read, update, as the module's docstring
    orders them."""
    preprocess, p = PREPROCESSORS[config.preprocessing][0], config.preprocessing_param
    R, W = config.architecture.read_heads, config.architecture.write_heads
    x = {}
    for name, column in columns.items():
        read = hidden[name]["read"]
        x[name] = np.concatenate(
            [preprocess(column, p), *(preprocess(read[:, k : k + 1], p) for k in range(R))], axis=1
        )
    outputs, states = control(net, x, {name: hidden[name]["controller"] for name in x}, config)
    memory = {name: (hidden[name]["a"], hidden[name]["b"]) for name in x}
    memory = memory_write(
        memory,
        {name: out[:, 1 + R : 1 + R + W] for name, out in outputs.items()},
        {name: out[:, 1 + R + W :] for name, out in outputs.items()},
    )
    reads = memory_read(memory, {name: out[:, 1 : 1 + R] for name, out in outputs.items()})
    updates = {name: out[:, :1] * config.output_scale for name, out in outputs.items()}
    new_hidden = {
        name: {"controller": states[name], "read": reads[name], "a": A, "b": B}
        for name, (A, B) in memory.items()
    }
    return updates, new_hidden


@dataclass(frozen=True)
class NTMBFGS(Architecture):
    """NTM-BFGS: the LSTM+GAC controller, R read and W write heads, a window of writes."""

    NAME: ClassVar[str] = "NTM-BFGS"  # in tables of results
    # the reads and the GAC averages couple the coordinates; training traces the unroll
    COORDINATEWISE: ClassVar[bool] = False

    gac_units: int = setting(2, lstm_gac.GAC_UNITS)
    read_heads: int = setting(1, "read heads of the memory", between(1, 16))
    write_heads: int = setting(3, "write heads (pairs a, b) of the memory", between(1, 16))
    window: int = setting(
        100, "steps of writes the memory keeps (below the run: NTM-L-BFGS)", between(1, 10_000)
    )

    @property
    def outputs(self) -> int:
        """The controller's head outputs per coordinate: u, R reads, W pairs (a, b)."""
        return 1 + self.read_heads + 2 * self.write_heads

    def fits(self, config: OptimizerConfig) -> str | None:
        return lstm_gac.gac_units_fit(self.gac_units, config)

    def network_shapes(self, config: OptimizerConfig) -> dict:
        """The controller's φ: LSTM layers on the preprocessed gradient and R reads, a head to
        u, r (R) and a, b (W each)."""
        n_in = config.input_size * (1 + self.read_heads)
        return lstm.layer_shapes(config.layers, n_in, self.outputs)

    def init_network(self, rng: onp.random.Generator, config: OptimizerConfig) -> dict:
        """φ of one controller, initialised as the LSTM's (lstm.init_shaped); with
        init="zero-head" the untrained optimizer makes no update and no write."""
        return lstm.init_shaped(rng, self.network_shapes(config), config.init)

    def start(self, template, config: OptimizerConfig) -> dict:
        """The state of the coordinates of one tensor, zero: the controller's (h, c) per layer,
        the previous reads (n, R), and its rows of the memory's writes A and B
        (n, window · W), oldest step first (zero writes: M = I)."""
        n, kept = template.size, self.window * self.write_heads
        return {
            "controller": lstm.zero_state(template, config.layers),
            "read": np.zeros_like(template, shape=(n, self.read_heads)),
            "a": np.zeros_like(template, shape=(n, kept)),
            "b": np.zeros_like(template, shape=(n, kept)),
        }

    def state_stages(self, state: dict) -> dict:
        """The state of one tensor as the reference vectors record it: the controller's
        "lstm/{layer}/h" and "/c", the reads "read", the memory's rows "memory/a",
        "memory/b"."""
        return {
            **lstm.layer_stages(state["controller"]),
            "read": state["read"], "memory/a": state["a"], "memory/b": state["b"],
        }  # fmt: skip

    def step(
        self, net: dict, columns: dict, hidden: dict, config: OptimizerConfig
    ) -> tuple[dict, dict]:
        """m for the tensors one network serves: ntm_step with the LSTM+GAC controller."""
        return ntm_step(controller, net, columns, hidden, config)

    def memory_bytes(
        self,
        config: OptimizerConfig,
        unroll: int,
        coordinates: int,
        itemsize: int,
        second_order: bool = False,
    ) -> int:
        """Bytes autograd's tape of one unroll keeps: per step the controller's (the LSTM's
        tape with its inputs, lstm.TRACED_TAPE times the hand-written one), the memory's A and
        B as written (each step's are new arrays) and the heads' outputs; and the state."""
        n_in = config.input_size * (1 + self.read_heads)
        tape = lstm.tape_bytes(unroll, coordinates, config.layers, n_in, itemsize)
        kept = self.window * self.write_heads
        memory = unroll * coordinates * (2 * kept + 2 * self.outputs) * itemsize
        state = coordinates * (6 * sum(config.layers) + 2 * kept + self.read_heads) * itemsize
        return int(lstm.TRACED_TAPE * tape) + memory + state

    def label(self, config: OptimizerConfig) -> str:
        """The optimizer in words: "NTM-BFGS, LSTM 20×20 + GAC 2, 1 read and 3 write heads,
        window 100"."""
        return (
            f"NTM-BFGS, {lstm.layers_label(config.layers)} + GAC {self.gac_units}, "
            f"{self.read_heads} read and {self.write_heads} write heads, window {self.window}"
        )
