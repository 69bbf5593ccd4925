"""Row blocks: how the fused LSTM cell spreads its work over the host's cores.

The coordinatewise LSTM treats every coordinate as an independent row. On the host, the fused
cell works through its rows in blocks of about BLOCK_BYTES: a block's temporaries stay in the CPU's
cache, and blocks run on a thread pool, since NumPy releases the GIL inside its loops. Each
worker limits BLAS to one thread for itself (OpenBLAS's and MKL's thread-local setting), so
that the workers' small matrix products do not fight over the cores; the caller's own BLAS
calls keep their threads. A device array is one block: the GPU runs each kernel over all rows.

Blocks never depend on the number of cores, and the partial sums over blocks are added in
block order, so results are the same on every machine and for every L2L_REF_THREADS.
"""

import ctypes
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from itertools import pairwise

import numpy as onp

from l2l_ref.errors import ConfigError

# half the L2 cache of a core of the development machine (1 MiB), for the gates of one block
BLOCK_BYTES = 2**19
# the functions that set the calling thread's BLAS thread count (OpenBLAS ≥ 0.3.27, MKL), and
# the process's
_BLAS_LOCAL_THREADS = ("openblas_set_num_threads_local", "MKL_Set_Num_Threads_Local")
_BLAS_THREADS = ("openblas_set_num_threads", "MKL_Set_Num_Threads")


def row_blocks(array, row_bytes: int) -> list[slice]:
    """The rows of a host array cut into slices of (nearly) equal size, each about BLOCK_BYTES
    of the widest array the work reads (`row_bytes` per row); one slice for a device array."""
    n = array.shape[0]
    if type(array) is not onp.ndarray:
        return [slice(0, n)]
    count = -(-n * row_bytes // BLOCK_BYTES)
    bounds = [n * k // count for k in range(count + 1)]
    return [slice(a, b) for a, b in pairwise(bounds)]


def run_blocks(work: Callable[[slice], object], blocks: list[slice]) -> list:
    """[work(block) for block in blocks], on the thread pool when there are several."""
    pool = _pool()
    if len(blocks) == 1 or pool is None:
        return [work(block) for block in blocks]
    handling = onp.geterr()  # NumPy's error handling is per thread: the caller's applies

    def in_caller_errstate(block):
        with onp.errstate(**handling):
            return work(block)

    return list(pool.map(in_caller_errstate, blocks))


def _blas_function(names: tuple[str, ...]) -> Callable | None:
    """The first of `names` that the loaded BLAS library exports, if any (Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "blas" in line.lower() or "mkl" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in names:
            if hasattr(library, name):
                return getattr(library, name)
    return None


def set_blas_threads(threads: int) -> None:
    """The number of threads BLAS uses in this process (a search's worker shares the cores
    out); nothing where the library cannot be found."""
    setter = _blas_function(_BLAS_THREADS)
    if setter is not None:
        setter(threads)


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
    setter = _blas_function(_BLAS_LOCAL_THREADS)
    if threads < 2 or setter is None:
        return None
    return ThreadPoolExecutor(threads, "l2l-ref-rows", initializer=setter, initargs=(1,))
