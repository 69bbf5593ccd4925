"""How much of the machine's matrix-multiply throughput one meta-step reaches, and why not more.

Counts the floating-point operations of one meta-step from the LSTM's shapes (the products of
the forward pass, 2·rows·cols per coordinate per step and matrix, and twice that again in the
backward pass: the input's and the weights' gradients), times the meta-step as training runs
it (benchmarks/meta_step.py), and sets both against what this CPU's BLAS reaches:

- a large square product (2048 × 2048, all cores): the machine's practical peak;
- the cell's own product, W @ [x; h] (4H × K by K × m) for one block of m coordinates
  (l2l_ref.blocks), on one core, and for all coordinates at once on all cores: K = inputs +
  units is 22 or 40, so each product reads and writes far more memory per operation than a
  square one and is bound by it, not by arithmetic.

    python benchmarks/throughput.py [--repeats 5] [--dtypes float64,float32]
"""

import argparse
import statistics
import sys

import numpy as onp
from meta_step import CASES, cpu_description, median_seconds, one_meta_step

from l2l_ref.blocks import BLOCK_BYTES, thread_count
from l2l_ref.machine import set_blas_threads
from l2l_ref.optimizer import network_shapes

UNROLL = 20


def meta_step_flops(config, coordinates: int, unroll: int = UNROLL) -> float:
    """Operations of the matrix products of one meta-step: forward 2·rows·cols per coordinate
    per step for every W of the network, backward twice that (elementwise work not counted)."""
    shapes = network_shapes(config)
    matrices = [layer["W"] for layer in shapes["lstm"]] + [shapes["head"]["W"]]
    forward = sum(2 * rows * cols for rows, cols in matrices)
    return 3 * forward * coordinates * unroll


def product_gflops(rows: int, inner: int, cols: int, dtype: str, repeats: int) -> float:
    """GFLOP/s of a (rows × inner) @ (inner × cols) product with BLAS's current threads."""
    rng = onp.random.default_rng(0)
    a = rng.standard_normal((rows, inner)).astype(dtype)
    b = rng.standard_normal((inner, cols)).astype(dtype)
    out = onp.empty((rows, cols), dtype)
    calls = max(1, int(2e8 // (2 * rows * inner * cols)))

    def run():
        for _ in range(calls):
            onp.matmul(a, b, out=out)

    seconds = median_seconds(run, repeats)
    return 2 * rows * inner * cols * calls / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", default="float64,float32")
    args = parser.parse_args()
    print(f"cpu: {cpu_description()}")
    make_problem, config = CASES["mlp"]
    problem = make_problem()
    coordinates = sum(
        onp.size(v) for v in problem.sample(onp.random.default_rng(0), onp.asarray).theta0.values()
    )
    flops = meta_step_flops(config, coordinates)
    inner = config.input_size + config.layers[0], config.layers[0] + config.layers[1]
    units = 4 * config.layers[0]
    print(
        f"MLP meta-step: {coordinates} coordinates, unroll {UNROLL}, LSTM layers "
        f"{','.join(map(str, config.layers))}: {flops / 1e9:.2f} GFLOP in its products"
    )
    for dtype in args.dtypes.split(","):
        itemsize = onp.dtype(dtype).itemsize
        block_columns = BLOCK_BYTES // (units * itemsize)
        seconds = median_seconds(one_meta_step(problem, dtype, config=config), args.repeats)
        peak = product_gflops(2048, 2048, 2048, dtype, args.repeats)
        whole = [product_gflops(units, k, coordinates, dtype, args.repeats) for k in inner]
        set_blas_threads(1)
        one_core = product_gflops(2048, 2048, 2048, dtype, args.repeats)
        block = [product_gflops(units, k, block_columns, dtype, args.repeats) for k in inner]
        set_blas_threads(thread_count())
        reached = flops / seconds / 1e9
        print(f"\n{dtype}: meta-step {seconds:.3f} s = {reached:.1f} GFLOP/s")
        print(f"  square 2048 product, all cores: {peak:.1f} GFLOP/s; one core: {one_core:.1f}")
        for k, w, b in zip(inner, whole, block, strict=True):
            print(
                f"  cell product K={k}: {coordinates} coordinates, all cores {w:.1f} GFLOP/s; "
                f"a block of {block_columns}, one core {b:.1f} GFLOP/s"
            )
        at_block_rate = flops / (2 * statistics.mean(block) * 1e9)
        print(
            f"  the meta-step reaches {reached / peak:.0%} of the square product's throughput; "
            f"its products at the block product's rate on two cores would take "
            f"{at_block_rate:.3f} s of its {seconds:.3f} s"
        )


if __name__ == "__main__":
    sys.exit(main())
