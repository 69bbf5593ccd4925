"""Time and peak memory of one meta-step of the reference, as a user's training loop runs it.

One meta-step = one truncated unroll of 20 optimizee steps with the 2×20 coordinatewise LSTM,
its first-order backward pass and the Adam step on φ (l2l_ref.meta_train.train_epoch runs
these). Optimizees: the quadratic (128 × 10 = 1,280 coordinates) and an MNIST-sized MLP
(784-20-10 sigmoid, 15,910 coordinates, minibatch 128 of synthetic images).

    python benchmarks/meta_step.py [--repeats 5] [--dtypes float64,float32]

Prints a table: median seconds per meta-step over the repeats (after one warm-up) and the
peak memory that NumPy allocated during one meta-step (tracemalloc, a separate run).
"""

import argparse
import os
import platform
import statistics
import time
import tracemalloc

import autograd.numpy as np
import numpy as onp

from backends import get_backend
from l2l_ref.baselines import adam_init
from l2l_ref.lstm import OptimizerConfig
from l2l_ref.meta_train import TrainConfig, assign_networks, init_phi, train_epoch
from l2l_ref.problems import Instance, Problem, quadratic


def synthetic_mlp(n_images: int = 2048, batch: int = 128) -> Problem:
    """Cross-entropy of a 784-20-10 sigmoid MLP on random images and labels."""

    def sample(rng, to_device):
        images = rng.random((n_images, 784))
        labels = rng.integers(0, 10, n_images)
        order = onp.random.default_rng(rng.integers(2**32))
        batches = [order.choice(n_images, batch, replace=False) for _ in range(101)]
        onehots = [to_device(onp.eye(10)[labels[b]]) for b in batches]
        inputs = [to_device(images[b]) for b in batches]
        theta0 = {
            "W1": to_device(0.01 * rng.standard_normal((784, 20))),
            "b1": to_device(onp.zeros(20)),
            "W2": to_device(0.01 * rng.standard_normal((20, 10))),
            "b2": to_device(onp.zeros(10)),
        }

        def loss(theta, t):
            hidden = 0.5 * (np.tanh(0.5 * (inputs[t] @ theta["W1"] + theta["b1"])) + 1.0)
            logits = hidden @ theta["W2"] + theta["b2"]
            shifted = logits - np.max(logits, axis=1, keepdims=True)
            log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
            return -np.mean(np.sum(onehots[t] * log_probs, axis=1))

        return Instance(theta0, loss)

    return Problem("mlp-synthetic", {"hidden": 20, "batch": batch}, sample)


def one_meta_step(
    problem: Problem, dtype: str, backend: str = "numpy", unroll: int = 20, seed: int = 0
):
    """A closure running one meta-step (an unroll, its backward pass, Adam) on a fixed φ."""
    backend = get_backend(backend)

    def to_device(a):
        return backend.asarray(a, dtype)

    rng = onp.random.default_rng(seed)
    instance = problem.sample(rng, to_device)
    config = OptimizerConfig()
    train = TrainConfig(epochs=1, steps=unroll, unroll=unroll)
    groups = assign_networks(instance.theta0, problem, config)
    phi = init_phi(rng, groups, config, to_device)
    state = adam_init(phi)
    return lambda: train_epoch(phi, state, instance, groups, config, train, backend.to_host)


def measure(step, repeats: int) -> tuple[float, float]:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times), peak / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", default="float64,float32")
    args = parser.parse_args()
    cases = {"quadratic 128x10": quadratic(), "MLP 784-20-10": synthetic_mlp()}
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"numpy {onp.__version__}; median of {args.repeats} after a warm-up"
    )
    print(f"{'optimizee':<18} {'coords':>7} {'dtype':>8} {'s/meta-step':>12} {'peak MiB':>9}")
    for name, problem in cases.items():
        theta0 = problem.sample(onp.random.default_rng(0), onp.asarray).theta0
        coords = sum(onp.size(v) for v in theta0.values())
        for dtype in args.dtypes.split(","):
            seconds, peak = measure(one_meta_step(problem, dtype), args.repeats)
            print(f"{name:<18} {coords:>7} {dtype:>8} {seconds:>12.3f} {peak:>9.1f}")


if __name__ == "__main__":
    main()
