"""A run folder: owned by one process at a time, its files written whole or not at all, and the
state a run continues from after it was stopped (`l2l-ref train --resume`).

The owner holds an exclusive lock (flock) on FOLDER/.lock. The kernel releases it when the
process ends, however it ends, so a killed run never leaves a stale lock behind; the file
itself stays and names the last owner. A new owner removes the temporary files that a killed
run's atomic writes may have left.

FOLDER/state.npz is written, atomically, after every epoch: φ, Adam's moments and step count,
the epoch, the state of the stream that draws training problems, the best φ with its epoch
and validation loss, the curves, and the run's settings; enough for the continued run to end
exactly as the uninterrupted one would have.
"""

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as onp

from l2l_ref import checks
from l2l_ref.checkpoint import CheckpointError, read_npz, read_phi
from l2l_ref.errors import L2LError
from l2l_ref.files import npz_bytes, temporary_file, write_atomically
from l2l_ref.machine import machine
from l2l_ref.meta_train import TrainResult, TrainState
from l2l_ref.run import RunSpec
from l2l_ref.tree import flatten, tree_map

LOCK, STATE = ".lock", "state.npz"
FORMAT, VERSION = "l2l-ref-state", 1


class FolderInUse(L2LError):
    """Another process owns the run folder."""


@contextlib.contextmanager
def owned(folder: Path) -> Iterator[Path]:
    """Own `folder` (created if need be) for the duration: refused if another process owns it;
    temporary files of a killed run are removed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise FolderInUse(f"{folder} is in use by another l2l-ref process (pid {owner})") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        for stale in folder.glob(".*.tmp"):  # left by an atomic write that a kill interrupted
            stale.unlink(missing_ok=True)
        yield folder
    finally:
        os.close(fd)  # releases the lock


def check_writable(place: Path) -> None:
    """Make `place` (a folder) if need be and write a file into it: an OSError now, before any
    work, rather than after."""
    place = Path(place)
    place.mkdir(parents=True, exist_ok=True)
    with temporary_file(place, ".probe"):
        pass


def save_state(folder: Path, state: TrainState, spec: RunSpec, to_host) -> None:
    """Write FOLDER/state.npz for `state` (arrays as host arrays)."""
    result = state.result
    arrays = {}
    for prefix, tree in (
        ("phi/", state.phi), ("adam/m/", state.adam["m"]), ("adam/v/", state.adam["v"]),
        ("best/", result.phi),
    ):  # fmt: skip
        arrays |= {prefix + key: onp.asarray(to_host(v)) for key, v in flatten(tree).items()}
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "run": spec.as_dict(),
        "epoch": state.epoch,
        "adam_steps": state.adam["t"],
        "train_rng": state.train_rng,
        "best_epoch": result.best_epoch,
        "best_validation": _number(result.best_validation),
        "meta_losses": result.meta_losses,
        "validation": [[epoch, _number(loss)] for epoch, loss in result.validation],
        "networks": result.networks,
        "machine": machine(),
    }
    arrays["metadata"] = onp.array(json.dumps(metadata, allow_nan=False))
    write_atomically(Path(folder) / STATE, npz_bytes(arrays))


def _number(value: float) -> float | str:
    """JSON has no inf: a validation that diverged is written "inf"."""
    return value if onp.isfinite(value) else "inf"


def load_state(folder: Path) -> tuple[RunSpec, dict, dict]:
    """The run and the saved state of FOLDER (φ's arrays on the host): (spec, arrays by part,
    metadata). Anything that is not a complete state of this format is refused."""
    path = Path(folder) / STATE
    arrays = read_npz(path)
    try:
        metadata = json.loads(str(arrays.pop("metadata")))
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            raise ValueError(f"not an {FORMAT} file")
        if metadata.get("version") != VERSION:
            raise ValueError(f"{FORMAT} version {metadata.get('version')!r}, not {VERSION}")
        spec = RunSpec.from_dict(checks.mapping(metadata["run"], "run"))
        check_state(metadata, spec)
        networks = networks_of(metadata)
    except KeyError as error:
        raise CheckpointError(f"{path}: bad state (no {error})") from None
    except (TypeError, ValueError, AttributeError, L2LError) as error:
        raise CheckpointError(f"{path}: bad state ({error})") from None
    names = sorted(set(networks.values()))
    parts = {
        part: read_phi(arrays, f"{part}/", spec.optimizer, names, path)
        for part in ("phi", "adam/m", "adam/v", "best")
    }
    if any(onp.any(v < 0) for v in flatten(parts["adam/v"]).values()):
        raise CheckpointError(f"{path}: bad state (Adam's second moments adam/v are negative)")
    return spec, parts, metadata


def networks_of(metadata: dict) -> dict:
    """A state's tensor → network map: its "networks" ("groups" in states written before
    2026-12-07)."""
    if "networks" not in metadata and "groups" in metadata:
        return metadata["groups"]
    return metadata["networks"]


def check_networks(folder: Path, networks: dict, expected: dict) -> None:
    """A state's tensor → network map is the one its run's problem and optimizer give."""
    if networks != expected:
        raise CheckpointError(
            f"{Path(folder) / STATE}: bad state (networks {networks} are not this run's {expected})"
        )


def _loss(value, name: str) -> float:
    """A validation loss as a state file writes it: a finite number, or "inf" (_number)."""
    return math.inf if value == "inf" else checks.number(value, name)


def check_state(metadata: dict, spec: RunSpec) -> None:
    """Every field of a state's metadata, and how they fit together: the epoch within the run,
    one Adam step per unroll of every epoch, the stream's state a generator takes, a meta-loss
    per epoch, validations from epoch 0 in order up to the epoch, the best among them."""
    epoch = checks.integer(metadata["epoch"], "epoch", 0, spec.train.epochs)
    steps = epoch * (spec.train.steps // spec.train.unroll)
    checks.integer(metadata["adam_steps"], "adam_steps", steps, steps)
    try:
        onp.random.PCG64().state = checks.mapping(metadata["train_rng"], "train_rng")
    except (TypeError, ValueError, KeyError, OverflowError) as error:
        raise ValueError(f"train_rng is not a generator's state ({error})") from None
    checks.numbers(metadata["meta_losses"], "meta_losses", epoch)
    validation = checks.sequence(metadata["validation"], "validation")
    epochs = []
    for k, pair in enumerate(validation):
        at, loss = checks.sequence(pair, f"validation[{k}]", 2)
        epochs.append(checks.integer(at, f"validation[{k}] epoch", 0, epoch))
        _loss(loss, f"validation[{k}] loss")
    if not epochs or epochs[0] != 0 or epochs != sorted(set(epochs)):
        raise ValueError(f"validation epochs {epochs} do not run from 0 upwards")
    best = checks.integer(metadata["best_epoch"], "best_epoch", 0, epoch)
    score = _loss(metadata["best_validation"], "best_validation")
    scores = {at: _loss(loss, "") for at, loss in validation}
    if scores.get(best) != score or score > min(scores.values()):
        raise ValueError(f"best_epoch {best} is not the best validation {min(scores.values())}")
    if not checks.names_to_names(networks_of(metadata), "networks"):
        raise ValueError("networks is empty")


def restore(parts: dict, metadata: dict, to_device) -> TrainState:
    """The TrainState of a loaded state, its arrays moved to the device."""
    phi, m, v, best = (tree_map(to_device, parts[p]) for p in ("phi", "adam/m", "adam/v", "best"))
    result = TrainResult(
        best,
        metadata["best_epoch"],
        float(metadata["best_validation"]),
        [float(loss) for loss in metadata["meta_losses"]],
        [(epoch, float(loss)) for epoch, loss in metadata["validation"]],
        networks_of(metadata),
    )
    adam = {"m": m, "v": v, "t": metadata["adam_steps"]}
    return TrainState(metadata["epoch"], phi, adam, metadata["train_rng"], result)
