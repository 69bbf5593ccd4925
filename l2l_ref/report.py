"""A claim of the paper judged over seeds: paired differences and their uncertainty.

A claim is "the LSTM ends below every tuned baseline" on one experiment (one problem with its
settings, preset, optimizer and horizon). Each seed gives, per baseline, the paired difference
d = baseline final loss − LSTM final loss, averaged over that seed's test problems (positive:
the LSTM is lower). Across n seeds: the mean of the d's, a 95% confidence interval from
Student's t with n − 1 degrees of freedom (the seeds are the replicates: test problems of one
seed are not independent runs of the method), and in how many seeds the LSTM is lower.

The claim holds when, against every baseline, the interval lies above zero; with one seed
there is no interval, and the verdict rests on that seed's own paired standard error (the
difference at least two standard errors above zero), and says so.
"""

import json
import math
from pathlib import Path

from l2l_ref.architectures import ARCHITECTURES, OptimizerConfig, current_record, optimizer_name
from l2l_ref.comparison import LEARNED
from l2l_ref.divergence import DIVERGENCE
from l2l_ref.errors import ConfigError, L2LError
from l2l_ref.machine import describe
from l2l_ref.run import check_document
from l2l_ref.search import read_record

WIDTH = 28  # of a column of the printed table


class ReportError(L2LError):
    """A file that is not a results or search file of l2l-ref."""


def _incomplete_beta(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (modified
    Lentz), on the side where it converges fast."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _incomplete_beta(1.0 - x, b, a)
    front = (
        math.exp(
            math.lgamma(a + b)
            - math.lgamma(a)
            - math.lgamma(b)
            + a * math.log(x)
            + b * math.log1p(-x)
        )
        / a
    )
    tiny, c, d = 1e-300, 1.0, 0.0
    f = None
    for i in range(400):
        m = i // 2
        if i == 0:
            numerator = 1.0
        elif i % 2:
            numerator = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            numerator = (m * (b - m) * x) / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + numerator / (c if abs(c) > tiny else tiny)
        f = c * d if f is None else f * c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * (f - 1.0)


def student_t_cdf(t: float, df: int) -> float:
    """P(T ≤ t) for Student's t with df degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / (df + t * t), df / 2, 0.5)
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: int) -> float:
    """The t with P(T ≤ t) = p, by bisection (p in (0.5, 1))."""
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if student_t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% confidence interval (Student's t) of the values; NaN bounds for one."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = student_t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def results_file(path: Path) -> Path:
    """The file a path names: itself, or for a folder the search.json (a search's folder) or
    the results.json (a run's) inside it."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in ("search.json", "results.json"):
        if (path / name).is_file():
            return path / name
    raise ReportError(f"{path}: a folder with no search.json or results.json")


def load(paths: list[Path], pool_rates: bool = False) -> list[dict]:
    """One entry per seed of every file: the experiment it belongs to, its seed, and its
    comparison results. A search file (or its folder) gives one entry per seed it selected an
    optimizer for. With pool_rates, results files whose optimizers differ only in their meta
    learning rate count as one experiment (each seed's optimizer selected by a search, then
    evaluated anew: at 200 steps, on another net)."""
    entries = []
    for path in map(results_file, paths):
        reading = path
        try:
            document = json.loads(Path(path).read_text())
            if isinstance(document, dict) and document.get("format") == "l2l-ref-search":
                record = read_record(path)  # its own errors name the field
                settings = record["settings"]
                search = {k: settings[k] for k in ("trials", "meta_lr_range")}
                for seed, results in record["test"].items():
                    reading = Path(path).parent / f"seed-{seed}" / "results.json"
                    seed_document = check_document(json.loads(reading.read_text()))
                    entries.append(_entry(reading, seed_document, results, int(seed), search))
            else:
                document = check_document(document)
                results, seed = document["results"], document["seed"]
                entries.append(_entry(path, document, results, seed, pooled=pool_rates))
        except FileNotFoundError as error:
            beside = "" if error.filename == str(path) else f" (the search {path} reads it)"
            raise ReportError(f"{error.filename}: no such file{beside}") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError) as error:
            what = f"no {error}" if isinstance(error, KeyError) else str(error)
            raise ReportError(
                f"{reading}: not a results or search file of l2l-ref ({what})"
            ) from None
    return entries


def _entry(
    path: Path,
    document: dict,
    results: dict,
    seed: int,
    search: dict | None = None,
    pooled: bool = False,
) -> dict:
    """The experiment of a results document (what a claim is about: the problem, and how the
    optimizer was made, every setting but the seed), and its numbers."""
    train = {k: v for k, v in document["train"].items() if k not in ("seed", "trial")}
    if search or pooled:  # each seed's rate was drawn and selected: the range is the method
        train.pop("meta_lr")
    experiment = {
        "problem": document["problem"],
        "preset": document["preset"],
        "optimizer": current_record(document["optimizer"]),
        "steps": document["steps"],
        "train": train,
        "search": search,
    } | ({"pooled": True} if pooled and not search else {})
    learned = results[LEARNED]
    baselines = {}
    for name, entry in results.items():
        if name == LEARNED:
            continue
        paired = entry["minus_learned"]
        log_mean, log_stderr = _log_ratio(paired, entry, learned)
        baselines[name] = {
            "mean": _float(paired["mean"]),
            "stderr": _float(paired["stderr"]),
            "log_mean": log_mean,
            "log_stderr": log_stderr,
            "learned_lower_on": int(paired["learned_lower_on"]),
            "final_mean": _float(entry["final_mean"]),
            "diverged": entry.get("diverged"),
        }
    return {
        "experiment": experiment,
        "label": _label(experiment),
        "seed": seed,
        "learned": _float(learned["final_mean"]),
        "learned_final_losses": [_float(x) for x in learned["final_losses"]],
        # the test problems, as the baselines' final losses identify them
        "baseline_final_losses": {n: e["final_losses"] for n, e in results.items() if n != LEARNED},
        "learned_diverged": learned.get("diverged"),
        "problems": len(learned["final_losses"]),
        "baselines": baselines,
        "machine": document.get("machine"),  # that trained (l2l_ref.machine); None: not recorded
        "path": str(path),
    }


def _float(value) -> float:
    """A number of a results document: JSON writes inf and NaN as null."""
    return math.inf if value is None else float(value)


def _log_ratio(paired: dict, entry: dict, learned: dict) -> tuple[float, float]:
    """Mean and standard error over a seed's test problems of log(baseline final loss) −
    log(LSTM final loss), diverged runs at the divergence line (l2l_ref.divergence), as the
    comparison wrote them; for files written before it did, from the final losses, with no
    line to cap them at (such files had no diverged run in this project's results)."""
    if "log_ratio" in paired:
        return _float(paired["log_ratio"]["mean"]), _float(paired["log_ratio"]["stderr"])
    finals = [
        (_float(b), _float(a))
        for b, a in zip(entry["final_losses"], learned["final_losses"], strict=True)
    ]
    ratios = [
        math.log(b) - math.log(a) if 0 < a < math.inf and 0 < b < math.inf else math.inf
        for b, a in finals
    ]
    n = len(ratios)
    mean = sum(ratios) / n
    if n < 2 or not math.isfinite(mean):
        return mean, math.nan
    return mean, math.sqrt(sum((r - mean) ** 2 for r in ratios) / (n - 1) / n)


def optimizer_label(optimizer: dict) -> str:
    """The learned optimizer of a results or search file in words, as its architecture says
    (architectures' `label`); an architecture not registered here by its name and layers."""
    name = optimizer.get("architecture", "lstm")
    if name in ARCHITECTURES:
        config = OptimizerConfig.from_record(optimizer)
        return config.architecture.label(config)
    return f"{name} {'×'.join(map(str, optimizer['layers']))}"


def _label(experiment: dict) -> str:
    settings = experiment["problem"]["settings"]
    shown = [f"{k} {v}" for k, v in settings.items() if k in ("hidden", "activation", "classes")]
    train, search = experiment["train"], experiment["search"]
    if search:
        low, high = search["meta_lr_range"]
        method = f"search of {search['trials']} trials, meta-lr {low:g}–{high:g}"
    elif experiment.get("pooled"):
        method = "meta-lr per seed (pooled)"
    else:
        method = f"meta-lr {train['meta_lr']:g}"
    if train.get("meta_lr_schedule", "constant") != "constant":
        method += f" ({train['meta_lr_schedule']})"
    return ", ".join(
        [experiment["problem"]["name"], *shown, f"preset {experiment['preset']}",
         f"{experiment['steps']} steps", optimizer_label(experiment["optimizer"]),
         f"{train['epochs']} epochs", method]
    )  # fmt: skip


def summarize(entries: list[dict]) -> list[dict]:
    """Per experiment: each seed's paired differences, and across seeds the mean, the 95%
    interval and the count of seeds where the LSTM is lower; and the verdict."""
    groups: dict[str, list[dict]] = {}
    for entry in entries:
        key = json.dumps(entry["experiment"], sort_keys=True)
        groups.setdefault(key, []).append(entry)
    claims = []
    for group in groups.values():
        seeds = [e["seed"] for e in group]
        if len(set(seeds)) != len(seeds):
            raise ReportError(f"{group[0]['label']}: a seed is given twice ({sorted(seeds)})")
        group.sort(key=lambda e: e["seed"])
        names = list(group[0]["baselines"])
        for entry in group:
            if set(entry["baselines"]) != set(names):
                raise ReportError(
                    f"{entry['path']}: baselines {sorted(entry['baselines'])}, but seed "
                    f"{group[0]['seed']} of the same experiment has {sorted(names)}"
                )
        across, on_log = {}, {}
        for name in names:
            differences = [e["baselines"][name]["mean"] for e in group]
            mean, low, high = interval(differences)
            lower = sum(d > 0 for d in differences)
            across[name] = {"mean": mean, "low": low, "high": high, "learned_lower_in": lower}
            ratios = [e["baselines"][name]["log_mean"] for e in group]
            mean, low, high = interval(ratios)
            lower = sum(r > 0 for r in ratios)
            on_log[name] = {"mean": mean, "low": low, "high": high, "learned_lower_in": lower}
        below_all = sum(all(e["baselines"][n]["log_mean"] > 0 for n in names) for e in group)
        claims.append(
            {
                "experiment": group[0]["experiment"],
                "label": group[0]["label"],
                "seeds": [e["seed"] for e in group],
                "per_seed": group,
                "across": across,
                "across_log": on_log,
                "learned_below_every_baseline_in": below_all,
                "verdict": _verdict(group, on_log),
            }
        )
    return claims


def _verdict(group: list[dict], across: dict) -> str:
    """On the log scale: the interval across seeds of the mean log ratio against every
    baseline above 0; with one seed, that seed's mean log ratio 2 standard errors above 0."""
    if len(group) == 1:
        (entry,) = group
        holds = all(b["log_mean"] > 2 * b["log_stderr"] for b in entry["baselines"].values())
        return "holds in its one seed (no interval across seeds)" if holds else (
            "does not hold in its one seed (no interval across seeds)"
        )  # fmt: skip
    if all(a["low"] > 0 for a in across.values()):
        return "holds"
    if any(a["high"] < 0 for a in across.values()):
        return "does not hold"
    return "undecided: an interval contains zero"


def _cell(paired: dict, problems: int) -> str:
    text = (
        f"{paired['mean']:+.4f} ± {paired['stderr']:.4f} ({paired['learned_lower_on']}/{problems})"
    )
    return text.rjust(WIDTH)


def _log_cell(paired: dict) -> str:
    return f"{paired['log_mean']:+.3f} ± {paired['log_stderr']:.3f}".rjust(WIDTH)


def _intervals(across: dict, digits: int) -> str:
    return "".join(
        f" {a['mean']:+.{digits}f} [{a['low']:+.{digits}f}, {a['high']:+.{digits}f}]".rjust(WIDTH)
        for a in across.values()
    )


def _diverged(claim: dict) -> list[str]:
    """'seed 3: SGD on 1 of 32 problems' for every optimizer of a seed that diverged."""
    found = []
    for entry in claim["per_seed"]:
        counts = {optimizer_name(entry["experiment"]["optimizer"]): entry["learned_diverged"]}
        counts |= {name: b["diverged"] for name, b in entry["baselines"].items()}
        shown = [f"{name} on {k} of {entry['problems']}" for name, k in counts.items() if k]
        if shown:
            found.append(f"seed {entry['seed']}: {', '.join(shown)}")
    return found


def render(claims: list[dict]) -> str:
    """The report as text: per experiment, the seeds' paired differences of the final loss
    and of its log, their intervals across seeds, the runs that diverged, one verdict line
    (judged on the log scale, which one blown-up run cannot swing)."""
    lines = []
    for claim in claims:
        names = list(claim["across"])
        n = len(claim["seeds"])
        lines.append(f"{claim['label']} — {n} seed{'s' if n > 1 else ''}")
        machines = {
            describe(e["machine"]) if e["machine"] else "not recorded" for e in claim["per_seed"]
        }
        lines.append(f"meta-trained on: {'; and '.join(sorted(machines))}")
        learned = optimizer_name(claim["experiment"]["optimizer"])
        head = f"  {'seed':>6} {learned:>9}" + "".join(name.rjust(WIDTH) for name in names)
        lines.append(f"baseline minus {learned}, final loss, paired on each seed's test problems:")
        lines.append(head)
        for entry in claim["per_seed"]:
            cells = "".join(_cell(entry["baselines"][name], entry["problems"]) for name in names)
            lines.append(f"  {entry['seed']:>6} {entry['learned']:>9.4f}{cells}")
        if n > 1:
            lines.append(f"  {'mean':>6} {'95% CI':>9}{_intervals(claim['across'], 4)}")
        lines.append(
            f"log(baseline final loss) − log({learned} final loss), paired, diverged runs at "
            f"{DIVERGENCE:g} × f(θ_0):"
        )
        lines.append(head)
        for entry in claim["per_seed"]:
            cells = "".join(_log_cell(entry["baselines"][name]) for name in names)
            lines.append(f"  {entry['seed']:>6} {entry['learned']:>9.4f}{cells}")
        if n > 1:
            lines.append(f"  {'mean':>6} {'95% CI':>9}{_intervals(claim['across_log'], 3)}")
        diverged = _diverged(claim)
        lines.append(f"diverged: {'; '.join(diverged)}" if diverged else "diverged: none")
        closest = min(names, key=lambda name: claim["across_log"][name]["mean"])
        a, plain = claim["across_log"][closest], claim["across"][closest]
        bounds = f" [{a['low']:+.3g}, {a['high']:+.3g}]" if n > 1 else ""
        plain_bounds = f" [{plain['low']:+.3g}, {plain['high']:+.3g}]" if n > 1 else ""
        below = claim["learned_below_every_baseline_in"]
        lines.append(
            f"verdict, on the log of the final loss: {learned} below every tuned baseline in "
            f"{below} of {n} seeds; against {closest} (the best baseline) log ratio "
            f"{a['mean']:+.3g}{bounds} (final loss {plain['mean']:+.3g}{plain_bounds}), "
            f"{learned} lower in {a['learned_lower_in']} of {n}: {claim['verdict']}"
        )
        lines.append("")
    return "\n".join(lines).rstrip()


def versus(entries: list[dict], others: list[dict]) -> dict:
    """The learned optimizer of `entries` (one experiment) against that of `others` (another),
    paired on the test problems of each seed both have: per seed, the other's final loss
    minus this one's and the log ratio (mean ± standard error over the problems, and on how
    many this one is lower), and across seeds the mean and 95% interval. The two must have
    run on the same test problems: the baselines' final losses of a seed agree bit for bit."""
    claims = [summarize(side) for side in (entries, others)]
    if any(len(side) != 1 for side in claims):
        raise ReportError("--against compares one experiment with one other")
    (this,), (other,) = claims
    by_seed = {e["seed"]: e for e in other["per_seed"]}
    per_seed = []
    for entry in this["per_seed"]:
        match = by_seed.get(entry["seed"])
        if match is None:
            continue
        if match["baseline_final_losses"] != entry["baseline_final_losses"]:
            raise ReportError(
                f"{entry['path']} and {match['path']}: seed {entry['seed']} ran on other test "
                "problems (the baselines' final losses differ)"
            )
        mine, theirs = entry["learned_final_losses"], match["learned_final_losses"]
        differences = [b - a for a, b in zip(mine, theirs, strict=True)]
        mean, n = sum(differences) / len(differences), len(differences)
        stderr = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1) / n)
        log_mean, log_stderr = _log_ratio({}, {"final_losses": theirs}, {"final_losses": mine})
        per_seed.append({
            "seed": entry["seed"], "this": entry["learned"], "other": match["learned"],
            "mean": mean, "stderr": stderr, "lower_on": sum(d > 0 for d in differences),
            "problems": n, "log_mean": log_mean, "log_stderr": log_stderr,
        })  # fmt: skip
    if not per_seed:
        raise ReportError("--against: the two experiments share no seed")
    across = dict(
        zip(("mean", "low", "high"), interval([p["mean"] for p in per_seed]), strict=True)
    )
    on_log = dict(
        zip(("mean", "low", "high"), interval([p["log_mean"] for p in per_seed]), strict=True)
    )
    return {"this": this["label"], "other": other["label"], "per_seed": per_seed,
            "across": across, "across_log": on_log}  # fmt: skip


def render_versus(pairing: dict) -> str:
    """versus as text: the seeds' paired differences, their interval, and which is lower."""
    lines = [
        f"this: {pairing['this']}",
        f"against: {pairing['other']}",
        "against minus this, final loss, paired on each seed's test problems (this lower on), "
        "and log(against) − log(this):",
        f"  {'seed':>6} {'this':>9} {'against':>9}{'difference':>28}{'log ratio':>26}",
    ]
    for p in pairing["per_seed"]:
        cell = f"{p['mean']:+.4f} ± {p['stderr']:.4f} ({p['lower_on']}/{p['problems']})"
        log = f"{p['log_mean']:+.3f} ± {p['log_stderr']:.3f}"
        lines.append(f"  {p['seed']:>6} {p['this']:>9.4f} {p['other']:>9.4f}{cell:>28}{log:>26}")
    a, g = pairing["across"], pairing["across_log"]
    if len(pairing["per_seed"]) > 1:
        cell = f"{a['mean']:+.4f} [{a['low']:+.4f}, {a['high']:+.4f}]"
        log = f"{g['mean']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}]"
        lines.append(f"  {'mean':>6} {'95% CI':>19}{cell:>28}{log:>26}")
    if g["low"] > 0:
        verdict = "this lower: the interval of the log ratio is above 0"
    elif g["high"] < 0:
        verdict = "against lower: the interval of the log ratio is below 0"
    else:
        verdict = "undecided: the interval contains zero, or one seed"
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)
