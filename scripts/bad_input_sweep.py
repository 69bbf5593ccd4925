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
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

TINY = [
    "--epochs", "1", "--steps", "4", "--unroll", "2", "--layers", "2", "--eval-every", "1",
    "--validation-problems", "1", "--test-problems", "2", "--learning-rates", "0.1",
]  # fmt: skip
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
    curve["results"]["LSTM"]["mean_loss"][3] = "many"
    no_results = {k: v for k, v in document.items() if k != "results"}
    texts = {
        "a string in a curve": json.dumps(curve),
        "no results": json.dumps(no_results),
        "a list": "[1, 2]",
        "not JSON": "{",
        "empty": "",
        "null": "null",
    }  # fmt: skip
    files = {}
    for number, (name, text) in enumerate(texts.items()):
        (place / f"bad{number}.json").write_text(text)
        files[name] = str(place / f"bad{number}.json")
    files["missing"] = str(place / "none.json")
    return files


def command_lines(place: Path, good: Path) -> list[tuple[str, list[str]]]:
    lines = []
    for flag in ["--epochs", "--steps", "--unroll", "--eval-every", "--test-problems",
                 "--validation-problems", "--batch", "--hidden", "--classes", "--gac-units",
                 "--layers"]:  # fmt: skip
        values = [v for v in BAD_SIZES if (flag, v) != ("--layers", "")]  # '': no LSTM layer
        lines += [(f"train {flag} {v!r}", cli("train", *TINY, flag, v)) for v in values]
    lines += [(f"train --seed {v!r}", cli("train", *TINY, "--seed", v)) for v in BAD_INTEGERS]
    lines += [(f"train --meta-lr {v!r}", cli("train", *TINY, "--meta-lr", v)) for v in BAD_FLOATS]
    for v in ["", "0", "-1,1", "x,1", "nan", "1,,2", "inf", ","]:
        lines.append((f"train --learning-rates {v!r}", cli("train", *TINY, "--learning-rates", v)))
    for flag in ["--problem", "--preset", "--backend", "--dtype", "--train-dtype",
                 "--architecture", "--activation", "--meta-lr-schedule"]:  # fmt: skip
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
    }  # fmt: skip
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
        "--steps": ["-1", "0", "x"], "--seed": ["-1", "x"], "--hidden": ["0", "x", ""],
        "--dtype": ["float16"], "--test-problems": ["1", "0"], "--backend": ["foo"],
        "--activation": ["tanh"], "--json": ["", str(place)],
    }.items():  # fmt: skip
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
    ]  # fmt: skip
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
    ]  # fmt: skip
    return lines


def outcome(argv: list[str], place: Path, timeout: float) -> tuple[str, int | None, str]:
    before = set(place.rglob("*"))
    try:
        result = subprocess.run(argv, cwd=place, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "accepted", None, "(still running at the timeout)"
    err = result.stderr.strip()
    lines = err.splitlines()
    new = set(place.rglob("*")) - before
    if "Traceback" in err:
        return "traceback", result.returncode, err[-300:]
    if result.returncode == 0:
        return "accepted", 0, err[-200:]
    if result.returncode == 2 and len(lines) == 1 and lines[0].startswith("l2l-ref: error:"):
        if new:
            return "refused, but wrote files", 2, str(sorted(map(str, new))[:3])
        return "refused", 2, lines[0]
    return "other", result.returncode, err[-300:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        place = Path(scratch)
        run_folder = place / "good-run"
        good = cli("train", *TINY, "--out", str(run_folder))
        subprocess.run(good, check=True, capture_output=True)
        lines = command_lines(place, run_folder / "checkpoint.npz")
        outcomes = [outcome(argv, place, args.timeout) for _, argv in lines]
    counts = Counter(kind for kind, _, _ in outcomes)
    for (name, _), (kind, code, message) in zip(lines, outcomes, strict=True):
        if kind != "refused":
            print(f"{kind:>24}  exit {code}  {name}: {message}")
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
    print(f"{len(lines)} bad inputs: {summary}")


if __name__ == "__main__":
    sys.exit(main())
