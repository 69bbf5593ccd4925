"""The CuPy backend: arrays live in GPU memory; the reference code is unchanged.

Importing it fails with BackendError, naming what is missing, where CuPy is not installed or
sees no GPU: selecting cupy never falls back to NumPy.
"""

import numpy

from l2l_ref.backends import BackendError
from l2l_ref.backends.autograd_device import DeviceSupportError, register_array_type

try:
    import cupy
except ImportError as error:
    raise BackendError(
        "backend cupy needs CuPy, which is not installed "
        "(pip install 'l2l-ref[gpu]' for CUDA 12, or cupy-cuda13x for CUDA 13)"
    ) from error

if not cupy.cuda.is_available():
    raise BackendError("backend cupy needs a CUDA GPU, and CuPy finds none on this machine")

name = "cupy"


def asarray(host_array: numpy.ndarray, dtype: str) -> "cupy.ndarray":
    """A GPU copy of a host array, as `dtype`."""
    return cupy.asarray(numpy.asarray(host_array, dtype=dtype))


def to_host(array) -> numpy.ndarray:
    """The value of a GPU array, copied to the host."""
    return cupy.asnumpy(array)


try:
    register_array_type(cupy.ndarray, zeros=cupy.zeros, ones=cupy.ones, add_at=cupy.add.at)
except DeviceSupportError as error:
    raise BackendError(f"backend cupy: {error}") from error
