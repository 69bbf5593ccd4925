"""Nested dicts and lists of arrays (θ, φ, hidden states) and the helpers that walk them."""

from collections.abc import Callable
from typing import Any


def tree_map(fn: Callable, tree: Any, *rest: Any) -> Any:
    """Apply `fn` leafwise over one or more trees of the same structure."""
    if isinstance(tree, dict):
        return {key: tree_map(fn, tree[key], *(r[key] for r in rest)) for key in tree}
    if isinstance(tree, list | tuple):
        return type(tree)(tree_map(fn, *parts) for parts in zip(tree, *rest, strict=True))
    return fn(tree, *rest)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """The leaves of `tree` keyed by their path, e.g. 'all/lstm/0/W'."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat = {}
    for key, subtree in items:
        flat.update(flatten(subtree, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def unflatten_like(template: Any, flat: dict[str, Any], prefix: str = "") -> Any:
    """The tree of `template`'s structure whose leaves are taken from `flat` by path."""
    if isinstance(template, dict):
        return {
            k: unflatten_like(v, flat, f"{prefix}/{k}" if prefix else k)
            for k, v in template.items()
        }
    if isinstance(template, list | tuple):
        return type(template)(
            unflatten_like(v, flat, f"{prefix}/{i}" if prefix else str(i))
            for i, v in enumerate(template)
        )
    return flat[prefix]
