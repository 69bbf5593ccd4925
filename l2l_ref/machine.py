"""The machine a result was computed on, and the host's BLAS library.

Results depend on the machine: NumPy's OpenBLAS picks a kernel for the CPU it runs on
(SkylakeX on AVX-512, Haswell on AVX2, ...), each kernel rounds matrix products its own way,
and meta-training amplifies those last bits into a different trajectory. So a seed gives the
same bits on the same kernel and versions only; elsewhere the same run is another draw of the
same experiment. Every results file, checkpoint, state and benchmark therefore records
`machine()`: the CPU, the BLAS library, its version and kernel, NumPy's version.

The BLAS library is found, and its threads set, through threadpoolctl, which reads the
libraries this process has loaded.
"""

import contextlib
import platform
from collections.abc import Iterator
from functools import cache

import numpy as onp
import threadpoolctl

from l2l_ref.errors import ConfigError

# the functions that set the calling thread's BLAS thread count, which threadpoolctl does not
# wrap (OpenBLAS ≥ 0.3.27, MKL)
_LOCAL_THREADS = ("openblas_set_num_threads_local", "MKL_Set_Num_Threads_Local")


@cache
def blas():
    """NumPy's BLAS library as threadpoolctl controls it (the one inside NumPy's wheel where
    several are loaded), or None where threadpoolctl finds none. NumPy loaded it on import,
    so the answer does not change."""
    controllers = threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers
    ours = [c for c in controllers if "numpy" in c.filepath]
    return (ours or controllers or [None])[0]


def blas_threads() -> int | None:
    """The number of threads BLAS uses for the calling thread; None where it is not found."""
    library = blas()
    return None if library is None else library.num_threads


def set_blas_threads(threads: int) -> None:
    """The number of threads BLAS uses in this process; nothing where it is not found."""
    library = blas()
    if library is not None:
        library.set_num_threads(threads)


@cache
def local_thread_setter():
    """BLAS's setter of the calling thread's own thread count, or None where the library has
    none (then every thread shares the process's count)."""
    library = blas()
    for name in _LOCAL_THREADS:
        setter = getattr(getattr(library, "dynlib", None), name, None)
        if setter is not None:
            return setter
    return None


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread, then as before. A whole run (l2l_ref.run's train and compare) runs
    in it: the cores serve the coordinate blocks instead, where a second BLAS thread only
    spins against them, and a product's last bits, which can depend on the thread count, no
    longer depend on the machine's cores."""
    before = blas_threads()
    set_blas_threads(1)
    try:
        yield
    finally:
        if before is not None:
            set_blas_threads(before)


def available_memory() -> int | None:
    """Bytes of memory this machine has available now (Linux's MemAvailable), if known."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict:
    """What a result depends on beyond its settings: the CPU, the BLAS library (name, version,
    the kernel it picked, as threadpoolctl reports them), NumPy's version, Python, the OS."""
    library = blas()
    info = library.info() if library is not None else {}
    return {
        "cpu": cpu_model(),
        "blas": {
            "library": info.get("internal_api", "unknown"),
            "version": info.get("version") or "unknown",
            "kernel": info.get("architecture") or "unknown",
        },
        "numpy": onp.__version__,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
    }


def check_machine(record, name: str = "machine") -> dict:
    """A machine record read back from a file: the fields describe() reads, strings."""
    if not isinstance(record, dict) or not isinstance(record.get("blas"), dict):
        raise ConfigError(f"{name} must be a record of the machine, not {record!r}")
    fields = {"cpu": record.get("cpu"), "numpy": record.get("numpy")}
    fields |= {f"blas.{k}": record["blas"].get(k) for k in ("library", "version", "kernel")}
    for key, value in fields.items():
        if not isinstance(value, str):
            raise ConfigError(f"{name}.{key} must be a string, not {value!r}")
    return record


def describe(record: dict | None = None) -> str:
    """One line for a table's heading: 'AMD EPYC; openblas 0.3.31 (SkylakeX kernel); NumPy
    2.4.6'."""
    record = record or machine()
    blas_record = record["blas"]
    return (
        f"{record['cpu']}; {blas_record['library']} {blas_record['version']} "
        f"({blas_record['kernel']} kernel); NumPy {record['numpy']}"
    )
