"""Evaluation: the learned optimizer against tuned baselines on fresh test problems (§3).

Baseline learning rates are tuned on the validation problems (the same stream that early
stopping uses), never on the test problems; every optimizer then runs on the same test
problems, drawn from a stream of the seed that training never touches.
"""

import math
from collections.abc import Callable

import numpy as onp

from l2l_ref import checks
from l2l_ref.baselines import BASELINES, LEARNING_RATES, run_baseline, tune_learning_rate
from l2l_ref.divergence import DIVERGENCE, diverged, log_final
from l2l_ref.errors import ConfigError
from l2l_ref.frozen import run_on_each
from l2l_ref.optimizer import LearnedOptimizer, OptimizerConfig, assign_networks
from l2l_ref.problems import Problem, ToDevice, draw_problems, host_float64


def mean_and_stderr(values: onp.ndarray) -> tuple[float, float]:
    """Sample mean and its standard error (sample standard deviation / sqrt(n)); NaN for the
    standard error of one value."""
    values = onp.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), math.nan
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def summarize(curves: onp.ndarray) -> dict:
    """Mean and standard error of the loss at every step, and of the final loss, over problems;
    which runs diverged (l2l_ref.divergence), and the final loss's median and its mean and
    standard error over the runs that did not: what one blown-up run cannot move."""
    with onp.errstate(all="ignore"):  # a diverged run's inf makes the plain mean inf or NaN
        return _summary(curves)


def _summary(curves: onp.ndarray) -> dict:
    initial, final = curves[:, 0], curves[:, -1]
    mean, stderr = mean_and_stderr(final)
    gone = diverged(initial, final)
    rest = mean_and_stderr(final[~gone]) if (~gone).any() else (None, None)
    kept = curves[~gone]
    return {
        "mean_loss": curves.mean(axis=0).tolist(),
        "stderr_loss": (curves.std(axis=0, ddof=1) / math.sqrt(len(curves))).tolist(),
        "final_mean": mean,
        "final_stderr": stderr,
        "final_losses": final.tolist(),
        "initial_losses": initial.tolist(),
        "diverged": int(gone.sum()),
        "diverged_on": onp.flatnonzero(gone).tolist(),
        "final_median": float(onp.median(onp.where(onp.isnan(final), onp.inf, final))),
        "final_mean_rest": rest[0],
        "final_stderr_rest": rest[1],
        # what a figure draws when some runs diverged: the others' mean curve and its s.e.
        "mean_loss_rest": kept.mean(axis=0).tolist() if len(kept) else None,
        "stderr_loss_rest": (
            (kept.std(axis=0, ddof=1) / math.sqrt(len(kept))).tolist() if len(kept) > 1 else None
        ),
    }


def sign_test(lower: int, higher: int) -> float:
    """Two-sided p-value of `lower` against `higher` under a fair coin (ties left out)."""
    n = lower + higher
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(lower, higher) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_difference(baseline: onp.ndarray, learned: onp.ndarray) -> dict:
    """Baseline against the learned optimizer on the same test problems, from their loss
    curves (problems × steps): the final loss's difference, baseline minus learned (positive:
    the learned optimizer is lower), and the difference of log final losses with diverged
    runs at the divergence line (`log_ratio`, the scale the claims are judged on:
    l2l_ref.report); on how many problems the learned optimizer is lower and higher, and the
    sign test's p-value. Pairing removes the spread between problems from the comparison."""
    with onp.errstate(all="ignore"):
        return _paired(baseline, learned)


def _paired(baseline: onp.ndarray, learned: onp.ndarray) -> dict:
    difference = baseline[:, -1] - learned[:, -1]
    mean, stderr = mean_and_stderr(difference)
    log_ratio = log_final(baseline[:, 0], baseline[:, -1]) - log_final(
        learned[:, 0], learned[:, -1]
    )
    log_mean, log_stderr = mean_and_stderr(log_ratio)
    lower, higher = int((log_ratio > 0).sum()), int((log_ratio < 0).sum())
    return {
        "mean": mean,
        "stderr": stderr,
        "learned_lower_on": int((difference > 0).sum()),
        "log_ratio": {"mean": log_mean, "stderr": log_stderr},
        "learned_higher_on": int((difference < 0).sum()),
        "sign_test_p": sign_test(lower, higher),
    }


def serving_networks(
    networks: dict, tensors: list, problem: Problem, config: OptimizerConfig, phi: dict
) -> dict:
    """Which of φ's networks serves each tensor of the optimizee evaluated: the saved
    assignment where it names the tensor, the training rule (assign_networks) for the tensors
    of another net (--hidden 20,20 adds W2 and b2)."""
    served = {n: networks[n] for n in tensors if n in networks}
    served |= assign_networks([n for n in tensors if n not in networks], problem, config)
    missing = sorted({network for network in served.values() if network not in phi})
    if missing:
        raise ConfigError(
            f"this optimizee needs optimizer network(s) {', '.join(missing)}, which the "
            f"checkpoint does not have (it has {', '.join(sorted(phi))})"
        )
    return served


def evaluate(
    problem: Problem,
    phi: dict,
    networks: dict,
    config: OptimizerConfig,
    *,
    steps: int = 100,
    test_problems: int = 32,
    validation_problems: int = 8,
    seed: int = 0,
    to_device: ToDevice = host_float64,
    to_host: Callable = onp.asarray,
    baselines=tuple(BASELINES),
    grid=LEARNING_RATES,
) -> dict:
    """Run the learned optimizer φ and each baseline, its learning rate tuned over `grid` on
    the seed's validation problems, on the seed's `test_problems` fresh test problems."""
    if test_problems < 2:
        raise ConfigError("need at least 2 test problems for a standard error")
    validation = draw_problems(problem, seed, "validation", validation_problems, to_device)
    test = draw_problems(problem, seed, "test", test_problems, to_device)
    served = serving_networks(networks, list(test[0].theta0), problem, config, phi)
    with onp.errstate(all="ignore"):
        learned = run_on_each(phi, test, steps, LearnedOptimizer(config, served), to_host)
        results = {LEARNED: summarize(learned)}
        for name in baselines:
            lr, tuning = tune_learning_rate(name, validation, steps, to_host, grid)
            curves = onp.stack([run_baseline(name, lr, inst, steps, to_host) for inst in test])
            results[name] = {
                "learning_rate": lr,
                **summarize(curves),
                "minus_learned": paired_difference(curves, learned),
                "tuning": {str(rate): entry for rate, entry in tuning.items()},
            }
    return results


# the learned optimizer's key in a comparison's results, whatever its architecture (tables name
# it by the architecture's NAME); before 2026-12-07 files keyed it "LSTM", and RENAMED maps
# those files' keys to today's
LEARNED = "learned"
RENAMED = {
    "LSTM": LEARNED, "minus_lstm": "minus_learned", "lstm_lower_on": "learned_lower_on",
    "lstm_higher_on": "learned_higher_on",
}  # fmt: skip


def current_results(results: dict) -> dict:
    """A comparison's results with today's keys (RENAMED), as `evaluate` writes them."""

    def renamed(value):
        if not isinstance(value, dict):
            return value
        return {RENAMED.get(key, key): renamed(entry) for key, entry in value.items()}

    return renamed(results)


def check_results(results, name: str = "results") -> dict:
    """A comparison's results as read back from a file, every field a table, the report and
    the figures read, returned with today's keys (current_results): the learned optimizer
    and at least one baseline, each with its final
    losses on the same n ≥ 2 problems (null: not finite), their mean, and a baseline's rate
    and paired difference; the fields of the summaries added since (diverged runs, the log
    ratio) where they are present."""
    results = current_results(checks.mapping(results, name))
    if LEARNED not in results or len(results) < 2:
        raise ConfigError(
            f"{name} must hold the learned optimizer ({LEARNED!r}) and at least one baseline, "
            f"not {list(results)}"
        )
    n = None
    for optimizer, entry in results.items():
        where = f"{name}[{optimizer!r}]"
        checks.mapping(entry, where)
        finals = checks.numbers(entry["final_losses"], f"{where}.final_losses", infinite=True)
        n = len(finals) if n is None else n
        if len(finals) != n or n < 2:
            raise ConfigError(f"{where}.final_losses has {len(finals)} problems, not {n} (≥ 2)")
        checks.number(entry["final_mean"], f"{where}.final_mean", infinite=True)
        if "diverged" in entry:
            checks.integer(entry["diverged"], f"{where}.diverged", 0, n)
        if optimizer == LEARNED:
            continue
        checks.number(entry["learning_rate"], f"{where}.learning_rate", low=0)
        paired = checks.mapping(entry["minus_learned"], f"{where}.minus_learned")
        for key in ("mean", "stderr"):
            value = paired[key]
            if value is not None:  # null: a blow-up's inf or NaN
                checks.number(value, f"{where}.minus_learned.{key}")
        checks.integer(paired["learned_lower_on"], f"{where}.minus_learned.learned_lower_on", 0, n)
        if "log_ratio" in paired:
            ratio = checks.mapping(paired["log_ratio"], f"{where}.minus_learned.log_ratio")
            checks.number(ratio["mean"], f"{where}.minus_learned.log_ratio.mean")
    return results


def _number(value, spec: str) -> str:
    """A number of a results document (JSON writes inf and NaN as null) for a table."""
    return "inf" if value is None else format(value, spec)


def table(results: dict, header: str, learned: str = "LSTM") -> str:
    """A short text table of final losses, headed by the problem and settings: per optimizer
    the mean and its standard error, the median and on how many problems it diverged; against
    the learned optimizer (results' LEARNED, named `learned`), the paired difference of final
    losses and of their logs (diverged runs at the divergence line), and on how many problems
    it ends lower. Below it, for optimizers that diverged somewhere, the mean over the runs
    that did not."""
    n = len(results[LEARNED]["final_losses"])
    against = f"minus {learned}, paired: mean ± s.e."
    width = max(33, len(against) + 1)
    lines = [
        header,
        f"{'optimizer':<10} {'learning rate':>13}  {'final loss: mean ± s.e.':<24}"
        f"{'median':>9} {'diverged':>9}   {against:<{width}}"
        f"{'log ratio ± s.e.':<18}{learned} lower on",
    ]
    rest = []
    for key, entry in results.items():
        name = learned if key == LEARNED else key
        lr = f"{entry['learning_rate']:g}" if "learning_rate" in entry else "-"
        final = f"{_number(entry['final_mean'], '.4g')} ± {_number(entry['final_stderr'], '.2g')}"
        median = _number(entry.get("final_median"), ".4g") if "final_median" in entry else "-"
        gone = entry.get("diverged")
        versus, log_ratio, lower = "-", "-", "-"
        if "minus_learned" in entry:
            paired = entry["minus_learned"]
            versus = f"{_number(paired['mean'], '+.3g')} ± {_number(paired['stderr'], '.2g')}"
            lower = f"{paired['learned_lower_on']}/{n}"
            if "log_ratio" in paired:
                ratio = paired["log_ratio"]
                log_ratio = f"{_number(ratio['mean'], '+.3f')} ± {_number(ratio['stderr'], '.3f')}"
        shown = "-" if gone is None else str(gone)
        lines.append(
            f"{name:<10} {lr:>13}  {final:<24}{median:>9} {shown:>9}   {versus:<{width}}"
            f"{log_ratio:<18}{lower}"
        )
        if gone:
            others = n - gone
            rest.append(
                f"{name} {_number(entry['final_mean_rest'], '.4g')} ± "
                f"{_number(entry['final_stderr_rest'], '.2g')} ({others} runs)"
                if others
                else f"{name}: every run diverged"
            )
    if rest:
        lines.append(
            f"diverged: a final loss not finite or above {DIVERGENCE:g} × f(θ_0); the mean over "
            f"the runs that did not: {'; '.join(rest)}"
        )
    return "\n".join(lines)
