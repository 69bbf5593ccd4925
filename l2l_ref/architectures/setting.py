"""What an architecture's own setting is (architectures/__init__.py: SETTINGS)."""

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """A setting an architecture owns: its default (whose type every value must have), the
    help of its command-line flag, and `check(value, config)`, which returns what is wrong
    with a value for that configuration, or None."""

    default: int | float | str
    help: str
    check: Callable | None = None
