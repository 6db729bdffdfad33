"""Causal replay: speed, and the mood (symptom-vs-cause) validation table.

    python benchmarks/replay.py speed [--m 16]
    python benchmarks/replay.py mood [--m 16] [--tasks 20]

`speed` runs a `sim:noisy?mood=0.5` run of one retail task (k = 16), then, in the same process,
times continuations from the prefix before the task's last reference step (restored by replaying
the logged steps with `verify`'s engine) against fresh trials of the same agent run by the same
trial machinery from step 0, and prints continuations/s, fresh trials/s and their ratio. A sim
agent costs almost nothing, so the ratio measures the price of restoring (replay + checks)
against acting; for a model agent, restoring skips the model turns of the prefix entirely.

`mood` runs the mood agent on the retail tasks it can be planted on (k = 16) and, for each task
with a bad-mood trial, replays at the lookup and at the fatal write with m continuations per
arm; it prints per task the statistical divergence alternatives and both verdicts, and the share
of tasks where the lookup is not confirmed and the write is.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.adapters.spec import parse_agent_spec
from bench.analysis.causal import Sampler, replay_node
from bench.analysis.prefix import prefix_of
from bench.canonical import step_key
from bench.episode import Episode
from bench.runs.rundir import read_run
from bench.runs.runner import RunConfig, run_benchmark
from bench.runs.trial import play
from bench.world.suite import load_suite

AGENT = "sim:noisy?mood=0.5"


def _run(tasks: list[str], out: Path) -> None:
    suite = load_suite("retail")
    run_benchmark(suite, parse_agent_spec(AGENT), tasks, RunConfig(k=16, out=out, progress=False, retry_backoff_s=0.0))


def speed(m: int) -> None:
    suite = load_suite("retail")
    task = suite.tasks[0]
    with tempfile.TemporaryDirectory() as tmp:
        _run([task.id], Path(tmp) / "run")
        log = read_run(Path(tmp) / "run")
        trial = sorted(log.summaries)[0]
        steps = len(log.trial_steps(trial))
        agent = parse_agent_spec(AGENT).build()
        sampler = Sampler(suite, agent, 50)
        prefix = prefix_of(log, suite, trial, steps - 1)
        n = m * 20
        t0 = time.perf_counter()
        for j in range(n):
            sampler.continuation(prefix, None, j)
        replayed = time.perf_counter() - t0
        t0 = time.perf_counter()
        for j in range(n):
            episode = Episode(suite, task, trial_id="t", attempt="a", seed=j, max_steps=50, timeout_s=None, sink=lambda e: None)
            play(agent, episode)
        fresh = time.perf_counter() - t0
    print(f"task {task.id}: prefix of {steps - 1} of {steps} logged steps, {n} continuations each way")
    print(f"replayed from the prefix: {n / replayed:,.0f} continuations/s; fresh trials: {n / fresh:,.0f} trials/s; "
          f"ratio (replay time / fresh time) {replayed / fresh:.2f}")


def mood(m: int, n_tasks: int) -> None:
    suite = load_suite("retail")
    agent = parse_agent_spec(AGENT).build()
    tasks = [t for t in suite.tasks if agent.mood_plan(suite, t) is not None][:n_tasks]
    with tempfile.TemporaryDirectory() as tmp:
        _run([t.id for t in tasks], Path(tmp) / "run")
        log = read_run(Path(tmp) / "run")
        good = total = 0
        print("| task | lookup: verdict (rates) | write: verdict (rates) |\n|---|---|---|")
        for task in tasks:
            plan = agent.mood_plan(suite, task)
            assert plan is not None
            bad = [t for t, s in sorted(log.summaries.items()) if s["task"] == task.id and s["agent_info"]["sim"]["mood"] == "bad"]
            if not bad:
                continue
            keys = [step_key(e["tool"], e["args"]) for e in log.trial_steps(bad[0])]
            sampler = Sampler(suite, agent, 50)
            rows = [replay_node(log, sampler, prefix_of(log, suite, bad[0], keys.index(step_key(a.tool, a.args))), m)
                    for a in (plan.lookup, plan.write)]
            cells = [f"{r['verdict']} ({', '.join(str(a['rate']) for a in r['alternatives'])})" for r in rows]
            print(f"| {task.id} | {cells[0]} | {cells[1]} |")
            total += 1
            good += rows[0]["verdict"] == "not confirmed" and rows[1]["verdict"] == "confirmed"
    print(f"\nlookup not confirmed and write confirmed: {good}/{total} tasks at m = {m}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["speed", "mood"])
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    speed(args.m) if args.what == "speed" else mood(args.m, args.tasks)


if __name__ == "__main__":
    main()
