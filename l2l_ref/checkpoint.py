"""Saved optimizers: φ and its configuration in one .npz file that NumPy alone can read.

Layout: one array per leaf of φ under 'phi/<group>/lstm/<layer>/W' (and .../b,
'phi/<group>/head/W', 'phi/<group>/head/b'), and the configuration as a JSON string under
'metadata'. No object arrays: the file loads with allow_pickle=False. Files are written to a
temporary name in the same folder and renamed, so a crash never leaves half a file behind.
"""

import io
import json
import os
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as onp

from l2l_ref.errors import ConfigError, L2LError
from l2l_ref.lstm import OptimizerConfig, init_network
from l2l_ref.tree import flatten, unflatten_like

FORMAT, VERSION = "l2l-ref-checkpoint", 2  # 2: with the tensor → network assignment


class CheckpointError(L2LError):
    """A checkpoint that cannot be used, with the reason."""


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by `data` in one rename: readers see the old file or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(
    path: Path, phi_host: dict, networks: dict, optimizer: OptimizerConfig, metadata: dict
) -> None:
    """Write φ (host arrays), which network serves each optimizee tensor (`networks`), the
    optimizer configuration and `metadata` to `path`."""
    arrays = {f"phi/{key}": onp.asarray(value) for key, value in flatten(phi_host).items()}
    header = {
        "format": FORMAT,
        "version": VERSION,
        "optimizer": asdict(optimizer),
        "groups": sorted(phi_host),
        "networks": networks,
        **metadata,
    }
    arrays["metadata"] = onp.array(json.dumps(header))
    buffer = io.BytesIO()
    onp.savez(buffer, **arrays)
    write_atomically(path, buffer.getvalue())


def load(path: Path) -> tuple[dict, OptimizerConfig, dict]:
    """φ (host arrays), its OptimizerConfig and the metadata saved in a checkpoint.

    Refuses anything that is not a complete checkpoint of this format: a missing or corrupt
    file, pickled content, missing or unexpected arrays, shapes that do not match the saved
    configuration, non-finite values.
    """
    try:
        with onp.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from None
    try:
        header = json.loads(str(arrays.pop("metadata")))
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not an {FORMAT} file")
        if header.get("version") != VERSION:
            raise CheckpointError(
                f"{path}: {FORMAT} version {header.get('version')!r}; this l2l-ref reads "
                f"version {VERSION} (earlier checkpoints lack the tensor → network assignment)"
            )
        config = OptimizerConfig(
            **{**header["optimizer"], "layers": tuple(header["optimizer"]["layers"])}
        )
        groups, networks = header["groups"], header["networks"]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise TypeError(f"groups is {groups!r}, not a list of names")
        if not isinstance(networks, dict) or not set(networks.values()) <= set(groups):
            raise TypeError(f"networks is {networks!r}, not tensors mapped to {groups}")
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as error:
        raise CheckpointError(f"{path}: bad metadata ({error})") from None

    template = {group: init_network(onp.random.default_rng(0), config) for group in groups}
    expected = {f"phi/{k}": v.shape for k, v in flatten(template).items()}
    missing, extra = expected.keys() - arrays.keys(), arrays.keys() - expected.keys()
    if missing or extra:
        what = f"missing {sorted(missing)[0]}" if missing else f"unexpected {sorted(extra)[0]}"
        raise CheckpointError(f"{path}: arrays do not match its configuration ({what})")
    for key, shape in expected.items():
        value = arrays[key]
        if value.shape != shape or value.dtype.kind != "f":
            raise CheckpointError(
                f"{path}: {key} is {value.dtype}{list(value.shape)}, "
                f"expected float{list(shape)} for layers {config.layers}"
            )
        if not onp.all(onp.isfinite(value)):
            raise CheckpointError(f"{path}: {key} holds non-finite values")
    phi = unflatten_like(template, {k.removeprefix("phi/"): v for k, v in arrays.items()})
    return phi, config, header
