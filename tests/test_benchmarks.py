"""The benchmarks run against today's package: they reach into its modules by name (to time
its parts), so a rename there breaks them without breaking any other test."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_trial_benchmark_runs_and_accounts_for_every_part():
    """benchmarks/trial.py on a tiny quadratic trial with another beside it: every part it
    wraps exists, each is timed, and both trials' projections and the search's are printed."""
    result = subprocess.run(
        [sys.executable, "trial.py", "--problem", "quadratic", "--epochs", "1",
         "--eval-every", "1", "--test-problems", "2", "--side-by-side"],
        cwd=BENCHMARKS, capture_output=True, text=True, timeout=300,
        env={**os.environ, "L2L_REF_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for part in ("meta-step", "validation", "baseline tuning", "test comparison", "state files"):
        assert f"\n{part} " in result.stdout, part
    projections = "projected for 1800 epochs and 37 validations"
    assert result.stdout.count(projections) == 2, result.stdout
    assert "with another trial beside it" in result.stdout
    assert "\nthe 2-trial search on 2 cores: " in result.stdout


def test_the_cell_account_runs_and_names_every_part():
    """benchmarks/cell_account.py, once: the meta-step's ten parts and the floor are printed.
    The tape's traffic and the rest are defined as what the other parts leave, so the parts
    add up to the meta-step by construction: the sum catches a part printed twice or left
    out, not a wrong time."""
    result = subprocess.run(
        [sys.executable, "cell_account.py", "--repeats", "1", "--dtypes", "float32"],
        cwd=BENCHMARKS, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    meta_step = float(next(line for line in lines if " s on one core" in line).split()[2])
    parts = [line for line in lines if line.endswith("%") and not line.startswith("part")]
    assert len(parts) == 10
    assert sum(float(line.split()[-2]) for line in parts) == pytest.approx(meta_step, abs=2e-3)
    assert "floor: its products" in result.stdout
