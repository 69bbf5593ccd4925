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

from typing import TYPE_CHECKING

import autograd.numpy as np

from l2l_ref.architectures import lstm
from l2l_ref.architectures.lstm import (
    CELLS,
    init_network,
    memory_bytes,
    network_shapes,
    start,
    state_stages,
)
from l2l_ref.architectures.setting import Setting
from l2l_ref.preprocessing import PREPROCESSORS

if TYPE_CHECKING:
    from l2l_ref.architectures import OptimizerConfig


def at_most_the_smallest_layer(units: int, config: OptimizerConfig) -> str | None:
    """What is wrong with G = `units` for these layers (every layer needs G of its units)."""
    if not all(1 <= units <= width for width in config.layers):
        return f"needs 1 to (units of the smallest layer), got {units} for {list(config.layers)}"
    return None


# its one setting, G: `--gac-units`, "gac_units" in checkpoints and results files
SETTINGS = {
    "gac_units": Setting(
        2, "averaging units per layer, the last of each", at_most_the_smallest_layer
    )
}

__all__ = [
    "COORDINATEWISE", "HAND_WRITTEN", "NAME", "SETTINGS", "init_network", "label", "layers",
    "memory_bytes", "network_shapes", "start", "state_stages", "step",
]  # fmt: skip

NAME = "LSTM+GAC"  # in tables of results
# the averages couple the coordinates; training traces the unroll
COORDINATEWISE, HAND_WRITTEN = False, False


def label(optimizer: dict) -> str:
    """The optimizer in words: "LSTM 20×20 + GAC (2 units averaged)"."""
    return f"{lstm.label(optimizer)} + GAC ({optimizer['gac_units']} units averaged)"


def global_average(outputs: dict, units: int) -> dict:
    """Each tensor's h with its last `units` columns replaced by their mean over the rows of
    every tensor in `outputs`."""
    rows = sum(np.shape(h)[0] for h in outputs.values())
    mean = sum(np.sum(h[:, -units:], axis=0) for h in outputs.values()) / rows
    return {
        name: np.concatenate([h[:, :-units], np.zeros_like(h[:, -units:]) + mean], axis=1)
        for name, h in outputs.items()
    }


def layers(net_lstm: list, x: dict, hidden: dict, config: OptimizerConfig) -> tuple[dict, dict]:
    """The LSTM layers for the tensors one network serves, over all of them together, the
    last `gac_units` units of each layer averaged after it: x {tensor: (n, inputs)} and hidden
    {tensor: (h, c) per layer} give the last layer's output {tensor: (n, H)} and the new states."""
    cell, new_hidden = CELLS[config.cell], {name: [] for name in x}
    units = config.setting("gac_units")
    for depth, layer in enumerate(net_lstm):
        states = {name: cell(layer, x[name], hidden[name][depth])[1] for name in x}
        x = global_average({name: h for name, (h, _) in states.items()}, units)
        for name, (_, c) in states.items():
            new_hidden[name].append((x[name], c))
    return x, new_hidden


def step(net: dict, columns: dict, hidden: dict, config: OptimizerConfig) -> tuple[dict, dict]:
    """m for the tensors one network serves, layer by layer over all of them together, the
    communication units averaged after each layer."""
    preprocess = PREPROCESSORS[config.preprocessing][0]
    x = {name: preprocess(column, config.preprocessing_param) for name, column in columns.items()}
    x, new_hidden = layers(net["lstm"], x, hidden, config)
    head = net["head"]
    updates = {name: (x[name] @ head["W"] + head["b"]) * config.output_scale for name in columns}
    return updates, new_hidden
