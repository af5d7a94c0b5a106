"""One validation layer for every value a user can type: a declared kind (int, number, bool, text) and interval or
choices, checked where the value enters, with an error that names the key, the value and, when it came from a file,
the file.

- Python values are typed: a bool is not an int, a string is not a number; integers from numpy are integers and
  numpy floats are numbers (`as_int`, `as_number`).
- Text (key=value on a command line, a string in a config file) is parsed strictly (`parse_text`): "false" is
  false, "2.5" is not an integer, "1e-3" is a number.
- An interval is written as in mathematics, "[1, inf)" or "(0, 1]"; an open infinite end refuses inf and nan.

The training config (maskedkd.experiments.core.TrainConfig) declares every field this way; the core's small functions
(select.keep_count, view.TeacherView, ...) check their arguments with the same helpers.
"""
from __future__ import annotations

import math
import numbers
import operator
import re
from dataclasses import dataclass
from functools import lru_cache


class InputError(ValueError):
    """A value a user gave is not what its key takes; the message names the key, the value and the source."""


@dataclass(frozen=True)
class Interval:
    text: str
    low: float
    high: float
    low_closed: bool
    high_closed: bool

    def __contains__(self, v) -> bool:
        if isinstance(v, float) and math.isnan(v):
            return False
        lo = v >= self.low if self.low_closed else v > self.low
        hi = v <= self.high if self.high_closed else v < self.high
        return lo and hi


_INTERVAL = re.compile(r"^([\[(])\s*(-?inf|[-+0-9.e]+)\s*,\s*(-?inf|[-+0-9.e]+)\s*([\])])$")


@lru_cache(maxsize=None)
def interval(text: str) -> Interval:
    """"[1, inf)" -> Interval; a closed infinite end is a programming error."""
    m = _INTERVAL.match(text)
    if not m:
        raise ValueError(f"interval {text!r} is not written as '[a, b)' / '(a, b]'")
    lo, hi = float(m.group(2)), float(m.group(3))
    lc, hc = m.group(1) == "[", m.group(4) == "]"
    if (lc and math.isinf(lo)) or (hc and math.isinf(hi)):
        raise ValueError(f"interval {text!r}: an infinite end is open")
    return Interval(text, lo, hi, lc, hc)


def _where(name: str, source: str | None) -> str:
    return f"{source}: {name}" if source else name


def _meaning(meaning: str) -> str:
    return f" ({meaning})" if meaning else ""


def as_int(value, name: str, within: str = "(-inf, inf)", meaning: str = "", source: str | None = None) -> int:
    """value as a Python int (numpy integers accepted) inside `within`; bools, floats and strings refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{_where(name, source)}={value!r} must be an integer{_meaning(meaning)}, not "
                         f"{type(value).__name__}")
    v = operator.index(value)
    if v not in interval(within):
        raise InputError(f"{_where(name, source)}={v!r} must lie in {within}{_meaning(meaning)}")
    return v


def as_number(value, name: str, within: str = "(-inf, inf)", meaning: str = "", source: str | None = None):
    """value as a Python int or float (numpy numbers accepted; an int stays an int) inside `within`; bools and
    strings refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{_where(name, source)}={value!r} must be a number{_meaning(meaning)}, not "
                         f"{type(value).__name__}")
    v = operator.index(value) if isinstance(value, numbers.Integral) else float(value)
    if v not in interval(within):
        raise InputError(f"{_where(name, source)}={v!r} must lie in {within}{_meaning(meaning)}")
    return v


def as_bool(value, name: str, meaning: str = "", source: str | None = None) -> bool:
    """value as a bool (numpy bools accepted); 0 / 1 and strings refused (a string goes through parse_text)."""
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):  # numpy's
        value = bool(value)
    if not isinstance(value, bool):
        raise InputError(f"{_where(name, source)}={value!r} must be true or false{_meaning(meaning)}, not "
                         f"{type(value).__name__}")
    return value


def as_choice(value, name: str, choices: tuple, meaning: str = "", source: str | None = None):
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{_where(name, source)}={value!r} must be one of {list(choices)}{_meaning(meaning)}")
    return value


def as_text(value, name: str, meaning: str = "", source: str | None = None) -> str:
    if not isinstance(value, str):
        raise InputError(f"{_where(name, source)}={value!r} must be text{_meaning(meaning)}, not "
                         f"{type(value).__name__}")
    return value


TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_text(kind: type, text: str, name: str, source: str | None = None):
    """Text typed for a value of `kind` (int, float, bool, str), parsed strictly: 'false' / '0' / 'no' is False,
    '2.5' is no int, '1e-3' is a float; anything else raises naming the key, the text and the source."""
    t = text.strip()
    if kind is bool:
        if t.lower() in TRUE + FALSE:
            return t.lower() in TRUE
        raise InputError(f"{_where(name, source)}={text!r} must be true or false (also 1/0, yes/no)")
    if kind is int:
        if re.fullmatch(r"[-+]?\d+", t):
            return int(t)
        raise InputError(f"{_where(name, source)}={text!r} must be an integer")
    if kind is float:
        try:
            if "_" in t:  # Python's float() reads 1_0 as 10
                raise ValueError
            return float(t)
        except ValueError:
            raise InputError(f"{_where(name, source)}={text!r} must be a number") from None
    return text


# --- argparse types: a command-line flag refused where it is parsed (argparse prints the flag, the value and why,
# and exits with status 2), by the same parsing and intervals as everything above

def _flag_type(kind: type, what: str, within: str):
    import argparse

    def parse(text: str):
        try:
            value = parse_text(kind, text, "value")
        except InputError:
            raise argparse.ArgumentTypeError(f"{text!r}: must be {what}") from None
        if value not in interval(within):
            raise argparse.ArgumentTypeError(f"{text!r}: must lie in {within}")
        return value
    parse.__name__ = what  # argparse names the type in some messages
    return parse


def flag_integer(within: str = "[1, inf)"):
    """An argparse type: an integer inside `within` ("[1, inf)": at least one)."""
    return _flag_type(int, "an integer", within)


def flag_number(within: str = "(0, inf)"):
    """An argparse type: a number inside `within`."""
    return _flag_type(float, "a number", within)


def flag_int_list(within: str = "[0, inf)"):
    """An argparse type: comma-separated distinct integers inside `within` ("0,1,2,3,4")."""
    import argparse
    one = flag_integer(within)

    def parse(text: str) -> list[int]:
        values = [one(v) for v in text.split(",")]
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"{text!r} repeats a value")
        return values
    parse.__name__ = "list of integers"
    return parse
