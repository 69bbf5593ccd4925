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

from l2l_ref.errors import L2LError
from l2l_ref.machine import describe

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
        try:
            document = json.loads(Path(path).read_text())
            if document.get("format") == "l2l-ref-search":
                entries += _search_entries(path, document)
            else:
                seed = document["seed"]
                entries.append(_entry(document, document["results"], seed, pooled=pool_rates))
        except FileNotFoundError as error:
            beside = "" if error.filename == str(path) else f" (the search {path} reads it)"
            raise ReportError(f"{error.filename}: no such file{beside}") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ReportError(
                f"{path}: not a results or search file of l2l-ref ({error!r})"
            ) from None
    return entries


def _search_entries(path: Path, document: dict) -> list[dict]:
    settings = document["settings"]
    search = {"trials": settings["trials"], "meta_lr_range": settings["meta_lr_range"]}
    entries = []
    for seed, results in document["test"].items():
        folder = Path(path).parent / f"seed-{seed}" / "results.json"
        seed_document = json.loads(folder.read_text())
        entries.append(_entry(seed_document, results, int(seed), search))
    return entries


def _entry(
    document: dict, results: dict, seed: int, search: dict | None = None, pooled: bool = False
) -> dict:
    """The experiment of a results document (what a claim is about: the problem, and how the
    optimizer was made, every setting but the seed), and its numbers."""
    train = {k: v for k, v in document["train"].items() if k not in ("seed", "trial")}
    if search or pooled:  # each seed's rate was drawn and selected: the range is the method
        train.pop("meta_lr")
    experiment = {
        "problem": document["problem"],
        "preset": document["preset"],
        "optimizer": document["optimizer"],
        "steps": document["steps"],
        "train": train,
        "search": search,
    } | ({"pooled": True} if pooled and not search else {})
    lstm = results["LSTM"]
    baselines = {}
    for name, entry in results.items():
        if name == "LSTM":
            continue
        paired = entry["minus_lstm"]
        baselines[name] = {
            "mean": float(paired["mean"]),
            "stderr": float(paired["stderr"]),
            "lstm_lower_on": int(paired["lstm_lower_on"]),
            "final_mean": float(entry["final_mean"]),
        }
    return {
        "experiment": experiment,
        "label": _label(experiment),
        "seed": seed,
        "lstm": float(lstm["final_mean"]),
        "problems": len(lstm["final_losses"]),
        "baselines": baselines,
        "machine": document.get("machine"),  # that trained (l2l_ref.machine); None: not recorded
    }


def optimizer_label(optimizer: dict) -> str:
    """The learned optimizer of a results or search file in words: "LSTM 20×20 + GAC (2
    units averaged)"."""
    layers = "×".join(map(str, optimizer["layers"])) or "no LSTM"
    if optimizer.get("architecture", "lstm") == "lstm-gac":
        layers += f" + GAC ({optimizer['gac_units']} units averaged)"
    return f"LSTM {layers}"


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
        across = {}
        for name in names:
            differences = [e["baselines"][name]["mean"] for e in group]
            mean, low, high = interval(differences)
            lower = sum(d > 0 for d in differences)
            across[name] = {"mean": mean, "low": low, "high": high, "lstm_lower_in": lower}
        below_all = sum(all(e["baselines"][n]["mean"] > 0 for n in names) for e in group)
        claims.append(
            {
                "experiment": group[0]["experiment"],
                "label": group[0]["label"],
                "seeds": [e["seed"] for e in group],
                "per_seed": group,
                "across": across,
                "lstm_below_every_baseline_in": below_all,
                "verdict": _verdict(group, across),
            }
        )
    return claims


def _verdict(group: list[dict], across: dict) -> str:
    if len(group) == 1:
        (entry,) = group
        holds = all(b["mean"] > 2 * b["stderr"] for b in entry["baselines"].values())
        return "holds in its one seed (no interval across seeds)" if holds else (
            "does not hold in its one seed (no interval across seeds)"
        )  # fmt: skip
    if all(a["low"] > 0 for a in across.values()):
        return "holds"
    if any(a["high"] < 0 for a in across.values()):
        return "does not hold"
    return "undecided: an interval contains zero"


def _cell(paired: dict, problems: int) -> str:
    text = f"{paired['mean']:+.4f} ± {paired['stderr']:.4f} ({paired['lstm_lower_on']}/{problems})"
    return text.rjust(WIDTH)


def render(claims: list[dict]) -> str:
    """The report as text: per experiment, a table of seeds, the intervals, one verdict line."""
    lines = []
    for claim in claims:
        names = list(claim["across"])
        n = len(claim["seeds"])
        lines.append(f"{claim['label']} — {n} seed{'s' if n > 1 else ''}")
        machines = {
            describe(e["machine"]) if e["machine"] else "not recorded" for e in claim["per_seed"]
        }
        lines.append(f"meta-trained on: {'; and '.join(sorted(machines))}")
        lines.append("baseline minus LSTM, final loss, paired on each seed's test problems:")
        lines.append(f"  {'seed':>6} {'LSTM':>9}" + "".join(name.rjust(WIDTH) for name in names))
        for entry in claim["per_seed"]:
            cells = "".join(_cell(entry["baselines"][name], entry["problems"]) for name in names)
            lines.append(f"  {entry['seed']:>6} {entry['lstm']:>9.4f}{cells}")
        if n > 1:
            intervals = "".join(
                f" {a['mean']:+.4f} [{a['low']:+.4f}, {a['high']:+.4f}]".rjust(WIDTH)
                for a in claim["across"].values()
            )
            lines.append(f"  {'mean':>6} {'95% CI':>9}{intervals}")
        closest = min(names, key=lambda name: claim["across"][name]["mean"])
        a = claim["across"][closest]
        bounds = f" [{a['low']:+.3g}, {a['high']:+.3g}]" if n > 1 else ""
        below = claim["lstm_below_every_baseline_in"]
        lines.append(
            f"verdict: LSTM below every tuned baseline in {below} of {n} seeds; against "
            f"{closest} (the best baseline) {a['mean']:+.3g}{bounds}, LSTM lower in "
            f"{a['lstm_lower_in']} of {n}: {claim['verdict']}"
        )
        lines.append("")
    return "\n".join(lines).rstrip()
