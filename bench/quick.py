"""--quick, which every benchmark has: a smoke run on tiny inputs, so that CI sees a benchmark that
no longer runs (tests/slow/test_bench_quick.py runs each one). It goes through the same code and
prints the same JSON; its figures are not timings."""

from __future__ import annotations

import argparse


def parse_args(parser: argparse.ArgumentParser, **tiny) -> argparse.Namespace:
    """The command line, with --quick: it sets each of `tiny` (argument name: value) to its value."""
    given = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in tiny.items())
    parser.add_argument("--quick", action="store_true", help=f"a smoke run on tiny inputs, not a timing ({given})")
    args = parser.parse_args()
    if args.quick:
        for name, value in tiny.items():
            setattr(args, name, value)
    return args
