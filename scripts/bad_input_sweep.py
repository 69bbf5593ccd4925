"""Run the command line on a few hundred bad inputs, as a user would, and count what happens.

Each command line runs in its own process (`python -m l2l_ref.cli ...`) in a scratch folder,
with a small run's checkpoint, results and corrupted copies of them at hand. An outcome is
"refused" when the exit code is 2, stderr is one line starting "l2l-ref: error:" and nothing
new appeared in the scratch folder; "traceback" when stderr holds one; "accepted" when it
exits 0 (or runs past the timeout); anything else is printed for a look. Issue 15's examples
are among the inputs.

    python scripts/bad_input_sweep.py [--timeout 120]
"""

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

TINY = [
    "--epochs",
    "1",
    "--steps",
    "4",
    "--unroll",
    "2",
    "--layers",
    "2",
    "--eval-every",
    "1",
    "--validation-problems",
    "1",
    "--test-problems",
    "2",
    "--learning-rates",
    "0.1",
]
VECTORS = Path(__file__).resolve().parent.parent / "l2l_ref" / "reference_vectors"
BAD_INTEGERS = ["-1", "x", "1.5", "", "nan", "1e400", "-0.5", "0x10"]
BAD_SIZES = [*BAD_INTEGERS, "0"]
BAD_FLOATS = ["0", "-1", "x", "", "nan", "inf", "-inf", "1e400"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "l2l_ref.cli", *args]


def idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def images(folder: Path, n: int, size: int) -> str:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        idx(folder / f"{split}-images-idx3-ubyte", 0x803, rng.integers(0, 255, (n, size, size)))
        idx(folder / f"{split}-labels-idx1-ubyte", 0x801, np.arange(n) % 3)
    return str(folder)


def corrupted_checkpoints(place: Path, good: Path) -> dict[str, str]:
    with np.load(good, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    metadata = json.loads(str(arrays["metadata"]))

    def variant(name: str, **changes) -> str:
        copy = dict(arrays)
        fields = dict(metadata)
        for key, value in changes.items():
            if key == "raw":
                copy["metadata"] = np.array(value)
                continue
            if value is None:
                fields.pop(key, None)
            else:
                fields[key] = value
        if "raw" not in changes:
            copy["metadata"] = np.array(json.dumps(fields))
        np.savez(place / name, **copy)
        return str(place / name)

    phi_key = next(k for k in arrays if k.startswith("phi/"))
    files = {
        "metadata a list": variant("list.npz", raw="[1, 2]"),
        "metadata not JSON": variant("notjson.npz", raw="{"),
        "groups a number": variant("groups.npz", groups=3),
        "no preset": variant("nopreset.npz", preset=None),
        "unknown problem": variant("problem.npz", problem="sphere"),
        "train.steps -5": variant("steps.npz", train={**metadata["train"], "steps": -5}),
        "train a string": variant("trainstr.npz", train="x"),
        "optimizer missing": variant("noopt.npz", optimizer=None),
        "format from the future": variant("future.npz", version=99),
    }
    without = {k: v for k, v in arrays.items() if k != "metadata"}
    np.savez(place / "nometa.npz", **without)
    files["no metadata"] = str(place / "nometa.npz")
    np.savez(place / "nan.npz", **{**arrays, phi_key: arrays[phi_key] * np.nan})
    files["NaN in phi"] = str(place / "nan.npz")
    np.savez(place / "shape.npz", **{**arrays, phi_key: arrays[phi_key][:1]})
    files["phi of the wrong shape"] = str(place / "shape.npz")
    np.savez(place / "pickle.npz", **{**arrays, "extra": np.array([{}], dtype=object)})
    files["a pickled array"] = str(place / "pickle.npz")
    raw = good.read_bytes()
    (place / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    files["truncated"] = str(place / "truncated.npz")
    (place / "empty.npz").write_bytes(b"")
    files["empty file"] = str(place / "empty.npz")
    np.save(place / "array.npy", np.zeros(3))
    files["a .npy"] = str(place / "array.npy")
    (place / "text.npz").write_text("hello")
    files["text"] = str(place / "text.npz")
    files["a folder"] = str(place)
    files["missing"] = str(place / "no-such.npz")
    return files


def corrupted_json(place: Path, results: Path) -> dict[str, str]:
    document = json.loads(results.read_text())
    curve = json.loads(results.read_text())
    curve["results"]["learned"]["mean_loss"][3] = "many"
    no_results = {k: v for k, v in document.items() if k != "results"}
    texts = {
        "a string in a curve": json.dumps(curve),
        "no results": json.dumps(no_results),
        "a list": "[1, 2]",
        "not JSON": "{",
        "empty": "",
        "null": "null",
    }
    files = {}
    for number, (name, text) in enumerate(texts.items()):
        (place / f"bad{number}.json").write_text(text)
        files[name] = str(place / f"bad{number}.json")
    files["missing"] = str(place / "none.json")
    return files


def damaged_states(place: Path, run: Path) -> list[tuple[str, list[str]]]:
    """`train --resume` of a copy of a stopped run whose state.npz is damaged, field by field;
    each refusal must leave the copy's checkpoint.npz and state.npz as they were."""
    with np.load(run / "state.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    metadata = json.loads(str(arrays["metadata"]))
    cases = {
        'epoch "3"': {"epoch": "3"},
        "epoch 2.5": {"epoch": 2.5},
        "epoch -1": {"epoch": -1},
        "epoch past the run": {"epoch": 999},
        "adam_steps off by one": {"adam_steps": 1},
        'train_rng "abc"': {"train_rng": "abc"},
        "train_rng {}": {"train_rng": {}},
        "train_rng of another generator": {"train_rng": {"bit_generator": "MT19937"}},
        'meta_losses "x"': {"meta_losses": "x"},
        "meta_losses missing": {"meta_losses": None},
        "meta_losses too short": {"meta_losses": []},
        'validation "x"': {"validation": "x"},
        "validation missing": {"validation": None},
        'a validation "low"': {"validation": [[0, "low"]]},
        "validation empty": {"validation": []},
        "best_epoch 99": {"best_epoch": 99},
        'best_epoch "0"': {"best_epoch": "0"},
        'best_validation "low"': {"best_validation": "low"},
        "best_validation not the best": {"best_validation": -1.0},
        "networks []": {"networks": []},
        "networks of another tensor": {"networks": {"y": "all"}},
        "networks to a number": {"networks": {"x": 1}},
        "run {}": {"run": {}},
        "run missing": {"run": None},
        "run of an unknown problem": {"run": {**metadata["run"], "problem": "sphere"}},
        'run output_scale "big"': {
            "run": {
                **metadata["run"],
                "optimizer": {**metadata["run"]["optimizer"], "output_scale": "big"},
            }
        },
        'run epochs "10"': {
            "run": {**metadata["run"], "train": {**metadata["run"]["train"], "epochs": "10"}}
        },
        "format": {"format": "something"},
        "version 9": {"version": 9},
        "a list": "LIST",
    }
    lines = []
    for number, (name, change) in enumerate(cases.items()):
        folder = place / f"state-{number}"
        shutil.copytree(run, folder)
        (folder / "results.json").unlink()
        copy = dict(arrays)
        if change == "LIST":
            copy["metadata"] = np.array("[1, 2]")
        else:
            fields = {**metadata, **change}
            fields = {k: v for k, v in fields.items() if v is not None}
            copy["metadata"] = np.array(json.dumps(fields))
        np.savez_compressed(folder / "state.npz", **copy)
        lines.append((f"train --resume, state {name}", cli("train", "--resume", str(folder))))
    extra = {
        "Adam's v negative": lambda a: {
            **a,
            **{k: -np.abs(v) - 1 for k, v in a.items() if k.startswith("adam/v/")},
        },
        "NaN in phi": lambda a: {
            **a,
            **{k: v * np.nan for k, v in a.items() if k.startswith("phi/")},
        },
        "an array missing": lambda a: {k: v for k, v in a.items() if not k.startswith("best/")},
    }
    for number, (name, damage) in enumerate(extra.items()):
        folder = place / f"state-x{number}"
        shutil.copytree(run, folder)
        (folder / "results.json").unlink()
        np.savez_compressed(folder / "state.npz", **damage(arrays))
        lines.append((f"train --resume, state {name}", cli("train", "--resume", str(folder))))
    folder = place / "state-bytes"
    shutil.copytree(run, folder)
    (folder / "results.json").unlink()
    raw = bytearray((folder / "state.npz").read_bytes())
    raw[len(raw) // 3 : len(raw) // 3 + 64] = bytes(64)  # inside a compressed member
    (folder / "state.npz").write_bytes(bytes(raw))
    lines.append(("train --resume, 64 corrupted bytes", cli("train", "--resume", str(folder))))
    return lines


def damaged_searches(place: Path, search: Path, argv: list[str]) -> list[tuple[str, list[str]]]:
    """The same `search` command again on a copy of a finished search whose search.json is
    damaged; each refusal must leave search.json as it was."""
    record = json.loads((search / "search.json").read_text())
    trial = next(iter(record["trials"]))
    seed = next(iter(record["selection"]))
    cases = {
        "trials [1, 2]": {"trials": [1, 2]},
        "a trial without status": {
            "trials": {trial: {k: v for k, v in record["trials"][trial].items() if k != "status"}}
        },
        "a trial without best_validation": {
            "trials": {
                trial: {k: v for k, v in record["trials"][trial].items() if k != "best_validation"}
            }
        },
        'best_validation "low"': {
            "trials": {trial: {**record["trials"][trial], "best_validation": "low"}}
        },
        'status "maybe"': {"trials": {trial: {**record["trials"][trial], "status": "maybe"}}},
        "a trial not in the plan": {"trials": {"seed-9/trial-0": record["trials"][trial]}},
        "another meta_lr": {"trials": {trial: {**record["trials"][trial], "meta_lr": 0.5}}},
        "selection [1]": {"selection": [1]},
        'test "abc"': {"test": "abc"},
        "a selection of no trial": {"selection": {seed: {"seed": 0, "index": 7}}},
        "a test without its selection": {"selection": {}},
        "a test of the LSTM alone": {"test": {seed: {"learned": record["test"][seed]["learned"]}}},
        "no selection": {"selection": None},
        "version 2": {"version": 2},
        "a list": "LIST",
    }
    lines = []
    for number, (name, change) in enumerate(cases.items()):
        folder = place / f"search-{number}"
        shutil.copytree(search, folder)
        damaged = (
            "[1, 2]"
            if change == "LIST"
            else json.dumps({k: v for k, v in {**record, **change}.items() if v is not None})
        )
        (folder / "search.json").write_text(damaged)
        lines.append((f"search resumed, {name}", cli(*argv, "--out", str(folder))))
    return lines


def damaged_reports(place: Path, results: Path, search: Path) -> list[tuple[str, list[str], str]]:
    """`report` and `plot` on files that parse but are not what they should be."""
    document = json.loads(results.read_text())
    lstm_only = {**document, "results": {"learned": document["results"]["learned"]}}
    no_nag = {
        **document,
        "seed": 1,
        "results": {k: v for k, v in document["results"].items() if k != "NAG"},
    }
    short = json.loads(results.read_text())
    short["results"]["SGD"]["final_losses"] = short["results"]["SGD"]["final_losses"][:1]
    bad_rate = json.loads(results.read_text())
    bad_rate["results"]["Adam"]["learning_rate"] = "x"
    files = {
        "seed null": {**document, "seed": None},
        "seed [0]": {**document, "seed": [0]},
        'seed "zero"': {**document, "seed": "zero"},
        "seed -1": {**document, "seed": -1},
        "seed true": {**document, "seed": True},
        "the LSTM alone": lstm_only,
        "final losses of different lengths": short,
        'a learning rate "x"': bad_rate,
        "problem a string": {**document, "problem": "quadratic"},
    }
    lines = []
    png = str(place / "p.png")
    for number, (name, text) in enumerate(files.items()):
        path = place / f"results-{number}.json"
        path.write_text(json.dumps(text))
        lines.append((f"report: {name}", cli("report", str(path)), "refused"))
        lines.append((f"plot: {name}", cli("plot", str(path), "-o", png), "refused"))
    (place / "no-nag.json").write_text(json.dumps(no_nag))
    lines.append(
        (
            "report: two seeds, one without NAG",
            cli("report", str(results), str(place / "no-nag.json")),
            "refused",
        )
    )
    record = json.loads((search / "search.json").read_text())
    folder = place / "search-no-selection"
    shutil.copytree(search, folder)
    (folder / "search.json").write_text(
        json.dumps({k: v for k, v in record.items() if k != "selection"})
    )
    lines.append(("report: a search.json without selection", cli("report", str(folder)), "refused"))
    lines.append(
        (
            "plot: a search.json without selection",
            cli("plot", str(folder / "search.json"), "-o", png),
            "refused",
        )
    )
    (place / "a-file-2").write_text("x")
    lines.append(
        (
            "report --json under a file",
            cli("report", str(results), "--json", str(place / "a-file-2" / "r.json")),
            "io",
        )
    )
    return lines


def damaged_metadata(place: Path, good: Path) -> list[tuple[str, list[str]]]:
    """`evaluate` on checkpoints whose metadata is damaged in what the run is built from."""
    with np.load(good, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    metadata = json.loads(str(arrays["metadata"]))
    problem, optimizer = metadata["problem"], metadata["optimizer"]
    cases = {
        'output_scale "big"': {"optimizer": {**optimizer, "output_scale": "big"}},
        "layers a string": {"optimizer": {**optimizer, "layers": "20"}},
        "preprocessing_param -1": {
            "optimizer": {**optimizer, "preprocessing": "appendix_a", "preprocessing_param": -1}
        },
        "dims 10^12": {"problem": {**problem, "settings": {**problem["settings"], "dims": 10**12}}},
        "batch 10^12": {
            "problem": {**problem, "settings": {**problem["settings"], "batch": 10**12}}
        },
        'dims "ten"': {"problem": {**problem, "settings": {**problem["settings"], "dims": "ten"}}},
        "a tensor the problem lacks": {"networks": {**metadata["networks"], "bogus": "all"}},
        "a tensor missing from the map": {"networks": {}},
        'best_epoch "x"': {"best_epoch": "x"},
        'train epochs "10"': {"train": {**metadata["train"], "epochs": "10"}},
        "train weights a number": {"train": {**metadata["train"], "weights": 3}},
    }
    lines = []
    for number, (name, change) in enumerate(cases.items()):
        path = place / f"meta-{number}.npz"
        np.savez(path, **{**arrays, "metadata": np.array(json.dumps({**metadata, **change}))})
        lines.append((f"evaluate: metadata {name}", cli("evaluate", str(path))))
    return lines


def damaged_data(place: Path) -> list[tuple[str, list[str]]]:
    """IDX files whose headers lie."""
    lines = []
    for name, shape, data in (
        ("2^31 × 2^31 × 4 images, no data", (2**31, 2**31, 4), b""),
        ("2^32 - 1 images of 0 × 0", (2**32 - 1, 0, 0), b""),
        ("more labels than images", None, None),
    ):
        folder = place / f"idx-{len(lines)}"
        images(folder, 20, 4)
        if shape is not None:
            header = (0x803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in shape)
            (folder / "train-images-idx3-ubyte").write_bytes(header + data)
        else:
            idx(folder / "train-labels-idx1-ubyte", 0x801, np.arange(30) % 3)
        lines.append(
            (
                f"train: IDX {name}",
                cli("train", *TINY, "--problem", "mnist", "--data-dir", str(folder)),
            )
        )
    return lines


def command_lines(place: Path, good: Path) -> list[tuple[str, list[str]]]:
    lines = []
    for flag in [
        "--epochs",
        "--steps",
        "--unroll",
        "--eval-every",
        "--test-problems",
        "--validation-problems",
        "--batch",
        "--hidden",
        "--classes",
        "--gac-units",
        "--layers",
    ]:
        values = [v for v in BAD_SIZES if (flag, v) != ("--layers", "")]  # '': no LSTM layer
        lines += [(f"train {flag} {v!r}", cli("train", *TINY, flag, v)) for v in values]
    lines += [(f"train --seed {v!r}", cli("train", *TINY, "--seed", v)) for v in BAD_INTEGERS]
    lines += [(f"train --meta-lr {v!r}", cli("train", *TINY, "--meta-lr", v)) for v in BAD_FLOATS]
    for v in ["", "0", "-1,1", "x,1", "nan", "1,,2", "inf", ","]:
        lines.append((f"train --learning-rates {v!r}", cli("train", *TINY, "--learning-rates", v)))
    for flag in [
        "--problem",
        "--preset",
        "--backend",
        "--dtype",
        "--train-dtype",
        "--architecture",
        "--activation",
        "--meta-lr-schedule",
    ]:
        lines += [(f"train {flag} {v!r}", cli("train", *TINY, flag, v)) for v in ["foo", ""]]
    tiny_images = images(place / "tiny", 20, 4)
    one_pixel = images(place / "one-pixel", 200, 1)
    (place / "a-file").write_text("x")
    empty = str(place / "empty-dir")
    (place / "empty-dir").mkdir()
    mnist = ["--problem", "mnist", "--data-dir"]
    sizes = {
        "298 GiB of LSTM": ["--layers", "100000"],
        "an unroll that cannot fit": ["--steps", "10000000", "--unroll", "10000000"],
        "10^8 test problems": ["--test-problems", "100000000"],
        "unroll longer than the run": ["--steps", "10", "--unroll", "20"],
        "minibatch larger than the images": [*mnist, tiny_images, "--batch", "6000"],
        "small images, default batch": [*mnist, tiny_images],
        "conv net on 1×1 images": ["--problem", "cifar", "--data-dir", one_pixel, "--batch", "4"],
        "a hidden layer of 10^8": ["--problem", "mnist", "--hidden", "100000000"],
        "data dir missing": ["--problem", "mnist", "--data-dir", str(place / "nope")],
        "data dir a file": ["--problem", "mnist", "--data-dir", str(place / "a-file")],
        "data dir empty": ["--problem", "mnist", "--data-dir", empty],
        "--out empty": ["--out", ""],
        "--out a file": ["--out", str(place / "a-file")],
        "--resume missing": ["--resume", str(place / "nope")],
        "--resume a file": ["--resume", str(place / "a-file")],
        "--resume not a run": ["--resume", empty],
        "--resume other settings": ["--resume", str(good.parent), "--epochs", "3"],
    }
    lines += [(f"train: {name}", cli("train", *TINY, *argv)) for name, argv in sizes.items()]
    search = ["search", *TINY, "--trials", "1", "--workers", "1"]
    for flag, values in {
        "--trials": ["0", "-1", "x", ""],
        "--seeds": ["", "x", "-1", "1,,2", ","],
        "--meta-lr-range": ["", "1", "0.2,0.1", "0,1", "-1,1", "x,y", "nan,1", "1,inf"],
        "--scheduler": ["tcp://127.0.0.1:1", "nonsense", "", "tcp://256.1.1.1:8786"],
        "--workers": ["0", "-1", "x"],
    }.items():
        lines += [(f"search {flag} {v!r}", cli(*search, flag, v)) for v in values]
    for name, path in corrupted_checkpoints(place, good).items():
        lines.append((f"evaluate: {name}", cli("evaluate", path)))
    for flag, values in {
        "--steps": ["-1", "0", "x"],
        "--seed": ["-1", "x"],
        "--hidden": ["0", "x", ""],
        "--dtype": ["float16"],
        "--test-problems": ["1", "0"],
        "--backend": ["foo"],
        "--activation": ["tanh"],
        "--json": ["", str(place)],
    }.items():
        lines += [(f"evaluate {flag} {v!r}", cli("evaluate", str(good), flag, v)) for v in values]
    png = str(place / "p.png")
    # each command on the corruptions of what it reads (plot: the loss curves; --training: the
    # training curves; report: the final losses)
    unreadable = ("a list", "not JSON", "empty", "null", "missing")
    for name, path in corrupted_json(place, good.parent / "results.json").items():
        lines.append((f"plot: {name}", cli("plot", path, "-o", png)))
        if name in unreadable:
            lines.append((f"plot --training: {name}", cli("plot", "--training", path, "-o", png)))
        if name in (*unreadable, "no results"):
            lines.append((f"report: {name}", cli("report", path)))
    results = str(good.parent / "results.json")
    lines += [
        ("plot -o a folder", cli("plot", results, "-o", str(place))),
        ("plot -o not png", cli("plot", results, "-o", str(place / "p.txt"))),
        ("plot nothing", cli("plot", "-o", str(place / "p.png"))),
        ("report --json a folder", cli("report", results, "--json", str(place))),
        ("report nothing", cli("report")),
    ]
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    del manifest["cases"][1]["name"]
    broken = str(place / "broken")
    (place / "broken").mkdir()
    (place / "broken" / "manifest.json").write_text(json.dumps(manifest))
    (place / "empty-candidate").mkdir()
    np.savez(place / "empty-candidate" / "quadratic-paper.npz")
    lines += [
        ("verify missing", cli("verify", str(place / "nope"))),
        ("verify an empty folder", cli("verify", empty)),
        ("verify an empty case file", cli("verify", str(place / "empty-candidate"))),
        ("verify a file", cli("verify", str(place / "a-file"))),
        ("verify a reference case without a name", cli("verify", broken, "--vectors", broken)),
        ("verify --vectors missing", cli("verify", empty, "--vectors", str(place / "nope"))),
        ("verify --dtype float16", cli("verify", empty, "--dtype", "float16")),
        ("verify --cases unknown", cli("verify", empty, "--cases", "nope")),
        ("verify --cases empty", cli("verify", empty, "--cases", "")),
        ("vectors export --out a file", cli("vectors", "export", "--out", str(place / "a-file"))),
        ("no command", cli()),
        ("unknown command", cli("fly")),
    ]
    return lines


RUNNING = ("running-train", "running-search")  # folders of commands that run meanwhile


def snapshot(place: Path) -> dict:
    """Every file under `place` with its size and modification time: what a refusal must
    leave as it was (but the files the running commands write)."""
    return {
        path: (path.stat().st_size, path.stat().st_mtime_ns)
        for path in place.rglob("*")
        if path.is_file()
        and path.name != ".lock"
        and path.relative_to(place).parts[0] not in RUNNING
    }


def outcome(argv: list[str], place: Path, timeout: float, expect: str = "refused") -> tuple:
    """What a bad input did: "refused" (exit 2, or 4 for an I/O error, one line on stderr,
    no file written or changed), or how it went wrong."""
    before = snapshot(place)
    try:
        result = subprocess.run(argv, cwd=place, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang", None, f"(still running after {timeout:g} s)"
    err = result.stderr.strip()
    lines = err.splitlines()
    after = snapshot(place)
    changed = sorted(str(p) for p in after if before.get(p) != after[p])
    if "Traceback" in err:
        return "traceback", result.returncode, err[-300:]
    if result.returncode == 0:
        return "accepted", 0, err[-200:]
    code = {"refused": 2, "io": 4}[expect]
    if result.returncode == code and len(lines) == 1 and lines[0].startswith("l2l-ref:"):
        if changed:
            return "refused, but wrote files", code, str(changed[:3])
        return "refused", code, lines[0]
    return "wrong exit code", result.returncode, err[-300:]


def silent_server(garbage: bool) -> tuple[int, Callable]:
    """A server on 127.0.0.1 that accepts connections and never answers (or answers 64 bytes
    of 0xff): its port, and what stops it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop, held = threading.Event(), []

    def serve():
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            held.append(connection)
            if garbage:
                connection.sendall(b"\xff" * 64)
        for connection in held:
            connection.close()
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], stop.set


def waits_and_sizes(place: Path, ports: dict) -> list[tuple[str, list[str]]]:
    """Waits that must be bounded, sizes that must be refused at once, options that must be
    whole words."""
    search = ["search", *TINY, "--trials", "1", "--workers", "1"]
    out = ["--out", str(place / "never")]
    return [
        (
            "search --scheduler: a server that never answers",
            cli(*search, "--scheduler", f"tcp://127.0.0.1:{ports['silent']}", *out),
        ),
        (
            "search --scheduler: a server that answers garbage",
            cli(*search, "--scheduler", f"tcp://127.0.0.1:{ports['garbage']}", *out),
        ),
        ("search --trials 10^9", cli(*search, "--trials", "1000000000", *out)),
        ("search --test-problems 10^12", cli(*search, "--test-problems", "1000000000000", *out)),
        ("search --seed 1 (not --seeds)", cli(*search, "--seed", "1", *out)),
        ("train --epoch 1 (not --epochs)", cli("train", *TINY, "--epoch", "1")),
        (
            "evaluate --test-problem 3",
            cli("evaluate", str(place / "good-run" / "checkpoint.npz"), "--test-problem", "3"),
        ),
        (
            "evaluate --test-problems 10^12",
            cli(
                "evaluate",
                str(place / "good-run" / "checkpoint.npz"),
                "--test-problems",
                "1000000000000",
            ),
        ),
    ]


def wait_for(path: Path, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline:
        time.sleep(0.2)


def folders_in_use(place: Path) -> tuple[list[tuple[str, list[str]]], Callable]:
    """Folders that a running train or search owns: commands that must be refused while they
    run. Returns the cases and what stops the running commands."""
    running = []
    train_folder, search_folder = place / "running-train", place / "running-search"
    running.append(
        subprocess.Popen(
            cli("train", *TINY, "--epochs", "100000", "--out", str(train_folder)),
            cwd=place,
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
    )
    long_search = ["search", *TINY, "--epochs", "100000", "--trials", "1", "--workers", "1"]
    running.append(
        subprocess.Popen(
            cli(*long_search, "--out", str(search_folder)),
            cwd=place,
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
    )
    wait_for(train_folder / "state.npz")
    wait_for(search_folder / "seed-0" / "trial-0" / "state.npz")

    def stop():
        for process in running:
            process.kill()
            process.wait(timeout=30)

    cases = [
        (
            "search --out a folder a running train owns",
            cli(*long_search, "--out", str(train_folder)),
        ),
        (
            "a second search in a running search's folder",
            cli(*long_search, "--out", str(search_folder)),
        ),
        (
            "train --resume of a running search's trial",
            cli("train", "--resume", str(search_folder / "seed-0" / "trial-0")),
        ),
        ("train --resume of a running train", cli("train", "--resume", str(train_folder))),
    ]
    return cases, stop


def stopped_while_waiting(port: int, place: Path) -> tuple[str, int | None, str]:
    """SIGTERM two seconds into the wait for a silent scheduler: the program must stop within
    five more seconds, with exit 143 and one line."""
    argv = cli(
        "search",
        *TINY,
        "--trials",
        "1",
        "--scheduler",
        f"tcp://127.0.0.1:{port}",
        "--out",
        str(place / "never-2"),
    )
    process = subprocess.Popen(argv, cwd=place, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        return "hang", None, "(still waiting 5 s after SIGTERM)"
    lines = err.strip().splitlines()
    if "Traceback" in err:
        return "traceback", process.returncode, err[-300:]
    if process.returncode == 143 and len(lines) == 1:
        return "refused", 143, lines[0]
    return "wrong exit code", process.returncode, err[-300:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        place = Path(scratch)
        run_folder = place / "good-run"
        subprocess.run(
            cli("train", *TINY, "--out", str(run_folder)), check=True, capture_output=True
        )
        search_argv = ["search", *TINY, "--trials", "1", "--workers", "1"]
        search_folder = place / "good-search"
        subprocess.run(
            cli(*search_argv, "--out", str(search_folder)), check=True, capture_output=True
        )
        classes = {
            "command lines and damaged files (earlier sweep)": [
                (n, a, "refused") for n, a in command_lines(place, run_folder / "checkpoint.npz")
            ],
            "damaged state.npz (train --resume)": [
                (n, a, "refused") for n, a in damaged_states(place, run_folder)
            ],
            "damaged search.json (search resumed)": [
                (n, a, "refused") for n, a in damaged_searches(place, search_folder, search_argv)
            ],
            "report and plot on wrong files": damaged_reports(
                place, run_folder / "results.json", search_folder
            ),
            "checkpoint metadata (evaluate)": [
                (n, a, "refused") for n, a in damaged_metadata(place, run_folder / "checkpoint.npz")
            ],
            "data headers": [(n, a, "refused") for n, a in damaged_data(place)],
        }
        ports, stops = {}, []
        for kind in ("silent", "garbage"):
            ports[kind], stop = silent_server(kind == "garbage")
            stops.append(stop)
        classes["waits, sizes, whole options"] = [
            (n, a, "refused") for n, a in waits_and_sizes(place, ports)
        ]
        results = {}
        for name, lines in classes.items():
            results[name] = [(n, outcome(a, place, args.timeout, e)) for n, a, e in lines]
        cases, stop_running = folders_in_use(place)
        try:
            results["folders in use"] = [(n, outcome(a, place, args.timeout)) for n, a in cases]
        finally:
            stop_running()
        results["waits, sizes, whole options"].append(
            (
                "SIGTERM while waiting for a silent scheduler",
                stopped_while_waiting(ports["silent"], place),
            )
        )
        for stop in stops:
            stop()
    total = Counter()
    for name, outcomes in results.items():
        counts = Counter(kind for _, (kind, _, _) in outcomes)
        total += counts
        print(
            f"{name}: {len(outcomes)} inputs: "
            + ", ".join(f"{n} {k}" for k, n in counts.most_common())
        )
        for case, (kind, code, message) in outcomes:
            if kind != "refused":
                print(f"  {kind:>24}  exit {code}  {case}: {message}")
    print(
        f"all: {sum(total.values())} bad inputs: "
        + ", ".join(f"{n} {k}" for k, n in total.most_common())
    )


if __name__ == "__main__":
    sys.exit(main())
