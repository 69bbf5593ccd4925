"""The reference's source stays device-neutral (../shared/spec/gpu-backend.md), so that a
future edit cannot silently break the GPU path: a walk over l2l_ref/ for the NumPy calls that
a CuPy array cannot serve."""

import ast
from pathlib import Path

SOURCE = Path(__file__).parent.parent / "l2l_ref"

# through autograd.numpy these build host arrays, or have gradients that do, or (np.concat)
# silently make object arrays of boxes; create arrays with *_like(template, shape=...) instead
TRACED_FORBIDDEN = {
    "array", "asarray", "asanyarray", "ascontiguousarray", "stack", "vstack", "hstack",
    "dstack", "concat", "dot", "einsum", "full", "zeros", "ones", "empty", "eye", "identity",
    "arange", "linspace", "select", "inner", "outer",
}  # fmt: skip
# host NumPy calls that make host arrays, forbidden inside primitives and their gradients,
# whose arguments are device arrays
HOST_CREATION = {"array", "asarray", "zeros", "ones", "empty", "full", "eye", "arange", "stack"}
# Array-API-only names (no counterpart under autograd) and views as a host ndarray
FORBIDDEN_ATTRIBUTES = {"mT", "device", "view"}
GRADIENT_REGISTRATIONS = {"defvjp", "defvjp_argnum", "defvjp_argnums", "defjvp"}


def aliases(tree: ast.Module) -> tuple[set, set]:
    """Names bound to autograd.numpy and to plain numpy."""
    traced, host = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "autograd.numpy":
                    traced.add(alias.asname or alias.name)
                elif alias.name == "numpy":
                    host.add(alias.asname or alias.name)
    return traced, host


def device_functions(tree: ast.Module) -> list:
    """Functions whose arguments are device arrays and that autograd does not trace: those
    made primitives (decorated with @primitive, or passed to primitive(...)), those
    registered as gradients, and the module's functions that these call."""
    registered = {
        arg.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in GRADIENT_REGISTRATIONS
        for arg in node.args[1:]
        if isinstance(arg, ast.Name)
    }
    registered |= {
        arg.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "primitive"
        for arg in node.args
        if isinstance(arg, ast.Name)
    }
    defined = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}

    def is_primitive(function):
        return any(getattr(d, "id", "") == "primitive" for d in function.decorator_list)

    found = {name for name, node in defined.items() if name in registered or is_primitive(node)}
    while True:  # what device functions call is a device function too
        called = {
            node.func.id
            for name in found
            for node in ast.walk(defined[name])
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        if called & defined.keys() <= found:
            return [defined[name] for name in sorted(found)]
        found |= called & defined.keys()


def violations(source: str, filename: str) -> list[str]:
    """Every call or attribute in `source` that the device path cannot serve."""
    tree = ast.parse(source, filename)
    traced, host = aliases(tree)
    found = []

    def report(node, what):
        found.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in traced and node.attr in TRACED_FORBIDDEN:
                report(node, f"{node.value.id}.{node.attr}")
            if node.value.id in host and node.attr in ("dot", "einsum"):
                report(node, f"{node.value.id}.{node.attr}")
        if isinstance(node, ast.Attribute) and node.attr == "at":  # ufunc.at: host scatter
            report(node, "ufunc .at")
        if (
            isinstance(node, ast.Attribute)
            and node.attr in FORBIDDEN_ATTRIBUTES
            and not (isinstance(node.value, ast.Name) and node.value.id in host | traced)
        ):
            report(node, f".{node.attr}")
    for function in device_functions(tree):
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in host
                and node.attr in HOST_CREATION
            ):
                report(node, f"{node.value.id}.{node.attr} in {function.name}")
    return found


def test_reference_source_is_device_neutral():
    found = [
        problem
        for path in sorted(SOURCE.glob("*.py"))
        for problem in violations(path.read_text(), path.name)
    ]
    assert not found, "calls the device path cannot serve:\n" + "\n".join(found)


def test_the_walk_finds_each_kind_of_violation():
    bad = """
import autograd.numpy as np
import numpy as onp
from autograd.extend import primitive, defvjp

def model(x, h):
    z = np.concatenate([x, np.zeros((3, 1))], axis=1)
    return np.dot(z, h) + np.array([1.0]) + x.mT.sum() + onp.einsum("ij->", x)

@primitive
def cell(x):
    return onp.zeros(x.shape) + x

def cell_vjp(ans, x):
    onp.add.at(ans, (slice(None),), x)
    return lambda g: g.view(onp.ndarray) + onp.asarray(g) + helper(g)

def helper(g):
    return onp.ones(g.shape)

def kernel(x):
    return onp.arange(3) + x

defvjp(cell, cell_vjp)
fused = primitive(kernel)
"""
    found = [line.split(": ", 1)[1] for line in violations(bad, "bad.py")]
    assert sorted(found) == sorted([
        "np.zeros", "np.dot", "np.array", ".mT", "onp.einsum", "onp.zeros in cell",
        "ufunc .at", ".view", "onp.asarray in cell_vjp", "onp.ones in helper",
        "onp.arange in kernel",
    ])  # fmt: skip
