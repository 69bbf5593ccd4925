"""Checks of values that come from files and command lines: nothing read back from disk is
trusted. Each check returns the value, or raises ConfigError naming the field and what is
wrong with it; the reader of a record puts the file's name in front, so that a damaged file
is one line (exit code 2) before any work is done or any file written.
"""

import dataclasses
import math
import types
import typing
from collections.abc import Callable

from l2l_ref.errors import ConfigError


def integer(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """An int (not a bool, not a float), within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, not {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{'' if low is None else low}…{'' if high is None else high}"
        raise ConfigError(f"{name} must be in {bounds}, not {value}")
    return value


def number(value, name: str, low: float | None = None, infinite: bool = False) -> float:
    """A finite int or float (not a bool), at least `low`; with `infinite`, also +inf (in JSON:
    null, or the string "inf" of a state file)."""
    if infinite and (value is None or value == "inf" or value == math.inf):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, not {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{name} must be at least {low}, not {value}")
    return float(value)


def text(value, name: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, not {value!r}")
    return value


def mapping(value, name: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping, not {value!r}")
    return value


def sequence(value, name: str, length: int | None = None) -> list:
    """A list (JSON's array), of `length` items if given."""
    if not isinstance(value, list):
        raise ConfigError(f"{name} must be a list, not {value!r}")
    if length is not None and len(value) != length:
        raise ConfigError(f"{name} must have {length} entries, not {len(value)}")
    return value


def numbers(value, name: str, length: int | None = None, infinite: bool = False) -> list:
    """A list of numbers (null/"inf" allowed as +inf with `infinite`)."""
    items = sequence(value, name, length)
    return [number(v, f"{name}[{k}]", infinite=infinite) for k, v in enumerate(items)]


def names_to_names(value, name: str) -> dict:
    """A mapping of strings to strings (the tensor → network map)."""
    items = mapping(value, name)
    for key, target in items.items():
        text(target, f"{name}[{key!r}]")
    return items


def _checker(annotation) -> Callable:
    """The check of a dataclass field of type `annotation` (the types the configs use)."""
    if annotation is int:
        return integer
    if annotation is float:
        return number
    if annotation is str:
        return text
    if annotation is bool:

        def boolean(value, name):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, not {value!r}")
            return value

        return boolean
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union) and type(None) in arguments:
        inner = _checker(next(a for a in arguments if a is not type(None)))
        return lambda value, name: None if value is None else inner(value, name)
    if origin is tuple and arguments[1:] == (Ellipsis,):
        item = _checker(arguments[0])

        def items(value, name):
            if not isinstance(value, tuple):
                raise ConfigError(f"{name} must be a tuple (in a file: a list), not {value!r}")
            return tuple(item(v, f"{name}[{k}]") for k, v in enumerate(value))

        return items
    if isinstance(annotation, type):  # dict, or a config of its own (checked by itself)

        def instance(value, name):
            if not isinstance(value, annotation):
                raise ConfigError(f"{name} must be a {annotation.__name__}, not {value!r}")
            return value

        return instance
    raise TypeError(f"no check for fields of type {annotation}")


def field_types(config) -> None:
    """Every field of a frozen config dataclass has its annotated type (a config read from a
    file can hold anything JSON can)."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        _checker(hints[field.name])(getattr(config, field.name), field.name)
