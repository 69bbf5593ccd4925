"""The fused versions against their definitions (issue 6).

- lstm.cell_forward / cell_backward against lstm_cell traced by autograd, over many row blocks;
- l2l_ref.fused's hand-written first-order meta-gradient against unroll.meta_gradient with the
  plain traced cell, from a carried (non-zero) hidden state, with one block per tensor and with
  every row its own block on the thread pool, on NumPy and on the CuPy stand-in;
- row blocks: every row once, results independent of the threads that ran the blocks.
"""

import contextlib
import dataclasses

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from hypothesis import given, settings
from hypothesis import strategies as st

from l2l_ref import blocks, machine
from l2l_ref.architectures.lstm import lstm_cell, rows_backward, rows_forward
from l2l_ref.backends import numpy_backend
from l2l_ref.frozen import run_optimizer
from l2l_ref.fused import fused_meta_gradient, run_frozen
from l2l_ref.optimizer import LearnedOptimizer, OptimizerConfig, init_network
from l2l_ref.tree import flatten, tree_map
from l2l_ref.unroll import meta_gradient
from tests import strict_array
from tests.numpy_reference import coupled_quadratic
from tests.strategies import setups


@contextlib.contextmanager
def block_bytes(size: int, threads: bool = True):
    """Row blocks of about `size` bytes, run on the pool or (threads=False) in this thread."""
    saved_size, saved_pool = blocks.BLOCK_BYTES, blocks._pool
    blocks.BLOCK_BYTES = size
    if not threads:
        blocks._pool = lambda: None
    try:
        yield
    finally:
        blocks.BLOCK_BYTES, blocks._pool = saved_size, saved_pool


def random_cell(rng, n, n_in, H, dtype):
    draw = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    return draw(n_in + H, 4 * H) * 0.5, draw(4 * H) * 0.5, draw(n, n_in), draw(n, H), draw(n, H)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("n_in", [1, 2, 20])
def test_cell_kernels_match_the_traced_cell_over_many_blocks(dtype, rtol, n_in):
    rng = np.random.default_rng(n_in)
    W, b, x, h, c = random_cell(rng, 2500, n_in, 20, dtype)
    grad_h, grad_c = (rng.standard_normal((2500, 20)).astype(dtype) for _ in range(2))

    def pairing(W, b, x, h, c):  # Σ ∂L/∂h' ⊙ h' + ∂L/∂c' ⊙ c': its gradient is the vjp
        h_new, (_, c_new) = lstm_cell({"W": W, "b": b}, x, (h, c))
        return anp.sum(h_new * grad_h) + anp.sum(c_new * grad_c)

    h_expected, (_, c_expected) = lstm_cell({"W": W, "b": b}, x, (h, c))
    expected = {name: grad(pairing, k)(W, b, x, h, c) for k, name in enumerate("Wbxhc")}
    with block_bytes(4096):  # ~ 60 blocks, on the pool
        h_new, c_new, tape = rows_forward(W, b, x, h, c)
        found = rows_backward(W, tape, grad_h, grad_c, set("Wbxhc"))
    np.testing.assert_allclose(h_new, h_expected, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(c_new, c_expected, rtol=rtol, atol=rtol)
    for name, value in expected.items():
        assert found[name].dtype == np.dtype(dtype), name
        scale = np.abs(value).max()
        np.testing.assert_allclose(found[name], value, rtol=rtol, atol=rtol * scale, err_msg=name)


def test_results_do_not_depend_on_the_threads():
    rng = np.random.default_rng(0)
    W, b, x, h, c = random_cell(rng, 3000, 2, 20, "float64")
    grad_h, grad_c = rng.standard_normal((3000, 20)), rng.standard_normal((3000, 20))
    results = []
    for threads in (True, False):
        with block_bytes(8192, threads):
            h_new, c_new, tape = rows_forward(W, b, x, h, c)
            grads = rows_backward(W, tape, grad_h, grad_c, set("Wbxhc"))
            results.append((h_new, c_new, *tape, *grads.values()))
    for pooled, inline in zip(*results, strict=True):
        assert np.array_equal(pooled, inline)


def test_the_callers_blas_keeps_its_threads():
    """The workers' one-thread BLAS setting stays theirs, also where the library applies its
    "thread-local" setting to the whole process (OpenBLAS 0.3.31 in NumPy's wheels does)."""
    before = machine.blas_threads()
    blocks._pool.cache_clear()  # fresh workers: their first tasks too
    if before is None or blocks._pool() is None:
        pytest.skip("no BLAS thread setting to check, or one core")
    rng = np.random.default_rng(0)
    machine.set_blas_threads(2)
    try:
        for _ in range(2):
            with block_bytes(8192):
                rows_forward(*random_cell(rng, 3000, 2, 20, "float64"))
            assert machine.blas_threads() == 2
    finally:
        machine.set_blas_threads(before)


def test_subnormals_are_flushed_within_on_every_block_and_restored_after():
    """float32 without the subnormal penalty (issue 17): within subnormals_flushed a result
    below float32's smallest normal number is zero, in this thread and in the row blocks it
    starts; before and after, the same product is the subnormal IEEE arithmetic gives."""
    if blocks._libm() is None:
        pytest.skip("no x86-64 MXCSR here: subnormals_flushed changes nothing by design")
    tiny = np.full(64, 1e-37, dtype=np.float32)
    scale = np.float32(0.01)
    ieee = (tiny * scale)[0]
    assert 0 < ieee < np.finfo(np.float32).tiny  # a subnormal, as IEEE 754 says
    work = lambda rows: tiny[rows] * scale  # noqa: E731
    halves = [slice(0, 32), slice(32, 64)]
    blocks._pool.cache_clear()  # workers that have not seen the setting before
    with blocks.subnormals_flushed():
        assert (tiny * scale)[0] == 0
        assert all(np.all(part == 0) for part in blocks.run_blocks(work, halves))
    assert (tiny * scale)[0] == ieee
    assert all(np.all(part == ieee) for part in blocks.run_blocks(work, halves))
    with blocks.subnormals_flushed(enabled=False):
        assert (tiny * scale)[0] == ieee


@pytest.mark.parametrize("train_dtype, flushed", [("float64", False), ("float32", True)])
def test_only_float32_meta_training_flushes_subnormals(train_dtype, flushed, monkeypatch):
    """Float64 results cannot change: a float64 run never enters the flushed mode."""
    from l2l_ref import run

    seen = []
    inner = run.subnormals_flushed
    monkeypatch.setattr(run, "subnormals_flushed", lambda on: seen.append(on) or inner(on))
    spec = run.RunSpec.from_preset(
        "quadratic", "paper", settings={"batch": 2}, layers=(2,), epochs=1, steps=4, unroll=2,
        eval_every=1, validation_problems=1, test_problems=2, learning_rates=(0.1,),
        train_dtype=train_dtype, dtype="float64",
    )  # fmt: skip
    run.train(spec)
    assert seen[0] is flushed


def test_blocks_cover_every_coordinate_once_in_near_equal_blocks():
    for n in (1, 7, 1000, 4097):
        with block_bytes(640):
            cuts = blocks.coordinate_blocks(n, 64, np.zeros(n))
        rows = np.concatenate([np.arange(n)[cut] for cut in cuts])
        assert np.array_equal(rows, np.arange(n))
        sizes = [cut.stop - cut.start for cut in cuts]
        assert max(sizes) - min(sizes) <= 1 and max(sizes) <= 10
    device = strict_array.asarray(np.zeros(4097), "float64")
    assert blocks.coordinate_blocks(4097, 64, device) == [slice(0, 4097)]  # the GPU: all at once


def random_hidden(rng, theta, config, to_device):
    return {
        name: [
            tuple(to_device(rng.standard_normal((np.size(x), H))) for _ in range(2))
            for H in config.layers
        ]
        for name, x in theta.items()
    }


def both_gradients(case, t0, seed, backend):
    """(fused, traced) meta-gradients of one unroll from step t0 and a random hidden state."""
    phi, groups, problem, config, weights = case
    to_device = lambda a: backend.asarray(a, "float64")  # noqa: E731
    phi = tree_map(to_device, phi)
    instance = problem.instance(to_device)
    hidden = random_hidden(np.random.default_rng(seed), instance.theta0, config, to_device)
    args = (phi, instance.theta0, hidden, instance, t0, weights)
    plain = dataclasses.replace(config, cell="plain")
    return (
        fused_meta_gradient(*args, LearnedOptimizer(config, groups)),
        meta_gradient(*args, LearnedOptimizer(plain, groups)),
    )


def host_values(result, backend) -> dict:
    grad, L, theta, hidden = result
    tree = {"grad": grad, "L": L, "theta": theta, "hidden": hidden}
    return {k: backend.to_host(v) for k, v in flatten(tree).items()}


@settings(max_examples=60, deadline=None)
@given(
    case=setups(architectures=("lstm",)),
    t0=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
    size=st.sampled_from([8, 200, 2**19]),  # every row a block, a few rows, one block
    backend=st.sampled_from([numpy_backend, strict_array]),
)
def test_fused_meta_gradient_agrees_with_the_traced_definition(case, t0, seed, size, backend):
    with block_bytes(size):
        fused, traced = (host_values(r, backend) for r in both_gradients(case, t0, seed, backend))
    assert fused.keys() == traced.keys()
    for key, expected in traced.items():
        scale = max(np.abs(expected).max(), 1e-300)
        np.testing.assert_allclose(
            fused[key], expected, rtol=1e-10, atol=1e-12 * scale, err_msg=key
        )


@settings(max_examples=10, deadline=None)
@given(setups(max_unroll=3, architectures=("lstm",)))
def test_fused_meta_gradient_leaves_its_inputs_alone(case):
    phi, groups, problem, config, weights = case
    instance = problem.instance()
    hidden = random_hidden(np.random.default_rng(0), instance.theta0, config, np.asarray)
    before = {k: v.copy() for k, v in flatten((phi, instance.theta0, hidden)).items()}
    fused_meta_gradient(
        phi, instance.theta0, hidden, instance, 0, weights, LearnedOptimizer(config, groups)
    )
    after = flatten((phi, instance.theta0, hidden))
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert np.array_equal(after[key], value), key


@settings(max_examples=30, deadline=None)
@given(case=setups(architectures=("lstm",)), seed=st.integers(0, 2**32 - 1))
def test_a_reused_workspace_changes_no_bit_and_shares_no_memory(case, seed):
    """Training keeps the tapes between unrolls (fused_meta_gradient's workspace): an unroll
    on a workspace another unroll used gives the bits of one on fresh memory, and nothing it
    returns is a view of the workspace, which the next unroll overwrites."""
    phi, groups, problem, config, weights = case
    instance = problem.instance()
    rng = np.random.default_rng(seed)
    first, second = (random_hidden(rng, instance.theta0, config, np.asarray) for _ in range(2))
    m = LearnedOptimizer(config, groups)
    args = lambda hidden: (phi, instance.theta0, hidden, instance, 0, weights, m)  # noqa: E731
    fresh = flatten(fused_meta_gradient(*args(first)))
    workspace = {}
    fused_meta_gradient(*args(second), workspace=workspace)
    reused = flatten(fused_meta_gradient(*args(first), workspace=workspace))
    for tapes in workspace.values():
        for entry in (entry for tape in tapes for entry in tape):
            for array in entry.values():
                array.fill(np.nan)
    assert fresh.keys() == reused.keys()
    for key, value in fresh.items():
        assert np.array_equal(reused[key], value), key


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_fused_meta_gradient_is_the_same_bits_on_the_pool_and_in_one_thread(dtype):
    """Blocks depend on the sizes only and their shares are added in block order."""
    rng = np.random.default_rng(1)
    config = OptimizerConfig((5, 3), "appendix_a", 10.0, 0.1)
    shapes = {"w": (40, 30), "b": (30,), "v": (30, 2)}
    problem = coupled_quadratic(rng, shapes)
    groups = {"w": "weights", "b": "biases", "v": "weights"}
    phi = {g: init_network(rng, config) for g in ("biases", "weights")}
    to_dtype = lambda a: np.asarray(a, dtype)  # noqa: E731
    phi, instance = tree_map(to_dtype, phi), problem.instance(to_dtype)
    hidden = random_hidden(rng, instance.theta0, config, to_dtype)
    results = []
    for threads in (True, False):
        with block_bytes(1024, threads):  # dozens of blocks
            result = fused_meta_gradient(
                phi,
                instance.theta0,
                hidden,
                instance,
                2,
                [0.5, 1.0, 1.0, 2.0],
                LearnedOptimizer(config, groups),
            )
        results.append(flatten(result))
    for key, value in results[0].items():
        assert np.array_equal(results[1][key], value), key


@settings(max_examples=40, deadline=None)
@given(
    case=setups(architectures=("lstm",)),
    steps=st.integers(1, 6),
    count=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    size=st.sampled_from([8, 200, 2**19]),  # every coordinate a block, a few, one block
    backend=st.sampled_from([numpy_backend, strict_array]),
)
def test_frozen_runs_of_several_problems_agree_with_the_definition(
    case, steps, count, seed, size, backend
):
    """fused.run_frozen (the kernels, no tape, every problem's coordinates in one batch)
    against meta_train.run_optimizer (the traced plain cell, one problem at a time)."""
    phi, groups, problem, config, _ = case
    to_device = lambda a: backend.asarray(a, "float64")  # noqa: E731
    phi = tree_map(to_device, phi)
    rng = np.random.default_rng(seed)
    shapes = {k: np.shape(v) for k, v in problem.theta0.items()}
    problems = [problem] + [coupled_quadratic(rng, shapes) for _ in range(count - 1)]
    instances = [p.instance(to_device) for p in problems]
    plain = dataclasses.replace(config, cell="plain")
    expected = np.stack(
        [
            run_optimizer(phi, inst, steps, LearnedOptimizer(plain, groups), backend.to_host)
            for inst in instances
        ]
    )
    with block_bytes(size):
        found = run_frozen(phi, instances, steps, LearnedOptimizer(config, groups), backend.to_host)
    np.testing.assert_allclose(found, expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())
