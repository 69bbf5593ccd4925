"""Image sets for the MNIST and CIFAR experiments (Section 3), read from their standard files.

- IDX (MNIST, Fashion-MNIST): a folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte,
  t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each gzipped (.gz) or not.
- CIFAR-10 binary: data_batch_1.bin … data_batch_5.bin and test_batch.bin, records of one
  label byte and 3 × 32 × 32 pixel bytes (channel-major).

Every check names the file and what is wrong with it. Images come back as float32 in [0, 1]
shape (N, height, width, channels); labels as int64. Splits: "train" is the training file(s);
the held-out file is cut in two, its first half for "validation" problems (early stopping,
baseline tuning) and its second half for "test" problems, so the two never share an image.
"""

import gzip
import math
from pathlib import Path

import numpy as onp

from l2l_ref.errors import L2LError

# Debian's dataset-fashion-mnist package puts the IDX files here
DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "heldout": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_FILES = {"train": [f"data_batch_{k}.bin" for k in range(1, 6)], "heldout": ["test_batch.bin"]}
CIFAR_RECORD = 1 + 3 * 32 * 32
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801


class DatasetError(L2LError):
    """A data file is missing or is not what its name says."""


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{folder}: no {name} (or {name}.gz)")


def _read(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError) as error:
        raise DatasetError(f"{path}: unreadable ({error})") from None


def read_idx(path: Path, magic: int, ndim: int) -> onp.ndarray:
    """An IDX file of unsigned bytes: big-endian magic number, one uint32 per dimension,
    then the data."""
    raw = _read(path)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated header ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DatasetError(f"{path}: magic number {found:#010x}, expected {magic:#010x}")
    shape = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    expected = header + math.prod(shape)  # Python's integers: a header's 2^31 × 2^31 × 4 too
    if len(raw) != expected:
        raise DatasetError(f"{path}: {len(raw)} bytes, header {shape} says {expected}")
    return onp.frombuffer(raw, dtype=onp.uint8, offset=header).reshape(shape)


def load_idx(folder: Path) -> dict[str, tuple[onp.ndarray, onp.ndarray]]:
    """{"train": (images, labels), "heldout": (images, labels)} of an IDX folder."""
    folder, sets = Path(folder), {}
    for split, (images_name, labels_name) in IDX_FILES.items():
        images_path, labels_path = _find(folder, images_name), _find(folder, labels_name)
        images = read_idx(images_path, IMAGES_MAGIC, 3)
        labels = read_idx(labels_path, LABELS_MAGIC, 1)
        if len(images) != len(labels):
            count = f"{len(labels)} labels for {len(images)} images"
            raise DatasetError(f"{labels_path}: {count} in {images_path.name}")
        sets[split] = (images[..., None] / onp.float32(255), labels.astype(onp.int64))
    return sets


def load_cifar(folder: Path) -> dict[str, tuple[onp.ndarray, onp.ndarray]]:
    """{"train": ..., "heldout": ...} of a CIFAR-10 binary folder."""
    folder, sets = Path(folder), {}
    for split, names in CIFAR_FILES.items():
        images, labels = [], []
        for name in names:
            path = folder / name
            if not path.is_file():
                raise DatasetError(f"{folder}: no {name}")
            raw = _read(path)
            if not raw or len(raw) % CIFAR_RECORD:
                raise DatasetError(
                    f"{path}: {len(raw)} bytes, not a whole number of {CIFAR_RECORD}-byte records"
                )
            records = onp.frombuffer(raw, dtype=onp.uint8).reshape(-1, CIFAR_RECORD)
            if records[:, 0].max() > 9:
                raise DatasetError(f"{path}: label {records[:, 0].max()} outside 0..9")
            labels.append(records[:, 0].astype(onp.int64))
            pixels = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            images.append(pixels / onp.float32(255))
        sets[split] = (onp.concatenate(images), onp.concatenate(labels))
    return sets


def load(folder: Path) -> tuple[str, dict]:
    """The format found in `folder` ("idx" or "cifar") and its splits train, validation, test."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such data folder")
    if (folder / CIFAR_FILES["heldout"][0]).is_file():
        kind, sets = "cifar", load_cifar(folder)
    else:
        kind, sets = "idx", load_idx(folder)
    images, labels = sets.pop("heldout")
    half = len(images) // 2
    sets["validation"] = images[:half], labels[:half]
    sets["test"] = images[half:], labels[half:]
    return kind, sets


def label_subset(sets: dict, classes: int) -> dict:
    """Only the images of labels 0 … classes − 1 (CIFAR-5, CIFAR-2)."""
    subset = {}
    for split, (images, labels) in sets.items():
        keep = labels < classes
        if not keep.any():
            raise DatasetError(f"the {split} images hold no label below {classes}")
        subset[split] = images[keep], labels[keep]
    return subset
