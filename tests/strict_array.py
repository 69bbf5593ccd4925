"""A CPU stand-in for CuPy's array, as strict as CuPy about the host, and a backend of it.

CuPy cannot run without a GPU, and a NumPy subclass would mix silently with host arrays and
hide the very bugs to catch (../shared/spec/gpu-backend.md). StrictArray wraps a NumPy array
and refuses what CuPy refuses:
- implicit conversion to NumPy (`__array__`, `.view(numpy.ndarray)`) raises;
- ufuncs raise on a host ndarray operand (0-d too); Python and NumPy scalars are accepted;
- other NumPy functions raise on host float arrays (integer shape and axis arrays pass);
- reductions and scalar indexing give 0-d arrays, never NumPy scalars;
- `numpy.add.at` with a tuple index declines, as CuPy's override does.
The module is also a backend (name, asarray, to_host) registered through the very code that
registers CuPy's array, so the whole device path runs in every CI run.
"""

import numbers

import numpy
from numpy.lib.mixins import NDArrayOperatorsMixin

from l2l_ref.backends.autograd_device import register_array_type

name = "strict"


class HostArrayError(TypeError):
    """A host array met a device array: CuPy would refuse."""


def _unwrap(value, allow_host_integers: bool):
    if isinstance(value, StrictArray):
        return value.data
    if isinstance(value, numpy.ndarray):
        if allow_host_integers and value.dtype.kind in "iub":
            return value
        raise HostArrayError(f"host array of {value.dtype} {value.shape} met a device array")
    if isinstance(value, list | tuple):
        return type(value)(_unwrap(v, allow_host_integers) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, allow_host_integers) for k, v in value.items()}
    return value


def _wrap(value):
    if isinstance(value, numpy.ndarray | numpy.generic):
        return StrictArray(numpy.asarray(value))
    if isinstance(value, list | tuple):
        return type(value)(_wrap(v) for v in value)
    return value


class StrictArray(NDArrayOperatorsMixin):
    """A NumPy array that behaves, towards the host, like a cupy.ndarray."""

    __slots__ = ("data",)

    def __init__(self, data: numpy.ndarray):
        if not isinstance(data, numpy.ndarray):
            raise TypeError(f"StrictArray wraps a numpy.ndarray, not {type(data).__name__}")
        self.data = data

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    T = property(lambda self: StrictArray(self.data.T))

    def __array__(self, dtype=None, copy=None):
        raise HostArrayError("implicit conversion of a device array to a NumPy array")

    def view(self, dtype=None):
        if isinstance(dtype, type) and issubclass(dtype, numpy.ndarray):
            raise HostArrayError("a device array cannot be viewed as a numpy.ndarray")
        return StrictArray(self.data.view(dtype))

    def get(self) -> numpy.ndarray:
        """The value on the host, as cupy.ndarray.get() gives it."""
        return self.data.copy()

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method == "at" and isinstance(inputs[1], tuple):
            return NotImplemented
        for value in inputs:
            if not isinstance(value, StrictArray | numpy.ndarray | numbers.Number | numpy.generic):
                return NotImplemented
        args = _unwrap(inputs, allow_host_integers=False)
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = _unwrap(out, allow_host_integers=False)
        result = getattr(ufunc, method)(*args, **kwargs)
        return out[0] if out is not None and len(out) == 1 else _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        if not all(issubclass(t, StrictArray | numpy.ndarray) for t in types):
            return NotImplemented
        result = func(*_unwrap(args, True), **_unwrap(kwargs, True))
        return _wrap(result)

    def __getitem__(self, index):
        return _wrap(self.data[_unwrap(index, allow_host_integers=True)])

    def __setitem__(self, index, value):
        self.data[_unwrap(index, True)] = _unwrap(value, allow_host_integers=False)

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __float__(self) -> float:
        return float(self.data)

    def __bool__(self) -> bool:
        return bool(self.data)

    def __repr__(self) -> str:
        return f"StrictArray({self.data!r})"

    def reshape(self, *shape):
        return StrictArray(self.data.reshape(*shape))

    def astype(self, dtype):
        return StrictArray(self.data.astype(dtype))

    def sum(self, *args, **kwargs):
        return _wrap(self.data.sum(*args, **kwargs))

    def mean(self, *args, **kwargs):
        return _wrap(self.data.mean(*args, **kwargs))

    def ravel(self):
        return StrictArray(self.data.ravel())

    def transpose(self, *axes):
        return StrictArray(self.data.transpose(*axes))

    def copy(self):
        return StrictArray(self.data.copy())


def _add_at(A: StrictArray, index, x) -> None:
    numpy.add.at(A.data, _unwrap(index, True), _unwrap(x, False))


def asarray(host_array, dtype: str) -> StrictArray:
    """A device copy of a host array, as `dtype` (cupy.asarray's counterpart)."""
    return StrictArray(numpy.array(host_array, dtype=dtype))


def to_host(array) -> numpy.ndarray:
    """The host value of a device array (cupy.asnumpy's counterpart)."""
    if not isinstance(array, StrictArray):
        raise HostArrayError(f"expected a device array, got {type(array).__name__}")
    return array.get()


register_array_type(
    StrictArray,
    zeros=lambda shape, dtype: StrictArray(numpy.zeros(shape, dtype)),
    ones=lambda shape, dtype: StrictArray(numpy.ones(shape, dtype)),
    add_at=_add_at,
)
