"""Files written whole or not at all: every writer of l2l-ref (checkpoints, states, results,
search records, figures, vectors) goes through write_atomically, which writes a temporary
file beside the target and renames it into place; an interruption at any moment leaves the
old file or the new one, and no temporary file (the command line's stop waits for the rename:
`writing`).
"""

import io
import json
import math
import os
import secrets
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

import numpy as onp

# temporary files being written: removed on the way out, however the program stops
_UNFINISHED: set[str] = set()


@contextmanager
def temporary_file(place: Path, prefix: str) -> Iterator[tuple[str, BinaryIO]]:
    """A new file PLACE/PREFIX.<random>.tmp, open for writing, removed when the block ends and
    on the program's way out, however it stops: its name is registered before the file
    exists, so no moment of an interruption leaves one behind (a kill -9 can, and the next
    run on the folder removes it)."""
    tmp = str(Path(place) / f"{prefix}.{secrets.token_hex(6)}.tmp")
    _UNFINISHED.add(tmp)
    try:
        # mode 0666 less the umask: the mode a plain write would give
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            yield tmp, f
    finally:
        _remove(tmp)  # gone already when it was renamed
        _UNFINISHED.discard(tmp)


def _remove(tmp: str) -> None:
    """Remove a temporary file if it is there: not when it was renamed, nor when its folder is
    no folder (a path under a file: ENOTDIR, not ENOENT)."""
    with suppress(FileNotFoundError, NotADirectoryError):
        os.unlink(tmp)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by `data` in one rename: readers see the old file or the new one, and an
    interruption (a signal, which the command line lets in after the rename: `writing`; a
    kill) leaves no temporary file."""
    path = Path(path)
    with temporary_file(path.parent, f".{path.name}") as (tmp, f):
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        os.replace(tmp, path)


def remove_unfinished() -> None:
    """Remove the temporary files of writes that an interruption cut short."""
    for tmp in list(_UNFINISHED):
        _remove(tmp)
        _UNFINISHED.discard(tmp)


def npz_bytes(arrays: dict) -> bytes:
    """An .npz archive of `arrays` whose bytes depend on the arrays only (sorted names, fixed
    timestamps): the same run writes the same file. (A write, for `writing`: a signal that
    stopped a ZipFile half-made left it to fail again, with a traceback, when collected.)"""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as entry:
                onp.lib.format.write_array(entry, onp.asarray(arrays[key]), allow_pickle=False)
    return buffer.getvalue()


def writing(frame) -> bool:
    """Whether `frame`, where a signal's handler interrupted the program, is inside a write
    (write_atomically, npz_bytes): a stop should wait until the file is whole."""
    while frame is not None:
        if frame.f_code in _WRITES:
            return True
        frame = frame.f_back
    return False


_WRITES = {write_atomically.__code__, npz_bytes.__code__}


def _finite_or_none(value):
    """JSON has no inf or NaN: write them as null."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, document: dict) -> None:
    """Write `document` as JSON, atomically, with non-finite numbers as null."""
    text = json.dumps(_finite_or_none(document), indent=1, allow_nan=False)
    write_atomically(Path(path), (text + "\n").encode())
