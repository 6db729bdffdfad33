"""The `trajbench` argument parser: every command's arguments, their types and their bounds (a
value out of range is one clear error naming the flag). The handlers are `bench.cli`'s; this
module only says what each command takes, so `trajbench --help` imports nothing else.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Callable, Mapping, NoReturn, TypeVar

if TYPE_CHECKING:
    from bench.analysis.divergence.options import DivergenceOptions

from bench.__version__ import __version__
from bench.errors import BenchError

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own exit code is 2 as well
        raise BenchError(f"{message} (see `{self.prog} --help`)", field="arguments")


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


def build_parser(commands: Mapping[str, Handler]) -> argparse.ArgumentParser:
    """The whole command line; `commands` maps each command's name to its handler (bench.cli)."""
    parser = _Parser(prog="trajbench", description="Benchmark the consistency of tool-using agents.")
    parser.add_argument("--version", action="version", version=f"trajbench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback when a command fails")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_running(sub, commands)
    _add_reading(sub, commands)
    _add_planning(sub, commands)
    _add_publishing(sub, commands)
    return parser


def _add_running(sub: Any, commands: Mapping[str, Handler]) -> None:
    """`validate` and `run`."""
    p = sub.add_parser("validate", help="check a suite's tasks (schema, reference passes, do-nothing fails)")
    p.add_argument("suite", metavar="SUITE", help="built-in suite name or folder")
    p.set_defaults(func=commands["validate"])

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
    p.add_argument("--log-format", choices=("zstd", "jsonl"), default="zstd",
                   help="a new run's log: trajectories.jsonl.zst, one zstd frame per trial (default; `zstdcat` reads "
                        "it as JSON lines) or plain trajectories.jsonl; a resumed run keeps the log it has")
    p.add_argument("--overlay", metavar="FILE",
                   help="tool overlay (JSON or TOML): change tool names, descriptions, argument schemas or result "
                        "formatting without touching the suite (docs/regression.md)")
    p.add_argument("--baseline", metavar="RUN_DIR",
                   help="after the run, diff it against this baseline run and exit with the diff's status "
                        "(0 no significant regression, 1 significant regression, 3 sequential gate not yet decided)")
    p.add_argument("--alpha", type=_probability, default=0.05, help="level of the --baseline gate (default 0.05)")
    p.set_defaults(func=commands["run"])


def _add_reading(sub: Any, commands: Mapping[str, Handler]) -> None:
    """`report`, `diff`, `view` and `verify`."""
    p = sub.add_parser("report", help="print a run's metrics (terminal or --json)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable (bench/schemas/report.schema.json)")
    fmt.add_argument("--markdown", action="store_true", help="Markdown: the suite's figures, the tasks and the causal replays")
    p.add_argument("--replays", nargs="+", metavar="DIR", help="replay directories (or folders of them) beside "
                   "RUN_DIR/replays/: their causal verdicts are shown with the divergence points")
    p.add_argument("--bootstrap", type=_bootstrap, default=2000, help="bootstrap replicates (default 2000, at most 1,000,000)")
    add_divergence_arguments(p)
    p.set_defaults(func=commands["report"])

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
    p.set_defaults(func=commands["diff"])

    p = sub.add_parser("view", help="write an HTML page drawing a task's trials as a branching tree")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--task", metavar="ID", help="one task (default: every task, with a selector)")
    p.add_argument("--out", metavar="FILE.html", help="default RUN_DIR/view.html (RUN_DIR/view-TASK.html with --task)")
    p.add_argument("--replays", nargs="+", metavar="DIR", help="replay directories (or folders of them) beside "
                   "RUN_DIR/replays/: their continuation success rates annotate the tree")
    add_divergence_arguments(p)
    p.set_defaults(func=commands["view"])

    p = sub.add_parser("verify", help="replay a run's log on a fresh world; recompute every outcome and figure (exit 1 on a mismatch)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--suite", metavar="SUITE", help="the suite folder (or built-in name) the run used, if its recorded path is gone; "
                   "its content hash must still match the run's")
    p.add_argument("--json", action="store_true", help="every mismatch, machine-readable")
    p.set_defaults(func=commands["verify"])

    p = sub.add_parser("repair", help="move a run log's corrupted lines into a quarantine file beside it; keep every "
                       "valid record (idempotent)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="what was moved, machine-readable")
    p.set_defaults(func=commands["repair"])

    p = sub.add_parser("replay", help="causal replay: resume the agent from a branch node; is the fork a cause or a symptom?")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run (or a replay directory: resume it as recorded)")
    p.add_argument("--task", metavar="ID", help="the task to replay (required unless RUN_DIR is a replay directory)")
    p.add_argument("--out", metavar="DIR", help="the replay directory (default RUN_DIR/replays/TASK--INDEX-STEP--mM: the node trial's index, the prefix length); "
                   "the same command resumes it")
    p.add_argument("--at", default="divergence", metavar="divergence|TRIAL:STEP", help="the node (default: the divergence point)")
    p.add_argument("-m", type=_replay_m, default=16,
                   help="continuations per alternative (and from the node itself; default 16, at most 10,000)")
    p.add_argument("--agent", metavar="SPEC", help="the agent to resume (default: the run's own)")
    p.add_argument("--budget", type=_trials_k, metavar="TRIALS", help="at most this many continuations in all, those "
                   "already in the replay directory included (≤ 100,000); a larger one resumes into the remaining arms")
    p.add_argument("--no-return", metavar="failed|TRIAL", help="also the point of no return of the task's failed trials "
                   "(or of one trial): the earliest step after which continuations almost never succeed")
    p.add_argument("--threshold", type=float, default=0.1, help="'almost never': the upper 95%% bound below this (default 0.1)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=commands["replay"])


def _add_planning(sub: Any, commands: Mapping[str, Handler]) -> None:
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
    p.set_defaults(func=commands["plan"])


def _add_publishing(sub: Any, commands: Mapping[str, Handler]) -> None:
    """`export` and `leaderboard`."""
    p = sub.add_parser("export", help="export a run as a Hugging Face dataset, ATIF trajectories or OTLP traces (offline)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=["parquet", "jsonl", "hf", "atif", "otel"],
                   help="parquet or jsonl files with a dataset card, hf (datasets save_to_disk), atif (one Harbor "
                        "ATIF trajectory per trial) or otel (OTLP JSON traces, GenAI conventions)")
    p.add_argument("--out", required=True, metavar="PATH", help="output folder (must not exist, or be empty)")
    p.set_defaults(func=commands["export"])

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
    p.set_defaults(func=commands["leaderboard"])

    p = sub.add_parser("import", help="import another harness's trajectory files as a run directory (not replay-verified)")
    p.add_argument("format", metavar="FORMAT", help="source format: tau-bench, tau2, inspect, atif (docs/import.md)")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="source files; several become one run")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run directory to create")
    p.add_argument("--success", metavar="EXPR", default=None,
                   help="the outcome rule: inspect, over a sample's scores ('accuracy == 1', the default; "
                        "'score:includes == \"C\"'); tau2, over its reward ('reward >= 0.5', 'reward:DB == 1', "
                        "'db'; default: reward == 1). Grammar: docs/import.md")
    p.set_defaults(func=commands["import"])
