"""Teaching autograd to differentiate arrays that live on a device (CuPy's, or the tests'
stand-in).

Two things are needed (../shared/spec/gpu-backend.md):

1. Registration, through autograd's public hooks: the array type is boxed like a NumPy array
   (`ArrayBox.register`) and gets a vector space whose zeros and ones are made by the array's
   own library (`VSpace.register`), not by host NumPy.
2. Device-safe replacements for the few autograd rules that build host arrays and that this
   project's model code reaches: the gradients of reductions (`repeat_to_match_shape`), of
   `where`, of `power` with a scalar exponent, and of indexing (`untake`, which calls
   `numpy.add.at`), and the forward `concatenate`, which views its result as a host ndarray.

A rule is registered per primitive, not per array type, so each replacement also serves NumPy
and must give NumPy exactly what the original gives (values and dtypes): the docs record
autograd's own test suite passing with the replacements installed. The replacements are
written against autograd 1.9.1; `install` refuses any other version, and checks that every
name it replaces is still there.
"""

from collections.abc import Callable
from importlib.metadata import version

import autograd.numpy as anp
import autograd.numpy.numpy_vjps as numpy_vjps
import autograd.numpy.numpy_wrapper as numpy_wrapper
import numpy as onp
from autograd.extend import (
    SparseObject,
    VSpace,
    defjvp,
    defjvp_argnum,
    defvjp,
    defvjp_argnum,
    primitive,
    vspace,
)
from autograd.numpy.numpy_boxes import ArrayBox
from autograd.numpy.numpy_jvps import fwd_grad_concatenate_args
from autograd.tracer import getval

CHECKED_AUTOGRAD_VERSIONS = ("1.9.1",)

# what `install` replaces: (module, name) pairs that must exist in the checked version
REPLACED = (
    (anp, "_original_where"),
    (numpy_vjps, "repeat_to_match_shape"),
    (numpy_vjps, "untake"),
    (numpy_vjps, "grad_concatenate_args"),
    (numpy_vjps, "unbroadcast_f"),
    (numpy_vjps, "replace_zero"),
    (numpy_wrapper, "concatenate_args"),
)


class DeviceSupportError(RuntimeError):
    """autograd is not a version whose rules the device support was checked against."""


# per registered array type: zeros(shape, dtype), ones(shape, dtype), add_at(A, idx, x)
ARRAY_TYPES: dict[type, dict[str, Callable]] = {}


class DeviceArrayVSpace(VSpace):
    """The vector space of one device array shape and dtype; zeros and ones are made by the
    array's own library, so gradients never leave the device."""

    __slots__ = ["array_type", "dtype", "shape"]

    def __init__(self, value):
        self.array_type, self.shape, self.dtype = type(value), value.shape, value.dtype

    @property
    def size(self) -> int:
        return int(onp.prod(self.shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def zeros(self):
        return ARRAY_TYPES[self.array_type]["zeros"](self.shape, self.dtype)

    def ones(self):
        return ARRAY_TYPES[self.array_type]["ones"](self.shape, self.dtype)

    def _inner_prod(self, x, y):
        return anp.sum(x * y)


# ----- device-safe replacements; on NumPy each gives what the original gives -----


def repeat_to_match_shape(g, shape, dtype, axis, keepdims):
    """numpy_vjps.repeat_to_match_shape with the zeros made beside g instead of on the host."""
    if shape == ():
        return g, 1
    axis = list(axis) if isinstance(axis, tuple) else axis
    new_shape = onp.array(shape)
    new_shape[axis] = 1
    num_reps = onp.prod(onp.array(shape)[axis])
    zeros = anp.zeros_like(getval(g), shape=shape, dtype=dtype)
    return anp.reshape(g, tuple(int(n) for n in new_shape)) + zeros, num_reps


def where_vjp(argnum: int) -> Callable:
    """The gradient of where(c, x, y) for x (argnum 1) or y (argnum 2); the original's
    float64 zeros are made beside g."""

    def make_vjp(ans, c, x=None, y=None):
        def vjp(g):
            zeros = anp.zeros_like(getval(g), dtype=onp.float64)
            return anp.where(c, g, zeros) if argnum == 1 else anp.where(c, zeros, g)

        return vjp

    return make_vjp


def power_vjp_base(ans, x, y):
    """The gradient of x ** y for x: g · y · x^(y−1), with x^1 where y = 0.

    The original takes autograd.numpy.where(y, y − 1, 1.0): a Python float when y is a Python
    number, but a 0-d host array when y is a NumPy scalar; here the latter is the NumPy scalar
    of the same value and dtype instead, which promotes alike and is accepted beside a device
    array.
    """
    exponent = anp.where(y, y - 1, 1.0)
    if isinstance(y, onp.generic):
        exponent = exponent[()]
    return numpy_vjps.unbroadcast_f(x, lambda g: g * y * x**exponent)


def power_vjp_exponent(ans, x, y):
    """The gradient of x ** y for y, as the original states it (re-registered beside the
    base's): g · log x · x^y, with log 1 where x = 0."""
    return numpy_vjps.unbroadcast_f(y, lambda g: g * anp.log(numpy_vjps.replace_zero(x, 1.0)) * ans)


def _as_tuple(idx) -> tuple:
    return idx if isinstance(idx, tuple) else (idx,)


@primitive
def untake(x, idx, vs):
    """Scatter-add of x into zeros at idx (the gradient of indexing), by the array type's own
    add.at: NumPy's declines device arrays with a tuple index. A basic index (slices, integers)
    selects every element at most once, so it adds in place instead, with the same result."""
    if isinstance(idx, list) and (len(idx) == 0 or not isinstance(idx[0], slice)):
        idx = onp.array(idx, dtype="int64")
    add_at = ARRAY_TYPES[type(x)]["add_at"] if type(x) in ARRAY_TYPES else onp.add.at
    basic = all(isinstance(i, slice | int | type(None) | type(Ellipsis)) for i in _as_tuple(idx))

    def mut_add(A):
        if basic:  # no element is indexed twice: in-place addition is add.at, several times faster
            A[idx] += x
        else:
            add_at(A, idx, x)
        return A

    return SparseObject(vs, mut_add)


@primitive
def concatenate_args(axis, *args):
    """numpy_wrapper.concatenate_args, which views the result as a host ndarray: on a device
    array that view is an object array, so it is taken only of NumPy results."""
    result = onp.concatenate(args, axis)
    return result.view(onp.ndarray) if isinstance(result, onp.ndarray) else result


_installed = False


def install() -> None:
    """Install the replacements above into autograd (once); fail on an unchecked version."""
    global _installed
    if _installed:
        return
    found = version("autograd")
    if found not in CHECKED_AUTOGRAD_VERSIONS:
        raise DeviceSupportError(
            f"autograd {found} is installed; the device backends were checked on "
            f"{', '.join(CHECKED_AUTOGRAD_VERSIONS)} only"
        )
    missing = [f"{m.__name__}.{name}" for m, name in REPLACED if not hasattr(m, name)]
    if missing:
        raise DeviceSupportError(f"autograd lacks what the device backends replace: {missing}")

    numpy_vjps.repeat_to_match_shape = repeat_to_match_shape  # read by sum, mean, prod, ...
    # autograd.numpy.where is a Python wrapper; the primitive it calls is _original_where
    defvjp(anp._original_where, None, where_vjp(1), where_vjp(2))
    defvjp(anp.power, power_vjp_base, power_vjp_exponent)
    defvjp(ArrayBox.__getitem__, lambda ans, A, idx: lambda g: untake(g, idx, vspace(A)))
    defvjp(untake, lambda ans, x, idx, _: lambda g: g[idx])
    defjvp(untake, "same")
    defvjp_argnum(concatenate_args, numpy_vjps.grad_concatenate_args)
    defjvp_argnum(concatenate_args, fwd_grad_concatenate_args)
    numpy_wrapper.concatenate_args = anp.concatenate_args = concatenate_args
    _installed = True


def register_array_type(
    array_type: type, zeros: Callable, ones: Callable, add_at: Callable
) -> None:
    """Make autograd differentiate `array_type` (a CuPy-like array) and install the
    device-safe rules. zeros/ones(shape, dtype) make arrays of that type; add_at(A, idx, x)
    is its unbuffered scatter-add."""
    install()
    if array_type not in ARRAY_TYPES:
        ArrayBox.register(array_type)
        VSpace.register(array_type, DeviceArrayVSpace)
    ARRAY_TYPES[array_type] = {"zeros": zeros, "ones": ones, "add_at": add_at}
