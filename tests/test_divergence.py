"""Divergence said plainly (l2l_ref.divergence): which runs diverged, the summaries one of them
cannot move, the log scale the claims are judged on; against hand computations."""

import math

import numpy as np
import pytest

from l2l_ref import report
from l2l_ref.comparison import paired_difference, sign_test, summarize, table
from l2l_ref.divergence import DIVERGENCE, diverged, log_final
from l2l_ref.files import write_json


def curves(starts, finals):
    """Loss curves of three steps: start, halfway, final."""
    starts, finals = np.asarray(starts, float), np.asarray(finals, float)
    return np.stack([starts, (starts + np.where(np.isfinite(finals), finals, 0)) / 2, finals], 1)


def test_a_run_diverges_past_ten_times_its_start_or_when_not_finite():
    start = np.ones(5)
    assert diverged(start, [0.5, 10.0, 10.5, np.inf, np.nan]).tolist() == [
        False, False, True, True, True,
    ]  # fmt: skip
    assert DIVERGENCE == 10.0
    # the log scale counts a diverged run at the line, however far it went
    assert log_final([2.0, 2.0], [1e300, np.inf]).tolist() == [math.log(20.0)] * 2


def test_the_summary_names_the_diverged_runs_and_summarizes_the_rest():
    entry = summarize(curves([1.0] * 4, [0.5, 0.4, np.inf, 50.0]))
    assert entry["diverged"] == 2 and entry["diverged_on"] == [2, 3]
    assert entry["final_median"] == pytest.approx((0.5 + 50.0) / 2)
    assert entry["final_mean_rest"] == pytest.approx(0.45)
    assert entry["final_stderr_rest"] == pytest.approx(0.05)  # sd 0.1/√2 over √2
    assert entry["final_losses"][:2] == [0.5, 0.4] and math.isinf(entry["final_losses"][2])
    assert entry["mean_loss_rest"] == pytest.approx([1.0, 0.725, 0.45])


def test_the_paired_log_ratio_counts_a_blow_up_at_the_line():
    baseline = curves([1.0, 1.0, 1.0], [0.5, np.inf, 0.2])
    lstm = curves([1.0, 1.0, 1.0], [0.25, 0.25, 0.4])
    paired = paired_difference(baseline, lstm)
    ratios = [math.log(0.5 / 0.25), math.log(10.0 / 0.25), math.log(0.2 / 0.4)]
    mean = sum(ratios) / 3
    sd = math.sqrt(sum((r - mean) ** 2 for r in ratios) / 2)
    assert paired["log_ratio"]["mean"] == pytest.approx(mean)
    assert paired["log_ratio"]["stderr"] == pytest.approx(sd / math.sqrt(3))
    assert paired["learned_lower_on"] == 2 and paired["learned_higher_on"] == 1
    assert paired["sign_test_p"] == pytest.approx(1.0)  # 2 against 1: no evidence


@pytest.mark.parametrize(
    ("lower", "higher", "p"), [(5, 0, 2 / 32), (9, 1, 2 * 11 / 1024), (3, 3, 1.0), (0, 0, 1.0)]
)
def test_sign_test_against_the_binomial(lower, higher, p):
    assert sign_test(lower, higher) == pytest.approx(p)


def test_the_table_says_what_diverged():
    lstm = curves([1.0] * 4, [0.2, 0.3, 0.25, 0.2])
    sgd = curves([1.0] * 4, [0.5, 0.6, 5e40, 0.4])
    results = {"learned": summarize(lstm), "SGD": {"learning_rate": 2.0, **summarize(sgd)}}
    results["SGD"]["minus_learned"] = paired_difference(sgd, lstm)
    text = table(results, "a header")
    sgd_line = next(line for line in text.splitlines() if line.startswith("SGD"))
    assert " 1 " in sgd_line and "0.55" in sgd_line  # one diverged; the median of the four
    assert "diverged: a final loss not finite or above 10 × f(θ_0)" in text
    assert "SGD 0.5 ± 0.058 (3 runs)" in text


def document(folder, seed, lstm_finals, baselines):
    """A results file of one seed as the comparison writes it, from final losses (start 1)."""
    n = len(lstm_finals)
    lstm = curves([1.0] * n, lstm_finals)
    results = {"learned": summarize(lstm)}
    for name, finals in baselines.items():
        other = curves([1.0] * n, finals)
        results[name] = {
            "learning_rate": 1.0,
            **summarize(other),
            "minus_learned": paired_difference(other, lstm),
        }
    record = {
        "problem": {"name": "quadratic", "settings": {}}, "preset": "paper",
        "optimizer": {"layers": [20, 20]}, "steps": 100, "seed": seed,
        "train": {"epochs": 10, "meta_lr": 0.1, "seed": seed, "trial": 0}, "results": results,
    }  # fmt: skip
    path = folder / f"seed{seed}.json"
    write_json(path, record)
    return path


def test_one_blow_up_cannot_swing_the_verdict(tmp_path, capsys):
    """Seed 0: SGD blows up on one problem of four (its plain mean difference is 1e40); seed
    1: the LSTM does (its plain mean difference against every baseline is −inf). On the log
    scale both count at the divergence line: the LSTM, lower on three of four problems by
    log 2 in each seed, holds against SGD and loses nothing else to the blow-ups."""
    paths = [
        document(tmp_path, 0, [0.2, 0.2, 0.2, 0.2], {"SGD": [0.4, 0.4, 4e40, 0.4]}),
        document(tmp_path, 1, [0.2, 0.2, 0.2, np.inf], {"SGD": [0.4, 0.4, 0.4, 0.4]}),
        document(tmp_path, 2, [0.2, 0.2, 0.2, 0.2], {"SGD": [0.4, 0.4, 0.4, 0.2]}),
    ]
    (claim,) = report.summarize(report.load(paths))
    per_seed = {e["seed"]: e["baselines"]["SGD"] for e in claim["per_seed"]}
    assert per_seed[0]["mean"] > 1e39 and math.isinf(per_seed[1]["mean"])
    log2 = math.log(2.0)
    assert per_seed[0]["log_mean"] == pytest.approx((3 * log2 + math.log(10 / 0.2)) / 4)
    assert per_seed[1]["log_mean"] == pytest.approx((3 * log2 + math.log(0.4 / 10)) / 4)
    assert per_seed[2]["log_mean"] == pytest.approx(3 * log2 / 4)
    assert claim["verdict"] == "undecided: an interval contains zero"  # seed 1 pulls it down
    out = report.render([claim])
    assert "diverged: seed 0: SGD on 1 of 4; seed 1: LSTM on 1 of 4" in out
    assert "verdict, on the log of the final loss" in out
