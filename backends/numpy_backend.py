"""The NumPy backend: arrays live in host memory."""

import numpy

name = "numpy"


def asarray(host_array: numpy.ndarray, dtype: str) -> numpy.ndarray:
    """Copy of a host array, as `dtype`, ready for the model."""
    return numpy.array(host_array, dtype=dtype)


def to_host(array) -> numpy.ndarray:
    """A NumPy array holding the value of `array`."""
    return numpy.asarray(array)
