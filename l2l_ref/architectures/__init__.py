"""Optimizer architectures: what m(∇, h; φ) computes (Section 2.1, and the appendix on
information sharing), one module each, registered in ARCHITECTURES.

An architecture module provides:

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
    memory_bytes(config, unroll, coordinates, itemsize, hand_written) -> bytes the
        meta-gradient of one unroll keeps for that many coordinates (its tape and state), on
        the hand-written path or autograd's (optimizer.hand_written chooses, for training and
        for run.memory_estimate's refusal of runs too large alike);
    label(optimizer) -> the optimizer in words, from the optimizer dict of a results or
        search file ("LSTM 20×20"), for reports and figures;
    state_stages(state) (optional) -> {key: array}: one tensor's state as the reference
        vectors record it ("lstm/0/h", ...; docs/vectors.md), for an architecture with a
        vectors case;
    SETTINGS (optional): {name: Setting} the architecture's own settings, beyond the LSTM
        layers, preprocessing and output scale every learned optimizer has; each becomes a
        flag of train and search (`--name-with-dashes`), a key of the optimizer's record in
        checkpoints and results files, and `config.setting(name)`;
    NAME: the optimizer's short name in tables ("LSTM", "NTM-BFGS");
    COORDINATEWISE: whether a coordinate's update depends on its own gradients only;
    HAND_WRITTEN: whether l2l_ref.fused has its first-order meta-gradient by hand (training
        then uses it; otherwise autograd traces the unroll).

Adding one, with settings of its own or none, is a module and a line in ARCHITECTURES;
tests/test_architectures.py holds every registered architecture to the contract (shapes,
permutations of the coordinates, gradients against finite differences, backends, checkpoints,
settings).
"""

from dataclasses import dataclass, fields

from l2l_ref.architectures import lstm, lstm_gac, ntm_bfgs
from l2l_ref.architectures.setting import Setting
from l2l_ref.checks import field_types
from l2l_ref.errors import ConfigError
from l2l_ref.preprocessing import PREPROCESSORS

__all__ = [
    "ARCHITECTURES", "INITS", "OptimizerConfig", "Setting", "current_record", "optimizer_name",
]  # fmt: skip

ARCHITECTURES = {"lstm": lstm, "lstm-gac": lstm_gac, "ntm-bfgs": ntm_bfgs}

INITS = ("released", "zero-head", "zeros")

# the largest LSTM layer accepted: far beyond any experiment (the paper's has 20 units), small
# enough that φ of one network fits comfortably in memory
MAX_UNITS = 4096


def optimizer_name(record: dict) -> str:
    """The learned optimizer's short name in tables ("LSTM", "NTM-BFGS"), from its record (a
    results or search file's "optimizer"): its architecture's NAME; an architecture not
    registered here by its registry name."""
    name = record.get("architecture", "lstm")
    return ARCHITECTURES[name].NAME if name in ARCHITECTURES else name


def current_record(record: dict) -> dict:
    """An optimizer's record as `OptimizerConfig.record` writes it now: records written before
    the architectures owned their settings carry lstm-gac's gac_units, at its default 2, for
    every architecture; where it is not a setting of the record's architecture, it is
    dropped."""
    module = ARCHITECTURES.get(record.get("architecture", "lstm"))
    own = getattr(module, "SETTINGS", {})
    if "gac_units" not in own and record.get("gac_units") == 2:
        return {k: v for k, v in record.items() if k != "gac_units"}
    return dict(record)


@dataclass(frozen=True)
class OptimizerConfig:
    """Architecture of m: which one, its LSTM layer sizes, the input preprocessing, the output
    scale, the initialisation."""

    layers: tuple[int, ...] = (20, 20)
    preprocessing: str = "identity"  # a key of PREPROCESSORS
    preprocessing_param: float = 0.0  # p of Appendix A, k of LogAndSign
    output_scale: float = 1.0
    # "released" (truncated normal), "zero-head" (the same, but the head starts at 0: the
    # untrained optimizer makes no update) or "zeros"
    init: str = "released"
    # "plain": the cell traced op by op; "fused": the same cell as one autograd primitive
    cell: str = "fused"
    share_networks: bool = False  # one network for all parameter groups
    architecture: str = "lstm"  # a key of ARCHITECTURES
    # the architecture's own settings (its module's SETTINGS) as (name, value) pairs, in the
    # order SETTINGS declares them; any not given takes its default
    architecture_settings: tuple = ()

    def __post_init__(self):
        field_types(self)
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"unknown architecture {self.architecture!r} "
                f"(choose from {', '.join(ARCHITECTURES)})"
            )
        if self.preprocessing not in PREPROCESSORS:
            raise ConfigError(
                f"unknown preprocessing {self.preprocessing!r} "
                f"(choose from {', '.join(PREPROCESSORS)})"
            )
        if self.preprocessing != "identity" and not self.preprocessing_param > 0:
            raise ConfigError(
                f"{self.preprocessing} needs a positive parameter, got {self.preprocessing_param}"
            )
        if self.cell not in ("plain", "fused"):
            raise ConfigError(f"unknown cell {self.cell!r} (plain or fused)")
        if self.init not in INITS:
            raise ConfigError(
                f"unknown initialisation {self.init!r} (choose from {', '.join(INITS)})"
            )
        if any(not 1 <= units <= MAX_UNITS for units in self.layers):
            raise ConfigError(
                f"every LSTM layer needs 1 to {MAX_UNITS} units, got {list(self.layers)}"
            )
        object.__setattr__(self, "architecture_settings", self._settings_checked())

    def _settings_checked(self) -> tuple:
        """architecture_settings complete, in declaration order, each value checked."""
        declared = getattr(self.module, "SETTINGS", {})
        try:
            given = dict(self.architecture_settings)
        except (TypeError, ValueError):
            raise ConfigError(
                f"architecture_settings must be (name, value) pairs, not "
                f"{self.architecture_settings!r}"
            ) from None
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise ConfigError(
                f"architecture {self.architecture} has no setting {', '.join(unknown)} "
                f"(its settings: {', '.join(declared) or 'none'})"
            )
        values = {name: given.get(name, setting.default) for name, setting in declared.items()}
        for name, value in values.items():
            setting = declared[name]
            kind = type(setting.default)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = values[name] = float(value)  # a file may write 1 for 1.0
            if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
                raise ConfigError(
                    f"{self.architecture} setting {name} must be of type {kind.__name__}, "
                    f"not {value!r}"
                )
            problem = setting.check and setting.check(value, self)
            if problem:
                raise ConfigError(f"{self.architecture} setting {name}: {problem}")
        return tuple(values.items())

    def setting(self, name: str):
        """The value of the architecture's own setting `name` (its module's SETTINGS)."""
        return dict(self.architecture_settings)[name]

    def record(self) -> dict:
        """The configuration as checkpoints, results and vectors write it: every field by
        name, the architecture's settings among them (lstm-gac: "gac_units")."""
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        own = dict(record.pop("architecture_settings"))
        return {**record, "layers": list(self.layers), **own}

    @classmethod
    def from_record(cls, record: dict) -> "OptimizerConfig":
        """The configuration a record (`record`, as written by `record` now or before)
        describes."""
        names = {f.name for f in fields(cls)} - {"architecture_settings"}
        record = current_record(record)
        common = {k: v for k, v in record.items() if k in names}
        if isinstance(common.get("layers"), list):
            common["layers"] = tuple(common["layers"])
        own = tuple((k, v) for k, v in record.items() if k not in names)
        return cls(**common, architecture_settings=own)

    @property
    def input_size(self) -> int:
        return PREPROCESSORS[self.preprocessing][1]

    @property
    def module(self):
        """The architecture's module."""
        return ARCHITECTURES[self.architecture]
