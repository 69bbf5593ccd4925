"""The reference against PyTorch eager on the same machine, in the same run.

For each optimizee and dtype: one meta-step (a 20-step unroll of the 2×20 coordinatewise LSTM,
its first-order backward pass, the Adam step on φ) in the reference (NumPy backend) and in a
PyTorch eager implementation of the same mathematics (CPU, nn.LSTMCell, its own code below and
in docs/examples/torch_candidate.py; nothing of l2l-ref runs inside it). The two start from the
same φ, θ_0 and data and must first agree on the meta-loss and the meta-gradient (relative error
below 1e-10 in float64, 1e-4 in float32); only then are they timed, interleaved A/B after a
warm-up, and their medians, the ratio reference / PyTorch and each one's peak memory printed.
Then `l2l-ref train` is timed for a fixed small budget, as a user runs it.

    pip install -e '.[bench]'        # torch, CPU
    python benchmarks/versus_torch.py [--repeats 7] [--dtypes float64,float32]
"""

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as onp
import torch
from meta_step import CASES, HERE, Setup, coordinates, one_meta_step, peak_memory, report_peak
from meta_step import setup as reference_setup

from l2l_ref.baselines import adam_init
from l2l_ref.meta_train import train_epoch
from l2l_ref.tree import flatten
from l2l_ref.unroll import meta_gradient

sys.path.insert(0, str(HERE.parent / "docs" / "examples"))
from torch_candidate import build_networks, make_loss, meta_gradient_in_vector_layout, preprocess

TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


def torch_problem(s: Setup, dtype: str) -> tuple:
    """θ_0 and f(θ, t) of the reference's instance, as torch tensors and torch code."""
    data, name = dict(s.instance.data), "quadratic"
    if "indices" in data:  # the MLP: the images of each step's minibatch, as the reference draws
        steps = range(s.train.unroll + 1)
        indices = onp.stack([data["indices"](t) for t in steps])
        images = data["images"].reshape(len(data["images"]), -1)
        data, name = {"images": images, "labels": data["labels"], "indices": indices}, "mlp"
    data = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in data.items()}
    theta0 = {k: torch.from_numpy(x.astype(dtype)) for k, x in s.instance.theta0.items()}
    return theta0, make_loss(name, data)


def torch_meta_loss(nets: dict, theta0: dict, f, s: Setup):
    """L(φ) of one unroll from θ_0 and zero state, with ∇_t a constant (the paper's ∂∇_t/∂φ = 0)."""
    config, T = s.config, s.train.unroll
    weights = s.train.unroll_weights()
    theta = dict(theta0)
    hidden = {
        k: [(x.new_zeros(x.numel(), H),) * 2 for H in config.layers] for k, x in theta.items()
    }
    losses = [f(theta, 0)]
    for t in range(T):
        point = {k: x.detach().requires_grad_() for k, x in theta.items()}
        grads = torch.autograd.grad(f(point, t), list(point.values()))
        new_theta = {}
        for (name, x), grad in zip(theta.items(), grads, strict=True):
            cells, head = nets[s.groups[name]]
            column = grad.reshape(-1, 1)
            inputs = preprocess(column, config.preprocessing, config.preprocessing_param)
            states = []
            for cell, state in zip(cells, hidden[name], strict=True):
                h, c = cell(inputs, state)
                states.append((h, c))
                inputs = h
            new_theta[name] = x + (head(inputs) * config.output_scale).reshape(x.shape)
            hidden[name] = states
        theta = new_theta
        losses.append(f(theta, t + 1))
    return sum(w * loss for w, loss in zip(weights, losses, strict=True) if w)


def torch_networks(s: Setup, dtype: str) -> dict:
    """φ as nn.LSTMCell stacks and linear heads (docs/vectors.md's mapping), in dtype."""
    phi = {k: onp.asarray(v, onp.float64) for k, v in flatten(s.phi).items()}
    nets = build_networks(phi, list(s.config.layers), s.config.input_size)
    for cells, head in nets.values():
        for module in (*cells, head):
            module.to(getattr(torch, dtype))
        for cell in cells:  # b is one vector, held in bias_ih; bias_hh stays 0
            cell.bias_hh.requires_grad_(False)
    return nets


def torch_meta_step(s: Setup, dtype: str):
    """A closure: one meta-step in PyTorch, ending with Torch7 Adam on φ (as the reference)."""
    theta0, f = torch_problem(s, dtype)
    nets = torch_networks(s, dtype)
    params = [p for cells, head in nets.values() for m in (*cells, head) for p in m.parameters()]
    params = [p for p in params if p.requires_grad]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    count = [0]
    lr, beta1, beta2, eps = s.train.meta_lr, 0.9, 0.999, 1e-8

    def step():
        for p in params:
            p.grad = None
        L = torch_meta_loss(nets, theta0, f, s)
        L.backward()
        count[0] += 1
        scale = lr * math.sqrt(1 - beta2 ** count[0]) / (1 - beta1 ** count[0])
        with torch.no_grad():
            for p, m_p, v_p in zip(params, m, v, strict=True):
                m_p.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v_p.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                p.addcdiv_(m_p, v_p.sqrt().add_(eps), value=-scale)
        return L

    return step


def relative_error(found, expected) -> float:
    found, expected = onp.asarray(found, onp.float64), onp.asarray(expected, onp.float64)
    return float(onp.linalg.norm(found - expected) / max(onp.linalg.norm(expected), 1e-300))


def agreement(case: str, dtype: str) -> float:
    """Largest relative error between the two meta-losses and meta-gradients (every tensor of
    φ, normwise) of one unroll from the same φ, θ_0 and data."""
    make_problem, config = CASES[case]
    s = reference_setup(make_problem(), dtype, config=config)
    phi_grad, L, _, _ = meta_gradient(
        s.phi, s.instance.theta0, s.hidden, s.instance, 0,
        s.train.unroll_weights(), s.groups, s.config,
    )  # fmt: skip
    nets = torch_networks(s, dtype)
    theta0, f = torch_problem(s, dtype)
    torch_L = torch_meta_loss(nets, theta0, f, s)
    torch_L.backward()
    torch_grad = meta_gradient_in_vector_layout(nets, list(s.config.layers), s.config.input_size)
    errors = [relative_error(torch_L.item(), L)]
    for key, value in flatten(phi_grad).items():
        errors.append(relative_error(torch_grad[key], value))
    return max(errors)


def interleaved(steps: dict, repeats: int) -> dict:
    """Median seconds of each step, timed in alternating order after one warm-up each."""
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for r in range(repeats):
        for name in list(steps)[:: 1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def train_seconds(epochs: int) -> float:
    """Wall-clock seconds of `l2l-ref train --epochs N` (quadratic, paper preset, defaults)."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "l2l_ref.cli", "train", "--epochs", str(epochs)]
        start = time.perf_counter()
        subprocess.run([*command, "--out", out], check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--train-epochs", type=int, default=20)
    parser.add_argument("--peak-of", nargs=3, help=argparse.SUPPRESS)  # IMPL CASE DTYPE
    args = parser.parse_args()
    if args.peak_of:
        impl, case, dtype = args.peak_of
        make_problem, config = CASES[case]
        if impl == "reference":
            return report_peak(one_meta_step(make_problem(), dtype, config=config))
        s = reference_setup(make_problem(), dtype, config=config)
        return report_peak(torch_meta_step(s, dtype))

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; numpy {onp.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    print(
        f"one meta-step: paper preset, unroll 20, LSTM 2×20, first order; median of "
        f"{args.repeats} interleaved after a warm-up; peak = memory one step adds (RSS)"
    )
    columns = ("coords", 7), ("dtype", 8), ("rel err", 8), ("ref s", 8), ("torch s", 8)
    columns += ("ratio", 6), ("ref MiB", 8), ("torch MiB", 9)
    print(f"{'optimizee':<10} " + " ".join(f"{name:>{width}}" for name, width in columns))
    failed = False
    for case, (make_problem, config) in CASES.items():
        problem = make_problem()
        for dtype in args.dtypes.split(","):
            error = agreement(case, dtype)
            row = f"{case:<10} {coordinates(problem):>7} {dtype:>8} {error:>8.1e}"
            if error >= TOLERANCE[dtype]:
                print(f"{row}  disagree: tolerance {TOLERANCE[dtype]:.0e}, not timed")
                failed = True
                continue
            s = reference_setup(problem, dtype, config=config)
            state = adam_init(s.phi)
            steps = {
                "reference": lambda s=s, state=state: train_epoch(
                    s.phi, state, s.instance, s.groups, s.config, s.train, s.backend.to_host
                ),
                "torch": torch_meta_step(s, dtype),
            }
            seconds = interleaved(steps, args.repeats)
            peaks = {impl: peak_memory("versus_torch.py", impl, case, dtype) for impl in steps}
            ratio = seconds["reference"] / seconds["torch"]
            print(
                f"{row} {seconds['reference']:>8.3f} {seconds['torch']:>8.3f} {ratio:>6.2f} "
                f"{peaks['reference']:>8.1f} {peaks['torch']:>9.1f}"
            )
    if args.train_epochs:
        seconds = train_seconds(args.train_epochs)
        print(
            f"\nl2l-ref train --epochs {args.train_epochs} (quadratic, paper preset, 100 steps "
            f"per epoch, validation every 10): {seconds:.1f} s wall clock"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
