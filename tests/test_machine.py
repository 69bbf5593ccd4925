"""The machine a result was computed on (l2l_ref.machine): the BLAS kernel it names is the one
that ran, every file a run writes names it, and BLAS threads are set through threadpoolctl."""

import json
import os
import subprocess
import sys

import pytest

from l2l_ref import machine


def cpu_flags() -> list[str]:
    """The CPU's feature flags (Linux), or none known."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(
                (line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []
            )
    except OSError:
        return []


def reported_kernel(coretype: str) -> str:
    """The kernel machine() names in a fresh process whose OpenBLAS was told to use
    `coretype` (OPENBLAS_CORETYPE, read when the library loads)."""
    env = {**os.environ, "OPENBLAS_CORETYPE": coretype}
    code = "import json, numpy; from l2l_ref import machine; print(json.dumps(machine.machine()))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["blas"]["kernel"]


@pytest.mark.parametrize(("coretype", "flag"), [("Haswell", "avx2"), ("Sandybridge", "avx")])
def test_the_kernel_named_is_the_kernel_that_ran(coretype, flag):
    """A kernel forced by OPENBLAS_CORETYPE is the one reported, on a CPU that can run it."""
    if machine.machine()["blas"]["library"] != "openblas" or flag not in cpu_flags():
        pytest.skip(f"needs NumPy's OpenBLAS on a CPU with {flag}")
    assert reported_kernel(coretype) == coretype


def test_the_record_names_cpu_blas_and_numpy():
    import numpy

    record = machine.machine()
    assert record["numpy"] == numpy.__version__
    assert set(record["blas"]) == {"library", "version", "kernel"}
    assert record["cpu"] and record["system"]
    line = machine.describe(record)
    assert record["cpu"] in line and record["blas"]["kernel"] in line


def test_blas_threads_are_set_and_read_back():
    before = machine.blas_threads()
    if before is None:
        pytest.skip("no BLAS library found")
    try:
        machine.set_blas_threads(1)
        assert machine.blas_threads() == 1
        with machine.one_blas_thread():
            assert machine.blas_threads() == 1
        machine.set_blas_threads(2)
        with machine.one_blas_thread():
            assert machine.blas_threads() == 1
        assert machine.blas_threads() == 2
    finally:
        machine.set_blas_threads(before)
