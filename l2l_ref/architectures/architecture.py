"""What an optimizer architecture is: a frozen dataclass whose fields are its own settings and
whose methods are m(∇, h; φ) and what a run needs to know about it.

An architecture provides, beside its settings (each a field made by `setting`):

    network_shapes(config) -> {"lstm": [{"W": shape, "b": shape}, ...], "head": {...}}
        the shape of every array of one network's φ (no arrays made);
    init_network(rng, config) -> one network's φ, host arrays drawn from `rng`;
    start(template, config) -> the state of the coordinates of one tensor, zero, made beside
        `template`: any tree of arrays with a row per coordinate (the LSTM: (h, c) per
        layer; NTM-BFGS: the controller's, its reads and its rows of the memory's writes);
    step(net, columns, hidden, config) -> (updates, hidden)
        one step of m for all the tensors one network serves: columns {tensor: (n, 1)
        gradients}, hidden {tensor: state}; returns {tensor: (n, 1) updates} and the new
        states. Written with autograd.numpy, so that it is differentiated to any order;
    memory_bytes(config, unroll, coordinates, itemsize, second_order) -> bytes the
        meta-gradient of one unroll keeps for that many coordinates (its tape and state), on
        the path `hand_written` chooses (training and run.memory_estimate's refusal of runs
        too large both follow it);
    label(config) -> the optimizer in words ("LSTM 20×20"), for reports and figures;
    state_stages(state) (optional) -> {key: array}: one tensor's state as the reference
        vectors record it ("lstm/0/h", ...; docs/vectors.md), for an architecture with a
        vectors case;
    NAME: the optimizer's short name in tables ("LSTM", "NTM-BFGS");
    COORDINATEWISE: whether a coordinate's update depends on its own gradients only;

and may override `hand_written(config, second_order)`, the one rule that says whether training
takes l2l_ref.fused's hand-written first-order meta-gradient (by default never: autograd
traces the unroll), and `fits(config)`, what is wrong with its settings for a configuration's
LSTM layers.

`config` is the OptimizerConfig around the architecture (architectures/__init__.py): the
LSTM layers, preprocessing, output scale, initialisation and cell every learned optimizer has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from l2l_ref.checks import field_types
from l2l_ref.errors import ConfigError

if TYPE_CHECKING:
    from l2l_ref.architectures import OptimizerConfig


def setting(default: int | float, help: str, check: Callable | None = None):
    """A field of an architecture that is one of its own settings: its default (whose type every
    value must have), the help of its command-line flag (`--name-with-dashes`), and
    `check(value)`, what is wrong with a value, or None. Each is a flag of train and search and
    a key of the optimizer's record in checkpoints and results files."""
    return dataclasses.field(default=default, metadata={"help": help, "check": check})


def between(low: int, high: int) -> Callable:
    """The check of a setting that must lie in [low, high]."""

    def check(value: int) -> str | None:
        return None if low <= value <= high else f"needs {low} to {high}, got {value}"

    return check


@dataclass(frozen=True)
class Architecture:
    """The part every architecture shares: its settings checked on creation, and read back."""

    NAME: ClassVar[str]
    COORDINATEWISE: ClassVar[bool]

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in (float, "float") and type(value) is int:
                object.__setattr__(self, field.name, float(value))  # a file may write 1 for 1.0
        try:
            field_types(self)
        except ConfigError as error:
            raise ConfigError(f"{self.NAME} setting {error}") from None
        for field in dataclasses.fields(self):
            check = field.metadata.get("check")
            problem = check and check(getattr(self, field.name))
            if problem:
                raise ConfigError(f"{self.NAME} setting {field.name}: {problem}")

    def settings(self) -> dict:
        """Its own settings by name, in the order it declares them."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def fits(self, config: OptimizerConfig) -> str | None:
        """What is wrong with these settings for `config`'s LSTM layers, or None."""
        return None

    def hand_written(self, config: OptimizerConfig, second_order: bool = False) -> bool:
        """Whether training takes the hand-written first-order meta-gradient (l2l_ref.fused)
        rather than autograd's trace of the unroll: the one rule, which training, frozen runs
        and the memory estimate all read."""
        return False
