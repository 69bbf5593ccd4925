"""Time and peak memory of one meta-step of the reference, as a user's training loop runs it.

One meta-step = one truncated unroll of 20 optimizee steps with the 2×20 coordinatewise LSTM,
its first-order backward pass and the Adam step on φ (l2l_ref.meta_train.train_epoch runs
these). Optimizees, each with the paper preset's optimizer: the quadratic (128 × 10 = 1,280
coordinates; no preprocessing) and the MNIST MLP (784-20-10 sigmoid, 15,910 coordinates,
minibatch 128 of synthetic images; Appendix A preprocessing, output × 0.1).

    python benchmarks/meta_step.py [--repeats 5] [--dtypes float64,float32]
                                   [--architectures lstm,lstm-gac,ntm-bfgs] [--cases quadratic]

Prints a table: median seconds per meta-step over the repeats (after one warm-up) and the
peak memory of one meta-step (see peak_memory), for each architecture (default the LSTM alone)
with the preset's layers, preprocessing and scale and the architecture's default settings.
"""

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as onp

from l2l_ref.architectures import make
from l2l_ref.backends import get_backend
from l2l_ref.blocks import subnormals_flushed
from l2l_ref.machine import describe, one_blas_thread
from l2l_ref.meta_train import META_INIT, TrainConfig, init_phi, start_hidden, train_epoch
from l2l_ref.optimizer import LearnedOptimizer, OptimizerConfig, assign_networks
from l2l_ref.presets import optimizer_for
from l2l_ref.problems import Instance, Problem, mlp, quadratic

HERE = Path(__file__).resolve().parent


def synthetic_mlp(n_images: int = 2048, batch: int = 128) -> Problem:
    """The MNIST problem's MLP (784-20-10 sigmoid) on random images and labels: the same
    arithmetic as on MNIST, with no data files to fetch."""
    rng = onp.random.default_rng(12345)
    labels = onp.arange(n_images) % 10
    images = rng.random((n_images, 28, 28)).astype(onp.float32)
    return mlp({"train": (images, labels)}, batch=batch, name="mlp-synthetic")


# name -> (optimizee, the paper preset's optimizer for it)
CASES = {
    "quadratic": (lambda: quadratic(), optimizer_for("quadratic", "paper")),
    "mlp": (synthetic_mlp, optimizer_for("mnist", "paper")),
}


@dataclass
class Setup:
    """Everything one meta-step reads: an instance, φ, its Adam state and the settings."""

    instance: Instance
    phi: dict
    hidden: dict
    networks: dict
    config: OptimizerConfig
    train: TrainConfig
    backend: object


def architecture_config(case: str, architecture: str) -> OptimizerConfig:
    """The preset's optimizer for `case` with `architecture` (its settings at their defaults)."""
    return dataclasses.replace(CASES[case][1], architecture=make(architecture))


def setup(
    problem: Problem,
    dtype: str,
    backend: str = "numpy",
    unroll: int = 20,
    config: OptimizerConfig | None = None,
    seed: int = 0,
) -> Setup:
    """One sampled instance and a freshly initialised φ on `backend`, in `dtype`."""
    backend = get_backend(backend)

    def to_device(a):
        return backend.asarray(a, dtype)

    rng = onp.random.default_rng(seed)
    instance = problem.sample(rng, to_device)
    config = config or OptimizerConfig()
    networks = assign_networks(instance.theta0, problem, config)
    phi = init_phi(rng, networks, config, to_device)
    hidden = start_hidden(instance.theta0, config)
    train = TrainConfig(epochs=1, steps=unroll, unroll=unroll)
    return Setup(instance, phi, hidden, networks, config, train, backend)


def one_meta_step(
    problem: Problem,
    dtype: str,
    backend: str = "numpy",
    unroll: int = 20,
    config: OptimizerConfig | None = None,
):
    """A closure running one meta-step (an unroll, its backward pass, Adam) on a fixed φ, as
    training runs it (float32 without subnormals)."""
    return setup_step(setup(problem, dtype, backend, unroll, config), dtype)


def setup_step(s: Setup, dtype: str):
    """The meta-step closure of a prepared Setup."""
    state, workspace = META_INIT(s.phi), {}

    def step():
        with subnormals_flushed(dtype == "float32"), one_blas_thread():
            return train_epoch(
                s.phi, state, s.instance, LearnedOptimizer(s.config, s.networks), s.train,
                s.backend.to_host,
                workspace=workspace,
            )  # fmt: skip

    return step


def cpu_description() -> str:
    """The machine (CPU, BLAS library, version and kernel, NumPy: l2l_ref.machine) and the
    CPU's vector extensions (from /proc/cpuinfo): what every benchmark's numbers depend on."""
    try:
        with open("/proc/cpuinfo") as info:
            pairs = (line.split(":", 1) for line in info if ":" in line)
            flags = set(dict((k.strip(), v.strip()) for k, v in pairs).get("flags", "").split())
    except OSError:
        flags = set()
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
    return f"{describe()}; {' '.join(f for f in wanted if f in flags)}"


def median_seconds(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory(script: str, *args: str, runs: int = 3) -> float:
    """MiB that one meta-step adds at its peak to the resident memory of a fresh process.

    `script` (a file in benchmarks/) run with `--peak-of ARGS...` builds the step, resets the
    kernel's high-water mark of its resident size, runs the step once and prints the peak minus
    the size before the step. Measured the same way for every implementation, whatever
    allocator it uses; the median over `runs` processes.
    """
    command = [sys.executable, str(HERE / script), "--peak-of", *args]
    results = [
        subprocess.run(command, capture_output=True, text=True, check=True) for _ in range(runs)
    ]
    return statistics.median(float(r.stdout.strip().splitlines()[-1]) for r in results)


def report_peak(step) -> None:
    """The child's side of peak_memory: print MiB added at the peak by one call of step."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # Linux ≥ 4.0: the peak resident size restarts from the current size
    baseline = _status_kib("VmRSS")
    step()
    print(json.dumps((_status_kib("VmHWM") - baseline) / 1024))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


def coordinates(problem: Problem) -> int:
    theta0 = problem.sample(onp.random.default_rng(0), onp.asarray).theta0
    return sum(onp.size(v) for v in theta0.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--architectures", default="lstm")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument(
        "--peak-of", nargs=3, metavar=("CASE", "DTYPE", "ARCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.peak_of:
        case, dtype, architecture = args.peak_of
        config = architecture_config(case, architecture)
        return report_peak(one_meta_step(CASES[case][0](), dtype, config=config))
    print(f"cpu: {cpu_description()}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, numpy {onp.__version__}; "
        f"median of {args.repeats} after a warm-up; paper preset, unroll 20, 2×20 layers"
    )
    print(
        f"{'optimizee':<10} {'architecture':<12} {'coords':>7} {'dtype':>8} {'s/meta-step':>12} "
        f"{'peak MiB':>9}"
    )
    for case in args.cases.split(","):
        problem = CASES[case][0]()
        for architecture in args.architectures.split(","):
            config = architecture_config(case, architecture)
            for dtype in args.dtypes.split(","):
                step = one_meta_step(problem, dtype, config=config)
                seconds = median_seconds(step, args.repeats)
                peak = peak_memory("meta_step.py", case, dtype, architecture)
                print(
                    f"{case:<10} {architecture:<12} {coordinates(problem):>7} {dtype:>8} "
                    f"{seconds:>12.3f} {peak:>9.1f}"
                )


if __name__ == "__main__":
    main()
