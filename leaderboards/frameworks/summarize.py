"""Where the frameworks' runs differ, from the runs of run.sh: per suite, each framework's
pass@1 / pass^k with 95% intervals, tokens, steps and model turns per trial; per task, each
framework's tool sequences and end states, the step at which the frameworks part, and the
divergence points `trajbench report` finds inside each framework's own k trials; and, over all
suites, each framework's pass@1 / pass^k pooled over every task. Prints Markdown (publish.sh
writes it to leaderboards/frameworks/summary.md; docs/frameworks.md quotes it).

Usage: python leaderboards/frameworks/summarize.py RUNS_DIR   (the RUNS_DIR given to run.sh)

Every figure comes from trajbench's own analysis (`build_report`, `metrics.suite_summary`): this
script only lays them side by side.
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.analysis import metrics
from bench.analysis.report import build_report
from bench.runs.rundir import is_valid, read_run


@dataclass
class Trial:
    task: str
    outcome: str
    failed: list[str]
    calls: list[str]  # tool calls and ask_user turns, in order; `!` marks an error
    state: str
    tokens: int
    model_turns: int
    duration_s: float


@dataclass
class Run:
    agent: str
    report: dict[str, Any]
    trials: list[Trial]


def read_trials(run_dir: Path) -> list[Trial]:
    """Each counted trial's outcome, failed checks, calls, end state and costs (unperturbed
    inputs). Infrastructure errors are left out, as `report` leaves them out of every figure."""
    log = read_run(run_dir)
    out = []
    for trial_id in sorted(log.summaries):
        summary = log.summaries[trial_id]
        if not is_valid(summary):
            continue
        steps = log.trial_steps(trial_id)
        out.append(Trial(
            task=summary["task"], outcome=summary["outcome"],
            failed=[name for name, check in summary["checks"].items() if not check["passed"]],
            calls=[f"{s['tool']}{'!' if s.get('error') else ''}" for s in steps if s["kind"] in ("tool", "user")],
            state=summary["final_state_hash"][:8], tokens=summary["input_tokens"] + summary["output_tokens"],
            model_turns=sum(1 for s in steps if s["kind"] == "model"), duration_s=float(summary.get("duration_s") or 0.0)))
    return out


def read_suite(suite_dir: Path) -> list[Run]:
    return [Run(p.name, build_report(p), read_trials(p))
            for p in sorted(suite_dir.iterdir()) if (p / "run.json").is_file()]


def interval(entry: dict[str, Any]) -> str:
    if entry.get("mean") is None:
        return "—"
    return f"{entry['mean']:.2f} [{entry['lo']:.2f}, {entry['hi']:.2f}]"


def pass_hat(suite: dict[str, Any], k: int) -> dict[str, Any]:
    return next((e for e in suite["pass^k"] if e["k"] == k), {"mean": None})


def spread(values: list[float], digits: int = 0) -> str:
    if not values:
        return "—"
    fmt = f"{{:,.{digits}f}}"
    return f"{fmt.format(statistics.mean(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def framework_table(runs: list[Run]) -> list[str]:
    lines = ["| framework | k | pass@1 [95% CI] | pass^k [95% CI] | flip | tokens/trial (min–max) | tool calls/trial | model turns/trial | s/trial | outcomes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for run in runs:
        suite, k = run.report["suite"], run.report["run"]["k"]
        outcomes = ", ".join(f"{o} {n}" for o, n in Counter(t.outcome for t in run.trials).most_common())
        flip = suite["flip"]["mean"]
        lines.append(f"| {run.agent} | {k} | {interval(suite['pass@1'])} | {interval(pass_hat(suite, k))} | "
                     f"{'—' if flip is None else f'{flip:.2f}'} | {spread([t.tokens for t in run.trials])} | "
                     f"{spread([len(t.calls) for t in run.trials], 1)} | {spread([t.model_turns for t in run.trials], 1)} | "
                     f"{spread([t.duration_s for t in run.trials])} | {outcomes} |")
    return lines


def first_parting(sequences: list[list[str]]) -> int | None:
    """How many leading calls every sequence shares (the same tool, erred or not); None if all
    sequences are the same."""
    flat = [[call.rstrip("!") for call in seq] for seq in sequences]
    if len({tuple(seq) for seq in flat}) <= 1:
        return None
    step = 0
    while all(len(seq) > step for seq in flat) and len({seq[step] for seq in flat}) == 1:
        step += 1
    return step


def task_section(task: str, runs: list[Run]) -> list[str]:
    lines = [f"#### {task}", "", "| framework | successes | tool sequences (× trials; `!` = error) | end states | failed checks |", "|---|---:|---|---:|---|"]
    by_agent = {run.agent: [t for t in run.trials if t.task == task] for run in runs}
    for agent, trials in by_agent.items():
        seqs = Counter(" → ".join(t.calls) or "(no call)" for t in trials)
        failed = Counter(name for t in trials for name in t.failed)
        lines.append(f"| {agent} | {sum(t.outcome == 'success' for t in trials)}/{len(trials)} | "
                     + "<br>".join(f"{s} ×{n}" for s, n in seqs.most_common())
                     + f" | {len({t.state for t in trials})} | {', '.join(f'{c}×{n}' for c, n in failed.most_common()) or '—'} |")
    parting = first_parting([t.calls for trials in by_agent.values() for t in trials])
    firsts = {agent: Counter(t.calls[0].rstrip("!") if t.calls else "(no call)" for t in trials) for agent, trials in by_agent.items()}
    lines.append("")
    lines.append("All trials of all frameworks make the same calls." if parting is None else
                 f"The frameworks' trials part at call {parting} (0-based). First calls: "
                 + "; ".join(f"{a}: " + ", ".join(f"{c} ×{n}" for c, n in f.most_common()) for a, f in firsts.items()) + ".")
    lines += ["", *divergence_lines(task, runs), ""]
    return lines


def divergence_lines(task: str, runs: list[Run]) -> list[str]:
    """What `trajbench report` finds inside each framework's own k trials of the task: the
    significant divergence point, else its best candidate branch (exploratory: at small k no
    branch can reach significance)."""
    out = []
    for run in runs:
        row = next((r for r in run.report["divergence"]["tasks"] if r["task"] == task), None)
        if row is None or not row["mixed"]:
            outcome = "all fail" if row is None or row["successes"] == 0 else "all succeed"
            paths = row["distinct_trajectories"] if row else 0
            out.append(f"- {run.agent}: no mixed outcomes ({outcome}), so no divergence point to look for "
                       f"({paths} distinct path{'s' if paths != 1 else ''} in writes and stops).")
            continue
        branch = row.get("divergence") or row.get("candidate")
        if branch is None:
            out.append(f"- {run.agent}: mixed outcomes, but no fork in writes or stops (the paths part only in lookups).")
            continue
        alts = "  vs  ".join(f"`{a['action'] or '(stops)'}` {a['successes']}/{a['n']}" for a in branch["alternatives"])
        p_value = "" if branch.get("p") is None else f", p = {branch['p']:.3f}"
        verdict = (f"significant, q = {branch['q']:.3f}" if branch.get("significant") else
                   f"tested, q = {branch['q']:.3f}" if branch.get("tested") else f"exploratory{p_value}, not testable with {row['n']} trials")
        out.append(f"- {run.agent}: branch at step {branch['step']}: {alts} ({verdict}).")
    return out


def pooled(all_runs: dict[str, list[Run]]) -> list[str]:
    """Each framework over every task of every suite: one task-bootstrap over the pooled tasks."""
    agents = sorted({run.agent for runs in all_runs.values() for run in runs})
    k = min(run.report["run"]["k"] for runs in all_runs.values() for run in runs)
    lines = [f"| framework | tasks | pass@1 [95% CI] | pass^{k} [95% CI] | tokens/trial |", "|---|---:|---:|---:|---:|"]
    for agent in agents:
        runs = [run for suite_runs in all_runs.values() for run in suite_runs if run.agent == agent]
        counts = [(row["n"], row["successes"]) for run in runs for row in run.report["tasks"]]
        summary = metrics.suite_summary(counts)
        tokens = [t.tokens for run in runs for t in run.trials]
        lines.append(f"| {agent} | {summary['n_tasks']} | {interval(summary['pass@1'])} | {interval(pass_hat(summary, k))} | {spread(tokens)} |")
    return lines


def main(root: Path) -> None:
    all_runs = {d.name: read_suite(d) for d in sorted(p for p in root.iterdir() if p.is_dir())}
    all_runs = {suite: runs for suite, runs in all_runs.items() if runs}
    print("## Over all suites (each framework's tasks pooled — the tasks it ran, see the tasks column; intervals: bootstrap over tasks)\n")
    print("\n".join(pooled(all_runs)))
    for suite, runs in all_runs.items():
        print(f"\n## {suite}\n")
        print("\n".join(framework_table(runs)))
        print()
        tasks = sorted({t.task for run in runs for t in run.trials})
        for task in tasks:
            print("\n".join(task_section(task, runs)))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
