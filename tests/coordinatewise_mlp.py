"""A second optimizer architecture, for the contract tests alone: a coordinatewise MLP with no
recurrent state, g = (tanh(x W_1 + b_1) … W_head + b_head) · scale on each coordinate's
preprocessed gradient x. Written to the architecture interface
(l2l_ref/architectures/architecture.py), it shows that the interface does not assume an LSTM:
its state is an empty tuple per tensor."""

from dataclasses import dataclass
from typing import ClassVar

import autograd.numpy as np
import numpy as onp

from l2l_ref.architectures import Architecture, setting
from l2l_ref.preprocessing import PREPROCESSORS


@dataclass(frozen=True)
class CoordinatewiseMLP(Architecture):
    NAME: ClassVar[str] = "coordinatewise MLP"  # in tables of results
    COORDINATEWISE: ClassVar[bool] = True

    # a setting of its own, so that the contract tests see one reach the flags and the files
    weight_gain: float = setting(
        1.0,
        "φ_0's weights: standard normal × gain / sqrt(fan-in)",
        lambda gain: None if gain > 0 else f"must be positive, got {gain}",
    )

    def memory_bytes(
        self, config, unroll: int, coordinates: int, itemsize: int, second_order: bool = False
    ) -> int:
        """autograd's tape: per step and coordinate the input and, per layer, its
        pre-activation and output, and the head's."""
        return unroll * coordinates * (config.input_size + 2 * sum(config.layers) + 2) * itemsize

    def label(self, config) -> str:
        return "coordinatewise MLP " + "×".join(map(str, config.layers))

    def network_shapes(self, config) -> dict:
        layers, n_in = [], config.input_size
        for units in config.layers:
            layers.append({"W": (n_in, units), "b": (units,)})
            n_in = units
        return {"layers": layers, "head": {"W": (n_in, 1), "b": (1,)}}

    def init_network(self, rng: onp.random.Generator, config) -> dict:
        def draw(shape):
            return rng.standard_normal(shape) * self.weight_gain / onp.sqrt(shape[0])

        shapes = self.network_shapes(config)
        return {
            "layers": [{"W": draw(s["W"]), "b": onp.zeros(s["b"])} for s in shapes["layers"]],
            "head": {"W": draw(shapes["head"]["W"]), "b": onp.zeros(1)},
        }

    def start(self, template, config) -> tuple:
        return ()

    def step(self, net: dict, columns: dict, hidden: dict, config) -> tuple[dict, dict]:
        preprocess = PREPROCESSORS[config.preprocessing][0]
        updates = {}
        for name, column in columns.items():
            x = preprocess(column, config.preprocessing_param)
            for layer in net["layers"]:
                x = np.tanh(x @ layer["W"] + layer["b"])
            updates[name] = (x @ net["head"]["W"] + net["head"]["b"]) * config.output_scale
        return updates, {name: () for name in columns}
