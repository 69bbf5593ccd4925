"""Checking another implementation's outputs against the reference vectors, stage by stage.

Every case of the vectors and every stage of each case is checked unless the user asks for
less (`partial`, `cases`): a case or a stage that the candidate does not give, an array of
the wrong shape and a non-finite value are divergences, never skipped. A check that was asked
to cover less than everything ends as partial, never as a pass.

The stages of a meta case are compared in the order they are computed: θ_0 and f(θ_0); then
for each step t the gradient ∇_t, the preprocessed input, each LSTM layer's c and h, the update
g_t, θ_{t+1} and f(θ_{t+1}); after the last step of each unroll its meta-loss, meta-gradient and
φ after the meta-Adam step. Within a stage, tensors in the order the case lists them. The
baselines case is checked baseline by baseline, step by step. The first comparison that fails
is where the candidate diverges.

Errors are normwise per stage, step and tensor: abs = max |candidate − expected| over the
tensor, rel = abs / s, where s is max |expected| over the whole stage (all its tensors) at that
step; a comparison agrees when abs ≤ atol + rtol · s.
"""

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as onp

from l2l_ref.checks import integer, mapping, sequence, text
from l2l_ref.errors import ConfigError, L2LError
from l2l_ref.vector_format import BASELINE_STATES, FORMAT, TOLERANCE, VERSION

RTOL, ATOL = TOLERANCE["float64"]["rtol"], TOLERANCE["float64"]["atol"]
AGREE, DIVERGE, PARTIAL = 0, 1, 3  # exit codes (2: malformed input, in the command line)


class MalformedError(L2LError):
    """The vectors or the candidate are not a well-formed folder of this format."""


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
    version = manifest.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and 1 <= version < VERSION:
        raise MalformedError(
            f"{path}: written for version {version} of the reference vectors, and these are "
            f"version {VERSION} (new cases and corrected claims: docs/vectors.md, 'Versions'); "
            "run the implementation again on these vectors' inputs"
        )
    if version != VERSION:
        raise MalformedError(f"{path}: version {version!r}, expected {VERSION}")
    if not isinstance(manifest.get("cases"), list) or not manifest["cases"]:
        raise MalformedError(f"{path}: no cases listed")
    names = case_names(manifest, path)
    if len(set(names)) != len(names):
        raise MalformedError(f"{path}: a case is listed twice")
    return manifest


def case_names(manifest: dict, path: Path) -> list[str]:
    """The names of the cases a manifest lists (entries are names or objects with one)."""
    names = []
    for entry in manifest["cases"]:
        name = entry.get("name") if isinstance(entry, dict) else entry
        if not isinstance(name, str):
            raise MalformedError(f"{path}: a case entry without a name: {entry!r}")
        names.append(name)
    return names


def reference_entries(manifest: dict, path: Path) -> dict[str, dict]:
    """The reference manifest's cases by name, each with the keys verify reads, checked: a
    damaged manifest is one line naming the case and the field."""
    entries = {}
    for k, entry in enumerate(manifest["cases"]):
        try:
            mapping(entry, f"case {k}")
            where = f"case {entry.get('name')!r}"
            missing = [
                key for key in ("name", "kind", "file", "steps", "tensors") if key not in entry
            ]
            if missing:
                raise ConfigError(f"{where} lacks {missing}")
            if entry["kind"] not in ("meta", "baselines"):
                raise ConfigError(f"{where}: kind {entry['kind']!r} is not meta or baselines")
            file = text(entry["file"], f"{where} file")
            if Path(file).name != file or not file.endswith(".npz"):
                raise ConfigError(f"{where}: file {file!r} is not a .npz beside the manifest")
            integer(entry["steps"], f"{where} steps", 1)
            for name, shape in mapping(entry["tensors"], f"{where} tensors").items():
                for size in sequence(shape, f"{where} tensor {name} shape"):
                    integer(size, f"{where} tensor {name} shape", 1)
            if entry["kind"] == "meta":
                if "unroll" not in entry:
                    raise ConfigError(f"meta {where} lacks its unroll")
                integer(entry["unroll"], f"{where} unroll", 1)
                optimizer = mapping(entry["optimizer"], f"{where} optimizer")
                sequence(optimizer["layers"], f"{where} optimizer layers")
            else:
                for name, settings in mapping(entry["baselines"], f"{where} baselines").items():
                    mapping(settings, f"{where} baseline {name}")
        except KeyError as error:
            raise MalformedError(f"{path}: case {k} lacks {error}") from None
        except ConfigError as error:
            raise MalformedError(f"{path}: {error}") from None
        entries[entry["name"]] = entry
    return entries


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
    """One stage of one case at one step (or unroll), for one tensor."""

    stage: str  # as a reader names it, e.g. "LSTM layer 1 c"
    where: str  # "step 3", "unroll 0"
    tensor: str | None  # an optimizee tensor, a path of φ, or None
    abs_err: float = math.nan
    rel_err: float = math.nan
    problem: str = ""  # "" compared; else why it could not be: "missing", a shape, ...
    ok: bool = False

    def place(self) -> str:
        tensor = f", tensor {self.tensor}" if self.tensor else ""
        return f"{self.where}, {self.stage}{tensor}"


META_LABELS = {
    "grad": "gradient ∇_t",
    "preprocessed": "preprocessed input",
    "update": "update g_t",
    "read": "read i_t",
    "theta": "θ_t",
    "loss": "loss f(θ_t)",
    "meta_loss": "meta-loss",
    "meta_grad": "meta-gradient",
    "phi": "φ after meta-Adam",
}
BASELINE_LABELS = {"theta": "θ_t", "loss": "loss f(θ_t)", "grad": "gradient ∇_t"}


def stage_of(key: str) -> tuple[str, str | None]:
    """(the stage an array key belongs to, its tensor or φ path)."""
    parts = key.split("/")
    if parts[0] == "lstm":
        return f"LSTM layer {parts[1]} {parts[2]}", "/".join(parts[3:])
    if parts[0] == "memory":
        return f"memory {parts[1]}", "/".join(parts[2:])
    if parts[0] == "baseline":
        name, part = parts[1], parts[2]
        label = BASELINE_LABELS.get(part, part.replace("_", " "))
        return f"{name} {label}", "/".join(parts[3:]) or None
    return META_LABELS[parts[0]], "/".join(parts[1:]) or None


def meta_schedule(entry: dict) -> list[tuple[str, str, int]]:
    """(stage, where, index along the first axis) of a meta case, in computation order."""
    steps, unroll, layers = entry["steps"], entry["unroll"], len(entry["optimizer"]["layers"])
    per_step = ["gradient ∇_t", "preprocessed input"]
    per_step += [f"LSTM layer {n} {part}" for n in range(layers) for part in ("c", "h")]
    if any(key.startswith("read/") for key in entry.get("arrays", ())):  # NTM-BFGS: write, read
        per_step += ["memory a", "memory b", "read i_t"]
    per_step += ["update g_t"]
    order = []
    for t in range(steps + 1):
        order += [(stage, f"step {t}", t) for stage in ("θ_t", "loss f(θ_t)")]
        if t > 0 and t % unroll == 0:
            k = t // unroll - 1
            stages = ("meta-loss", "meta-gradient", "φ after meta-Adam")
            order += [(stage, f"unroll {k}", k) for stage in stages]
        if t < steps:
            order += [(stage, f"step {t}", t) for stage in per_step]
    return order


def baselines_schedule(entry: dict) -> list[tuple[str, str, int]]:
    """(stage, where, index) of the baselines case: each baseline's run in turn."""
    order = []
    for name in entry["baselines"]:
        for t in range(entry["steps"] + 1):
            order += [(f"{name} θ_t", f"step {t}", t), (f"{name} loss f(θ_t)", f"step {t}", t)]
            if t < entry["steps"]:
                parts = ["gradient ∇_t", *(p.replace("_", " ") for p in BASELINE_STATES[name])]
                order += [(f"{name} {part}", f"step {t}", t) for part in parts]
    return order


def _tensor_rank(entry: dict):
    """Sort key of the tensors within a stage: the case's order of optimizee tensors, then φ
    paths alphabetically."""
    order = {name: n for n, name in enumerate(entry["tensors"])}
    return lambda key: (order.get(stage_of(key)[1], len(order)), key)


def compare_case(
    expected: dict, candidate: dict, entry: dict, rtol: float, atol: float, partial: bool = False
) -> list[Check]:
    """Every check of one case in computation order, one per stage, step and tensor; each
    tensor's error measured against the largest expected value of the whole stage at that
    step (a tensor whose values are negligible beside the others', e.g. a gradient that is 0
    in exact arithmetic, is compared on their scale, not on its round-off). A stage the
    candidate does not give, or gives with another shape, is one failed check at its first
    step (with `partial`, a missing stage is recorded as not given and does not fail)."""
    keys = sorted((k for k in expected if not k.startswith("input/")), key=_tensor_rank(entry))
    by_stage: dict[str, list[str]] = {}
    for key in keys:
        by_stage.setdefault(stage_of(key)[0], []).append(key)
    schedule = meta_schedule(entry) if entry["kind"] == "meta" else baselines_schedule(entry)
    checks, reported = [], set()
    with onp.errstate(invalid="ignore", over="ignore"):  # a NaN or inf candidate fails below
        for stage, where, index in schedule:
            stage_keys = by_stage.get(stage, [])
            scale = max(
                (float(onp.max(abs(expected[k][index]), initial=0.0)) for k in stage_keys),
                default=0.0,
            )
            for key in stage_keys:
                tensor = stage_of(key)[1]
                if key not in candidate or candidate[key].shape != expected[key].shape:
                    if key not in reported:
                        reported.add(key)
                        checks.append(
                            Check(
                                stage,
                                where,
                                tensor,
                                problem=_absent(key, expected, candidate, partial),
                            )
                        )
                    continue
                got = onp.asarray(candidate[key][index], dtype=onp.float64)
                abs_err = float(onp.max(abs(got - expected[key][index]), initial=0.0))
                rel_err = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else math.inf)
                finite = bool(onp.all(onp.isfinite(got)))
                ok = finite and abs_err <= atol + rtol * scale  # False for NaN
                problem = "" if finite else "non-finite"
                checks.append(Check(stage, where, tensor, abs_err, rel_err, problem, ok))
    return checks


def _absent(key: str, expected: dict, candidate: dict, partial: bool) -> str:
    """Why a stage could not be compared."""
    if key in candidate:
        return f"shape {list(candidate[key].shape)}, expected {list(expected[key].shape)}"
    return "not given" if partial else "missing"


def check_candidate_case(name: str, expected: dict, candidate: dict, path: Path) -> None:
    """Malformed: a key that is not a stage of the case."""
    for key in candidate:
        if not key.startswith("input/") and key not in expected:
            raise MalformedError(f"{path}: {key} is not a stage of case {name}")


@dataclass
class Result:
    """What verify found: the checks of each case it looked at (None for a case the
    candidate does not list), the cases it was told to leave out, and whether missing cases
    and stages were accepted as not given."""

    checks: dict[str, list | None]
    left_out: list[str]
    partial: bool

    def failed(self, name: str) -> bool:
        checks = self.checks[name]
        if checks is None:
            return not self.partial
        return any(not c.ok and c.problem != "not given" for c in checks)

    def not_given(self) -> tuple[list[str], int]:
        """The cases and the number of stages that were not checked because not given."""
        cases = [name for name, checks in self.checks.items() if checks is None]
        stages = {
            (name, c.stage)
            for name, checks in self.checks.items()
            for c in checks or ()
            if c.problem == "not given"
        }
        return cases, len(stages)


def verify(
    candidate: Path,
    vectors: Path,
    rtol: float = RTOL,
    atol: float = ATOL,
    cases: list[str] | None = None,
    partial: bool = False,
) -> Result:
    """Check `candidate` against every case of `vectors` (or the named `cases`); raises
    MalformedError for a folder that is not a candidate of this format."""
    reference = load_manifest(vectors)
    entries = reference_entries(reference, Path(vectors) / "manifest.json")
    given = case_names(load_manifest(candidate), Path(candidate) / "manifest.json")
    for name in [*given, *(cases or ())]:
        if name not in entries:
            raise MalformedError(f"unknown case {name!r} (the vectors have {', '.join(entries)})")
    wanted = [name for name in entries if cases is None or name in cases]
    checks: dict[str, list | None] = {}
    for name in wanted:
        if name not in given:
            checks[name] = None
            continue
        path = Path(candidate) / f"{name}.npz"
        outputs = load_arrays(path)
        expected = load_arrays(Path(vectors) / entries[name]["file"])
        check_candidate_case(name, expected, outputs, path)
        checks[name] = compare_case(expected, outputs, entries[name], rtol, atol, partial)
    return Result(checks, [name for name in entries if name not in wanted], partial)


def report(result: Result, rtol: float, atol: float) -> tuple[str, int]:
    """The printed report and the exit code: AGREE only when every stage of every case was
    checked and agrees."""
    lines = [f"tolerance: abs ≤ {atol:g} + {rtol:g} · max|expected| per stage, step and tensor"]
    for name, checks in result.checks.items():
        if checks is None:
            verdict = "not given (--partial)" if result.partial else "DIVERGES: not given"
            lines.append(f"case {name}: {verdict}: the candidate's manifest does not list it")
            continue
        lines.append(f"case {name}:")
        stages: dict[str, list[Check]] = {}
        for check in checks:
            stages.setdefault(check.stage, []).append(check)
        for stage, group in stages.items():
            problems = {c.problem for c in group if c.problem}
            compared = [c for c in group if not c.problem or c.problem == "non-finite"]
            errors = " " * 45
            if compared:
                worst_abs = max(c.abs_err for c in compared)
                worst_rel = max(c.rel_err for c in compared)
                errors = f"max abs err {worst_abs:9.2e}  max rel err {worst_rel:9.2e}"
            if "not given" in problems:
                verdict = "not given"
            elif all(c.ok for c in group):
                verdict = "ok"
            else:
                first = next(c for c in group if not c.ok)
                verdict = f"DIVERGES from {first.where}" + (
                    f" ({', '.join(sorted(problems))})" if problems else ""
                )
            lines.append(f"  {stage:<22} {errors}  {verdict}")
        failed = next((c for c in checks if not c.ok and c.problem != "not given"), None)
        if failed:
            # the error of the first failing (step, tensor), and its stage's largest beside it:
            # the two can differ by orders of magnitude
            stage_worst = max(
                (c.rel_err for c in stages[failed.stage] if not math.isnan(c.rel_err)),
                default=math.nan,
            )
            there = f"rel err {failed.rel_err:.2g} there (the stage's largest: {stage_worst:.2g})"
            why = failed.problem or there
            if failed.problem == "non-finite":
                why = f"non-finite values ({there})"
            lines.append(f"case {name}: first divergence at {failed.place()}: {why}")
        else:
            given = sum(1 for group in stages.values() if group[0].problem != "not given")
            lines.append(f"case {name}: all {given} given stages agree")
    total = len(result.checks) + len(result.left_out)
    failed = [name for name in result.checks if result.failed(name)]
    if failed:
        lines.append(f"DIVERGES: {len(failed)} of {total} cases ({', '.join(failed)})")
        return "\n".join(lines), DIVERGE
    cases, stages = result.not_given()
    if result.left_out or cases or stages:
        others = f", {stages} stages of the others" if stages else ""
        lines.append(
            f"PARTIAL, not a pass: what was checked agrees; not checked: "
            f"{len(result.left_out) + len(cases)} of {total} cases{others}"
        )
        return "\n".join(lines), PARTIAL
    lines.append(f"PASS: every stage of all {total} cases agrees")
    return "\n".join(lines), AGREE
