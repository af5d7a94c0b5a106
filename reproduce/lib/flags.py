"""The lab's flags: the options every embedded-scale script shares (parser, parse_or_full, mode_of, regime_option),
and the flag types every reproduce script's numeric and list flags are parsed by, so a bad value is refused where it
is parsed (argparse prints the flag, the value and why, and exits with status 2) instead of being clamped or ignored
further on. They check with the package's one validation layer (maskedkd.checks)."""
from __future__ import annotations

import argparse

from maskedkd import checks


# the flag types, from the package's one validation layer (shared with maskedkd's own command lines)
integer, number, int_list = checks.flag_integer, checks.flag_number, checks.flag_int_list


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


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every embedded-scale script shares."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, fewer epochs: a first look")
    ap.add_argument("--smoke", action="store_true", help="tiny runs, for the test suite")
    ap.add_argument("--fresh", action="store_true", help="rerun instead of reusing finished runs")
    ap.add_argument("--jobs", type=integer("[1, inf)"), default=2, help="parallel runs, one thread each")
    ap.add_argument("--out", default="results")
    ap.add_argument("--update-reference", action="store_true",
                    help="after the default run, copy its small outputs to reproduce/reference/ and regenerate the "
                         "script's block and the claims summary of reproduce/README.md")
    return ap


def parse_or_full(ap: argparse.ArgumentParser, argv, full_main):
    """The embedded options, or with --full the ImageNet-scale mode: every other argument (--data, --checkpoints,
    --out, --dry-run, ...; see reproduce/lib/full.py) goes to full_main's own parser, and None is returned."""
    import sys
    ap.add_argument("--full", action="store_true", help="ImageNet scale with real checkpoints (reproduce/lib/full.py)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--full" in argv:
        full_main([a for a in argv if a != "--full"])
        return None
    return ap.parse_args(argv)


def mode_of(args) -> str:
    mode = "smoke" if args.smoke else "quick" if args.quick else "default"
    if getattr(args, "update_reference", False) and mode != "default":
        raise SystemExit("--update-reference records the default run: drop --quick and --smoke")
    return mode


def regime_option(ap: argparse.ArgumentParser) -> None:
    """--regime: the default embedded regime, or a stress regime (its own results folder)."""
    from reproduce.lib.embedded import REGIMES
    ap.add_argument("--regime", choices=REGIMES, default="digits",
                    help="digits: the default regime, chosen to match the paper's (reproduce/regime_trials.py); "
                         "fixed_places: the stress regime whose digits sit at fixed places beside a blank cell (the "
                         "student's attention turns positional and parks on blank patches); cluttered: the stress "
                         "regime in which the teacher cannot cope with missing parts")
