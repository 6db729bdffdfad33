"""The `trajbench` command line. Bad input exits 2 with one clear paragraph, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

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
    from bench.world.suite import load_suite
    from bench.run.validate import validate_suite

    suite = load_suite(args.suite)
    problems = validate_suite(suite)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{suite.name}: {len(problems)} problem(s) in {len(suite.tasks)} valid-schema task(s)", file=sys.stderr)
        return 1
    print(f"{suite.name}: {len(suite.tasks)} tasks valid (suite hash {suite.content_hash})")
    return 0


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-") or "agent"


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def _selected_task_ids(suite: Any, tasks: str | None, tags: str | None) -> list[str] | None:
    """--tasks ids (unknown ids fail before anything is written), narrowed to the tasks that
    carry every --tags tag; None = the whole suite."""
    chosen = suite.select(_split(tasks) or None)
    wanted = set(_split(tags))
    if not wanted:
        return [t.id for t in chosen] if tasks else None
    known = {tag for t in suite.tasks for tag in t.tags}
    if wanted - known:
        raise BenchError(f"no task of suite {suite.name} has the tag(s) {sorted(wanted - known)}; "
                         f"its tags: {', '.join(sorted(known))}", field="--tags")
    ids = [t.id for t in chosen if wanted <= set(t.tags)]
    if not ids:
        raise BenchError(f"no selected task has every tag of {sorted(wanted)}", field="--tags")
    return ids


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.adapters.spec import parse_agent_spec
    from bench.world.variants import parse_variant_spec
    from bench.run.runner import RunConfig, run_benchmark
    from bench.world.suite import load_suite, require_valid

    suite = require_valid(load_suite(args.suite))
    if args.overlay:
        from bench.world.overlay import apply_overlay

        suite = apply_overlay(suite, args.overlay)  # the agent sees the overlay's tools; the suite hash stays the suite's
    if args.baseline:
        from bench.analysis.diff import check_baseline

        check_baseline(args.baseline, suite.content_hash)  # fail before the run, not after it
    specs = [parse_agent_spec(a) for a in args.agent]
    variants = parse_variant_spec(args.variants, args.variants_per_family)
    task_ids = _selected_task_ids(suite, args.tasks, args.tags)
    base = Path(args.out) if args.out else Path("runs") / suite.name
    status = 0
    for spec in specs:
        out = base / _safe_name(spec.name) if (len(specs) > 1 or not args.out) else base
        config = RunConfig(k=args.k, out=out, seed=args.seed, concurrency=args.concurrency, timeout_s=args.timeout,
                           max_steps=args.max_steps, retries=args.retries, progress=not args.quiet,
                           variants=variants)
        run_benchmark(suite, spec, task_ids, config)
        print(f"run written to {out} — `trajbench report {out}` shows it")
        if args.baseline:
            from bench.analysis.diff import gate

            status = max(status, gate(args.baseline, out, alpha=args.alpha))
    return status


def cmd_report(args: argparse.Namespace) -> int:
    import orjson

    from bench.analysis.divergence.tree import options_from_args
    from bench.analysis.report import build_report, render_text

    report = build_report(args.run_dir, bootstrap=args.bootstrap, divergence=options_from_args(args))
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
    else:
        print(render_text(report))
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from bench.analysis.divergence.tree import options_from_args
    from bench.publish.view import write_view

    path = write_view(args.run_dir, task_id=args.task, out=args.out, options=options_from_args(args))
    print(f"view written to {path} — open it in a browser (self-contained, no network)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from bench.analysis.replay import run_verify

    return run_verify(args.run_dir, suite=args.suite, as_json=args.json)


def cmd_export(args: argparse.Namespace) -> int:
    from bench.publish.export import run_export

    return run_export(args.run_dir, args.format, args.out)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.publish.leaderboard import run_leaderboard

    return run_leaderboard(args.run_dirs, args.out, k=args.k, bootstrap=args.bootstrap, suite=args.suite)


def cmd_diff(args: argparse.Namespace) -> int:
    from bench.analysis.diff import run_diff

    fmt = "json" if args.json else "markdown" if args.markdown else "text"
    return run_diff(args.base, args.cand, alpha=args.alpha, k=args.k, fmt=fmt, force=args.force)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {value}")
    return value


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
    from bench.analysis.divergence.tree import add_cli_arguments as add_divergence_arguments

    parser = _Parser(prog="trajbench", description="Benchmark the consistency of tool-using agents.")
    parser.add_argument("--version", action="version", version=f"trajbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("validate", help="check a suite's tasks (schema, reference passes, do-nothing fails)")
    p.add_argument("suite", metavar="SUITE", help="built-in suite name or folder")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run agents on a suite, k trials per task (re-run to resume)")
    p.add_argument("suite", metavar="SUITE", help="built-in suite name or folder")
    p.add_argument("--agent", action="append", required=True, metavar="SPEC",
                   help="sim:oracle, sim:noisy?p=0.7, module:attr, file.py:attr, spec.toml or a roster name (repeatable)")
    p.add_argument("-k", type=_positive_int, default=4, help="trials per task (default 4)")
    p.add_argument("--out", help="run directory (default runs/SUITE/AGENT); with several agents, a parent folder")
    p.add_argument("--tasks", help="comma-separated task ids (default: all)")
    p.add_argument("--tags", metavar="TAGS",
                   help="only the tasks that carry every one of these comma-separated tags (e.g. easy)")
    p.add_argument("--concurrency", type=_positive_int, default=4, help="trials at once (default 4)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--timeout", type=_positive_float, default=300.0, help="seconds per trial (default 300)")
    p.add_argument("--max-steps", type=_positive_int, default=50, help="tool-call budget per trial (default 50)")
    p.add_argument("--retries", type=int, default=2, help="retries of a trial after an infrastructure error (default 2)")
    p.add_argument("--variants", metavar="FAMILIES",
                   help="also run perturbed inputs: comma-separated families from typos[=RATE], paraphrase, reorder, "
                        "distractors, formats, drop, or all (the unperturbed input always runs)")
    p.add_argument("--variants-per-family", type=_positive_int, default=1, metavar="N",
                   help="variants of each family per task, from different seeds (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overlay", metavar="FILE",
                   help="tool overlay (JSON or TOML): change tool names, descriptions, argument schemas or result "
                        "formatting without touching the suite (docs/regression.md)")
    p.add_argument("--baseline", metavar="RUN_DIR",
                   help="after the run, diff it against this baseline run and exit with the diff's status "
                        "(0 no significant regression, 1 significant regression)")
    p.add_argument("--alpha", type=_probability, default=0.05, help="level of the --baseline gate (default 0.05)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="print a run's metrics (terminal or --json)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="machine-readable (bench/schemas/report.schema.json)")
    p.add_argument("--bootstrap", type=_positive_int, default=2000, help="bootstrap replicates (default 2000)")
    add_divergence_arguments(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("diff", help="compare two runs of a suite, paired over tasks; exit 1 on a significant regression")
    p.add_argument("base", metavar="BASE", help="the baseline run directory")
    p.add_argument("cand", metavar="CAND", help="the candidate run directory")
    p.add_argument("--alpha", type=_probability, default=0.05, help="level of the regression gate (default 0.05)")
    p.add_argument("--k", type=_positive_int, default=None, help="k of pass^k (default: the smaller k of the two runs)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable (bench/schemas/diff.schema.json)")
    fmt.add_argument("--markdown", action="store_true", help="Markdown, for a pull-request comment")
    p.add_argument("--force", action="store_true",
                   help="compare runs of different suites anyway (every output is then marked FORCED)")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("view", help="write an HTML page drawing a task's trials as a branching tree")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--task", metavar="ID", help="one task (default: every task, with a selector)")
    p.add_argument("--out", metavar="FILE.html", help="default RUN_DIR/view.html (RUN_DIR/view-TASK.html with --task)")
    add_divergence_arguments(p)
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("verify", help="replay a run's log on a fresh world; recompute every outcome and figure (exit 1 on a mismatch)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--suite", metavar="SUITE", help="the suite folder (or built-in name) the run used, if its recorded path is gone; "
                   "its content hash must still match the run's")
    p.add_argument("--json", action="store_true", help="every mismatch, machine-readable")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("export", help="export a run's steps and trials as a Hugging Face dataset (offline)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=["parquet", "jsonl", "hf"],
                   help="parquet or jsonl files with a dataset card, or hf (datasets save_to_disk)")
    p.add_argument("--out", required=True, metavar="PATH", help="output folder (must not exist, or be empty)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("leaderboard", help="rank verified runs of one suite: README.md, leaderboard.json, index.html")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("-k", "--k", type=_positive_int, default=None,
                   help="rank by pass^k at this k (default: the largest k every run has)")
    p.add_argument("--bootstrap", type=_positive_int, default=2000, help="bootstrap replicates for the intervals (default 2000)")
    p.add_argument("--suite", metavar="SUITE", help="the runs' suite folder (or built-in name), if the path recorded in them is gone")
    p.set_defaults(func=cmd_leaderboard)
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
    except BrokenPipeError:  # `trajbench report RUN | head`: the reader left; that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
