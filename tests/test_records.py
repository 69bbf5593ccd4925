"""Nothing read back from disk is trusted (issue 30): each record the program reads (a state,
a search, a results document, a checkpoint) damaged field by field with any value JSON can
hold is either read as valid or refused with the program's one error type, which the command
line turns into one line and exit code 2; never another exception, and a refusal comes before
anything is written."""

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l2l_ref import checkpoint, folder, run, search
from l2l_ref.cli import main
from l2l_ref.comparison import LEARNED
from l2l_ref.errors import L2LError
from l2l_ref.report import load as load_report
from l2l_ref.report import render, summarize

TINY = [
    "--epochs", "3", "--steps", "4", "--unroll", "2", "--layers", "2", "--eval-every", "1",
    "--validation-problems", "2", "--test-problems", "2", "--learning-rates", "0.1",
]  # fmt: skip
SCALARS = st.none() | st.booleans() | st.integers(-3, 2**40) | st.floats(allow_nan=False)
JSON = st.recursive(
    SCALARS | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished run and a finished search of one trial, tiny."""
    place = tmp_path_factory.mktemp("records")
    assert main(["train", *TINY, "--out", str(place / "run")]) == 0
    argv = ["search", *TINY, "--trials", "1", "--workers", "1", "--out", str(place / "search")]
    assert main(argv) == 0
    return place, argv


def paths(record, prefix=()):
    """Every path into a nested record of dicts and lists, the record itself included."""
    yield prefix
    if isinstance(record, dict):
        for key, value in record.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(record, list):
        for k, value in enumerate(record):
            yield from paths(value, (*prefix, k))


def damaged(record, path, value):
    """A copy of `record` with the value at `path` replaced (or the record itself)."""
    if not path:
        return value
    copy = json.loads(json.dumps(record))
    place = copy
    for key in path[:-1]:
        place = place[key]
    place[path[-1]] = value
    return copy


def damage_metadata(source, target, data) -> None:
    """A copy of an .npz file of l2l-ref whose JSON metadata has one field damaged."""
    with np.load(source, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    metadata = json.loads(str(arrays["metadata"]))
    path = data.draw(st.sampled_from(list(paths(metadata))))
    arrays["metadata"] = np.array(json.dumps(damaged(metadata, path, data.draw(JSON))))
    np.savez(target, **arrays)


def refused_or_read(read) -> None:
    """read() either works through, or stops with an L2LError (one line, exit 2)."""
    with contextlib.suppress(L2LError):
        read()


@FUZZ
@given(data=st.data())
def test_a_damaged_state_is_read_or_refused(made, data, tmp_path):
    place, _ = made
    damage_metadata(place / "run" / "state.npz", tmp_path / "state.npz", data)

    def resume():  # what train --resume does with it: read, restore, train on
        spec, parts, loaded = folder.load_state(tmp_path)
        to_device = spec.transfers(spec.trained_in)[0]
        run.train(spec, state=folder.restore(parts, loaded, to_device))

    refused_or_read(resume)


@FUZZ
@given(data=st.data())
def test_a_damaged_search_record_is_taken_up_or_refused_before_anything_is_written(
    made, data, tmp_path
):
    place, _ = made
    copy = tmp_path / "search"
    if not copy.exists():
        shutil.copytree(place / "search", copy)
    record = json.loads((place / "search" / "search.json").read_text())
    path = data.draw(st.sampled_from(list(paths(record))))
    text = json.dumps(damaged(record, path, data.draw(JSON)))
    (copy / "search.json").write_text(text)
    spec = run.RunSpec.from_dict(record["settings"]["run"])
    settings_ = record["settings"]

    def resume():  # what a resumed search reads of it before it runs anything
        plan = search.Search(
            spec, settings_["seeds"], settings_["trials"], settings_["meta_lr_range"], copy
        )
        plan.pending()
        for seed in settings_["seeds"]:
            plan.selected(seed)

    refused_or_read(resume)
    assert (copy / "search.json").read_text() == text  # reading writes nothing


@FUZZ
@given(data=st.data())
def test_a_damaged_results_file_is_reported_or_refused(made, data, tmp_path):
    place, _ = made
    document = json.loads((place / "run" / "results.json").read_text())
    path = data.draw(st.sampled_from(list(paths(document))))
    (tmp_path / "results.json").write_text(json.dumps(damaged(document, path, data.draw(JSON))))
    refused_or_read(lambda: render(summarize(load_report([tmp_path / "results.json"]))))


@FUZZ
@given(data=st.data())
def test_a_damaged_checkpoint_header_is_read_or_refused(made, data, tmp_path):
    place, _ = made
    damage_metadata(place / "run" / "checkpoint.npz", tmp_path / "checkpoint.npz", data)

    def read():  # what evaluate does with it
        phi, optimizer, loaded = checkpoint.load(tmp_path / "checkpoint.npz")
        spec, problem = run.from_checkpoint(
            "checkpoint.npz", loaded, optimizer, lambda name: {}, test_problems=2,
            learning_rates=(0.1,), backend="numpy", dtype="float64", validation_problems=2,
        )  # fmt: skip
        run.check_memory(spec, problem)
        run.compare(spec, phi, loaded["networks"], problem, steps=2)

    refused_or_read(read)


def test_results_written_before_the_learned_key_read_as_today(tmp_path, capsys):
    """Results files written before the learned optimizer had a key of its own ("LSTM",
    "minus_lstm", "lstm_lower_on": docs/results' files) are read with today's keys, the same
    numbers under them, and a report over one prints what it prints over the same file
    written today."""
    results = Path(__file__).resolve().parent.parent / "docs" / "results"
    old = json.loads((results / "quadratic-main-skylakex-s0.json").read_text())
    assert "LSTM" in old["results"] and "minus_lstm" in old["results"]["Adam"]
    read = run.check_document(json.loads(json.dumps(old)))["results"]
    assert set(read) == {LEARNED, "SGD", "RMSprop", "Adam", "NAG"}
    assert read[LEARNED]["final_losses"] == old["results"]["LSTM"]["final_losses"]
    paired, before = read["Adam"]["minus_learned"], old["results"]["Adam"]["minus_lstm"]
    assert paired["learned_lower_on"] == before["lstm_lower_on"]
    assert paired["mean"] == before["mean"] and paired["log_ratio"] == before["log_ratio"]
    (tmp_path / "old").mkdir()
    (tmp_path / "today").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(old))
    (tmp_path / "today" / "results.json").write_text(json.dumps({**old, "results": read}))
    printed = []
    for version in ("old", "today"):
        assert main(["report", str(tmp_path / version / "results.json")]) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and "Adam" in printed[0]


def test_a_state_written_before_its_networks_key_resumes_as_today(tmp_path, capsys):
    """States written before 2026-12-07 name the tensor → network map "groups": resumed, such
    a state gives the run's results to the byte, as today's state does."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    results = (out / "results.json").read_bytes()
    arrays = dict(np.load(out / folder.STATE, allow_pickle=False))
    metadata = json.loads(str(arrays["metadata"]))
    metadata["groups"] = metadata.pop("networks")
    arrays["metadata"] = np.array(json.dumps(metadata))
    np.savez(out / folder.STATE, **arrays)
    (out / "results.json").unlink()
    assert main(["train", "--resume", str(out)]) == 0
    assert (out / "results.json").read_bytes() == results
