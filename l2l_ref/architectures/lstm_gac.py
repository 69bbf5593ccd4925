"""LSTM+GAC: the coordinatewise LSTM with Global Averaging Cells (the paper's appendix on
information sharing between coordinates).

In each LSTM layer the last G units (its setting `gac_units`) are communication cells:
what they send, to the next layer and to their own layer at the next step, is the average of
their output h over every coordinate the network serves, all its tensors together; every
coordinate receives the same value. The other units, the cell states c, the parameters φ and
their layout are the plain LSTM's (architectures.lstm). Where the paper leaves a choice open,
this is what is done (docs/conventions.md says why):

- G = 2 units per layer by default (the paper's NTM-BFGS sketch uses 2 GACs);
- only h is averaged, c stays each coordinate's own ("the average of their activation");
- the average replaces h on both paths: into the next layer (and the head) and into the
  recurrent input of the next step ("outgoing");
- with several networks (CIFAR), each averages over the coordinates it serves.

With averaging, coordinates are no longer independent: a coordinate's update depends on every
other's gradient through the averages. Permuting the coordinates still permutes the updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import autograd.numpy as np

from l2l_ref.architectures.architecture import setting
from l2l_ref.architectures.lstm import CELLS, LSTM, layers_label
from l2l_ref.preprocessing import PREPROCESSORS

if TYPE_CHECKING:
    from l2l_ref.architectures import OptimizerConfig

__all__ = ["GAC_UNITS", "LSTMGAC", "gac_units_fit", "global_average", "layers"]

# G, its one setting: `--gac-units`, "gac_units" in checkpoints and results files
GAC_UNITS = "averaging units per layer, the last of each"


def gac_units_fit(units: int, config: OptimizerConfig) -> str | None:
    """What is wrong with G = `units` for these layers (every layer needs G of its units)."""
    if not all(1 <= units <= width for width in config.layers):
        return (
            f"gac_units needs 1 to (units of the smallest layer), got {units} for "
            f"{list(config.layers)}"
        )
    return None


def global_average(outputs: dict, units: int) -> dict:
    """Each tensor's h with its last `units` columns replaced by their mean over the rows of
    every tensor in `outputs`."""
    rows = sum(np.shape(h)[0] for h in outputs.values())
    mean = sum(np.sum(h[:, -units:], axis=0) for h in outputs.values()) / rows
    return {
        name: np.concatenate([h[:, :-units], np.zeros_like(h[:, -units:]) + mean], axis=1)
        for name, h in outputs.items()
    }


def layers(net_lstm: list, x: dict, hidden: dict, cell: str, units: int) -> tuple[dict, dict]:
    """The LSTM layers (of CELLS[cell]) for the tensors one network serves, over all of them
    together, the last `units` units of each layer averaged after it: x {tensor: (n, inputs)}
    and hidden {tensor: (h, c) per layer} give the last layer's output {tensor: (n, H)} and
    the new states."""
    cell, new_hidden = CELLS[cell], {name: [] for name in x}
    for depth, layer in enumerate(net_lstm):
        states = {name: cell(layer, x[name], hidden[name][depth])[1] for name in x}
        x = global_average({name: h for name, (h, _) in states.items()}, units)
        for name, (_, c) in states.items():
            new_hidden[name].append((x[name], c))
    return x, new_hidden


@dataclass(frozen=True)
class LSTMGAC(LSTM):
    """The LSTM's φ, state and layout, its layers' last `gac_units` units averaged."""

    NAME: ClassVar[str] = "LSTM+GAC"  # in tables of results
    # the averages couple the coordinates
    COORDINATEWISE: ClassVar[bool] = False

    gac_units: int = setting(2, GAC_UNITS)

    def fits(self, config: OptimizerConfig) -> str | None:
        return gac_units_fit(self.gac_units, config)

    def step(
        self, net: dict, columns: dict, hidden: dict, config: OptimizerConfig
    ) -> tuple[dict, dict]:
        """m for the tensors one network serves, layer by layer over all of them together,
        the communication units averaged after each layer."""
        preprocess, p = PREPROCESSORS[config.preprocessing][0], config.preprocessing_param
        x = {name: preprocess(column, p) for name, column in columns.items()}
        x, new_hidden = layers(net["lstm"], x, hidden, config.cell, self.gac_units)
        head = net["head"]
        updates = {
            name: (x[name] @ head["W"] + head["b"]) * config.output_scale for name in columns
        }
        return updates, new_hidden

    def hand_written(self, config: OptimizerConfig, second_order: bool = False) -> bool:
        """None by hand: training traces the unroll."""
        return False

    def label(self, config: OptimizerConfig) -> str:
        """The optimizer in words: "LSTM 20×20 + GAC (2 units averaged)"."""
        return f"{layers_label(config.layers)} + GAC ({self.gac_units} units averaged)"
