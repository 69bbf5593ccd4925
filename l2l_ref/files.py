"""Files written whole or not at all: every writer of l2l-ref (checkpoints, states, results,
search records, figures, vectors) goes through write_atomically, which writes a temporary
file beside the target and renames it into place, with the stopping signals held until it
is done; an interruption at any moment leaves the old file or the new one, and no temporary
file.
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


# the stopping signals that arrived while a file was being written, and how many writes are
# under way: a handler that defers (l2l_ref.cli.stop) leaves them here until the writes end
_ARRIVED: list[int] = []
_WRITING = [0]


def writing() -> bool:
    """Whether a file is being written now (a stopping signal should wait: `defer`)."""
    return _WRITING[0] > 0


def defer(signum: int) -> None:
    """Deliver this signal again when the writes under way end."""
    _ARRIVED.append(signum)


@contextmanager
def signals_held() -> Iterator[None]:
    """Run the block as one write: a stopping signal that arrives meanwhile, to a handler that
    defers (the command line's), is delivered again when it ends. (Not by blocking the signal:
    the kernel then hands it to another thread, a BLAS worker, and CPython 3.11 can leave it
    unhandled for good.)"""
    _WRITING[0] += 1
    try:
        yield
    finally:
        _WRITING[0] -= 1
        if not _WRITING[0] and _ARRIVED:
            signum = _ARRIVED[0]
            _ARRIVED.clear()
            os.kill(os.getpid(), signum)  # to the process: its main thread takes it


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by `data` in one rename, the stopping signals held: readers see the old
    file or the new one, and an interruption (a signal, delivered after the rename; a kill)
    leaves no temporary file."""
    path = Path(path)
    with signals_held(), temporary_file(path.parent, f".{path.name}") as (tmp, f):
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
    timestamps): the same run writes the same file. Signals are held: one that stops a
    ZipFile half-made leaves it to fail again, with a traceback, when it is collected."""
    buffer = io.BytesIO()
    with signals_held(), zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as entry:
                onp.lib.format.write_array(entry, onp.asarray(arrays[key]), allow_pickle=False)
    return buffer.getvalue()


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
