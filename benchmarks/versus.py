"""The reference against PyTorch eager and jitted JAX, on the same machine, in the same run.

For each optimizee and dtype: one meta-step (a 20-step unroll of the 2×20 coordinatewise LSTM,
its first-order backward pass, the Adam step on φ) in the reference (NumPy backend, as
training runs it), in PyTorch eager (benchmarks/torch_peer.py) and in JAX, the whole step one
jax.jit (benchmarks/jax_peer.py). The three start from the same φ, θ_0 and data and must first
agree on the meta-loss and the meta-gradient (relative error, normwise per tensor of φ, below
1e-10 in float64 and 1e-4 in float32); only then are they timed, interleaved after a warm-up
(JAX's compile time reported, not counted), and their medians, the ratios reference / PyTorch
and reference / JAX, and each one's peak memory (a fresh process each) printed, with the CPU.

    pip install torch --index-url https://download.pytorch.org/whl/cpu   # the CPU build
    pip install -e '.[bench]'        # then jax (torch is kept)
    python benchmarks/versus.py [--repeats 9] [--dtypes float64,float32] [--cases quadratic,mlp]
"""

import argparse
import os
import platform
import statistics
import sys
import time

import jax
import numpy as onp
import torch
from jax_peer import peer
from meta_step import (
    CASES,
    coordinates,
    cpu_description,
    peak_memory,
    report_peak,
    setup,
    setup_step,
)
from torch_peer import torch_gradient, torch_meta_step

from l2l_ref.blocks import subnormals_flushed
from l2l_ref.optimizer import LearnedOptimizer
from l2l_ref.tree import flatten
from l2l_ref.unroll import meta_gradient

TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


def relative_error(found, expected) -> float:
    found, expected = onp.asarray(found, onp.float64), onp.asarray(expected, onp.float64)
    return float(onp.linalg.norm(found - expected) / max(onp.linalg.norm(expected), 1e-300))


def jax_step(s, dtype: str):
    """A closure running the jitted JAX meta-step on a fixed φ, and the seconds it took to
    compile."""
    arguments, step = peer(s, dtype)
    start = time.perf_counter()
    compiled = step.lower(*arguments).compile()
    seconds = time.perf_counter() - start
    return (lambda: jax.block_until_ready(compiled(*arguments))), seconds


def agreement(case: str, dtype: str) -> dict:
    """The largest relative error of each peer's meta-loss and meta-gradient (every tensor of
    φ) against the reference's, on one unroll from the same φ, θ_0 and data."""
    make_problem, config = CASES[case]
    s = setup(make_problem(), dtype, config=config)
    with subnormals_flushed(dtype == "float32"):
        phi_grad, L, _, _ = meta_gradient(
            s.phi, s.instance.theta0, s.hidden, s.instance, 0,
            s.train.unroll_weights(), LearnedOptimizer(s.config, s.networks),
        )  # fmt: skip
    expected = flatten(phi_grad)
    torch_L, torch_grad = torch_gradient(s, dtype)
    arguments, step = peer(s, dtype)
    *_, jax_L, jax_grad = step(*arguments)
    jax_grad = flatten(jax_grad)
    return {
        "torch": max([relative_error(torch_L, L)]
                     + [relative_error(torch_grad[k], v) for k, v in expected.items()]),
        "jax": max([relative_error(jax_L, L)]
                   + [relative_error(jax_grad[k], v) for k, v in expected.items()]),
    }  # fmt: skip


def interleaved(steps: dict, repeats: int) -> dict:
    """Median seconds of each step, timed in rotating order after one warm-up each."""
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    names = list(steps)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--peak-of", nargs=3, help=argparse.SUPPRESS)  # IMPL CASE DTYPE
    args = parser.parse_args()
    if args.peak_of:
        impl, case, dtype = args.peak_of
        make_problem, config = CASES[case]
        s = setup(make_problem(), dtype, config=config)
        if impl == "reference":
            return report_peak(setup_step(s, dtype))
        if impl == "torch":
            return report_peak(torch_meta_step(s, dtype))
        step, _ = jax_step(s, dtype)
        return report_peak(step)

    print(f"cpu: {cpu_description()}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; numpy {onp.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), jax {jax.__version__}"
    )
    print(
        f"one meta-step: paper preset, unroll 20, LSTM 2×20, first order; median of "
        f"{args.repeats} interleaved after a warm-up; peak = memory one step adds (RSS)"
    )
    columns = ("coords", 7), ("dtype", 8), ("err torch", 9), ("err jax", 8), ("ref s", 7)
    columns += ("torch s", 7), ("jax s", 7), ("ref/torch", 9), ("ref/jax", 7)
    columns += ("compile", 7), ("ref MiB", 7), ("torch MiB", 9), ("jax MiB", 7)
    print(f"{'optimizee':<10} " + " ".join(f"{name:>{width}}" for name, width in columns))
    failed = False
    for case in args.cases.split(","):
        make_problem, config = CASES[case]
        problem = make_problem()
        for dtype in args.dtypes.split(","):
            errors = agreement(case, dtype)
            row = f"{case:<10} {coordinates(problem):>7} {dtype:>8} "
            row += f"{errors['torch']:>9.1e} {errors['jax']:>8.1e}"
            if max(errors.values()) >= TOLERANCE[dtype]:
                print(f"{row}  disagree: tolerance {TOLERANCE[dtype]:.0e}, not timed")
                failed = True
                continue
            s = setup(problem, dtype, config=config)
            jax_one, compile_seconds = jax_step(setup(problem, dtype, config=config), dtype)
            steps = {
                "reference": setup_step(s, dtype),
                "torch": torch_meta_step(setup(problem, dtype, config=config), dtype),
                "jax": jax_one,
            }
            seconds = interleaved(steps, args.repeats)
            peaks = {impl: peak_memory("versus.py", impl, case, dtype) for impl in steps}
            ref, tor, jx = (seconds[k] for k in ("reference", "torch", "jax"))
            print(
                f"{row} {ref:>7.3f} {tor:>7.3f} {jx:>7.3f} {ref / tor:>9.2f} {ref / jx:>7.2f} "
                f"{compile_seconds:>7.2f} {peaks['reference']:>7.1f} {peaks['torch']:>9.1f} "
                f"{peaks['jax']:>7.1f}",
                flush=True,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
