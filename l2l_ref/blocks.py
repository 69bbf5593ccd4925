"""Coordinate blocks: how the fused LSTM cell spreads its work over the host's cores.

The coordinatewise LSTM treats every coordinate independently. On the host, the fused cell
works through the coordinates in blocks of about BLOCK_BYTES: a block's temporaries stay in the
CPU's cache, and blocks run on a thread pool, since NumPy releases the GIL inside its loops. Each
worker limits BLAS to one thread for itself (OpenBLAS's and MKL's thread-local setting,
l2l_ref.machine), so
that the workers' small matrix products do not fight over the cores; the caller's own BLAS
calls keep their threads (some OpenBLAS builds apply the "thread-local" setting to the whole
process: the caller's count is put back after the blocks). A device array is one block: the
GPU runs each kernel over all rows.

Blocks never depend on the number of cores, and the partial sums over blocks are added in
block order, so results are the same for every L2L_REF_THREADS and core count (on one BLAS
kernel: l2l_ref.machine).
"""

import contextlib
import ctypes
import ctypes.util
import os
import platform
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from itertools import pairwise

import numpy as onp

from l2l_ref.errors import ConfigError
from l2l_ref.machine import blas_threads, local_thread_setter, set_blas_threads

# half the L2 cache of a core of the development machine (1 MiB), for the gates of one block
BLOCK_BYTES = 2**19


def coordinate_blocks(n: int, bytes_per_coordinate: int, like) -> list[slice]:
    """Coordinates 0 … n−1 cut into slices of (nearly) equal size, each about BLOCK_BYTES of
    the widest array the work writes (`bytes_per_coordinate` each); one slice where `like` is a
    device array."""
    if type(like) is not onp.ndarray:
        return [slice(0, n)]
    count = max(-(-n * bytes_per_coordinate // BLOCK_BYTES), 1)
    bounds = [n * k // count for k in range(count + 1)]
    return [slice(a, b) for a, b in pairwise(bounds)]


def run_blocks(work: Callable[[slice], object], blocks: list[slice]) -> list:
    """[work(block) for block in blocks], on the thread pool when there are several, each
    worker in the caller's floating-point settings (NumPy's error handling, subnormals)."""
    pool = _pool()
    if len(blocks) == 1 or pool is None:
        return [work(block) for block in blocks]
    handling, flush = onp.geterr(), _flushed()
    one_thread, caller = local_thread_setter(), blas_threads()

    def as_the_caller(block):
        one_thread(1)
        with onp.errstate(**handling), subnormal_mode(flush):
            return work(block)

    try:
        return list(pool.map(as_the_caller, blocks))
    finally:
        if caller is not None and blas_threads() != caller:
            set_blas_threads(caller)


class _FloatEnvironment(ctypes.Structure):
    """glibc's fenv_t on x86-64: the x87 environment, then the SSE control register MXCSR."""

    _fields_ = [("x87", ctypes.c_ubyte * 28), ("mxcsr", ctypes.c_uint32)]


_FLUSH_TO_ZERO, _DENORMALS_ARE_ZERO = 1 << 15, 1 << 6
_FLUSH_BITS = _FLUSH_TO_ZERO | _DENORMALS_ARE_ZERO


def _flushed() -> bool:
    """Whether this thread flushes subnormals now (read from its MXCSR)."""
    libm = _libm()
    if libm is None:
        return False
    environment = _FloatEnvironment()
    libm.fegetenv(ctypes.byref(environment))
    return environment.mxcsr & _FLUSH_BITS == _FLUSH_BITS


@cache
def _libm():
    """The C maths library, where it has fegetenv/fesetenv for an x86-64 MXCSR."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    name = ctypes.util.find_library("m")
    return ctypes.CDLL(name) if name else None


@contextlib.contextmanager
def subnormal_mode(flush: bool) -> Iterator[None]:
    """Within: this thread flushes subnormal numbers to zero (the x86 MXCSR bits FTZ and DAZ)
    if `flush`, and does not if not, whatever it did before; after: as before. Set both ways
    because a thread inherits its creator's MXCSR: a pool worker started inside a flushed run
    would otherwise go on flushing for every later caller."""
    libm = _libm()
    if libm is None:
        yield
        return
    environment = _FloatEnvironment()
    libm.fegetenv(ctypes.byref(environment))
    saved = environment.mxcsr
    environment.mxcsr = saved | _FLUSH_BITS if flush else saved & ~_FLUSH_BITS
    libm.fesetenv(ctypes.byref(environment))
    try:
        yield
    finally:
        environment.mxcsr = saved
        libm.fesetenv(ctypes.byref(environment))


def subnormals_flushed(enabled: bool = True) -> contextlib.AbstractContextManager:
    """Within: this thread's arithmetic, and the blocks' it starts (run_blocks), treats subnormal
    numbers (below 1.2e-38 in float32) as zero, in inputs and results (the x86 MXCSR bits FTZ
    and DAZ). A CPU may take a hundred times longer on a subnormal; float32 meta-gradients of
    an MLP are full of them on some CPUs. Deterministic; float64 is left alone by the callers
    (its subnormals, below 2.2e-308, do not occur here anyway). Elsewhere than x86-64 Linux,
    or when `enabled` is false, nothing changes."""
    return subnormal_mode(True) if enabled else contextlib.nullcontext()


def thread_count() -> int:
    """The pool's size: L2L_REF_THREADS, or the cores this process may use."""
    setting = os.environ.get("L2L_REF_THREADS", "")
    if not setting:
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1
    if not setting.isdigit() or int(setting) < 1:
        raise ConfigError(f"L2L_REF_THREADS must be a positive integer, not {setting!r}")
    return int(setting)


@cache
def _pool() -> ThreadPoolExecutor | None:
    """The shared worker pool, or None for one thread. Without a thread-local BLAS setting
    the blocks run in the calling thread: workers whose matrix products each start all BLAS
    threads run slower than one."""
    threads = thread_count()
    if threads < 2 or local_thread_setter() is None:
        return None
    return ThreadPoolExecutor(threads, "l2l-ref-rows")
