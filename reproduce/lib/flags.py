"""The lab's flag types: every reproduce script's numeric and list flags are parsed by these, so a bad value is
refused where it is parsed (argparse prints the flag, the value and why, and exits with status 2) instead of being
clamped or ignored further on. They check with the package's one validation layer (maskedkd.checks)."""
from __future__ import annotations

import argparse

from maskedkd import checks


def _typed(kind: type, what: str, within: str):
    def parse(text: str):
        try:
            value = checks.parse_text(kind, text, "value")
        except checks.InputError:
            raise argparse.ArgumentTypeError(f"{text!r}: must be {what}") from None
        if value not in checks.interval(within):
            raise argparse.ArgumentTypeError(f"{text!r}: must lie in {within}")
        return value
    parse.__name__ = what  # argparse names the type in some messages
    return parse


def integer(within: str = "[1, inf)"):
    """An argparse type: an integer inside `within` ("[1, inf)": at least one)."""
    return _typed(int, "an integer", within)


def number(within: str = "(0, inf)"):
    """An argparse type: a number inside `within`."""
    return _typed(float, "a number", within)


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
