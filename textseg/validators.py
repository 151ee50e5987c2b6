"""Argument checks shared by the whole package: one message per kind of mistake.

Each check returns the value (converted where that is the point, e.g. a bool is never taken for
an int) or raises ``TypeError`` / ``ValueError`` with the argument's name, what was expected and
what was received::

    batch_size = positive_int(batch_size, "batch_size")
    threshold = unit_interval(threshold, "box_threshold")

The command line turns these errors into one line (:func:`textseg.cli.main`); argparse types
built from them live in :mod:`textseg.cli._common`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = [
    "check_choice",
    "finite_number",
    "int_at_least",
    "non_negative_int",
    "non_negative_number",
    "optional_positive_int",
    "positive_fraction",
    "positive_int",
    "positive_number",
    "unit_interval",
]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def int_at_least(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int ``>= minimum``.

    Raises:
        TypeError: ``value`` is not an integer (floats such as ``1.5`` and bools included).
        ValueError: ``value < minimum``.
    """
    if not _is_int(value):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int ``>= 1``; ``TypeError`` / ``ValueError`` otherwise."""
    if not _is_int(value) or value < 1:
        error = TypeError if not _is_int(value) else ValueError
        raise error(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def optional_positive_int(value: Any, name: str) -> int | None:
    """None, or ``value`` as an int ``>= 1``."""
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        error = TypeError if not _is_int(value) else ValueError
        raise error(f"{name}: expected a positive integer or None, got {value!r}")
    return int(value)


def optional_non_negative_int(value: Any, name: str) -> int | None:
    """``value`` as an int >= 0, or None."""
    return None if value is None else non_negative_int(value, name)


def non_negative_int(value: Any, name: str) -> int:
    """``value`` as an int ``>= 0``; ``TypeError`` / ``ValueError`` otherwise."""
    if not _is_int(value) or value < 0:
        error = TypeError if not _is_int(value) else ValueError
        raise error(f"{name}: expected an integer >= 0, got {value!r}")
    return int(value)


def finite_number(value: Any, name: str) -> float:
    """``value`` as a finite float (no NaN, no infinity, no bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def positive_number(value: Any, name: str) -> float:
    """``value`` as a finite float ``> 0``."""
    number = finite_number(value, name)
    if number <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {value!r}")
    return number


def non_negative_number(value: Any, name: str) -> float:
    """``value`` as a finite float ``>= 0``."""
    number = finite_number(value, name)
    if number < 0:
        raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
    return number


def unit_interval(value: Any, name: str, *, open_right: bool = False) -> float:
    """``value`` as a float in ``[0, 1]`` (``[0, 1)`` with ``open_right``)."""
    interval = "[0, 1)" if open_right else "[0, 1]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number in {interval}, got {value!r}")
    number = float(value)
    if not (0.0 <= number < 1.0 if open_right else 0.0 <= number <= 1.0):
        raise ValueError(f"{name}: expected a number in {interval}, got {value!r}")
    return number


def positive_fraction(value: Any, name: str) -> float:
    """``value`` as a float in ``(0, 1]`` (a threshold that 0 would make never trigger)."""
    number = unit_interval(value, name)
    if number == 0.0:
        raise ValueError(f"{name}: expected a number in (0, 1], got {value!r}")
    return number


def check_choice(value: Any, name: str, choices: tuple[Any, ...] | list[Any]) -> Any:
    """``value`` if it is one of ``choices``; ``ValueError`` naming them otherwise."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected one of {listed}, got {value!r}")
    return value
