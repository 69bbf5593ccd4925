"""Where the MLP meta-step's time goes on one core, part by part, and the floor its products set.

Each LSTM layer's cell is timed on one block of coordinates (l2l_ref.blocks) with its arrays
in the core's cache ("hot"), whole and by its parts:

    cell forward    the product W [x; h], tanh over the gates and over c', and the rest
                    (the bias, the sigmoid gates' scaling, the state update)
    cell backward   the products Wᵀ ∂z and [x; h] ∂zᵀ, the sum over the block for ∂b, and
                    the rest (the gates' derivatives)

and scaled by blocks × unroll steps to one meta-step. Then the meta-step runs as training
runs it, with a clock on cell_forward and cell_backward in place: their time beyond the hot
one is the tape's traffic (each step's tape lives in main memory, not in the cache), and
what is left of the meta-step is the rest: the optimizee's value and gradient, the
minibatches, the preprocessing, the head, Adam on φ and the interpreter between the blocks.
Last, the floor: the products' operations (benchmarks/throughput.py counts them) at the rate
of a square 2048 product on one core, what no arrangement of these products could beat.

    python benchmarks/cell_account.py [--repeats 5] [--dtypes float32,float64]

Always one core (L2L_REF_THREADS=1, BLAS on one thread), as a trial runs in a search.
"""

import argparse
import os
import statistics
import sys
import time

os.environ["L2L_REF_THREADS"] = "1"  # before l2l_ref makes its pool

import numpy as onp
from meta_step import CASES, coordinates, cpu_description, median_seconds, setup, setup_step
from throughput import UNROLL, meta_step_flops, product_gflops

from l2l_ref import fused
from l2l_ref.architectures.lstm import cell_backward, cell_forward, halved_gates
from l2l_ref.blocks import coordinate_blocks
from l2l_ref.machine import one_blas_thread


def per_call(work, repeats: int, calls: int = 100) -> float:
    """Median seconds of one call of `work` (timed `calls` at a time)."""

    def batch():
        for _ in range(calls):
            work()

    return median_seconds(batch, repeats) / calls


def hot_parts(K: int, H: int, m: int, dtype: str, repeats: int) -> dict:
    """Seconds of one layer's cell and of its parts on one block of m coordinates, hot."""
    rng = onp.random.default_rng(0)
    draw = lambda *shape: (0.5 * rng.standard_normal(shape)).astype(dtype)  # noqa: E731
    W, b, xh, c = draw(K, 4 * H), draw(4 * H), draw(K, m), draw(H, m)
    grad_h, grad_c = draw(H, m), draw(H, m)
    W_half, b_half = halved_gates(W, b)
    gates, scratch = onp.empty((4 * H, m), dtype), onp.empty((4 * H, m), dtype)
    c_new, tanh_c, h_new = (onp.empty((H, m), dtype) for _ in range(3))

    def forward():
        cell_forward(W_half, b_half, xh, c, gates, c_new, tanh_c, h_new)

    forward()
    grad_z = draw(4 * H, m)
    parts = {
        "forward": per_call(forward, repeats),
        "forward product": per_call(lambda: onp.matmul(W_half, xh, out=scratch), repeats),
        "forward tanh": per_call(lambda: onp.tanh(gates, out=scratch), repeats)
        + per_call(lambda: onp.tanh(c_new, out=scratch[:H]), repeats),
        "backward": per_call(
            lambda: cell_backward(W, xh, c, gates, tanh_c, grad_h, grad_c, True), repeats
        ),
        "backward product Wᵀ∂z": per_call(lambda: W @ grad_z, repeats),
        "backward product [x; h]∂zᵀ": per_call(lambda: xh @ grad_z.T, repeats),
        "backward sum ∂b": per_call(lambda: grad_z.sum(axis=1), repeats),
    }
    parts["forward rest"] = parts["forward"] - parts["forward product"] - parts["forward tanh"]
    parts["backward rest"] = parts["backward"] - sum(
        parts[k] for k in parts if k.startswith("backward ")
    )
    return parts


def in_place(dtype: str, repeats: int) -> tuple:
    """Seconds of the meta-step and, inside it, of cell_forward and cell_backward (per step)."""
    make_problem, config = CASES["mlp"]
    step = setup_step(setup(make_problem(), dtype, config=config), dtype)
    inside = {"forward": 0.0, "backward": 0.0}
    originals = fused.cell_forward, fused.cell_backward

    def clocked(function, part):
        def call(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            inside[part] += time.perf_counter() - start
            return result

        return call

    fused.cell_forward = clocked(originals[0], "forward")
    fused.cell_backward = clocked(originals[1], "backward")
    try:
        step()  # warm-up
        times, shares = [], []
        for _ in range(repeats):
            inside.update(forward=0.0, backward=0.0)
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
            shares.append(dict(inside))
    finally:
        fused.cell_forward, fused.cell_backward = originals
    k = times.index(statistics.median(times))
    return times[k], shares[k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", default="float32,float64")
    args = parser.parse_args()
    make_problem, config = CASES["mlp"]
    n = coordinates(make_problem())
    print(f"cpu: {cpu_description()}; one core")
    print(
        f"MLP meta-step: {n} coordinates, unroll {UNROLL}, LSTM layers "
        f"{','.join(map(str, config.layers))}, the paper preset's preprocessing"
    )
    for dtype in args.dtypes.split(","):
        H = config.layers[0]
        like = onp.empty(1, dtype)
        blocks = coordinate_blocks(n, 4 * H * like.itemsize, like)
        m = blocks[0].stop - blocks[0].start
        calls = len(blocks) * UNROLL  # per layer and meta-step
        with one_blas_thread():
            total = {}
            n_in = config.input_size
            for units in config.layers:
                for part, seconds in hot_parts(n_in + units, units, m, dtype, args.repeats).items():
                    total[part] = total.get(part, 0.0) + seconds * calls
                n_in = units
            meta_step, inside = in_place(dtype, args.repeats)
            square = product_gflops(2048, 2048, 2048, dtype, args.repeats)
        floor = meta_step_flops(config, n) / (square * 1e9)
        traffic = {d: inside[d] - total[d] for d in ("forward", "backward")}
        rest = meta_step - inside["forward"] - inside["backward"]
        rows = [(part, total[part]) for part in total if part not in ("forward", "backward")]
        rows += [(f"tape traffic ({d}: in place − hot)", traffic[d]) for d in traffic]
        rows += [("the rest (optimizee, minibatches, head, Adam, interpreter)", rest)]
        print(
            f"\n{dtype}: meta-step {meta_step:.3f} s on one core; {len(blocks)} blocks of "
            f"{m} coordinates, {calls} cell calls per layer"
        )
        print(f"{'part':<60} {'s/meta-step':>11} {'share':>6}")
        for part, seconds in rows:
            print(f"{part:<60} {seconds:>11.4f} {seconds / meta_step:>6.1%}")
        print(
            f"floor: its products at the square product's one-core rate ({square:.1f} GFLOP/s) "
            f"take {floor:.3f} s, {floor / meta_step:.0%} of the meta-step"
        )


if __name__ == "__main__":
    sys.exit(main())
