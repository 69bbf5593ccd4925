"""The GPU check of the CuPy backend, in one command that needs no package registry.

1. Runs the CuPy agreement tests (tests/test_backends.py, float64, tight tolerances) and
   fails if they fail or are skipped.
2. Times one meta-step (an unroll of --unroll steps of the 2×20 LSTM optimizer, its
   first-order backward pass and the Adam step on φ) at 1,280, 15,910, 100,000 and
   1,000,000 optimizee coordinates on the NumPy and the CuPy backend, and prints a table.
   1,280: the paper's quadratic, 128 × 10; 15,910: the MNIST-sized MLP 784-20-10 on synthetic
   images; 100,000 and 1,000,000: quadratics of 10,000 and 100,000 10-dimensional problems.

On the GPU machine (numpy, cupy, pytest and hypothesis there; autograd carried as a wheel):

    PYTHONPATH=.whl/autograd-1.9.1-py3-none-any.whl:. python3 benchmarks/gpu_check.py
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as onp
from meta_step import one_meta_step, synthetic_mlp

from l2l_ref.backends import BackendError, get_backend
from l2l_ref.problems import quadratic

ROOT = Path(__file__).resolve().parent.parent
SIZES = {
    1_280: lambda: quadratic(batch=128),
    15_910: synthetic_mlp,
    100_000: lambda: quadratic(batch=10_000),
    1_000_000: lambda: quadratic(batch=100_000),
}


def agreement_tests() -> bool:
    """The CuPy agreement tests, run by pytest; True when they ran and passed."""
    command = [sys.executable, "-m", "pytest", "tests/test_backends.py", "-k", "cupy", "-rs"]
    result = subprocess.run(
        [*command, "-q", "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(f"agreement tests (NumPy vs CuPy, float64): {summary}")
    if result.returncode != 0 or "skipped" in summary:
        print(result.stdout[-4000:] + result.stderr[-4000:])
        return False
    return True


def seconds_per_meta_step(coords: int, backend: str, dtype: str, unroll: int, repeats: int):
    """Median seconds of one meta-step. CuPy gets a warm-up run (it compiles its kernels on
    first use); NumPy, which needs none, runs once only from 100,000 coordinates on, where a
    meta-step takes minutes."""
    step = one_meta_step(SIZES[coords](), dtype, backend, unroll)
    if backend != "numpy":
        step()
    elif coords >= 100_000:
        repeats = 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()  # ends with the meta-loss copied to the host, so the device has finished
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unroll", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = parser.parse_args()

    try:
        cupy_backend = get_backend("cupy")
    except BackendError as error:
        print(f"gpu_check: {error}", file=sys.stderr)
        return 2
    cupy = sys.modules["cupy"]
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(f"GPU: {name}; CuPy {cupy.__version__}; NumPy {onp.__version__}")
    passed = args.skip_tests or agreement_tests()

    settings = f"unroll {args.unroll}, LSTM 2×20, {args.dtype}"
    print(f"\none meta-step ({settings}), median of {args.repeats} (NumPy: 1 from 100,000 on):")
    print(f"{'coordinates':>12} {'numpy s':>10} {'cupy s':>10} {'speed-up':>9}")
    for coords in map(int, args.sizes.split(",")):
        numpy_s, cupy_s = (
            seconds_per_meta_step(coords, backend, args.dtype, args.unroll, args.repeats)
            for backend in ("numpy", cupy_backend.name)
        )
        print(f"{coords:>12,} {numpy_s:>10.3f} {cupy_s:>10.3f} {numpy_s / cupy_s:>8.1f}x")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
