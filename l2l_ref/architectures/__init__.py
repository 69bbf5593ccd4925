"""Optimizer architectures: what m(∇, h; φ) computes (Section 2.1, and the appendix on
information sharing), one module each, a frozen dataclass per architecture registered in
ARCHITECTURES (the interface: architectures/architecture.py), and OptimizerConfig, the
learned optimizer around it.

Adding one, with settings of its own or none, is a module and a line in ARCHITECTURES: each
setting becomes a flag of train and search, a key of the optimizer's record in checkpoints and
results files; tests/test_architectures.py holds every registered architecture to the contract
(shapes, permutations of the coordinates, gradients against finite differences, backends,
checkpoints, settings, the memory estimate).
"""

from dataclasses import dataclass, field, fields

from l2l_ref.architectures.architecture import Architecture, between, setting
from l2l_ref.architectures.lstm import LSTM
from l2l_ref.architectures.lstm_gac import LSTMGAC
from l2l_ref.architectures.ntm_bfgs import NTMBFGS
from l2l_ref.checks import field_types
from l2l_ref.errors import ConfigError
from l2l_ref.preprocessing import PREPROCESSORS

__all__ = [
    "ARCHITECTURES", "INITS", "LSTM", "LSTMGAC", "NTMBFGS", "Architecture", "OptimizerConfig",
    "between", "current_record", "make", "optimizer_name", "registry_name", "setting",
]  # fmt: skip

ARCHITECTURES = {"lstm": LSTM, "lstm-gac": LSTMGAC, "ntm-bfgs": NTMBFGS}

INITS = ("released", "zero-head", "zeros")

# the largest LSTM layer accepted: far beyond any experiment (the paper's has 20 units), small
# enough that φ of one network fits comfortably in memory
MAX_UNITS = 4096


def make(name: str, settings: dict | None = None) -> Architecture:
    """The registered architecture `name` with its own settings (any not given take their
    defaults), or one line saying what is wrong."""
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r} (choose from {', '.join(ARCHITECTURES)})")
    kind, settings = ARCHITECTURES[name], dict(settings or {})
    declared = [f.name for f in fields(kind)]
    unknown = sorted(set(settings) - set(declared))
    if unknown:
        raise ConfigError(
            f"architecture {name} has no setting {', '.join(unknown)} "
            f"(its settings: {', '.join(declared) or 'none'})"
        )
    return kind(**settings)


def registry_name(architecture: Architecture) -> str:
    """The name `architecture` is registered under ("lstm-gac"), as records and flags write it."""
    for name, kind in ARCHITECTURES.items():
        if type(architecture) is kind:
            return name
    raise ConfigError(f"architecture {architecture!r} is not registered in ARCHITECTURES")


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
    kind = ARCHITECTURES.get(record.get("architecture", "lstm"))
    own = {f.name for f in fields(kind)} if kind else set()
    if "gac_units" not in own and record.get("gac_units") == 2:
        return {k: v for k, v in record.items() if k != "gac_units"}
    return dict(record)


@dataclass(frozen=True)
class OptimizerConfig:
    """The learned optimizer m apart from φ and the optimizee: its architecture (an instance,
    with its own settings), the LSTM layer sizes, the input preprocessing, the output scale,
    the initialisation, the cell."""

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
    # m itself, with its own settings: an instance of a class of ARCHITECTURES
    architecture: Architecture = field(default_factory=LSTM)

    def __post_init__(self):
        field_types(self)
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
        registry_name(self.architecture)
        problem = self.architecture.fits(self)
        if problem:
            raise ConfigError(f"{self.architecture.NAME} setting {problem}")

    def record(self) -> dict:
        """The configuration as checkpoints, results and vectors write it: every field by
        name, the architecture by its registry name and its settings beside the others
        (lstm-gac: "gac_units")."""
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        record |= {"layers": list(self.layers), "architecture": registry_name(self.architecture)}
        return {**record, **self.architecture.settings()}

    @classmethod
    def from_record(cls, record: dict) -> "OptimizerConfig":
        """The configuration a record (`record`, as written by `record` now or before)
        describes."""
        names = {f.name for f in fields(cls)} - {"architecture"}
        record = current_record(record)
        common = {k: v for k, v in record.items() if k in names}
        if isinstance(common.get("layers"), list):
            common["layers"] = tuple(common["layers"])
        own = {k: v for k, v in record.items() if k not in names | {"architecture"}}
        architecture = record.get("architecture", "lstm")
        if not isinstance(architecture, str):
            raise ConfigError(f"architecture must be a string, not {architecture!r}")
        return cls(**common, architecture=make(architecture, own))

    @property
    def input_size(self) -> int:
        return PREPROCESSORS[self.preprocessing][1]
