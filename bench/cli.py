"""The `trajbench` command line. Bad input exits 2 with one clear paragraph, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from bench import __version__
from bench.errors import BenchError

# No library may phone home during a benchmark (see README: "Offline").
for _var, _value in (("LANGSMITH_TRACING_V2", "false"), ("HF_HUB_OFFLINE", "1"),
                     ("HF_DATASETS_OFFLINE", "1"), ("HF_UPDATE_DOWNLOAD_COUNTS", "0")):
    os.environ.setdefault(_var, _value)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code is 2 as well
        raise BenchError(f"{message} (see `{self.prog} --help`)", field="arguments")


def cmd_validate(args: argparse.Namespace) -> int:
    from bench.suite import load_suite
    from bench.validate import validate_suite

    suite = load_suite(args.suite)
    problems = validate_suite(suite)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{suite.name}: {len(problems)} problem(s) in {len(suite.tasks)} valid-schema task(s)", file=sys.stderr)
        return 1
    print(f"{suite.name}: {len(suite.tasks)} tasks valid (suite hash {suite.content_hash})")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trajbench", description="Benchmark the consistency of tool-using agents.")
    parser.add_argument("--version", action="version", version=f"trajbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("validate", help="check a suite's tasks (schema, reference passes, do-nothing fails)")
    p.add_argument("suite", metavar="SUITE", help="built-in suite name or folder")
    p.set_defaults(func=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler: Callable[[argparse.Namespace], int] = args.func
        return handler(args)
    except BenchError as exc:
        print(f"trajbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("trajbench: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
