"""Saved optimizers: φ and its configuration in one .npz file that NumPy alone can read.

Layout: one array per leaf of φ under 'phi/<group>/lstm/<layer>/W' (and .../b,
'phi/<group>/head/W', 'phi/<group>/head/b'), and the configuration as a JSON string under
'metadata'. No object arrays: the file loads with allow_pickle=False. Files are written to a
temporary name in the same folder and renamed, so a crash never leaves half a file behind.
"""

import json
import zipfile
import zlib
from pathlib import Path

import numpy as onp

from l2l_ref.errors import ConfigError, L2LError
from l2l_ref.files import npz_bytes, write_atomically
from l2l_ref.machine import machine
from l2l_ref.optimizer import OptimizerConfig, is_shape, network_shapes
from l2l_ref.tree import flatten, unflatten_like

FORMAT, VERSION = "l2l-ref-checkpoint", 2  # 2: with the tensor → network assignment


class CheckpointError(L2LError):
    """A checkpoint that cannot be used, with the reason."""


def read_npz(path: Path, error: type | None = None) -> dict:
    """The arrays of an .npz file; anything else (no such file, a pickle, a .npy, a broken
    archive) is refused with `error` (CheckpointError by default) naming the path."""
    error = error or CheckpointError
    try:
        npz = onp.load(path, allow_pickle=False)
        if not isinstance(npz, onp.lib.npyio.NpzFile):
            raise ValueError("an .npy array, not an .npz archive")
        with npz:
            return {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except (
        zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError, AttributeError,
    ) as e:  # fmt: skip
        raise error(f"{path}: not a readable file of l2l-ref ({e})") from None


def save(
    path: Path, phi_host: dict, networks: dict, optimizer: OptimizerConfig, metadata: dict
) -> None:
    """Write φ (host arrays), which network serves each optimizee tensor (`networks`), the
    optimizer configuration, the machine (l2l_ref.machine; `metadata` may name the one that
    trained φ) and `metadata` to `path`."""
    arrays = {f"phi/{key}": onp.asarray(value) for key, value in flatten(phi_host).items()}
    header = {
        "format": FORMAT,
        "version": VERSION,
        "optimizer": optimizer.record(),
        "networks": networks,
        "machine": machine(),
        **metadata,
    }
    arrays["metadata"] = onp.array(json.dumps(header))
    write_atomically(path, npz_bytes(arrays))


def load(path: Path) -> tuple[dict, OptimizerConfig, dict]:
    """φ (host arrays), its OptimizerConfig and the metadata saved in a checkpoint.

    Refuses anything that is not a complete checkpoint of this format: a missing or corrupt
    file, pickled content, missing or unexpected arrays, shapes that do not match the saved
    configuration, non-finite values.
    """
    arrays = read_npz(path)
    try:
        header = json.loads(str(arrays.pop("metadata")))
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not an {FORMAT} file")
        if header.get("version") != VERSION:
            raise CheckpointError(
                f"{path}: {FORMAT} version {header.get('version')!r}; this l2l-ref reads "
                f"version {VERSION} (earlier checkpoints lack the tensor → network assignment)"
            )
        config = OptimizerConfig.from_record(header["optimizer"])
        networks = header["networks"]  # which of φ's networks serves each tensor
        if not isinstance(networks, dict) or not all(isinstance(n, str) for n in networks.values()):
            raise TypeError(f"networks is {networks!r}, not tensors mapped to network names")
        names = sorted(set(networks.values()))
        if "groups" in header:  # checkpoints written before 2026-12-07 list φ's networks too
            names = header["groups"]
            if not isinstance(names, list) or not all(isinstance(g, str) for g in names):
                raise TypeError(f"groups is {names!r}, not a list of names")
            if not set(networks.values()) <= set(names):
                raise TypeError(f"networks is {networks!r}, not tensors mapped to {names}")
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as error:
        raise CheckpointError(f"{path}: bad metadata ({error})") from None

    return read_phi(arrays, "phi/", config, names, path), config, header


def read_phi(arrays: dict, prefix: str, config: OptimizerConfig, names, path) -> dict:
    """φ from the arrays under `prefix`, one network of `config`'s shapes per name; refuses
    missing or unexpected arrays, other shapes or dtypes, and non-finite values (a
    configuration of any size costs nothing here: only the file's arrays are held)."""
    shapes = {
        f"{prefix}{name}/{key}": shape
        for name in names
        for key, shape in flatten(network_shapes(config), is_leaf=is_shape).items()
    }
    given = {k for k in arrays if k.startswith(prefix)}
    missing, extra = shapes.keys() - given, given - shapes.keys()
    if missing or extra:
        what = f"missing {sorted(missing)[0]}" if missing else f"unexpected {sorted(extra)[0]}"
        raise CheckpointError(f"{path}: arrays do not match its configuration ({what})")
    for key, shape in shapes.items():
        value = arrays[key]
        if value.shape != tuple(shape) or value.dtype.kind != "f":
            raise CheckpointError(
                f"{path}: {key} is {value.dtype}{list(value.shape)}, "
                f"expected float{list(shape)} for layers {config.layers}"
            )
        if not onp.all(onp.isfinite(value)):
            raise CheckpointError(f"{path}: {key} holds non-finite values")
    flat = {key.removeprefix(prefix): arrays[key] for key in shapes}
    return {name: unflatten_like(network_shapes(config), flat, name, is_shape) for name in names}
