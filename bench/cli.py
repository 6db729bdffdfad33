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
from typing import IO, TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    pass

from bench.cli_parser import Handler, build_parser, divergence_options
from bench.errors import BenchError

# No library may phone home during a benchmark (see README: "Offline").
for _var, _value in (("LANGSMITH_TRACING_V2", "false"), ("HF_HUB_OFFLINE", "1"),
                     ("HF_DATASETS_OFFLINE", "1"), ("HF_UPDATE_DOWNLOAD_COUNTS", "0")):
    os.environ.setdefault(_var, _value)


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
    from bench.runs.rundir import run_dir_name
    from bench.runs.runner import RunConfig, run_benchmark, trial_keys
    from bench.world.suite import valid_suite
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
                           variants=variants, design=design, log_format=args.log_format)
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

    report = build_report(args.run_dir, bootstrap=args.bootstrap, divergence=divergence_options(args),
                          replays=args.replays or ())
    if args.json:
        _write_json(report, sys.stdout)
    elif args.markdown:
        from bench.publish.markdown import report_markdown

        sys.stdout.write(report_markdown(report))
    else:
        print(render_report(report))
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from bench.publish.view import write_view

    path = write_view(args.run_dir, task_id=args.task, out=args.out, options=divergence_options(args),
                      replays=args.replays or ())
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
    """`trajbench replay`: causal verdicts at a branch node (bench.analysis.causal), stored as a
    replay directory (bench.analysis.replays); the same command resumes a killed replay."""
    from bench.analysis.causal import ReplayRequest, replay_task
    from bench.publish.causal import render_replay

    request = ReplayRequest(args.task, args.at, args.m, args.agent, args.budget, 0, args.no_return, args.threshold, args.out)
    done = replay_task(args.run_dir, request)
    if done.torn_bytes:
        print(f"trajbench: cut a torn last line ({done.torn_bytes} bytes) from the replay's log before resuming", file=sys.stderr)
    if done.resumed:
        print(f"trajbench: resumed {done.replay_dir}: {done.resumed} continuation(s) already logged, {done.fresh} run now",
              file=sys.stderr)
    if args.json:
        _write_json(done.result, sys.stdout)
        return 0
    print(render_replay(done.result))
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
    from bench.publish.leaderboard import IMPORTED, build_leaderboard
    from bench.publish.leaderboard_page import ci_text, write_leaderboard
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
    """The bytes go straight to the stream's buffer when it has one: a million-trial report's JSON
    is hundreds of MB, which decoding, appending the newline and encoding again would copy thrice."""
    import orjson

    data = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        out.write(data.decode() + "\n")
        return
    out.flush()
    buffer.write(data)
    buffer.write(b"\n")
    buffer.flush()


COMMANDS: dict[str, Handler] = {
    "validate": cmd_validate,
    "run": cmd_run,
    "report": cmd_report,
    "diff": cmd_diff,
    "view": cmd_view,
    "verify": cmd_verify,
    "repair": cmd_repair,
    "replay": cmd_replay,
    "plan": cmd_plan,
    "export": cmd_export,
    "leaderboard": cmd_leaderboard,
    "import": cmd_import,
}


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
    parser = build_parser(COMMANDS)
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
