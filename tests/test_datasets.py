"""The IDX and CIFAR-10 loaders, on small files written here in those formats."""

import gzip
import struct

import numpy as np
import pytest

from l2l_ref import datasets
from l2l_ref.datasets import DatasetError


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_folder(folder, n_train=6, n_test=4, gzipped=False, rng=None):
    rng = rng or np.random.default_rng(0)
    content = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        content[split] = images, labels
        for name, data in ((f"{split}-images-idx3-ubyte", idx_bytes(images, 0x803)),
                           (f"{split}-labels-idx1-ubyte", idx_bytes(labels, 0x801))):  # fmt: skip
            if gzipped:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return content


@pytest.mark.parametrize("gzipped", [False, True])
def test_idx_folder_loads_with_held_out_halves(tmp_path, gzipped):
    content = write_idx_folder(tmp_path, gzipped=gzipped)
    kind, sets = datasets.load(tmp_path)
    assert kind == "idx" and set(sets) == {"train", "validation", "test"}
    images, labels = sets["train"]
    assert images.shape == (6, 28, 28, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(images[..., 0] * 255, content["train"][0].astype(np.float32))
    np.testing.assert_array_equal(labels, content["train"][1])
    held_labels = content["t10k"][1]
    np.testing.assert_array_equal(sets["validation"][1], held_labels[:2])
    np.testing.assert_array_equal(sets["test"][1], held_labels[2:])
    assert sets["test"][0].shape == (2, 28, 28, 1)


def corrupt(folder, name, how):
    path = folder / name
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[:-2])
    elif how == "magic":
        path.write_bytes(struct.pack(">I", 0x999) + raw[4:])
    elif how == "short header":
        path.write_bytes(raw[:6])


@pytest.mark.parametrize(
    ("name", "how", "message"),
    [
        ("train-images-idx3-ubyte", "truncated", r"4718 bytes, header \(6, 28, 28\) says 4720"),
        ("t10k-labels-idx1-ubyte", "truncated", r"10 bytes, header \(4,\) says 12"),
        ("train-labels-idx1-ubyte", "magic", "magic number 0x00000999, expected 0x00000801"),
        ("t10k-images-idx3-ubyte", "short header", "truncated header"),
    ],
)
def test_bad_idx_files_are_named_with_the_problem(tmp_path, name, how, message):
    write_idx_folder(tmp_path)
    corrupt(tmp_path, name, how)
    with pytest.raises(DatasetError, match=message) as error:
        datasets.load(tmp_path)
    assert name in str(error.value)


def test_label_count_mismatch_is_named(tmp_path):
    write_idx_folder(tmp_path)
    labels = np.zeros(5, dtype=np.uint8)  # 6 training images
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 0x801))
    with pytest.raises(DatasetError, match="5 labels for 6 images in train-images-idx3-ubyte"):
        datasets.load(tmp_path)


def test_missing_files_and_folders_are_named(tmp_path):
    with pytest.raises(DatasetError, match="no such data folder"):
        datasets.load(tmp_path / "nowhere")
    write_idx_folder(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DatasetError, match=r"no t10k-images-idx3-ubyte \(or t10k-images"):
        datasets.load(tmp_path)


def write_cifar_folder(folder, per_file=5, rng=None):
    rng = rng or np.random.default_rng(1)
    records = {}
    for name in [*datasets.CIFAR_FILES["train"], *datasets.CIFAR_FILES["heldout"]]:
        labels = rng.integers(0, 10, per_file, dtype=np.uint8)
        labels[:2], labels[-1] = (0, 1), 0  # labels 0 and 1 in every half
        pixels = rng.integers(0, 256, (per_file, 3, 32, 32), dtype=np.uint8)
        records[name] = labels, pixels
        rows = np.concatenate([labels[:, None], pixels.reshape(per_file, -1)], axis=1)
        (folder / name).write_bytes(rows.astype(np.uint8).tobytes())
    return records


def test_cifar_folder_loads_channels_last(tmp_path):
    records = write_cifar_folder(tmp_path)
    kind, sets = datasets.load(tmp_path)
    assert kind == "cifar"
    images, labels = sets["train"]
    assert images.shape == (25, 32, 32, 3)
    first_labels, first_pixels = records["data_batch_1.bin"]
    np.testing.assert_array_equal(labels[:5], first_labels)
    # pixel (row 3, column 7) of image 2, green channel
    assert images[2, 3, 7, 1] * 255 == pytest.approx(float(first_pixels[2, 1, 3, 7]), abs=1e-4)
    assert len(sets["validation"][0]) == 2 and len(sets["test"][0]) == 3


def test_cifar_label_subset(tmp_path):
    write_cifar_folder(tmp_path)
    _, sets = datasets.load(tmp_path)
    two = datasets.label_subset(sets, 2)
    for split, (images, labels) in two.items():
        assert set(labels.tolist()) <= {0, 1} and len(images) == len(labels)
        assert (sets[split][1] < 2).sum() == len(labels)


@pytest.mark.parametrize(
    ("how", "message"), [("size", "not a whole number"), ("label", "label 12")]
)
def test_bad_cifar_files_are_named(tmp_path, how, message):
    write_cifar_folder(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    raw = bytearray(path.read_bytes())
    if how == "size":
        raw = raw[:-100]
    else:
        raw[0] = 12
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=message) as error:
        datasets.load(tmp_path)
    assert "data_batch_3.bin" in str(error.value)
