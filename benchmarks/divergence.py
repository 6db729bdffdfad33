"""Divergence analysis: speed on a large run, and detection of planted divergences.

    python benchmarks/divergence.py speed [--tasks 1000] [--k 100] [--steps 10] [--keep DIR] [--repeat 3]
    python benchmarks/divergence.py detection [--replications 10] [--tasks-per-suite 20] [--test fisher]
    python benchmarks/divergence.py false-alarms [--replications 25]
    python benchmarks/divergence.py top-branches RUN_DIR...

`speed` writes a synthetic run directory in the real log format (tasks × k trials × ~steps tool
steps, 100k trials × 10 steps by default: 1.1M step events, 1.2M log lines; `--keep DIR` writes
it once and reuses it) and times, in one process: the full report from the run directory
(`build_report`: one pass over the log, the metrics and the divergence analysis), the baseline
of merely parsing every line with orjson (keeping nothing), and their ratio; then the
divergence analysis alone (`divergence_section(run_dir)`). Each phase prints wall-clock and CPU
seconds; `--repeat N` runs each N times (the statistical tests' caches cleared before every
run, so each is a cold start) and prints the medians. Peak resident memory (`ru_maxrss`) only
grows, so the report runs first and its peak is its own. CPU seconds are the robust figure on
a shared, busy machine. At a million trials: `speed --tasks 10000 --k 100 --keep DIR` (a 4 GB
log, written once); the peak memory of each reading command as its own process (`report`,
`verify`, `diff`, `export`), beside the bare parse, is `benchmarks/memory.py measure` on the
same run (`make-synthetic OUT --trials 1000000` writes it with this generator).

`detection` simulates tasks at the level of trial paths (the same model as the `sim` agent's
planting, without running tools): reference actions r_0..r_7; each trial takes the planted
alternative at step s with probability q, and then fails with probability f (it carries on
with the reference) or recovers (it performs r_s after all, and succeeds); other trials follow
the reference and succeed. Suites of `--tasks-per-suite` tasks share one Benjamini–Hochberg
family. A task counts as detected when its reported divergence point is the planted branch
(the planted alternative is one of its alternatives). "bound" is the chance that the planted
node's own two-sided test reaches p ≤ 0.05 at all (no multiplicity correction, no noise):
no method using that test can do better. `--noise ν` inserts, after each step with probability
ν, one of three distinct harmless read-only calls (which fragments the prefix tree); the
analysis is then run with default keys and with read-only steps ignored.

`false-alarms` simulates tasks where nothing on the path changes the outcome (outcomes
Bernoulli(p₀) with p₀ ~ U(0.3, 0.9) independent of the path), either with harmless noise only
or with a planted branch that does not change the outcome, and reports the share of tasks
for which a significant divergence point is reported, and the share of suites with any.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.analysis.divergence.options import DivergenceOptions, TaskTrials, TrialPath  # noqa: E402
from bench.analysis.divergence.power import detection_power  # noqa: E402
from bench.analysis.divergence.section import analyse, divergence_section  # noqa: E402


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------------------------------
# speed
# ---------------------------------------------------------------------------------------


def write_synthetic_run(out: Path, n_tasks: int, k: int, steps: int, seed: int = 0) -> None:
    """A run directory in the real format. Per task: a reference of `steps` tool calls (reads
    and writes); each trial follows it, with a planted wrong write (q = 0.3, fatal with
    f = 0.8), random fatal wrong arguments (5 % of trials), repeated reads and extra lookups
    (harmless)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [f"task-{t:05d}" for t in range(n_tasks)]
    manifest = {"run_id": "synthetic", "harness_version": "bench", "created_at": "2026-01-01T00:00:00+00:00",
                "suite": {"name": "synthetic", "hash": "0" * 32, "path": str(out / "no-such-suite")},
                "agent": {"name": "synthetic", "adapter": "sim", "hash": "0" * 32, "simulated": True, "options": {}},
                "k": k, "base_seed": seed, "tasks": tasks, "variants": ["base"], "perturbations": [],
                "max_steps": 50, "timeout_s": 300.0, "tool_schema_hashes": {}, "host": {}}
    (out / "run.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    with open(out / "trajectories.jsonl", "wb") as fh:
        for t, task in enumerate(tasks):
            ref = [("get_record" if j % 3 == 0 else "update_record", {"record_id": f"R{t}-{j}", "value": j})
                   for j in range(steps)]
            plant_step = int(rng.integers(0, steps))
            lines = []
            for i in range(k):
                trial = f"{task}/base/{i}"
                attempt = f"{trial}@{i:010x}"
                actions = list(ref)
                ok = True
                if rng.random() < 0.3:  # planted wrong turn
                    tool, args = actions[plant_step]
                    actions[plant_step] = (tool, {**args, "value": -1})
                    if rng.random() < 0.8:
                        ok = False
                    else:
                        actions.insert(plant_step + 1, ref[plant_step])
                if rng.random() < 0.05:  # background failure elsewhere
                    j = int(rng.integers(0, len(actions)))
                    tool, args = actions[j]
                    actions[j] = (tool, {**args, "record_id": "R-wrong"})
                    ok = False
                noisy = []
                for tool, args in actions:
                    noisy.append((tool, args, tool == "get_record"))
                    u = rng.random()
                    if tool == "get_record" and u < 0.1:
                        noisy.append((tool, args, True))  # repeated read
                    elif u < 0.13:
                        noisy.append(("search", {"query": f"q{int(rng.integers(0, 3))}"}, True))
                state = "0" * 24
                for n, (tool, args, ro) in enumerate(noisy):
                    if not ro:
                        state = f"{hash((t, n, tool, str(args))) & (2**96 - 1):024x}"
                    lines.append(orjson.dumps({
                        "type": "step", "trial": trial, "attempt": attempt, "step": n, "kind": "tool", "tool": tool,
                        "args": args, "observation": {"ok": True, "record": args.get("record_id")}, "error": None,
                        "read_only": ro, "state_hash": state, "t_start": 1.0 + n, "t_end": 1.5 + n}))
                lines.append(orjson.dumps({
                    "type": "trial", "trial": trial, "attempt": attempt, "task": task, "variant": "base", "index": i,
                    "seed": i, "started_at": 1.0, "attempts": 1, "outcome": "success" if ok else "failure",
                    "reason": None if ok else "failed: state", "checks": {"state": {"passed": ok, "detail": ""}},
                    "milestones": {"first_write": 1 if len(noisy) > 1 else None}, "final_state_hash": state,
                    "answer": "", "steps": len(noisy), "events": len(noisy), "input_tokens": 0, "output_tokens": 0,
                    "cost": 0.0, "duration_s": 0.01, "agent_info": {}}))
            fh.write(b"\n".join(lines) + b"\n")


class _Timer:
    """Wall-clock and CPU seconds of a phase (CPU time is robust to a busy machine)."""

    def __enter__(self) -> "_Timer":
        gc.collect()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def _timed(label: str, repeat: int, phase: Callable[[], object]) -> tuple[float, float]:
    """Run `phase` `repeat` times from cold caches; print each run and return the median
    (wall, CPU) seconds."""
    from bench.analysis import exact as dv

    walls, cpus = [], []
    for _ in range(repeat):
        for cached in (dv._exact_cached, dv._boschloo_cached, dv._boschloo_space, dv._bernstein_basis):
            cached.cache_clear()
        with _Timer() as t:
            phase()
        walls.append(t.wall)
        cpus.append(t.cpu)
        print(f"  {label}: {t.wall:6.2f} s wall, {t.cpu:6.2f} s CPU, peak RSS so far {_rss_mb():5.0f} MB", flush=True)
    return float(np.median(walls)), float(np.median(cpus))


def _parse_every_line(log_path: Path) -> None:
    """The baseline: what merely parsing the log costs."""
    with open(log_path, "rb") as fh:
        for line in fh:
            orjson.loads(line)


def speed(args: argparse.Namespace) -> None:
    from bench.analysis.report import build_report

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="trajbench-div-"))
    run = tmp / "run"
    try:
        if not (run / "run.json").exists():
            start = time.perf_counter()
            write_synthetic_run(run, args.tasks, args.k, args.steps)
            print(f"synthetic run written in {time.perf_counter() - start:.1f} s")
        log_path = run / "trajectories.jsonl"
        lines = steps = 0
        with open(log_path, "rb") as fh:
            for line in fh:
                lines += 1
                steps += line.startswith(b'{"type":"step"')
        manifest = orjson.loads((run / "run.json").read_bytes())
        trials = len(manifest["tasks"]) * manifest["k"]
        print(f"synthetic run {run}: {len(manifest['tasks'])} tasks × k = {manifest['k']} = {trials} trials, "
              f"{steps} step events, {lines} lines, {log_path.stat().st_size / 1e6:.0f} MB log; "
              f"load average {open('/proc/loadavg').read().split()[0]} on {os.cpu_count()} CPUs")
        gc.collect()
        rss_before = _rss_mb()
        print(f"peak RSS before the report: {rss_before:.0f} MB")
        options = DivergenceOptions(test=args.test)
        report_wall, report_cpu = _timed("build_report(run_dir)", args.repeat,
                                         lambda: build_report(run, bootstrap=args.bootstrap, divergence=options))
        report_rss = _rss_mb()
        parse_wall, parse_cpu = _timed(f"baseline: orjson.loads of every line ({lines}), nothing kept", args.repeat,
                                       lambda: _parse_every_line(log_path))
        div_wall, div_cpu = _timed("divergence_section(run_dir) alone", args.repeat,
                                   lambda: divergence_section(run, options))
        median = f"median of {args.repeat}" if args.repeat > 1 else "one run"
        print(f"\nfull report (build_report from the run directory: metrics, B = {args.bootstrap}, and divergence; {median}):\n"
              f"  {report_wall:.2f} s wall, {report_cpu:.2f} s CPU, peak RSS {report_rss:.0f} MB "
              f"(process before it: {rss_before:.0f} MB); targets ≤ 10 s, ≤ 2048 MB\n"
              f"  = {report_cpu / parse_cpu:.1f}× the CPU ({report_wall / parse_wall:.1f}× the wall time) of the bare "
              f"parse, {parse_cpu:.2f} s CPU / {parse_wall:.2f} s wall\n"
              f"divergence analysis alone: {div_wall:.2f} s wall, {div_cpu:.2f} s CPU = {div_cpu / parse_cpu:.1f}× the parse")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# detection and false alarms (path-level simulation)
# ---------------------------------------------------------------------------------------

REF_LEN = 8


def simulate_task(rng: np.random.Generator, name: str, s: int | None, q: float, f: float, k: int,
                  noise: float = 0.0, p0: float | None = None,
                  lookup_fork: bool = False) -> tuple[TaskTrials, str | None, list[list[bool]]]:
    """One task's k trial paths (see the module docstring). With `p0`, outcomes are
    Bernoulli(p0) whatever the path (nothing on the path matters). With `lookup_fork`, every
    trial first looks up one of two records (half each, as a simulated user would drive it;
    harmless). Returns the task, the key of the planted alternative, and for each trial whether
    each key is a read-only lookup."""
    ref = [f"step{j}(ref)" for j in range(REF_LEN)]
    alt = None if s is None else f"step{s}(alternative)"
    trials = []
    noise_flags = []
    for i in range(k):
        ok = True
        if s is not None and rng.random() < q:
            fail = rng.random() < f
            keys = ref[:s] + [alt] + (ref[s + 1:] if fail else ref[s:])
            ok = not fail
        else:
            keys = list(ref)
        if p0 is not None:
            ok = bool(rng.random() < p0)
        flags = [False] * len(keys)
        if lookup_fork:
            keys = [f"lookup(record{int(rng.integers(0, 2))})"] + keys
            flags = [True] + flags
        if noise:
            noisy, flags, lookups = [], [], flags
            for key, ro in zip(keys, lookups):
                noisy.append(key)
                flags.append(ro)
                if rng.random() < noise:
                    noisy.append(f"lookup(x{int(rng.integers(0, 3))})")
                    flags.append(True)
            keys = noisy
        trials.append(TrialPath(f"{name}/{i}", ok, keys, read_only=flags))
        noise_flags.append(flags)
    return TaskTrials(name, trials, reference=ref), alt, noise_flags


def _without_noise(task: TaskTrials, flags: list[list[bool]]) -> TaskTrials:
    """What `ignore_read_only=True` does to the simulated paths: drop the read-only lookups."""
    trials = [TrialPath(t.trial, t.success, [key for key, noisy in zip(t.keys, fl) if not noisy],
                        read_only=[False] * sum(not noisy for noisy in fl))
              for t, fl in zip(task.trials, flags)]
    return TaskTrials(task.task, trials, reference=task.reference)


def detection_rate(seed: int, s: int, q: float, f: float, k: int, *, tasks_per_suite: int = 20, replications: int = 10,
                   noise: float = 0.0, ignore_noise: bool = False, test: str = "boschloo", fork: str = "decision",
                   lookup_fork: bool = False) -> tuple[float, int]:
    """Share of planted tasks whose reported divergence point is the planted branch."""
    rng = np.random.default_rng([seed, s, int(q * 1000), int(f * 1000), k, int(noise * 1000)] + ([1] if lookup_fork else []))
    hits = total = 0
    options = DivergenceOptions(test=test, fork=fork)
    for r in range(replications):
        tasks, alts = [], []
        for t in range(tasks_per_suite):
            task, alt, flags = simulate_task(rng, f"r{r}-t{t}", s, q, f, k, noise=noise, lookup_fork=lookup_fork)
            tasks.append(_without_noise(task, flags) if ignore_noise else task)
            alts.append(alt)
        section = analyse(tasks, options).section
        for row, alt in zip(section["tasks"], alts):
            total += 1
            d = row["divergence"]
            hits += d is not None and any(a["action"] == alt for a in d["alternatives"])
    return hits / total, total


def detection_bound(k: int, q: float, f: float, alpha: float = 0.05, test: str = "boschloo") -> float:
    """P(the planted node's own two-sided test gives p ≤ alpha): an upper bound on detection
    (the rule the report's "detectable at k" uses: bench.analysis.divergence.power)."""
    return detection_power(k, q, 1.0, 1.0 - f, alpha, test)


def false_alarm_rate(seed: int, k: int, kind: str, *, tasks_per_suite: int = 20, replications: int = 25,
                     test: str = "boschloo", fork: str = "decision") -> tuple[float, float, int]:
    """(share of null tasks with a significant divergence point, share of suites with any
    such task, number of null tasks). Kinds: "noise" (harmless noise only), "branch" (a
    planted branch that does not change the outcome), "mixed" (half the suite's tasks have a
    real planted divergence, q = 0.5, f = 1, which makes Benjamini–Hochberg more lenient; the
    other half are "branch" tasks, and only they are counted)."""
    rng = np.random.default_rng([seed, k, {"branch": 1, "noise": 2, "mixed": 3}[kind]])
    options = DivergenceOptions(test=test, fork=fork)
    flagged = suites_flagged = total = 0
    for r in range(replications):
        tasks, null = [], []
        for t in range(tasks_per_suite):
            p0 = float(rng.uniform(0.3, 0.9))
            s = int(rng.integers(0, 7))
            if kind == "noise":
                task, _, _ = simulate_task(rng, f"r{r}-t{t}", None, 0.0, 0.0, k, noise=0.1, p0=p0)
                null.append(True)
            elif kind == "branch" or t % 2:
                task, _, _ = simulate_task(rng, f"r{r}-t{t}", s, 0.5, 0.0, k, noise=0.05, p0=p0)
                null.append(True)
            else:
                task, _, _ = simulate_task(rng, f"r{r}-t{t}", s, 0.5, 1.0, k, noise=0.05)
                null.append(False)
            tasks.append(task)
        section = analyse(tasks, options).section
        n = sum(row["divergence"] is not None for row, is_null in zip(section["tasks"], null) if is_null)
        flagged += n
        suites_flagged += n > 0
        total += sum(null)
    return flagged / total, suites_flagged / replications, total


def detection(args: argparse.Namespace) -> None:
    ks, qs, ss, fs = (4, 8, 16, 32), (0.1, 0.25, 0.5), (1, 3, 6), tuple(args.f)
    start = time.perf_counter()
    print(f"Detection of a planted divergence (share of tasks whose reported divergence point is the planted branch);\n"
          f"{args.replications} suites × {args.tasks_per_suite} tasks per cell, test = {args.test}, fork = {args.fork}, "
          f"noise ν = {args.noise}{', read-only steps ignored' if args.ignore_noise else ''}"
          f"{', user-driven lookup fork first' if args.lookup_fork else ''}")
    for f in fs:
        print(f"\nf = {f}")
        print("| s | q | " + " | ".join(f"k = {k}" for k in ks) + " |")
        print("|---|---|" + "---|" * len(ks))
        for s in ss:
            for q in qs:
                cells = [detection_rate(args.seed, s, q, f, k, tasks_per_suite=args.tasks_per_suite,
                                        replications=args.replications, noise=args.noise,
                                        ignore_noise=args.ignore_noise, test=args.test, fork=args.fork,
                                        lookup_fork=args.lookup_fork)[0] for k in ks]
                print(f"| {s} | {q} | " + " | ".join(f"{c:.0%}" for c in cells) + " |")
        for q in qs:
            print(f"| bound | {q} | " + " | ".join(f"{detection_bound(k, q, f, test=args.test):.0%}" for k in ks) + " |")
    print(f"\n({time.perf_counter() - start:.0f} s)")


def false_alarms(args: argparse.Namespace) -> None:
    ks = (4, 8, 16, 32)
    print(f"False alarms: share of tasks (and of {args.tasks_per_suite}-task suites) with a significant divergence point "
          f"when nothing on the path changes the outcome; {args.replications} suites per cell, test = {args.test}, "
          f"fork = {args.fork}")
    print("| scenario | " + " | ".join(f"k = {k}" for k in ks) + " |")
    print("|---|" + "---|" * len(ks))
    for kind, label in (("noise", "harmless noise only"), ("branch", "planted branch, no effect on outcome"),
                        ("mixed", "same, in suites where half the tasks have a real divergence")):
        cells = [false_alarm_rate(args.seed, k, kind, tasks_per_suite=args.tasks_per_suite,
                                  replications=args.replications, test=args.test, fork=args.fork) for k in ks]
        print(f"| {label} | " + " | ".join(f"{t:.1%} tasks ({s:.0%} suites)" for t, s, _ in cells) + " |")


def top_branches(args: argparse.Namespace) -> None:
    """Per mixed task of real runs: does the top branch (the divergence point, else the best
    candidate) name a write or a stop, under the decision rule and under the raw first fork?
    "Exists" = the trials part somewhere in a write or a stop (a branch node of either analysis
    whose alternatives are all writes or stops)."""
    from bench.analysis.divergence.keys import read_only_of
    from bench.runs.rundir import read_run

    print("| run | mixed tasks | a write/stop fork exists | decision: top names a write/stop | raw: top names a write/stop |")
    print("|---|---|---|---|---|")
    for run_dir in args.runs:
        log = read_run(run_dir)
        lookups = {str(ev.get("tool")) for events in log.steps.values() for ev in events
                   if ev.get("kind") == "tool" and read_only_of(ev)}

        def decides(branch: dict[str, Any] | None, lookups: set[str] = lookups) -> bool:
            return branch is not None and all(a["end"] or a["tool"] not in lookups for a in branch["alternatives"])

        rows = {fork: {r["task"]: r for r in divergence_section(log, fork=fork)["tasks"] if r["mixed"]}
                for fork in ("decision", "raw")}
        exists = {t for rs in rows.values() for t, r in rs.items() if any(decides(b) for b in r["branches"])}
        named = {fork: {t for t, r in rs.items() if decides(r["divergence"] or r["candidate"]
                                                          or (r["branches"] or [None])[0])}
                 for fork, rs in rows.items()}
        print(f"| {run_dir} | {len(rows['raw'])} | {len(exists)} | {len(named['decision'] & exists)} of {len(exists)} | "
              f"{len(named['raw'] & exists)} of {len(exists)} |")
        for t in sorted(exists - named["decision"]):
            print(f"  decision rule misses a write/stop in {t}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--test", default="boschloo")
    p.add_argument("--repeat", type=int, default=1, help="run each phase this many times and report the medians")
    p.add_argument("--keep", help="write the synthetic run here (once) and keep it; later runs reuse it")
    p.set_defaults(func=speed)
    for name, func in (("detection", detection), ("false-alarms", false_alarms)):
        p = sub.add_parser(name)
        p.add_argument("--replications", type=int, default=10 if name == "detection" else 25)
        p.add_argument("--tasks-per-suite", type=int, default=20)
        p.add_argument("--test", default="boschloo")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--fork", choices=("decision", "raw"), default="decision",
                       help="the divergence rule (default: decision, as `trajbench report`)")
        if name == "detection":
            p.add_argument("--lookup-fork", action="store_true",
                           help="every trial first looks up one of two records (harmless, user-driven)")
            p.add_argument("--f", type=float, nargs="+", default=[0.8, 1.0])
            p.add_argument("--noise", type=float, default=0.0)
            p.add_argument("--ignore-noise", action="store_true")
        p.set_defaults(func=func)
    p = sub.add_parser("top-branches", help="real runs: does the top branch name a write or a stop?")
    p.add_argument("runs", nargs="+")
    p.set_defaults(func=top_branches)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
