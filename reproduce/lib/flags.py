"""The lab's flag types: every reproduce script's numeric and list flags are parsed by these, so a bad value is
refused where it is parsed (argparse prints the flag, the value and why, and exits with status 2) instead of being
clamped or ignored further on. They check with the package's one validation layer (maskedkd.checks)."""
from __future__ import annotations

import argparse

from maskedkd import checks


def integer(within: str = "[1, inf)"):
    """An argparse type: an integer inside `within` ("[1, inf)": at least one)."""
    def parse(text: str) -> int:
        try:
            return checks.as_int(checks.parse_text(int, text, "value"), "value", within)
        except checks.InputError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {str(e).split(' ', 1)[1]}") from None
    parse.__name__ = "integer"  # argparse names the type in its message
    return parse


def number(within: str = "(0, inf)"):
    """An argparse type: a number inside `within`."""
    def parse(text: str) -> float:
        try:
            return float(checks.as_number(checks.parse_text(float, text, "value"), "value", within))
        except checks.InputError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {str(e).split(' ', 1)[1]}") from None
    parse.__name__ = "number"
    return parse


def int_list(within: str = "[0, inf)"):
    """An argparse type: comma-separated distinct integers inside `within` ("0,1,2,3,4")."""
    one = integer(within)

    def parse(text: str) -> list[int]:
        values = [one(v) for v in text.split(",")]
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"{text!r} repeats a value")
        return values
    parse.__name__ = "list of integers"
    return parse


def labels(count: int, reserved: tuple[str, ...] = ()):
    """An argparse type: exactly `count` comma-separated, distinct, non-empty labels, none of them a key the script
    keeps beside them in its records (`reserved`), so one label's numbers cannot overwrite another's."""
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",")]
        if len(values) != count or not all(values):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {count} non-empty labels separated by commas")
        if len(set(values)) != count:
            raise argparse.ArgumentTypeError(f"{text!r}: the labels must differ (each names its own numbers)")
        clash = sorted(set(values) & set(reserved))
        if clash:
            raise argparse.ArgumentTypeError(f"{text!r}: {clash} would overwrite the record's own keys {list(reserved)}")
        return values
    parse.__name__ = "labels"
    return parse
