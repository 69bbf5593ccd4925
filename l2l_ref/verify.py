"""Checking another implementation's outputs against the reference vectors, stage by stage.

The stages of a case are compared in the order they are computed: θ_0 and f(θ_0); then for each
step t the gradient ∇_t, the preprocessed input, each LSTM layer's h and c, the update g_t, θ_{t+1}
and f(θ_{t+1}); after the last step of each unroll its meta-loss, meta-gradient and φ after the
meta-Adam step. The first comparison that fails its tolerance is where the candidate diverges.

Errors are normwise per stage and step: abs = max |candidate − expected|, rel = abs / max
|expected|; a stage agrees when abs ≤ atol + rtol · max |expected|.
"""

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as onp

from l2l_ref.vectors import FORMAT, VERSION

RTOL, ATOL = 1e-6, 1e-12


class MalformedError(ValueError):
    """The vectors or the candidate are not a complete, well-formed set of this format."""


def load_manifest(folder: Path) -> dict:
    """manifest.json of a vectors or candidate folder, checked for format and version."""
    if not Path(folder).is_dir():
        raise MalformedError(f"{folder}: not a folder (expected manifest.json and <case>.npz)")
    path = Path(folder) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise MalformedError(f"{folder}: no manifest.json (not a folder of {FORMAT})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MalformedError(f"{path}: format is not {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise MalformedError(f"{path}: version {manifest.get('version')!r}, expected {VERSION}")
    if not isinstance(manifest.get("cases"), list) or not manifest["cases"]:
        raise MalformedError(f"{path}: no cases listed")
    return manifest


def case_names(manifest: dict, path: Path) -> list[str]:
    names = []
    for entry in manifest["cases"]:
        name = entry.get("name") if isinstance(entry, dict) else entry
        if not isinstance(name, str):
            raise MalformedError(f"{path}: a case entry without a name: {entry!r}")
        names.append(name)
    return names


def load_arrays(path: Path) -> dict[str, onp.ndarray]:
    """The arrays of one .npz file, refusing pickles and anything not numeric."""
    try:
        with onp.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise MalformedError(f"{path}: missing") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise MalformedError(f"{path}: not an .npz of numeric arrays ({error})") from None
    for key, value in arrays.items():
        if value.dtype.kind not in "fiu":
            raise MalformedError(f"{path}: {key} has dtype {value.dtype}, not numeric")
    return arrays


@dataclass
class Check:
    """One stage at one step (or unroll) of one case."""

    stage: str  # as a reader names it, e.g. "LSTM layer 1 c"
    where: str  # "step 3", "unroll 0"
    abs_err: float
    rel_err: float
    ok: bool


def stage_label(key: str) -> str:
    """The name of the stage that an array key belongs to."""
    parts = key.split("/")
    labels = {
        "grad": "gradient ∇_t",
        "preprocessed": "preprocessed input",
        "update": "update g_t",
        "theta": "θ_t",
        "loss": "loss f(θ_t)",
        "meta_loss": "meta-loss",
        "meta_grad": "meta-gradient",
        "phi": "φ after meta-Adam",
    }
    if parts[0] == "lstm":
        return f"LSTM layer {parts[1]} {parts[2]}"
    return labels[parts[0]]


def schedule(entry: dict, keys: list[str]) -> tuple[list[tuple[str, str, int]], dict]:
    """(stage label, where, index along the first axis) in the order a computation meets them,
    and the array keys of each stage."""
    by_stage: dict[str, list[str]] = {}
    for key in keys:
        by_stage.setdefault(stage_label(key), []).append(key)
    order = []
    steps, unroll = entry["steps"], entry["unroll"]
    per_step = ["gradient ∇_t", "preprocessed input"]
    per_step += sorted(s for s in by_stage if s.startswith("LSTM layer"))
    per_step += ["update g_t"]
    for t in range(steps + 1):
        order += [(stage, f"step {t}", t) for stage in ("θ_t", "loss f(θ_t)")]
        if t > 0 and t % unroll == 0:
            k = t // unroll - 1
            order += [
                (s, f"unroll {k}", k) for s in ("meta-loss", "meta-gradient", "φ after meta-Adam")
            ]
        if t < steps:
            order += [(stage, f"step {t}", t) for stage in per_step]
    return [(stage, where, i) for stage, where, i in order if stage in by_stage], by_stage


def compare_case(
    expected: dict, candidate: dict, entry: dict, rtol: float, atol: float
) -> list[Check]:
    """Every check of the stages the candidate gives, in computation order."""
    given = [key for key in expected if not key.startswith("input/") and key in candidate]
    order, by_stage = schedule(entry, given)
    checks = []
    with onp.errstate(invalid="ignore", over="ignore"):  # a NaN or inf candidate fails below
        for stage, where, index in order:
            pairs = [(expected[key][index], candidate[key][index]) for key in by_stage[stage]]
            abs_err = float(onp.max([onp.max(abs(c - e), initial=0.0) for e, c in pairs]))
            scale = float(max(onp.max(abs(e), initial=0.0) for e, _ in pairs))
            rel_err = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else math.inf)
            ok = abs_err <= atol + rtol * scale  # False for NaN
            checks.append(Check(stage, where, abs_err, rel_err, ok))
    return checks


def check_candidate_case(name: str, expected: dict, candidate: dict, path: Path) -> None:
    for key, value in candidate.items():
        if key.startswith("input/"):
            continue
        if key not in expected:
            raise MalformedError(f"{path}: {key} is not a stage of case {name}")
        if value.shape != expected[key].shape:
            raise MalformedError(
                f"{path}: {key} has shape {value.shape}, expected {expected[key].shape}"
            )


def verify(candidate: Path, vectors: Path, rtol: float = RTOL, atol: float = ATOL) -> dict:
    """{case: [Check, ...]} for every case the candidate gives; raises MalformedError."""
    reference = load_manifest(vectors)
    entries = {entry["name"]: entry for entry in reference["cases"]}
    given = load_manifest(candidate)
    results = {}
    for name in case_names(given, Path(candidate) / "manifest.json"):
        if name not in entries:
            raise MalformedError(
                f"{candidate}: unknown case {name!r} (vectors have {', '.join(entries)})"
            )
        path = Path(candidate) / f"{name}.npz"
        outputs = load_arrays(path)
        expected = load_arrays(Path(vectors) / entries[name]["file"])
        check_candidate_case(name, expected, outputs, path)
        results[name] = compare_case(expected, outputs, entries[name], rtol, atol)
    return results


def report(results: dict, rtol: float, atol: float) -> tuple[str, bool]:
    """The printed report, and whether every given stage agrees."""
    lines, all_ok = (
        [f"tolerance: abs ≤ {atol:g} + {rtol:g} · max|expected| per stage and step"],
        True,
    )
    for name, checks in results.items():
        lines.append(f"case {name}:")
        stages: dict[str, list[Check]] = {}
        for check in checks:
            stages.setdefault(check.stage, []).append(check)
        for stage, group in stages.items():
            worst_abs = max(c.abs_err for c in group)
            worst_rel = max(c.rel_err for c in group)
            verdict = "ok" if all(c.ok for c in group) else "DIVERGES"
            errors = f"max abs err {worst_abs:9.2e}  max rel err {worst_rel:9.2e}"
            lines.append(f"  {stage:<20} {errors}  {verdict}")
        failed = next((c for c in checks if not c.ok), None)
        if failed:
            all_ok = False
            lines.append(
                f"case {name}: first divergence at {failed.where}, {failed.stage}: "
                f"max rel err {failed.rel_err:.2g}"
            )
        else:
            lines.append(f"case {name}: all {len(stages)} given stages agree")
    return "\n".join(lines), all_ok
