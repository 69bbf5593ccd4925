"""The learned optimizer applied to a whole optimizee: [g_t, h_{t+1}] = m(∇_t, h_t, φ) for
every tensor of θ (Eq. 1), with one network per parameter group. m is a LearnedOptimizer: its
configuration (an architecture of l2l_ref.architectures, its preprocessing and output scale)
and which of φ's networks serves each tensor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import autograd.numpy as np
import numpy as onp

from l2l_ref.architectures import ARCHITECTURES, OptimizerConfig
from l2l_ref.tree import tree_map

if TYPE_CHECKING:  # the optimizer does not depend on the optimizees, only on group_of
    from l2l_ref.problems import Problem

__all__ = [
    "ARCHITECTURES", "LearnedOptimizer", "OptimizerConfig", "assign_networks", "init_network",
    "init_phi", "is_shape", "network_shapes", "optimizer_step", "start_hidden",
]  # fmt: skip


def network_shapes(config: OptimizerConfig) -> dict:
    """The shape of every array of one network's φ (no arrays made)."""
    return config.architecture.network_shapes(config)


def is_shape(value) -> bool:
    """A leaf of network_shapes' tree."""
    return isinstance(value, tuple)


def init_network(rng: onp.random.Generator, config: OptimizerConfig) -> dict:
    """One network's φ, on the host, initialised as the architecture does."""
    return config.architecture.init_network(rng, config)


def init_phi(rng: onp.random.Generator, networks: dict, config: OptimizerConfig, to_device) -> dict:
    """φ: one freshly initialised network for each network `networks` (tensor → network)
    names, in sorted order."""
    return {
        network: tree_map(to_device, init_network(rng, config))
        for network in sorted(set(networks.values()))
    }


def start_hidden(theta: dict, config: OptimizerConfig) -> dict:
    """The starting hidden state of every coordinate of every tensor of θ."""
    return {name: config.architecture.start(x, config) for name, x in theta.items()}


@dataclass(frozen=True)
class LearnedOptimizer:
    """m for one optimizee, all but φ: its configuration (architecture with its settings,
    preprocessing, output scale, ...) and `networks`, the name of φ's network that serves each
    of the optimizee's tensors. With φ it is an optimizer of the baselines' kind
    (frozen.learned)."""

    config: OptimizerConfig
    networks: dict  # optimizee tensor -> the network of φ that serves it


def optimizer_step(phi: dict, grads: dict, hidden: dict, m: LearnedOptimizer) -> tuple[dict, dict]:
    """[g_t, h_{t+1}] = m(∇_t, h_t, φ) for every parameter tensor of the optimizee (Eq. 1).

    phi maps a network name to its parameters; m.networks maps each optimizee tensor's name to
    the network that serves it. Each tensor's coordinates are rows of their own batch with their
    own hidden state, so no two coordinates ever share a state row (docs/spec.md §6); the tensors of
    one network go to its architecture together, for those that share information.
    """
    updates, new_hidden, config, networks = {}, {}, m.config, m.networks
    for network in dict.fromkeys(networks[name] for name in grads):
        columns = {n: np.reshape(g, (-1, 1)) for n, g in grads.items() if networks[n] == network}
        step, states = config.architecture.step(
            phi[network], columns, {n: hidden[n] for n in columns}, config
        )
        new_hidden |= states
        updates |= {n: np.reshape(step[n], np.shape(grads[n])) for n in columns}
    return updates, new_hidden


def assign_networks(tensor_names, problem: Problem, config: OptimizerConfig) -> dict[str, str]:
    """Which optimizer network serves each optimizee tensor: its parameter group's own, or
    one network for all with config.share_networks."""
    return {
        name: "all" if config.share_networks else problem.group_of(name) for name in tensor_names
    }
