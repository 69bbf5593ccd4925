"""Figures in the style of the paper's Figures 4 and 5: loss against optimizee step on a log
scale, one line per optimizer with a shaded band of ± one standard error over the test
problems; the training curves of a run (meta-loss per epoch, validation loss); and what the
input preprocessing (Appendix A) does to gradients of every magnitude.

Needs matplotlib (the optional `plot` extra).
"""

import io
import json
import textwrap
from pathlib import Path

import numpy as onp

from l2l_ref.architectures import optimizer_name
from l2l_ref.comparison import LEARNED
from l2l_ref.errors import L2LError
from l2l_ref.files import write_atomically
from l2l_ref.machine import describe
from l2l_ref.preprocessing import appendix_a, log_and_sign
from l2l_ref.report import optimizer_label
from l2l_ref.run import check_document
from l2l_ref.search import read_record

COLOURS = {LEARNED: "tab:red", "SGD": "tab:blue", "RMSprop": "tab:orange", "Adam": "tab:green",
           "NAG": "tab:purple"}  # fmt: skip


class PlotError(L2LError):
    """A results file that cannot be plotted, or no matplotlib."""


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("plotting needs matplotlib: pip install 'l2l-ref[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_results(path: Path, training: bool = False) -> dict:
    """A results.json of `l2l-ref train` or `evaluate --json`, checked for what the plots read:
    the loss curves, or with `training` the meta-loss and validation curves, each a list of
    numbers (null where a loss was not finite)."""
    try:
        document = json.loads(Path(path).read_text())
        if training:
            curves = document["training"]
            numbers(curves["meta_loss"])
            numbers([loss for _, loss in curves["validation"]])
            numbers([epoch for epoch, _ in curves["validation"]])
        else:
            check_document(document)
            for entry in document["results"].values():
                if len(numbers(entry["mean_loss"])) != len(numbers(entry["stderr_loss"])):
                    raise ValueError("mean and standard error curves differ in length")
                if "learning_rate" in entry:
                    float(entry["learning_rate"])
        if not isinstance(document["problem"]["name"], str) or "settings" not in document:
            raise ValueError("no problem name or settings")
        title(document)
    except FileNotFoundError:
        raise PlotError(f"{path}: no such file") from None
    except KeyError as error:
        raise PlotError(f"{path}: not a results file of l2l-ref (no {error})") from None
    except (OSError, ValueError, TypeError, AttributeError, L2LError) as error:
        raise PlotError(f"{path}: not a results file of l2l-ref ({error})") from None
    return document


def numbers(values) -> list:
    """`values` if it is a non-empty list of numbers or nulls; else ValueError."""
    if not isinstance(values, list) or not values:
        raise ValueError(f"expected a list of numbers, got {str(values)[:40]}")
    for value in values:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{value!r} in a curve is not a number")
    return values


def made_on(records: list[dict]) -> str:
    """'; on <machine>' for the machines the records name (l2l_ref.machine), '' if none does
    (files written before machines were recorded)."""
    machines = sorted(
        {describe(r["machine"]) for r in records if isinstance(r, dict) and "machine" in r}
    )
    return f"; on {' and '.join(machines)}" if machines else ""


def title(document: dict) -> str:
    """Problem, its main settings, and preset: e.g. 'mnist, hidden [20], sigmoid, paper'."""
    problem, settings = document["problem"]["name"], document["problem"]["settings"]
    shown = [f"{k} {v}" for k, v in settings.items() if k in ("hidden", "classes", "distribution")]
    shown += [settings["activation"]] if "activation" in settings else []
    shown.append(f"preset {document['preset']}")
    if "train" in document:  # how the optimizer was meta-trained
        train = document["train"]
        shown.append(f"\n{train['epochs']} epochs, meta-lr {train['meta_lr']:g}")
    return ", ".join([problem, *shown])


def save(figure, out: Path) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    write_atomically(Path(out), buffer.getvalue())


def twos_and_fives(value: float, _position=None) -> str:
    """A log axis's minor tick label: 2 and 5 times a power of ten, the others left blank (a
    panel spanning two decades is unreadable with all of them)."""
    mantissa = value / 10 ** onp.floor(onp.log10(value))
    return f"{value:g}" if round(mantissa) in (2, 5) else ""


def label_log_axis(axis) -> None:
    """Plain numbers on a log axis (not 3×10⁻¹): every minor tick within a decade, only 2s
    and 5s when the axis spans more."""
    low, high = axis.get_view_interval()
    axis.set_major_formatter("{x:g}")
    axis.set_minor_formatter(twos_and_fives if high > 10 * low else "{x:g}")
    axis.set_tick_params(which="minor", labelsize=7)


def plot_losses(documents: list[dict], out: Path) -> None:
    """One panel per results file: mean loss per step with ± 1 s.e. bands, log scale."""
    plt = pyplot()
    size = (5.2 * len(documents), 4.0)
    figure, axes = plt.subplots(1, len(documents), figsize=size, squeeze=False)
    for axis, document in zip(axes[0], documents, strict=True):
        learned = optimizer_name(document.get("optimizer", {}))
        for name, entry in document["results"].items():
            # null (a non-finite loss in the JSON) becomes NaN, a gap in the line
            gone, runs = entry.get("diverged") or 0, len(entry["final_losses"])
            kind = "_rest" if gone and entry.get("mean_loss_rest") else ""
            mean = onp.array(entry[f"mean_loss{kind}"], dtype=float)
            stderr = onp.array(entry[f"stderr_loss{kind}"] or onp.zeros_like(mean), dtype=float)
            steps = onp.arange(len(mean))
            colour = COLOURS.get(name)
            label = learned if name == LEARNED else f"{name} (lr {entry['learning_rate']:g})"
            if gone:  # said in the legend: the line is the mean of the runs that did not
                label += f", {gone} of {runs} diverged" + (", the others'" if kind else "")
            axis.plot(steps, mean, color=colour, lw=2.0 if name == LEARNED else 1.2, label=label)
            low = onp.maximum(mean - stderr, mean * 1e-3)  # the band stays on the log scale
            axis.fill_between(steps, low, mean + stderr, color=colour, alpha=0.2, lw=0)
        axis.set_yscale("log")
        label_log_axis(axis.yaxis)
        axis.set_xlabel("optimizee step")
        axis.set_ylabel("loss (mean over test problems)")
        axis.set_title(title(document), fontsize=10)
        axis.legend(fontsize=8)
        caption = "\n".join(textwrap.wrap(document["settings"] + made_on([document]), 70))
        axis.text(0.0, -0.22, caption, transform=axis.transAxes, fontsize=6.5, va="top")
    figure.tight_layout()
    save(figure, out)
    plt.close(figure)


def plot_training(documents: list[dict], out: Path) -> None:
    """Meta-loss per epoch and validation loss (mean final loss on the validation problems)."""
    plt = pyplot()
    figure, (meta, validation) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for document in documents:
        curves, label = document["training"], title(document)
        train = document["train"]
        if "seed" in train:  # a search's trials differ in these alone
            label += f", seed {train['seed']}, trial {train.get('trial', 0)}"
        epochs = onp.arange(1, len(curves["meta_loss"]) + 1)
        meta.plot(epochs, onp.array(curves["meta_loss"], dtype=float), lw=0.8, label=label)
        epochs, losses = zip(*curves["validation"], strict=True)
        validation.plot(epochs, losses, marker="o", ms=3, label=label)
    meta.set(yscale="log", xlabel="epoch", ylabel="mean meta-loss of the epoch's unrolls")
    validation.set(yscale="log", xlabel="epoch", ylabel="mean final validation loss")
    label_log_axis(meta.yaxis)
    label_log_axis(validation.yaxis)
    # below the axes, so that however many runs there are it covers none of their curves
    handles, labels = validation.get_legend_handles_labels()
    ncol = 2 if len(documents) > 2 else 1
    figure.legend(
        handles, labels, fontsize=7, ncol=ncol, loc="upper center", bbox_to_anchor=(0.5, 0.0)
    )
    save(figure, out)
    plt.close(figure)


def plot_preprocessing(out: Path) -> None:
    """The LSTM's two inputs for gradients ±10^-12 … ±10^4: Appendix A (p = 10, the paper's)
    and LogAndSign (k = 5, the released code's). Without preprocessing the LSTM would see ∇
    itself, sixteen orders of magnitude apart; with it both inputs lie in a bounded range."""
    plt = pyplot()
    magnitude = onp.logspace(-12, 4, 801)
    figure, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    maps = {"Appendix A, p = 10 (paper)": (appendix_a, 10.0, "tab:red"),
            "LogAndSign, k = 5 (released code)": (log_and_sign, 5.0, "tab:blue")}  # fmt: skip
    for label, (preprocess, param, colour) in maps.items():
        for sign, style in ((1.0, "-"), (-1.0, ":")):
            inputs = preprocess((sign * magnitude)[:, None], param)
            name = f"{label}, ∇ {'> 0' if sign > 0 else '< 0'}"
            axes[0].plot(magnitude, inputs[:, 0], style, color=colour, label=name)
            axes[1].plot(magnitude, inputs[:, 1], style, color=colour, label=name)
        threshold = onp.exp(-param)
        for axis in axes:
            axis.axvline(threshold, color=colour, lw=0.6, alpha=0.5)
    axes[0].set(xscale="log", xlabel="|∇|", ylabel="first input", title="magnitude part")
    axes[1].set(xscale="log", xlabel="|∇|", ylabel="second input", title="sign part")
    axes[1].legend(fontsize=7, loc="center right")
    figure.suptitle(
        "LSTM inputs per coordinate (thin lines: the branch points e^-p, e^-k)", fontsize=9
    )
    figure.tight_layout()
    save(figure, out)
    plt.close(figure)


def is_search(path: Path) -> bool:
    """Whether `path` is a search.json of `l2l-ref search`."""
    try:
        return json.loads(Path(path).read_text()).get("format") == "l2l-ref-search"
    except (OSError, ValueError, AttributeError):
        return False


def load_search(path: Path) -> dict:
    """A search.json, checked for what plot_search reads."""
    document = read_record(path)  # every field checked, its errors naming the field
    try:
        done = [t for t in document["trials"].values() if t["status"] == "done"]
        numbers([t["best_validation"] for t in done] + [t["meta_lr"] for t in done])
        for results in document["test"].values():
            paired = [e["minus_learned"] for name, e in results.items() if name != LEARNED]
            numbers([p["mean"] for p in paired] + [p["stderr"] for p in paired])
        numbers(document["settings"]["seeds"] + document["settings"]["meta_lr_range"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise PlotError(f"{path}: not a search file of l2l-ref ({error!r})") from None
    return document


def plot_search(document: dict, out: Path) -> None:
    """A search: every trial's best validation loss against its meta learning rate (one colour
    per seed, the selected trials ringed), and for each seed the paired difference of each
    tuned baseline minus the selected LSTM on the test problems, ± 1 s.e."""
    plt = pyplot()
    figure, (trials, paired) = plt.subplots(1, 2, figsize=(10, 3.8))
    seeds = document["settings"]["seeds"]
    colours = {seed: f"C{n % 10}" for n, seed in enumerate(seeds)}
    chosen = {(s["seed"], s["index"]) for s in document["selection"].values() if s}
    for entry in document["trials"].values():
        if entry["status"] != "done":
            continue
        point = (entry["meta_lr"], entry["best_validation"])
        trials.scatter(*point, color=colours.get(entry["seed"], "grey"), s=22)
        if (entry["seed"], entry["index"]) in chosen:
            trials.scatter(*point, facecolors="none", edgecolors="black", s=90, lw=1.2)
    for seed in seeds:
        trials.scatter([], [], color=colours[seed], label=f"seed {seed}")
    trials.set(xscale="log", yscale="log", xlabel="meta learning rate")
    trials.set(ylabel="best mean final validation loss", title="trials (ringed: selected)")
    label_log_axis(trials.xaxis)
    label_log_axis(trials.yaxis)
    trials.legend(fontsize=8)
    names = sorted({n for r in document["test"].values() for n in r if n != LEARNED})
    tested = sorted(document["test"].items(), key=lambda item: int(item[0]))
    for k, (seed, results) in enumerate(tested):
        for n, name in enumerate(names):
            paired_diff = results[name]["minus_learned"]
            x = n + (k - (len(document["test"]) - 1) / 2) * 0.12
            label = f"seed {seed}" if n == 0 else None
            paired.errorbar(x, paired_diff["mean"], paired_diff["stderr"], fmt="o", ms=4,
                            color=colours.get(int(seed), "grey"), label=label)  # fmt: skip
    paired.axhline(0.0, color="black", lw=0.8)
    paired.set_xticks(range(len(names)), names)
    learned = optimizer_name(document["settings"]["run"]["optimizer"])
    paired.set(
        ylabel=f"baseline − {learned}, final test loss",
        title=f"paired differences (> 0: {learned} lower)",
    )
    paired.legend(fontsize=8)
    run = document["settings"]["run"]
    train = run["train"]
    count, (low, high) = document["settings"]["trials"], document["settings"]["meta_lr_range"]
    caption = (
        f"{run['problem']}, preset {run['preset']}, {optimizer_label(run['optimizer'])}, "
        f"{train['epochs']} epochs, {train['steps']} steps, {count} trial"
        f"{'s' if count > 1 else ''} per seed, meta lr {low:g}–{high:g}"
    )
    figure.suptitle(caption + made_on(list(document["trials"].values())), fontsize=9)
    figure.tight_layout()
    save(figure, out)
    plt.close(figure)
