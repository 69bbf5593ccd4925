"""Reference vectors and `l2l-ref verify` (issue 5).

- the committed vectors are what the code exports now;
- the Torch case reproduces spec §5's published numbers;
- an independent implementation (tests/numpy_reference.py, no autograd) passes verify;
- each known bug (spec §6, §4) is caught at the stage and step where it first shows;
- malformed candidates end with one line and exit code 2.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from l2l_ref import vectors
from l2l_ref.cli import main
from l2l_ref.verify import RTOL, compare_case, verify
from tests.vectors_candidate import BUGS, write_candidate

COMMITTED = Path(__file__).parent.parent / "vectors"


def load(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def test_committed_vectors_are_fresh(tmp_path):
    """Re-exported now, the vectors equal the committed ones: same manifest, same arrays, every
    stage within 1e-8 of its largest entry. Not tighter: in several-tensors the head bias's
    meta-gradient is exactly 0 (softmax gradients sum to 0 over classes) and computes as
    round-off, ~1e-15, which meta-Adam's first step turns into lr·g/ε ~ 1e-9 in φ; another
    BLAS's summation order moves it, and θ after it, by that much."""
    assert main(["vectors", "export", "--out", str(tmp_path)]) == 0
    manifest = json.loads((COMMITTED / "manifest.json").read_text())
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    for entry in manifest["cases"]:
        committed, fresh = load(COMMITTED / entry["file"]), load(tmp_path / entry["file"])
        assert committed.keys() == fresh.keys(), entry["name"]
        for key, value in committed.items():
            assert fresh[key].dtype == value.dtype and fresh[key].shape == value.shape, key
            if key.startswith("input/"):
                assert np.array_equal(fresh[key], value), key
        for check in compare_case(committed, fresh, entry, rtol=1e-8, atol=0.0):
            assert check.ok, (entry["name"], check)


def test_torch_case_gives_the_published_numbers():
    """spec §5: dL/dw = 60, dL/db = 30; after one meta-step the second unroll's x_5 = 0.8559
    and cost 0.7325327 (Torch's float32 print; float64 gives 0.73253262)."""
    arrays = load(COMMITTED / "torch-simple.npz")
    assert arrays["meta_grad/all/head/W"][0].item() == 60.0
    assert arrays["meta_grad/all/head/b"][0].item() == 30.0
    assert arrays["phi/all/head/W"][0].item() == pytest.approx(-0.01, abs=1e-9)
    assert round(arrays["theta/x"][10].item(), 4) == 0.8559
    assert abs(arrays["loss"][10] - 0.7325327) < 1e-7


def test_vectors_are_small_and_documented():
    manifest = json.loads((COMMITTED / "manifest.json").read_text())
    assert sum(p.stat().st_size for p in COMMITTED.iterdir()) < 4 * 2**20
    docs = (Path(__file__).parent.parent / "docs" / "vectors.md").read_text()
    for entry in manifest["cases"]:
        assert f"`{entry['name']}`" in docs, entry["name"]
        assert all(k.startswith("input/") or k.split("/")[0] in docs for k in entry["arrays"])


@pytest.fixture(scope="module")
def independent(tmp_path_factory):
    return write_candidate(COMMITTED, tmp_path_factory.mktemp("independent"))


def test_an_independent_implementation_passes(independent, capsys):
    assert main(["verify", str(independent)]) == 0  # the committed vectors by default
    out = capsys.readouterr().out
    manifest = json.loads((COMMITTED / "manifest.json").read_text())
    for entry in manifest["cases"]:
        assert f"case {entry['name']}: all" in out
    assert "DIVERGES" not in out
    # every stage of every first-order case was given, not a convenient subset
    results = verify(independent, COMMITTED)
    first_order = [e for e in manifest["cases"] if not e["second_order"]]
    for entry in first_order:
        stages = {check.stage for check in results[entry["name"]]}
        assert {"meta-gradient", "φ after meta-Adam", "LSTM layer 1 h"} <= stages or not entry[
            "optimizer"
        ]["layers"]


# bug -> (case, where it first shows, stage)
FIRST_SHOWS = {
    "gate order": ("quadratic-paper", "step 0", "LSTM layer 0 c"),
    "p = 5": ("mlp-preprocessed", "step 0", "preprocessed input"),
    "shared hidden state": ("several-tensors", "step 1", "LSTM layer 0 c"),
    "f(θ_0) in the loss": ("quadratic-paper", "unroll 0", "meta-loss"),
    "no output scale": ("mlp-preprocessed", "step 0", "update g_t"),
    "state zeroed at the cut": ("quadratic-paper", "step 5", "LSTM layer 0 c"),
    "PyTorch's Adam": ("quadratic-paper", "unroll 0", "φ after meta-Adam"),
}
assert set(FIRST_SHOWS) == set(BUGS)


@pytest.mark.parametrize("bug", BUGS)
def test_each_known_bug_is_caught_where_it_first_shows(bug, tmp_path, capsys):
    case, where, stage = FIRST_SHOWS[bug]
    candidate = write_candidate(COMMITTED, tmp_path, bug, cases=[case])
    assert main(["verify", str(candidate), "--vectors", str(COMMITTED)]) == 1
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"case {case}: first divergence at {where}, {stage}: max rel err")
    assert float(line.rsplit(" ", 1)[1]) > RTOL


def test_no_stop_gradient_is_caught_at_the_meta_gradient(tmp_path):
    """A candidate that differentiates through ∇_t (the exact second-order meta-gradient) on
    a first-order case: every forward stage agrees, the meta-gradient does not."""
    (case,) = [c for c in vectors.CASES if c.name == "quadratic-paper"]
    exact = dataclasses.replace(
        case, second_order=True, optimizer=case.optimizer.__class__(cell="plain")
    )
    arrays = {k: v for k, v in vectors.compute(exact).items() if not k.startswith("input/")}
    (tmp_path / "quadratic-paper.npz").write_bytes(vectors.npz_bytes(arrays))
    (tmp_path / "manifest.json").write_text(
        json.dumps({"format": vectors.FORMAT, "version": vectors.VERSION, "cases": [case.name]})
    )
    checks = verify(tmp_path, COMMITTED)[case.name]
    failed = [c for c in checks if not c.ok]
    assert (failed[0].where, failed[0].stage) == ("unroll 0", "meta-gradient")
    before = [c for c in checks if c.where in ("step 0", "step 4")]
    assert before and all(c.ok for c in before)
    assert next(c for c in checks if c.stage == "meta-loss").ok


def manifest_text(cases) -> str:
    return json.dumps({"format": vectors.FORMAT, "version": vectors.VERSION, "cases": cases})


def malformed(tmp_path: Path, independent: Path, kind: str) -> Path:
    """A candidate folder broken in one way."""
    folder = tmp_path / "candidate"
    folder.mkdir()
    good = load(independent / "torch-simple.npz")
    write = lambda arrays: (folder / "torch-simple.npz").write_bytes(vectors.npz_bytes(arrays))  # noqa: E731
    (folder / "manifest.json").write_text(manifest_text(["torch-simple"]))
    if kind == "no manifest":
        (folder / "manifest.json").unlink()
    elif kind == "not this format":
        (folder / "manifest.json").write_text('{"format": "something-else", "cases": []}')
    elif kind == "manifest not JSON":
        (folder / "manifest.json").write_text("cases: all")
    elif kind == "unknown case":
        (folder / "manifest.json").write_text(manifest_text(["rosenbrock"]))
    elif kind == "missing case file":
        pass
    elif kind == "wrong shape":
        write({**good, "loss": good["loss"][:5]})
    elif kind == "unknown stage":
        write({**good, "momentum/x": good["loss"]})
    elif kind == "pickled array":
        np.savez(folder / "torch-simple.npz", loss=np.array([{"a": 1}], dtype=object))
    elif kind == "not an npz":
        (folder / "torch-simple.npz").write_text("loss = 0.73")
    elif kind == "a file, not a folder":
        (folder / "manifest.json").unlink()
        folder.rmdir()
        folder.write_text("{}")
    return folder


MALFORMED = (
    "no manifest", "not this format", "manifest not JSON", "unknown case", "missing case file",
    "wrong shape", "unknown stage", "pickled array", "not an npz", "a file, not a folder",
)  # fmt: skip


@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_candidate_is_one_line_and_exit_2(kind, tmp_path, independent, capsys):
    candidate = malformed(tmp_path, independent, kind)
    assert main(["verify", str(candidate), "--vectors", str(COMMITTED)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("l2l-ref: error:"), captured.err
    assert captured.out == ""
