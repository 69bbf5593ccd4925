"""Array backends: where the reference's arrays live.

Every array the program computes with is created through a backend: problems and optimizer
parameters are drawn on the host with a seeded NumPy generator and moved to the device once
(`backend.asarray`), so the same seed gives the same numbers on every backend; results come
back through `backend.to_host`. The model code in `l2l_ref/` only ever calls `autograd.numpy`,
which dispatches to the arrays' own library; `l2l_ref.backends.autograd_device` teaches autograd to
differentiate device arrays.

A backend is a module with:
    name: str
    asarray(host_array, dtype) -> device array
    to_host(array) -> numpy.ndarray
Importing a backend that this machine cannot serve raises BackendError.
"""

import contextlib
import importlib
from types import ModuleType

from l2l_ref.backends import autograd_device
from l2l_ref.errors import L2LError

BACKENDS = {"numpy": "l2l_ref.backends.numpy_backend", "cupy": "l2l_ref.backends.cupy_backend"}


class BackendError(L2LError):
    """A backend was asked for that this machine cannot serve."""


def get_backend(name: str) -> ModuleType:
    """The backend module called `name` (one of BACKENDS).

    Installs autograd_device's rules, which serve NumPy too: the same results, and indexing
    gradients several times faster. Under an autograd they were not checked on, NumPy runs on
    autograd's own rules and the device backends refuse.
    """
    with contextlib.suppress(autograd_device.DeviceSupportError):
        autograd_device.install()
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    return importlib.import_module(BACKENDS[name])
