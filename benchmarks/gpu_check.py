"""The GPU check of the CuPy backend, in one command that needs no package registry.

1. Agreement: the CuPy tests of tests/test_backends.py (meta-loss, meta-gradient and one
   meta-Adam step against NumPy, float64, relative tolerance 1e-11, for hypothesis-drawn
   configurations; the MLP and the conv net); fails if they fail or are skipped.
2. Speed and memory: one meta-step (an unroll of --unroll steps of the 2×20 LSTM optimizer, its
   first-order backward pass and the Adam step on φ) at 1,280, 15,910, 100,000 and 1,000,000
   optimizee coordinates on NumPy (this machine's CPU) and on CuPy, in each dtype; the GPU's
   peak memory for the step against the tape formula (l2l_ref.architectures.lstm.tape_bytes).
   1,280: the paper's quadratic, 128 × 10; 15,910: the MNIST-sized MLP 784-20-10 on synthetic
   images; 100,000 and 1,000,000: quadratics of 10,000 and 100,000 10-dimensional problems.
3. Training: `l2l-ref train` of the quadratic for --train-epochs epochs in float64 on NumPy and
   on CuPy from the same seed, and on NumPy again under another BLAS kernel: φ of the
   checkpoints compared (the largest relative difference, normwise per array), so that the
   GPU's difference from the CPU stands beside the difference between two CPU kernels.

Everything is printed and written, stage by stage, to --out/gpu_check.json. On the GPU
machine (numpy, cupy, pytest and hypothesis there; autograd and l2l-ref carried as wheels):

    PYTHONPATH=.whl/autograd-1.9.1-py3-none-any.whl:.whl/l2l_ref-0.1.0-py3-none-any.whl:. \\
        python3 benchmarks/gpu_check.py --out results/

`--backend strict` runs the same stages on the CPU stand-in of CuPy's array (tests/), small:
a rehearsal of the script itself where no GPU is.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as onp
from meta_step import cpu_description, one_meta_step, synthetic_mlp

from l2l_ref import checkpoint
from l2l_ref.architectures.lstm import tape_bytes
from l2l_ref.backends import BACKENDS, BackendError, get_backend
from l2l_ref.machine import machine
from l2l_ref.optimizer import OptimizerConfig
from l2l_ref.problems import quadratic
from l2l_ref.tree import flatten

ROOT = Path(__file__).resolve().parent.parent
SIZES = {
    1_280: lambda: quadratic(batch=128),
    15_910: synthetic_mlp,
    100_000: lambda: quadratic(batch=10_000),
    1_000_000: lambda: quadratic(batch=100_000),
}
TRAIN = [
    "train", "--problem", "quadratic", "--train-dtype", "float64", "--eval-every", "25",
    "--validation-problems", "2", "--test-problems", "2", "--learning-rates", "0.1,1",
]  # fmt: skip


class Record:
    """The check's figures, written to a JSON file after every stage."""

    def __init__(self, out: Path | None):
        self.path = out / "gpu_check.json" if out else None
        self.data: dict = {"host": machine()}
        if out:
            out.mkdir(parents=True, exist_ok=True)

    def __setitem__(self, key, value):
        self.data[key] = value
        if self.path:
            self.path.write_text(json.dumps(self.data, indent=1) + "\n")


def agreement_tests(backend: str) -> tuple[bool, str]:
    """The device agreement tests, run by pytest: (passed, pytest's summary line)."""
    # the stand-in's tests ([stand-in]), or CuPy's but the one for a machine without a GPU
    selected = "stand" if backend == "strict" else f"{backend} and not without_gpu"
    command = [sys.executable, "-m", "pytest", "tests/test_backends.py", "-k", selected, "-rs"]
    result = subprocess.run(
        [*command, "-q", "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True
    )
    lines = result.stdout.strip().splitlines()
    summary = lines[-1] if lines else result.stderr.strip()[-300:]
    passed = result.returncode == 0 and "skipped" not in summary and "passed" in summary
    if not passed:
        print(result.stdout[-6000:] + result.stderr[-3000:])
    return passed, summary


def synchronised(backend) -> callable:
    """A function that waits until the device has finished its queued work."""
    cupy = sys.modules.get("cupy") if backend.name == "cupy" else None
    return cupy.cuda.Device().synchronize if cupy else (lambda: None)


def peak_device_bytes(backend, step) -> int | None:
    """Bytes CuPy's memory pool holds after one call of step from an empty pool: the pool only
    grows while the step runs (freed blocks are reused, not returned), so this is the step's
    peak, an upper bound by the pool's rounding. None off CuPy."""
    if backend.name != "cupy":
        return None
    pool = sys.modules["cupy"].get_default_memory_pool()
    pool.free_all_blocks()
    step()
    synchronised(backend)()
    return int(pool.total_bytes())


def time_meta_step(coords: int, backend_name: str, dtype: str, unroll: int, repeats: int):
    """Median seconds of one meta-step and the device's peak bytes. A warm-up first (CuPy
    compiles its kernels, both allocate the tape); from 100,000 coordinates on NumPy, where a
    step takes many seconds, one timed run after it."""
    backend = get_backend(backend_name)
    step = one_meta_step(SIZES[coords](), dtype, backend_name, unroll)
    wait = synchronised(backend)
    peak = peak_device_bytes(backend, step)
    if peak is None:
        step()
    if backend_name == "numpy" and coords >= 100_000:
        repeats = 1
    times = []
    for _ in range(repeats):
        wait()
        start = time.perf_counter()
        step()  # ends with the meta-loss copied to the host
        wait()
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak


def speed_table(args, record: Record) -> bool:
    """Stage 2; True when CuPy is at least 10 times faster than NumPy at 1,000,000."""
    rows, fast_enough = [], True
    config = OptimizerConfig()
    for dtype in args.dtypes.split(","):
        itemsize = onp.dtype(dtype).itemsize
        print(f"\none meta-step (unroll {args.unroll}, LSTM 2×20, {dtype}), median of "
              f"{args.repeats} after a warm-up (NumPy from 100,000 on: one):")  # fmt: skip
        print(f"{'coordinates':>12} {'numpy s':>9} {'device s':>9} {'speed-up':>9} "
              f"{'device peak MiB':>16} {'tape formula MiB':>17}")  # fmt: skip
        for coords in map(int, args.sizes.split(",")):
            numpy_s, _ = time_meta_step(coords, "numpy", dtype, args.unroll, args.repeats)
            device_s, peak = time_meta_step(coords, args.backend, dtype, args.unroll, args.repeats)
            n_in = 2 if coords == 15_910 else 1  # the MLP's preprocessing; none on quadratics
            formula = tape_bytes(args.unroll, coords, config.layers, n_in, itemsize)
            row = {
                "coordinates": coords, "dtype": dtype, "numpy_s": numpy_s,
                "device_s": device_s, "speed_up": numpy_s / device_s, "device_peak_bytes": peak,
                "tape_formula_bytes": formula,
            }  # fmt: skip
            rows.append(row)
            record["speed"] = rows
            shown_peak = "-" if peak is None else f"{peak / 2**20:,.0f}"
            print(f"{coords:>12,} {numpy_s:>9.3f} {device_s:>9.4f} {numpy_s / device_s:>8.1f}x "
                  f"{shown_peak:>16} {formula / 2**20:>17,.0f}", flush=True)  # fmt: skip
            if coords == 1_000_000 and numpy_s / device_s < 10:
                fast_enough = False
    return fast_enough


def other_kernel() -> str:
    """An OpenBLAS kernel other than the one in use, that this CPU runs."""
    return "Sandybridge" if machine()["blas"]["kernel"] == "Haswell" else "Haswell"


def relative_difference(a: dict, b: dict) -> float:
    """The largest over arrays of ‖a − b‖ / ‖b‖."""
    return max(float(onp.linalg.norm(a[k] - b[k]) / max(onp.linalg.norm(b[k]), 1e-300)) for k in b)


def train_agreement(args, record: Record) -> float:
    """Stage 3: the relative difference of the device's φ from NumPy's, beside that of NumPy
    under another BLAS kernel."""
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    runs = {
        "numpy": ("numpy", {}),
        args.backend: (args.backend, {}),
        f"numpy, {other_kernel()} kernel": ("numpy", {"OPENBLAS_CORETYPE": other_kernel()}),
    }
    phis, seconds = {}, {}
    for label, (backend, env) in runs.items():
        out = folder / label.replace(" ", "").replace(",", "-")
        command = [sys.executable, "-m", "l2l_ref.cli", *TRAIN, "--epochs", str(args.train_epochs)]
        command += ["--backend", backend, "--out", str(out)]
        if backend == "strict":
            code = "import sys; from l2l_ref.backends import BACKENDS; from l2l_ref.cli import "
            code += "main; BACKENDS['strict'] = 'tests.strict_array'; sys.exit(main(sys.argv[1:]))"
            command[1:3] = ["-c", code]
        start = time.perf_counter()
        result = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env}
        )
        seconds[label] = time.perf_counter() - start
        if result.returncode != 0:
            print(f"train on {label} failed:\n{result.stderr[-3000:]}")
            return float("inf")
        phis[label] = flatten(checkpoint.load(out / "checkpoint.npz")[0])
    differences = {label: relative_difference(phis[label], phis["numpy"]) for label in phis}
    record["train"] = {
        "epochs": args.train_epochs, "seconds": seconds,
        "relative_difference_from_numpy": differences,
    }  # fmt: skip
    print(f"\n`l2l-ref train` of the quadratic, {args.train_epochs} epochs in float64, φ of the "
          "checkpoint against NumPy's (largest ‖Δ‖/‖φ‖ over its arrays):")  # fmt: skip
    for label, difference in differences.items():
        print(f"  {label:<28} {difference:.2e}   ({seconds[label]:.0f} s)")
    return differences[args.backend]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cupy", choices=("cupy", "strict"))
    parser.add_argument("--unroll", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--train-epochs", type=int, default=100)
    parser.add_argument("--skip", default="", help="stages to skip: tests,speed,train")
    parser.add_argument("--out", type=Path, help="folder for gpu_check.json")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    if args.backend == "strict":
        BACKENDS["strict"] = "tests.strict_array"
        sys.path.insert(0, str(ROOT))
    try:
        get_backend(args.backend)
    except BackendError as error:
        print(f"gpu_check: {error}", file=sys.stderr)
        return 2
    record = Record(args.out)
    if args.backend == "cupy":
        cupy = sys.modules["cupy"]
        properties = cupy.cuda.runtime.getDeviceProperties(0)
        record["device"] = {
            "name": properties["name"].decode(),
            "memory_bytes": int(properties["totalGlobalMem"]),
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
            "cupy": cupy.__version__,
        }
        print(f"device: {record.data['device']}")
    print(f"host: {cpu_description()}, {os.cpu_count()} cores")

    passed = True
    if "tests" not in skip:
        passed, summary = agreement_tests(args.backend)
        record["agreement_tests"] = {"passed": passed, "summary": summary}
        print(f"agreement tests ({args.backend} against NumPy, float64): {summary}", flush=True)
    if "speed" not in skip:
        fast = speed_table(args, record)
        passed = passed and (fast or args.backend != "cupy")
    if "train" not in skip:
        difference = train_agreement(args, record)
        passed = passed and difference < float("inf")
    record["passed"] = passed
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
