"""The `trajbench` command line: every print and every exit code of the package.

Exit codes: 0 done; 1 the command's finding is negative (a significant regression, a run that
does not verify, a suite with invalid tasks, a rejected leaderboard entry); 2 bad input (one
clear paragraph naming the file and field, never a traceback); 3 the sequential gate has not
yet decided (`--sequential`: more trials are needed); 130 interrupted. The commands
import their machinery when they run, so that `trajbench --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, NoReturn, TypeVar

if TYPE_CHECKING:
    from bench.analysis.divergence.options import DivergenceOptions

from bench.__version__ import __version__
from bench.errors import BenchError

# No library may phone home during a benchmark (see README: "Offline").
for _var, _value in (("LANGSMITH_TRACING_V2", "false"), ("HF_HUB_OFFLINE", "1"),
                     ("HF_DATASETS_OFFLINE", "1"), ("HF_UPDATE_DOWNLOAD_COUNTS", "0")):
    os.environ.setdefault(_var, _value)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own exit code is 2 as well
        raise BenchError(f"{message} (see `{self.prog} --help`)", field="arguments")


def cmd_validate(args: argparse.Namespace) -> int:
    from bench.runs.validate import validate_suite
    from bench.world.suite import load_suite

    suite = load_suite(args.suite)
    problems = validate_suite(suite)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{suite.name}: {len(problems)} problem(s) in {len(suite.tasks)} valid-schema task(s)", file=sys.stderr)
        return 1
    print(f"{suite.name}: {len(suite.tasks)} tasks valid (suite hash {suite.content_hash})")
    return 0


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def _selected_task_ids(suite: Any, tasks: str | None, tags: str | None) -> list[str] | None:
    """--tasks ids (unknown ids fail before anything is written), narrowed to the tasks that
    carry every --tags tag; None = the whole suite."""
    if tasks is not None and not _split(tasks):
        raise BenchError(f"--tasks names no task ({tasks!r}); give comma-separated task ids, or leave it out for all",
                         field="--tasks")
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


def _executor(args: argparse.Namespace) -> Any:
    """--executor local (default) or ray[=ADDRESS] with --workers and --runtime-env (docs/ray.md)."""
    if args.executor == "local":
        return None
    kind, _, address = args.executor.partition("=")
    if kind != "ray":
        raise BenchError(f"--executor must be local or ray[=ADDRESS], not {args.executor!r}", field="--executor")
    from bench.runs.ray_executor import RayExecutor

    return RayExecutor(args.workers, address or None, _json_arg(args.runtime_env, "--runtime-env"))


def _json_arg(value: str | None, flag: str) -> Any:
    """A JSON object given inline or as a file path."""
    if value is None:
        return None
    try:
        text = Path(value).read_bytes().decode("utf-8") if Path(value).is_file() else value
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"byte {exc.start} is not UTF-8 text"
        raise BenchError(f"{flag} must be a JSON object or a file holding one (the file cannot be read: {why})",
                         file=value, field=flag) from None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchError(f"{flag} must be a JSON object or a file holding one ({exc.msg})", field=flag) from None
    if not isinstance(parsed, dict):
        raise BenchError(f"{flag} must be a JSON object", field=flag)
    return parsed


def cmd_run(args: argparse.Namespace) -> int:
    from bench.adapters.spec import parse_agent_spec
    from bench.api import run_dir_name, valid_suite
    from bench.runs.runner import RunConfig, run_benchmark, trial_keys
    from bench.world.variants import parse_variant_spec

    suite = valid_suite(args.suite)
    if args.overlay:
        from bench.world.overlay import apply_overlay

        suite = apply_overlay(suite, args.overlay)  # the agent sees the overlay's tools; the suite hash stays the suite's
    if args.baseline:
        from bench.analysis.diff import check_baseline

        check_baseline(args.baseline, suite.content_hash)  # fail before the run, not after it
    specs = [parse_agent_spec(a) for a in args.agent]
    variants = parse_variant_spec(args.variants, args.variants_per_family)
    task_ids = _selected_task_ids(suite, args.tasks, args.tags)
    design, rule = _design(args)
    base = Path(args.out) if args.out else Path("runs") / suite.name
    status = 0
    for spec in specs:
        out = base / run_dir_name(spec.name) if (len(specs) > 1 or not args.out) else base
        config = RunConfig(k=args.k, out=out, seed=args.seed, concurrency=args.concurrency, timeout_s=args.timeout,
                           max_steps=args.max_steps, retries=args.retries, progress=not args.quiet,
                           variants=variants, design=design)
        run_benchmark(suite, spec, task_ids, config, _executor(args), stop_rule=rule)
        print(f"run written to {out} — `trajbench report {out}` shows it")
        if design is None:  # a sequential design stops each task when its rule holds: no fixed grid
            status = max(status, _completeness_status(out, len(trial_keys(suite.select(task_ids), config))))
        if args.baseline:
            code = gate(args.baseline, out, alpha=args.alpha, sequential=args.sequential or design is not None)
            status = code if status == 0 or code == 1 else status  # 1 (regressed) outranks 3 (not yet decided)
    return status


def _completeness_status(out: Path, expected: int) -> int:
    """`run`'s exit status never claims a complete run that is not: 1 when a trial of the grid
    has no record (it cannot happen unless something outside the runner stopped it; the message
    says how many). Trials that ended in an infrastructure error are recorded results that count
    in no figure: the status stays 0 and a warning says how many."""
    from bench.runs.rundir import read_run

    log = read_run(out)
    errors = sum(1 for s in log.summaries.values() if s.get("outcome") == "error")
    missing = expected - len(log.summaries)
    if errors:
        print(f"trajbench: warning: {errors} of {expected} trial(s) ended in an infrastructure error and count in "
              f"no figure; `trajbench report {out}` lists them", file=sys.stderr)
    if missing > 0:
        print(f"trajbench: the run is incomplete: {missing} of {expected} trial(s) have no record; re-run the same "
              "command to play them (exit status 1)", file=sys.stderr)
        return 1
    return 0


def _design(args: argparse.Namespace) -> tuple[Any, Any]:
    """--k-max/--until (docs/sequential.md): the sequential design and its stopping rule, or (None, None)."""
    if args.k_max is None and args.until is None:
        if args.round_size is not None:
            raise BenchError("--round-size needs --k-max and --until", field="--round-size")
        return None, None
    if args.k_max is None or args.until is None:
        raise BenchError("a sequential run needs both --k-max N and --until TARGET", field="--until")
    from bench.analysis.stopping import baseline_outcomes, build_rule
    from bench.runs.design import Design
    from bench.runs.rundir import read_manifest

    baseline = None
    if args.until == "gate":
        if not args.baseline:
            raise BenchError("--until gate needs --baseline RUN_DIR", field="--until")
        baseline = {"dir": str(Path(args.baseline).resolve()), "run_id": read_manifest(Path(args.baseline))["run_id"]}
    design = Design(args.k, args.k_max, args.until, args.alpha, args.round_size, baseline)
    return design, build_rule(design, baseline_outcomes(design))


def cmd_report(args: argparse.Namespace) -> int:
    from bench.analysis.report import build_report
    from bench.publish.text import render_report

    report = build_report(args.run_dir, bootstrap=args.bootstrap, divergence=divergence_options(args))
    if args.json:
        _write_json(report, sys.stdout)
    else:
        print(render_report(report))
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from bench.publish.view import write_view

    path = write_view(args.run_dir, task_id=args.task, out=args.out, options=divergence_options(args))
    print(f"view written to {path} — open it in a browser (self-contained, no network)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    return run_verify(args.run_dir, suite=args.suite, as_json=args.json)


def run_verify(run_dir: str | Path, *, suite: str | None = None, as_json: bool = False) -> int:
    """`trajbench verify`: print the replay's result; 0 when the run replays clean, 1 on any mismatch."""
    from bench.analysis.replay import verify_run
    from bench.imports.core import refuse_replay
    from bench.publish.text import render_verify

    refuse_replay(Path(run_dir))
    result = verify_run(run_dir, suite=suite)
    if as_json:
        _write_json(result.as_dict(), sys.stdout)
    else:
        print(render_verify(result))
    return 0 if result.ok else 1


def cmd_repair(args: argparse.Namespace) -> int:
    """`trajbench repair`: corrupted log lines to the quarantine file; 0 whether or not any moved."""
    from bench.runs.repair import repair_run

    result = repair_run(args.run_dir)
    if args.json:
        _write_json(result.as_dict(), sys.stdout)
        return 0
    if result.moved:
        print(f"repaired {result.log}: moved {len(result.moved)} corrupted line(s) to {result.quarantine}, "
              f"kept {result.kept} record(s)")
        for number, why in result.moved:
            print(f"  line {number}: {why}")
        print("the log no longer matches the run's seal (`verify` says so) and a trial whose summary moved is "
              "unfinished: re-run the same `trajbench run` command, which plays such trials and seals the run again")
    else:
        print(f"nothing to repair in {result.log}: {result.kept} record(s), all valid")
    if result.torn_bytes:
        print(f"a torn last line ({result.torn_bytes} bytes, a write cut short) is left in place: readers skip it and "
              "`trajbench run` cuts it when it resumes")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """`trajbench replay`: causal verdicts at a branch node (bench.analysis.causal)."""
    from bench.adapters.spec import parse_agent_spec
    from bench.analysis.causal import replay_task

    agent = parse_agent_spec(args.agent).build() if args.agent else None
    result = replay_task(args.run_dir, args.task, at=args.at, m=args.m, agent=agent, budget=args.budget,
                         no_return=args.no_return, threshold=args.threshold)
    if args.json:
        _write_json(result, sys.stdout)
        return 0
    node = result["node"]
    print(f"{result['task']}: node {result['trial']} step {result['step']}: {result['verdict']} "
          f"(m = {result['m']}; {result['continuations']} continuations; {result['test']})")
    print(f"  from the node itself: {node['successes']}/{node['n']} succeed, 95% CI {node['interval']}")
    for alt in result["alternatives"]:
        effect = "" if alt["best"] else f", effect {alt['effect']:+.3f} {alt['effect_interval']}, p_holm {alt['p_holm']}"
        print(f"  {alt['verdict']:>13}  {alt['successes']}/{alt['n']} CI {alt['interval']}{effect}  {alt['action']}")
    if result["unreplayed"]:
        print(f"  not replayed (the --budget ran out): {', '.join(result['unreplayed'])}")
    for row in result.get("no_return", []):
        point = row["point_of_no_return"]
        where = f"step {point}" if point is not None else "none (continuations from its last prefix can still succeed)"
        print(f"  point of no return of {row['trial']}: {where} (upper 95% bound < {row['threshold']})")
        for step in row["steps"]:
            print(f"    after {step['step']:>3} steps: {step['successes']}/{step['n']} CI {step['interval']}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """`trajbench plan`: tasks × trials for a stated MDE (before), or a run's achieved MDE (after)."""
    from bench.analysis import planning

    k = None if args.metric == "pass1" else args.k
    if args.metric == "passk" and (k is None or k < 2):
        raise BenchError("--metric passk needs -k K (K ≥ 2)", field="-k")
    if args.achieved:
        result = planning.achieved(args.achieved, k=k, alpha=args.alpha, power=args.power)
        if args.json:
            _write_json(result, sys.stdout)
        else:
            mde = result["mde"]
            n = result["trials_per_task"]
            print(f"{result['run_dir']}: {result['tasks']} tasks, {n['min']}–{n['max']} trials each: a diff against a "
                  f"run of the same size detects a drop of {result['metric']} of "
                  f"{'—' if mde is None else f'{mde:.3f}'} with {args.power:.0%} power at α = {args.alpha}")
        return 0
    if (args.pilot is None) == (args.spread is None):
        raise BenchError("give one of --pilot RUN_DIR, --spread SPEC or --achieved RUN_DIR", field="arguments")
    if args.effect is None:
        raise BenchError("--effect (the drop to detect, e.g. 0.1) is needed to plan", field="--effect")
    if args.pilot:
        rates, _ = planning.pilot_rates(args.pilot)

        def rate_of(T: int) -> Any:
            return planning.resample(rates, T)

        tasks = [int(t) for t in _split(args.n_tasks)] if args.n_tasks else [rates.size]
    else:
        rate_of = planning.parse_spread(args.spread)
        tasks = [int(t) for t in _split(args.n_tasks)] if args.n_tasks else list(planning.TASKS_GRID)
    result = planning.plan(rate_of, effect=args.effect, k=k, alpha=args.alpha, power=args.power, tasks=tasks)
    if args.json:
        _write_json(result, sys.stdout)
        return 0
    print(f"plan: detect a drop of {result['metric']} by {args.effect} with {args.power:.0%} power, one-sided α = "
          f"{args.alpha} (planned at α/3 = {result['level']:.4f}, conservative for the diff gate's min-p)")
    trials = [c["trials"] for c in result["rows"][0]["cells"]]
    print(f"  {'tasks':>6} {'mean p':>7}  " + " ".join(f"{n:>6}" for n in trials) + "   ← trials per task in each run: MDE")
    for row in result["rows"]:
        cells = " ".join(f"{_mde_cell(c['mde']):>6}" for c in row["cells"])
        need = (f"{row['trials_needed']} trials per task ({row['total_trials_per_run']} per run)"
                if row["trials_needed"] else "not reachable in this grid: add tasks")
        print(f"  {row['tasks']:>6} {row['mean_rate']:>7.3f}  {cells}   → {need}")
    return 0


def _mde_cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def cmd_import(args: argparse.Namespace) -> int:
    """`trajbench import`: another harness's trajectory files as one run directory."""
    from bench.imports import import_run
    from bench.runs.rundir import refuse_run_dir_output

    refuse_run_dir_output(args.out, "--out")  # the new run directory must not nest in another
    run = import_run(args.format, [Path(p) for p in args.sources], Path(args.out), success=args.success)
    print(f"imported {run.count} trials of {len(run.tasks.tasks)} tasks ({args.format}) into {args.out}")
    for note in run.notes:
        print(f"trajbench: note: {note}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    return run_export(args.run_dir, args.format, args.out)


def run_export(run_dir: str | Path, fmt: str, out: str | Path) -> int:
    """`trajbench export`: write the dataset and say how to read it back."""
    from bench.publish.export import export_run
    from bench.runs.rundir import refuse_run_dir_output

    refuse_run_dir_output(out, "--out")
    result = export_run(run_dir, fmt, out)
    print(f"exported {result['trials']} trials and {result['steps']} steps to {result['out']} ({result['format']}: "
          f"{', '.join(result['files'])})")
    if fmt == "atif":
        print(f"read it back with: trajbench import atif {out} --out RUN_DIR")
    elif fmt == "otel":
        print("load it into any OTLP-JSON reader (one TracesData per line, one trace per trial)")
    elif fmt == "hf":
        print(f"read it back with datasets.load_from_disk({str(out)!r})")
    else:
        print(f"read it back with datasets.load_dataset({str(out)!r}, 'trials') (or 'steps')")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    return run_leaderboard(args.run_dirs, args.out, k=args.k, bootstrap=args.bootstrap, suite=args.suite,
                           unverified=args.unverified)


def run_leaderboard(run_dirs: list[str], out: str, *, k: int | None = None, bootstrap: int = 2000,
                    suite: str | None = None, unverified: bool = False) -> int:
    """`trajbench leaderboard`: 0, or 1 when a run was rejected by verify (or none verified:
    nothing is written then)."""
    from bench.publish.leaderboard import IMPORTED, build_leaderboard, ci_text, write_leaderboard
    from bench.publish.text import term
    from bench.runs.rundir import refuse_run_dir_output

    refuse_run_dir_output(out, "--out")
    board = build_leaderboard(run_dirs, k=k, bootstrap=bootstrap, suite=suite, unverified=unverified)
    for r in board["rejected"]:
        print(f"trajbench: rejected {term(r['run_dir'])} ({term(r['agent'])}): it does not verify "
              f"({r['mismatches']} mismatch(es)):", file=sys.stderr)
        for reason in r["reasons"]:
            print(f"  {reason}", file=sys.stderr)
    if not board["entries"] and not board["unverified"]:
        print("trajbench: no run verified; nothing written", file=sys.stderr)
        return 1
    write_leaderboard(board, out)
    K = board["rank_by"]["k"]
    imported = f" and {len(board['unverified'])} imported, not replay-verified" if board["unverified"] else ""
    print(f"leaderboard of {len(board['entries'])} verified run(s){imported} on suite {board['suite']['name']}, ranked by "
          f"pass^{K}, written to {out} (README.md, leaderboard.json, index.html)")
    for section, entries in (("", board["entries"]), (f" [{IMPORTED}]", board["unverified"])):
        for e in entries:
            print(f"  {e['rank']:>2}. {term(e['label'])}{' (simulated)' if e['agent']['simulated'] else ''}{section}: "
                  f"pass^{K} {ci_text(e['rank_metric'])}, pass@1 {ci_text(e['pass@1'])}")
    return 1 if board["rejected"] else 0


def cmd_diff(args: argparse.Namespace) -> int:
    fmt = "json" if args.json else "markdown" if args.markdown else "text"
    return run_diff(args.base, args.cand, alpha=args.alpha, k=args.k, fmt=fmt, force=args.force,
                    sequential=args.sequential)


def run_diff(base_dir: str | Path, cand_dir: str | Path, *, alpha: float = 0.05, k: int | None = None,
             fmt: str = "text", force: bool = False, out: IO[str] | None = None, **options: Any) -> int:
    """`trajbench diff`: print the diff (fmt: text, json or markdown) and return the exit status:
    0 no significant regression, 1 significant regression, 3 (with `sequential=True`) not yet
    decided. Bad input raises BenchError (exit 2)."""
    from bench.analysis.diff import diff_runs
    from bench.publish.markdown import render_diff_markdown
    from bench.publish.text import render_diff

    out = out or sys.stdout
    if fmt not in ("text", "json", "markdown"):
        raise BenchError(f"unknown output format {fmt!r} (text, json, markdown)", field="format")
    diff = diff_runs(base_dir, cand_dir, alpha=alpha, k=k, force=force, **options)
    if fmt == "json":
        _write_json(diff, out)
    elif fmt == "markdown":
        out.write(render_diff_markdown(diff))
    else:
        out.write(render_diff(diff) + "\n")
    return int(diff["exit_code"])


def gate(baseline_dir: str | Path, candidate_dir: str | Path, alpha: float = 0.05, *, k: int | None = None,
         fmt: str = "text", out: IO[str] | None = None, sequential: bool = False) -> int:
    """`trajbench run ... --baseline RUN_DIR`: diff the fresh run against the stored baseline and
    return the diff's exit status. A baseline of another suite is bad input (exit 2 through
    BenchError): a CI baseline must be re-recorded when the suite changes, never forced."""
    if not Path(baseline_dir).is_dir():
        raise BenchError("the baseline run directory does not exist (record one with `trajbench run ... --out DIR`)",
                         file=str(baseline_dir), field="--baseline")
    return run_diff(baseline_dir, candidate_dir, alpha=alpha, k=k, fmt=fmt, out=out, sequential=sequential)


def _write_json(value: Any, out: IO[str]) -> None:
    import orjson

    out.write(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")


# ---------------------------------------------------------------------- argument types
_Number = TypeVar("_Number", int, float)


def _number_type(convert: Callable[[str], _Number], what: str, ok: Callable[[_Number], bool],
                 expected: str) -> Callable[[str], _Number]:
    """An argparse type: `convert` the text, then require `ok` of the value (else the error
    names what was `expected`)."""
    def parse(text: str) -> _Number:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


def _bounded_int(low: int, high: int, expected: str | None = None) -> Callable[[str], int]:
    """A whole number in [low, high]: every count the CLI takes has a documented cap, so an
    absurd value (`-k 99999999999999999999999`) fails at once with the range instead of hanging."""
    return _number_type(int, "a whole number", lambda v: low <= v <= high,
                        expected or f"a whole number from {low:,} to {high:,}")


_probability = _number_type(float, "a number", lambda v: 0 < v < 1, "a number between 0 and 1")
_positive_int = _bounded_int(1, 10**9, "a whole number ≥ 1 (at most 1,000,000,000)")
_positive_float = _number_type(float, "a number", lambda v: v > 0, "a number > 0")
_seconds = _number_type(float, "a number of seconds", lambda v: 0 < v <= 7 * 86400, "a number of seconds > 0 (at most 7 days)")
# The caps of `trajbench run` (README, "Limits"): see also runner.MAX_TRIALS for the whole grid.
_trials_k = _bounded_int(1, 100_000)
_per_family = _bounded_int(1, 1_000)
_seed = _bounded_int(-(2**63), 2**63 - 1, "a whole number that fits in 64 bits (from -2^63 to 2^63-1)")
_retries = _bounded_int(0, 100)
_concurrency = _bounded_int(1, 1_024)
_max_steps = _bounded_int(1, 100_000)
_bootstrap = _bounded_int(1, 1_000_000)
_replay_m = _bounded_int(1, 10_000)


def add_divergence_arguments(parser: Any) -> None:
    """The divergence options of `trajbench report` and `trajbench view` (see `divergence_options`)."""
    group = parser.add_argument_group("divergence analysis (docs/divergence.md)")
    group.add_argument("--divergence-key", choices=("action", "state"), default="action",
                       help="key steps on the action (tool + arguments; default) or on the state hash after the step")
    group.add_argument("--divergence", choices=("decision", "raw"), default="decision", dest="divergence_fork",
                       help="decision (default): trials fork where they part in a write or in stopping, lookup forks "
                            "are shown as context; raw: the first fork in any step, lookups included")
    group.add_argument("--ignore-read-only", action="store_true", help="leave read-only tool calls out of the tree")
    group.add_argument("--include-user", action="store_true", help="make ask_user turns branch points")
    group.add_argument("--include-model", action="store_true", help="make model turns branch points")
    group.add_argument("--pool-variants", action="store_true",
                       help="also analyse trials on perturbed input variants (default: unperturbed inputs only)")
    group.add_argument("--branch-test", choices=("boschloo", "fisher"), default="boschloo",
                       help="exact test for two alternatives (default boschloo)")
    group.add_argument("--alpha", type=float, default=0.05, help="false-discovery rate across the suite's branches (default 0.05)")
    group.add_argument("--min-support", type=int, default=4, help="fewest trials through a node for it to be tested (default 4)")


def divergence_options(args: Any) -> DivergenceOptions:
    """DivergenceOptions from parsed `add_divergence_arguments` options; bad values are a BenchError."""
    from bench.analysis.divergence.options import DivergenceOptions

    try:
        return DivergenceOptions(key=args.divergence_key, fork=args.divergence_fork, ignore_read_only=args.ignore_read_only,
                                 include_user=args.include_user, include_model=args.include_model,
                                 pool_variants=args.pool_variants,
                                 test=args.branch_test, alpha=args.alpha, min_support=args.min_support)
    except ValueError as exc:
        raise BenchError(str(exc), field="arguments") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trajbench", description="Benchmark the consistency of tool-using agents.")
    parser.add_argument("--version", action="version", version=f"trajbench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback when a command fails")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_running(sub)
    _add_reading(sub)
    _add_planning(sub)
    _add_publishing(sub)
    return parser


def _add_running(sub: Any) -> None:
    """`validate` and `run`."""
    p = sub.add_parser("validate", help="check a suite's tasks (schema, reference passes, do-nothing fails)")
    p.add_argument("suite", metavar="SUITE", help="built-in suite name or folder")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="run agents on a suite, k trials per task (re-run to resume)")
    p.add_argument("suite", metavar="SUITE", help="built-in suite name or folder")
    p.add_argument("--agent", action="append", required=True, metavar="SPEC",
                   help="sim:oracle, sim:noisy?p=0.7, module:attr, file.py:attr, spec.toml or a roster name (repeatable)")
    p.add_argument("-k", type=_trials_k, default=4,
                   help="trials per task (default 4, at most 100,000); with --k-max, the first round's (every task gets them)")
    seq = p.add_argument_group("sequential design (docs/sequential.md)")
    seq.add_argument("--k-max", type=_trials_k, metavar="N",
                     help="run trials in rounds (k, 2k, 4k, ... up to N) and stop each task once --until holds")
    seq.add_argument("--until", metavar="TARGET",
                     help="pass1:W (suite pass@1 interval half-width ≤ W), task:W (every task's pass@1 interval "
                          "narrower than W) or gate (the sequential gate against --baseline has decided)")
    seq.add_argument("--round-size", type=_trials_k, metavar="M",
                     help="fixed rounds of M more trials instead of doubling")
    seq.add_argument("--sequential", action="store_true",
                     help="with --baseline: use the sequential gate (valid at every look; exit 3 while not yet decided); "
                          "implied by --k-max")
    p.add_argument("--out", help="run directory (default runs/SUITE/AGENT); with several agents, a parent folder")
    p.add_argument("--tasks", help="comma-separated task ids (default: all)")
    p.add_argument("--tags", metavar="TAGS",
                   help="only the tasks that carry every one of these comma-separated tags (e.g. easy)")
    p.add_argument("--concurrency", type=_concurrency, default=4, help="trials at once (default 4, at most 1,024)")
    p.add_argument("--seed", type=_seed, default=0, help="base seed (default 0; any 64-bit integer)")
    p.add_argument("--executor", default="local", metavar="local|ray[=ADDRESS]",
                   help="where trials run: this process (default) or Ray actors (docs/ray.md)")
    p.add_argument("--workers", type=_concurrency, default=2, help="Ray actors, one agent each (default 2)")
    p.add_argument("--runtime-env", metavar="JSON|FILE", help="Ray runtime_env for the actors")
    p.add_argument("--timeout", type=_seconds, default=300.0,
                   help="seconds per trial (default 300); a trial still running then is recorded as timed out")
    p.add_argument("--max-steps", type=_max_steps, default=50, help="tool-call budget per trial (default 50)")
    p.add_argument("--retries", type=_retries, default=2,
                   help="retries of a trial after an infrastructure error (default 2, from 0 to 100)")
    p.add_argument("--variants", metavar="FAMILIES",
                   help="also run perturbed inputs: comma-separated families from typos[=RATE], paraphrase, reorder, "
                        "distractors, formats, drop, or all (the unperturbed input always runs)")
    p.add_argument("--variants-per-family", type=_per_family, default=1, metavar="N",
                   help="variants of each family per task, from different seeds (default 1, at most 1,000)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overlay", metavar="FILE",
                   help="tool overlay (JSON or TOML): change tool names, descriptions, argument schemas or result "
                        "formatting without touching the suite (docs/regression.md)")
    p.add_argument("--baseline", metavar="RUN_DIR",
                   help="after the run, diff it against this baseline run and exit with the diff's status "
                        "(0 no significant regression, 1 significant regression, 3 sequential gate not yet decided)")
    p.add_argument("--alpha", type=_probability, default=0.05, help="level of the --baseline gate (default 0.05)")
    p.set_defaults(func=cmd_run)


def _add_reading(sub: Any) -> None:
    """`report`, `diff`, `view` and `verify`."""
    p = sub.add_parser("report", help="print a run's metrics (terminal or --json)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="machine-readable (bench/schemas/report.schema.json)")
    p.add_argument("--bootstrap", type=_bootstrap, default=2000, help="bootstrap replicates (default 2000, at most 1,000,000)")
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
    p.add_argument("--sequential", action="store_true",
                   help="the sequential gate: α holds however often you look; exit 3 while not yet decided "
                        "(docs/sequential.md)")
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

    p = sub.add_parser("repair", help="move a run log's corrupted lines into a quarantine file beside it; keep every "
                       "valid record (idempotent)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="what was moved, machine-readable")
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("replay", help="causal replay: resume the agent from a branch node; is the fork a cause or a symptom?")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--task", metavar="ID", required=True)
    p.add_argument("--at", default="divergence", metavar="divergence|TRIAL:STEP", help="the node (default: the divergence point)")
    p.add_argument("-m", type=_replay_m, default=16,
                   help="continuations per alternative (and from the node itself; default 16, at most 10,000)")
    p.add_argument("--agent", metavar="SPEC", help="the agent to resume (default: the run's own)")
    p.add_argument("--budget", type=_trials_k, metavar="TRIALS", help="at most this many continuations in all (≤ 100,000)")
    p.add_argument("--no-return", metavar="failed|TRIAL", help="also the point of no return of the task's failed trials "
                   "(or of one trial): the earliest step after which continuations almost never succeed")
    p.add_argument("--threshold", type=float, default=0.1, help="'almost never': the upper 95%% bound below this (default 0.1)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_replay)


def _add_planning(sub: Any) -> None:
    """`plan`."""
    p = sub.add_parser("plan", help="tasks × trials for a minimum detectable effect; or a run's achieved MDE")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pilot", metavar="RUN_DIR", help="per-task rates from a pilot run")
    src.add_argument("--spread", metavar="SPEC",
                     help="assumed per-task rates: beta:A,B or near01:F (share F near 0 or 1, the rest in [0.3, 0.7])")
    src.add_argument("--achieved", metavar="RUN_DIR", help="after a run: the MDE a diff of this run can reach")
    p.add_argument("--effect", type=_probability, help="the drop of the metric to detect (e.g. 0.1)")
    p.add_argument("--metric", choices=("pass1", "passk"), default="pass1", help="pass1 (default) or passk (with -k)")
    p.add_argument("-k", type=_positive_int, default=None, help="k of pass^k (with --metric passk)")
    p.add_argument("--power", type=_probability, default=0.8, help="power (default 0.8)")
    p.add_argument("--alpha", type=_probability, default=0.05, help="level of the diff gate (default 0.05)")
    p.add_argument("--n-tasks", metavar="T,...", help="numbers of tasks to plan for (default: the pilot's, or 25,50,100,200)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)


def _add_publishing(sub: Any) -> None:
    """`export` and `leaderboard`."""
    p = sub.add_parser("export", help="export a run as a Hugging Face dataset, ATIF trajectories or OTLP traces (offline)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=["parquet", "jsonl", "hf", "atif", "otel"],
                   help="parquet or jsonl files with a dataset card, hf (datasets save_to_disk), atif (one Harbor "
                        "ATIF trajectory per trial) or otel (OTLP JSON traces, GenAI conventions)")
    p.add_argument("--out", required=True, metavar="PATH", help="output folder (must not exist, or be empty)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("leaderboard", help="rank verified runs of one suite: README.md, leaderboard.json, index.html")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("-k", "--k", type=_positive_int, default=None,
                   help="rank by pass^k at this k (default: the largest k every run has)")
    p.add_argument("--bootstrap", type=_bootstrap, default=2000,
                   help="bootstrap replicates for the intervals (default 2000, at most 1,000,000)")
    p.add_argument("--suite", metavar="SUITE", help="the runs' suite folder (or built-in name), if the path recorded in them is gone")
    p.add_argument("--unverified", action="store_true",
                   help="also rank imported runs (trajbench import), which cannot be replayed: apart from verified "
                        "entries, labelled 'imported, not replay-verified'")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("import", help="import another harness's trajectory files as a run directory (not replay-verified)")
    p.add_argument("format", metavar="FORMAT", help="source format: tau-bench, tau2, inspect, atif (docs/import.md)")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="source files; several become one run")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run directory to create")
    p.add_argument("--success", metavar="EXPR", default=None,
                   help="the outcome rule: inspect, over a sample's scores ('accuracy == 1', the default; "
                        "'score:includes == \"C\"'); tau2, over its reward ('reward >= 0.5', 'reward:DB == 1', "
                        "'db'; default: reward == 1). Grammar: docs/import.md")
    p.set_defaults(func=cmd_import)


def _guarded(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Last-resort error boundary around a command. Suite, domain and agent code is the user's:
    whatever it raises (even `SystemExit(0)`, which would otherwise end the command with a status
    claiming success) becomes exit 2 and one message naming the command and its input, never a
    traceback. `--debug` prints the traceback too (the status stays 2)."""
    try:
        return handler(args)
    except (BenchError, KeyboardInterrupt, BrokenPipeError):
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the boundary is the point
        if args.debug:
            import traceback

            traceback.print_exc()
        target = getattr(args, "suite", None) or getattr(args, "run_dir", None) or getattr(args, "run_dirs", None)
        where = f" on {target}" if target else ""
        kind = "called sys.exit" if isinstance(exc, SystemExit) else "failed"
        print(f"trajbench {args.command}: error: code run{where} {kind}: {type(exc).__name__}: {exc} "
              "(re-run with --debug for the traceback)", file=sys.stderr)
        return 2


def _tolerant_output() -> None:
    """A path or a logged string that is not valid Unicode (a folder named in another encoding,
    a model's lone surrogate) prints as `\\udcff` instead of failing the command."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a stream that cannot change (closed, or not a text file)
                pass


def main(argv: list[str] | None = None) -> int:
    _tolerant_output()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler: Callable[[argparse.Namespace], int] = args.func
        return _guarded(handler, args)
    except BenchError as exc:
        print(f"trajbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("trajbench: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `trajbench report RUN | head`: the reader left; that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
