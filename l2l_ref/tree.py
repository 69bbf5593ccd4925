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


def flatten(tree: Any, prefix: str = "", is_leaf: Callable | None = None) -> dict[str, Any]:
    """The leaves of `tree` keyed by their path, e.g. 'all/lstm/0/W'; `is_leaf` marks
    containers to keep whole (a shape tuple)."""
    if is_leaf is not None and is_leaf(tree):
        return {prefix: tree}
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat = {}
    for key, subtree in items:
        flat.update(flatten(subtree, f"{prefix}/{key}" if prefix else str(key), is_leaf))
    return flat


def unflatten_like(
    template: Any, flat: dict[str, Any], prefix: str = "", is_leaf: Callable | None = None
) -> Any:
    """The tree of `template`'s structure (empty lists and dicts included) whose leaves are
    taken from `flat` by path; `is_leaf` as for flatten."""
    if is_leaf is not None and is_leaf(template):
        return flat[prefix]
    path = (lambda key: f"{prefix}/{key}") if prefix else str
    if isinstance(template, dict):
        return {k: unflatten_like(v, flat, path(k), is_leaf) for k, v in template.items()}
    if isinstance(template, list | tuple):
        return type(template)(
            unflatten_like(v, flat, path(i), is_leaf) for i, v in enumerate(template)
        )
    return flat[prefix]
