"""Checkpoints: a round trip keeps φ bit for bit; anything else is refused with a reason."""

import io
import itertools
import json
import os
import stat
import sys
import zipfile

import numpy as np
import pytest

from l2l_ref import checkpoint, files
from l2l_ref.optimizer import OptimizerConfig, init_network
from l2l_ref.tree import flatten

CONFIG = OptimizerConfig(
    layers=(3, 2), preprocessing="appendix_a", preprocessing_param=10.0, output_scale=0.1
)


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(0)
    phi = {"conv": init_network(rng, CONFIG), "fc": init_network(rng, CONFIG)}
    path = tmp_path / "checkpoint.npz"
    networks = {"conv0_W": "conv", "fc_W": "fc", "out_b": "fc"}
    checkpoint.save(path, phi, networks, CONFIG, {"preset": "paper", "best_epoch": 7})
    return path, phi


def test_round_trip(saved):
    path, phi = saved
    loaded, config, header = checkpoint.load(path)
    assert config == CONFIG
    assert header["preset"] == "paper" and header["best_epoch"] == 7
    assert header["networks"] == {"conv0_W": "conv", "fc_W": "fc", "out_b": "fc"}
    flat, flat_loaded = flatten(phi), flatten(loaded)
    assert flat.keys() == flat_loaded.keys()
    for key in flat:
        assert flat[key].tobytes() == flat_loaded[key].tobytes()


def test_readable_by_numpy_alone_without_pickle(saved):
    path, _ = saved
    with np.load(path, allow_pickle=False) as npz:
        assert "phi/fc/lstm/1/W" in npz.files
        assert npz["phi/fc/lstm/1/W"].shape == (5, 8)
        assert json.loads(str(npz["metadata"]))["optimizer"]["layers"] == [3, 2]


def with_optimizer(path, **fields):
    """The checkpoint's optimizer record with `fields` changed."""
    return set_metadata(
        optimizer={**json.loads(str(np.load(path)["metadata"]))["optimizer"], **fields}
    )


def test_a_checkpoint_of_an_earlier_version_reads_as_today(saved):
    """Earlier versions wrote lstm-gac's gac_units, at 2, into every optimizer's record: such a
    checkpoint of the plain LSTM is the same checkpoint; any other value of it is refused."""
    path, _ = saved
    rewrite(path, with_optimizer(path, gac_units=2))
    _, config, _ = checkpoint.load(path)
    assert config == CONFIG and "gac_units" not in config.record()
    rewrite(path, with_optimizer(path, gac_units=3))
    with pytest.raises(checkpoint.CheckpointError, match="lstm has no setting gac_units"):
        checkpoint.load(path)


def rewrite(path, change):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def set_metadata(**fields):
    def change(arrays):
        meta = json.loads(str(arrays["metadata"]))
        meta.update(fields)
        arrays["metadata"] = np.array(json.dumps(meta))

    return change


CORRUPTIONS = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:200]),
    "not a zip": lambda path: path.write_bytes(b"hello"),
    "empty": lambda path: path.write_bytes(b""),
    "wrong shape": lambda p: rewrite(p, lambda a: a.update({"phi/fc/head/W": np.zeros((3, 1))})),
    "missing array": lambda p: rewrite(p, lambda a: a.pop("phi/conv/lstm/0/b")),
    "extra array": lambda p: rewrite(p, lambda a: a.update({"phi/fc/lstm/2/W": np.zeros(1)})),
    "non-finite": lambda p: rewrite(p, lambda a: a["phi/fc/head/b"].fill(np.nan)),
    "integer dtype": lambda p: rewrite(p, lambda a: a.update({"phi/fc/head/b": np.zeros(1, int)})),
    "pickled object": lambda p: rewrite(
        p, lambda a: a.update({"phi/fc/head/b": np.array([{"x": 1}], dtype=object)})
    ),
    "no metadata": lambda p: rewrite(p, lambda a: a.pop("metadata")),
    "metadata not json": lambda p: rewrite(p, lambda a: a.update({"metadata": np.array("{")})),
    "wrong format": lambda p: rewrite(p, set_metadata(format="other")),
    "wrong version": lambda p: rewrite(p, set_metadata(version=99)),
    "version 1": lambda p: rewrite(p, set_metadata(version=1)),
    "metadata a list": lambda p: rewrite(p, lambda a: a.update({"metadata": np.array("[1, 2]")})),
    "groups a number": lambda p: rewrite(p, set_metadata(groups=3)),
    "networks a list": lambda p: rewrite(p, set_metadata(networks=["conv"])),
    "network not in φ": lambda p: rewrite(p, set_metadata(networks={"x": "other"})),
    "optimizer a string": lambda p: rewrite(p, set_metadata(optimizer="lstm")),
    "layers mismatch": lambda p: rewrite(p, with_optimizer(p, layers=[3, 3])),
    "a setting of another architecture": lambda p: rewrite(p, with_optimizer(p, gac_units=3)),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_checkpoint_is_refused(saved, corruption):
    path, _ = saved
    CORRUPTIONS[corruption](path)
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no such file"):
        checkpoint.load(tmp_path / "none.npz")


def test_files_get_the_mode_a_plain_write_would(tmp_path):
    mask = os.umask(0o027)
    try:
        files.write_atomically(tmp_path / "atomic", b"x")
        (tmp_path / "plain").write_bytes(b"x")
    finally:
        os.umask(mask)
    modes = {stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("atomic", "plain")}
    assert modes == {0o640}


def interrupted_at_line(k: int):
    """A tracer that raises KeyboardInterrupt at the k-th line that files.py runs, as a
    signal's Python handler would, which runs between any two lines."""
    seen = [0]

    def local(frame, event, arg):
        if event == "line":
            seen[0] += 1
            if seen[0] == k:
                raise KeyboardInterrupt
        return local

    def calls(frame, event, arg):
        return local if frame.f_code.co_filename == files.__file__ else None

    return calls


def test_an_interruption_at_any_line_of_a_write_leaves_the_old_or_the_new_file(tmp_path):
    """Stopped at each line of write_atomically in turn (Python's own Ctrl-C handler raises
    wherever the program is; the command line's waits for the rename), then cleaned up as on
    the program's way out: no temporary file is left, and the file is whole."""
    path = tmp_path / "file"
    for k in itertools.count(1):
        path.write_bytes(b"old")
        sys.settrace(interrupted_at_line(k))
        try:
            files.write_atomically(path, b"new")
        except KeyboardInterrupt:
            finished = False
        else:
            finished = True
        finally:
            sys.settrace(None)
        files.remove_unfinished()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["file"], k
        assert path.read_bytes() in (b"old", b"new")
        if finished:
            assert path.read_bytes() == b"new" and k > 10
            break


def test_failed_write_keeps_the_previous_file(saved, monkeypatch):
    path, phi = saved
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, phi, {}, CONFIG, {})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert zipfile.is_zipfile(path)


def test_a_checkpoint_that_lists_its_networks_reads_as_today(saved):
    """Checkpoints written before 2026-12-07 also listed φ's networks ("groups"); such a one
    reads as the same checkpoint, and a list that misses a network the tensors use is refused."""
    path, phi = saved
    before = checkpoint.load(path)
    rewrite(path, set_metadata(groups=["conv", "fc"]))
    loaded, config, header = checkpoint.load(path)
    assert config == before[1] and header["networks"] == before[2]["networks"]
    flat, flat_loaded = flatten(phi), flatten(loaded)
    assert flat.keys() == flat_loaded.keys()
    assert all(flat[k].tobytes() == flat_loaded[k].tobytes() for k in flat)
    rewrite(path, set_metadata(groups=["fc"]))
    with pytest.raises(checkpoint.CheckpointError, match="not tensors mapped to"):
        checkpoint.load(path)
