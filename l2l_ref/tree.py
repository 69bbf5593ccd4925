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


def unflatten(flat: dict[str, Any]) -> Any:
    """The tree whose leaves `flat` holds by path (the inverse of flatten): a level whose keys
    are all 0, 1, 2, … is a list, any other a dict."""
    tree: dict = {}
    for path, leaf in flat.items():
        *parents, last = path.split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = leaf
    return _lists(tree)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    children = {key: _lists(child) for key, child in node.items()}
    if children and sorted(children) == [str(k) for k in range(len(children))]:
        return [children[str(k)] for k in range(len(children))]
    return children
