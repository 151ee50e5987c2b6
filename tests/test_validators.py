"""textseg.validators: one message per kind of mistake."""

from __future__ import annotations

import math

import pytest

from textseg import validators as v


@pytest.mark.parametrize(
    ("check", "value", "error", "message"),
    [
        (v.positive_int, 0, ValueError, "n: expected a positive integer, got 0"),
        (v.positive_int, 1.5, TypeError, "n: expected a positive integer, got 1.5"),
        (v.positive_int, True, TypeError, "n: expected a positive integer, got True"),
        (v.non_negative_int, -1, ValueError, "n: expected an integer >= 0, got -1"),
        (v.optional_positive_int, 0, ValueError, "n: expected a positive integer or None"),
        (v.finite_number, math.nan, ValueError, "n: expected a finite number, got nan"),
        (v.finite_number, "1", TypeError, "n: expected a number, got '1'"),
        (v.positive_number, 0.0, ValueError, "n: expected a number > 0, got 0.0"),
        (v.non_negative_number, -0.5, ValueError, "n: expected a number >= 0, got -0.5"),
        (v.unit_interval, 1.5, ValueError, r"n: expected a number in \[0, 1\], got 1.5"),
    ],
)
def test_bad_values_name_the_argument_and_what_was_expected(check, value, error, message) -> None:
    with pytest.raises(error, match=message):
        check(value, "n")


def test_good_values_come_back_converted() -> None:
    assert v.positive_int(3, "n") == 3
    assert v.optional_positive_int(None, "n") is None
    assert v.non_negative_int(0, "n") == 0
    assert v.unit_interval(1, "n") == 1.0
    assert v.int_at_least(2, "n", 2) == 2
    with pytest.raises(ValueError, match=r"n: expected a number in \[0, 1\), got 1"):
        v.unit_interval(1, "n", open_right=True)
    assert v.check_choice("a", "n", ("a", "b")) == "a"
    with pytest.raises(ValueError, match="n: expected one of 'a', 'b', got 'c'"):
        v.check_choice("c", "n", ("a", "b"))
