"""Evaluation: the learned optimizer against tuned baselines on fresh test problems (§3).

Baseline learning rates are tuned on the validation problems (the same stream that early
stopping uses), never on the test problems; every optimizer then runs on the same test
problems, drawn from a stream of the seed that training never touches.
"""

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as onp

from l2l_ref.baselines import BASELINES, LEARNING_RATES, run_baseline, tune_learning_rate
from l2l_ref.checkpoint import write_atomically
from l2l_ref.errors import ConfigError
from l2l_ref.meta_train import assign_networks, rng_for, run_optimizer
from l2l_ref.optimizer import OptimizerConfig
from l2l_ref.problems import Problem, ToDevice, checked_sample, host_float64


def mean_and_stderr(values: onp.ndarray) -> tuple[float, float]:
    """Sample mean and its standard error (sample standard deviation / sqrt(n))."""
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def summarize(curves: onp.ndarray) -> dict:
    """Mean and standard error of the loss at every step, and of the final loss, over problems."""
    final = curves[:, -1]
    mean, stderr = mean_and_stderr(final)
    return {
        "mean_loss": curves.mean(axis=0).tolist(),
        "stderr_loss": (curves.std(axis=0, ddof=1) / math.sqrt(len(curves))).tolist(),
        "final_mean": mean,
        "final_stderr": stderr,
        "final_losses": final.tolist(),
    }


def paired_difference(baseline_final: onp.ndarray, lstm_final: onp.ndarray) -> dict:
    """Baseline minus LSTM final loss on the same test problems: positive means the LSTM is
    lower. Pairing removes the spread between problems from the comparison."""
    difference = baseline_final - lstm_final
    mean, stderr = mean_and_stderr(difference)
    return {"mean": mean, "stderr": stderr, "lstm_lower_on": int((difference > 0).sum())}


def serving_networks(
    groups: dict, tensors: list, problem: Problem, config: OptimizerConfig, phi: dict
) -> dict:
    """Which of φ's networks serves each tensor of the optimizee evaluated: the saved
    assignment where it names the tensor, the training rule (assign_networks) for the tensors
    of another net (--hidden 20,20 adds W2 and b2)."""
    served = {n: groups[n] for n in tensors if n in groups}
    served |= assign_networks([n for n in tensors if n not in groups], problem, config)
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
    groups: dict,
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
    validation_rng, test_rng = rng_for(seed, "validation"), rng_for(seed, "test")
    validation = [
        checked_sample(problem, validation_rng, to_device, "validation")
        for _ in range(validation_problems)
    ]
    test = [checked_sample(problem, test_rng, to_device, "test") for _ in range(test_problems)]
    groups = serving_networks(groups, list(test[0].theta0), problem, config, phi)
    with onp.errstate(all="ignore"):
        lstm = onp.stack(
            [run_optimizer(phi, inst, steps, groups, config, to_host) for inst in test]
        )
        results = {"LSTM": summarize(lstm)}
        for name in baselines:
            lr, tuning = tune_learning_rate(name, validation, steps, to_host, grid)
            curves = onp.stack([run_baseline(name, lr, inst, steps, to_host) for inst in test])
            results[name] = {
                "learning_rate": lr,
                **summarize(curves),
                "minus_lstm": paired_difference(curves[:, -1], lstm[:, -1]),
                "tuning": {str(rate): loss for rate, loss in tuning.items()},
            }
    return results


def _finite_or_none(value):
    """JSON has no inf or NaN: write them as null."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, document: dict) -> None:
    """Write `document` as JSON, atomically, with non-finite numbers as null."""
    text = json.dumps(_finite_or_none(document), indent=1, allow_nan=False)
    write_atomically(Path(path), (text + "\n").encode())


def table(results: dict, header: str) -> str:
    """A short text table of final losses, headed by the problem and settings."""
    n = len(results["LSTM"]["final_losses"])
    lines = [
        header,
        f"{'optimizer':<10} {'learning rate':>13}  {'final loss (mean ± s.e.)':<26}"
        f"minus LSTM, paired (mean ± s.e., LSTM lower on)",
    ]
    for name, entry in results.items():
        lr = f"{entry['learning_rate']:g}" if "learning_rate" in entry else "-"
        final = f"{entry['final_mean']:.4g} ± {entry['final_stderr']:.2g}"
        versus = "-"
        if "minus_lstm" in entry:
            paired = entry["minus_lstm"]
            versus = (
                f"{paired['mean']:+.3g} ± {paired['stderr']:.2g}, {paired['lstm_lower_on']}/{n}"
            )
        lines.append(f"{name:<10} {lr:>13}  {final:<26}{versus}")
    return "\n".join(lines)
