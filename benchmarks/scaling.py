"""How the cost of a meta-step grows with the number of coordinates and the unroll length.

One meta-step (paper preset's quadratic optimizer: LSTM 2×20, no preprocessing; first order,
the training path) on quadratics of N/10 independent 10-dimensional problems, for N from 1e3
to 1e6 coordinates and unroll lengths T of 5, 20 and 100. Prints seconds per meta-step (median
of 3 after a warm-up; one run from 1e5 coordinates on) and the memory one meta-step adds at its
peak (benchmarks/meta_step.peak_memory), next to the formula of docs/performance.md:

    memory ≈ T · N · (7 L H + n_in + 1) · bytes per number

Points whose formula exceeds --max-gib are not run; their predicted memory is printed.

    python benchmarks/scaling.py [--dtype float64] [--max-gib 8]
"""

import argparse
import sys
import time

from meta_step import cpu_description, median_seconds, one_meta_step, peak_memory, report_peak

from l2l_ref.architectures.lstm import tape_bytes
from l2l_ref.presets import optimizer_for
from l2l_ref.problems import quadratic

COORDINATES = (1_000, 10_000, 100_000, 1_000_000)
UNROLLS = (5, 20, 100)
CONFIG = optimizer_for("quadratic", "paper")


def predicted_mib(coords: int, unroll: int, dtype: str) -> float:
    """docs/performance.md's formula: what the backward pass keeps per coordinate and step."""
    itemsize = 8 if dtype == "float64" else 4
    return tape_bytes(unroll, coords, CONFIG.layers, CONFIG.input_size, itemsize) / 2**20


def step_for(coords: int, unroll: int, dtype: str):
    return one_meta_step(quadratic(batch=coords // 10), dtype, unroll=unroll, config=CONFIG)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--max-gib", type=float, default=8.0)
    parser.add_argument("--peak-of", nargs=3, help=argparse.SUPPRESS)  # COORDS UNROLL DTYPE
    args = parser.parse_args()
    if args.peak_of:
        coords, unroll, dtype = args.peak_of
        return report_peak(step_for(int(coords), int(unroll), dtype))
    print(f"cpu: {cpu_description()}")
    print(f"quadratic, LSTM 2×20, first order, {args.dtype}; memory: measured (formula)")
    print(f"{'coords':>10} {'unroll':>6} {'s/meta-step':>12} {'s per step':>11} {'MiB':>18}")
    for coords in COORDINATES:
        for unroll in UNROLLS:
            formula = predicted_mib(coords, unroll, args.dtype)
            if formula > args.max_gib * 1024:
                print(
                    f"{coords:>10,} {unroll:>6} {'not run':>12} {'':>11} {f'({formula:,.0f})':>18}"
                )
                continue
            step = step_for(coords, unroll, args.dtype)
            if coords >= 100_000:
                start = time.perf_counter()
                step()
                seconds = time.perf_counter() - start
            else:
                seconds = median_seconds(step, 3)
            del step
            runs = 1 if coords >= 100_000 else 3
            peak = peak_memory("scaling.py", str(coords), str(unroll), args.dtype, runs=runs)
            memory = f"{peak:,.0f} ({formula:,.0f})"
            print(
                f"{coords:>10,} {unroll:>6} {seconds:>12.3f} {seconds / unroll:>11.4f} {memory:>18}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
