"""Causal replay: speed, and the mood (symptom-vs-cause) validation table.

    python benchmarks/replay.py speed [--m 16]
    python benchmarks/replay.py mood [--m 16] [--tasks 20]
    python benchmarks/replay.py store [--m 40]
    python benchmarks/replay.py resume [--m 40]

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

`store` replays one node of the mood run (`--no-return failed` too) into a replay directory
(`trajbench replay`'s own code, every continuation logged as it runs) and, in the same process,
the same arms with the same seeds in memory (the baseline): continuations/s each way and the
ratio (the price of logging); then the time to read the verdict back from the directory (what
`trajbench report` and `replay REPLAY_DIR --json` do) against `read_run` of the same directory.

`resume` starts the same replay as a real `trajbench replay` subprocess, SIGKILLs it once ~40%
of the continuations are logged, re-runs the same command, and counts the continuations lost
and duplicated against an uninterrupted replay (trial ids and outcomes), and whether the two
verdicts are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.adapters.spec import parse_agent_spec
from bench.analysis.causal import ReplayRequest, Sampler, no_return_of, node_of, replay_node, replay_task
from bench.analysis.prefix import prefix_of
from bench.analysis.replays import read_verdict
from bench.canonical import step_key
from bench.episode import Episode
from bench.runs.logfile import log_path
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


def _best_of(fn: object, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best


def store(m: int) -> None:
    suite = load_suite("retail")
    task = suite.tasks[0].id
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        _run([task], run)
        t0 = time.perf_counter()
        done = replay_task(run, ReplayRequest(task, m=m, agent=AGENT, no_return="failed"))
        stored = time.perf_counter() - t0
        n = done.result["continuations"]
        log = read_run(run)
        sampler = Sampler(suite, parse_agent_spec(AGENT).build(), 50, timeout_s=log.manifest.get("timeout_s"))
        t0 = time.perf_counter()
        replay_node(log, sampler, node_of(log, suite, task, "divergence"), m)
        no_return_of(log, suite, sampler, task, "failed", m)
        memory = time.perf_counter() - t0
        assert sampler.used == n
        read = _best_of(lambda: read_verdict(done.replay_dir))
        plain = _best_of(lambda: read_run(done.replay_dir))
        size = log_path(done.replay_dir).stat().st_size
    print(f"task {task}: m = {m}, {n} continuations ({len(done.result['no_return'])} failed trials scanned)")
    print(f"stored in a replay directory: {n / stored:,.0f} continuations/s; in memory (baseline): {n / memory:,.0f}/s; "
          f"ratio (stored time / in-memory time) {stored / memory:.2f}")
    print(f"reading the verdict back from the directory ({size / 1e6:.2f} MB log on disk): {read * 1e3:.0f} ms "
          f"({n / read:,.0f} continuations/s); read_run alone: {plain * 1e3:.0f} ms; ratio {read / plain:.2f}")


def resume(m: int) -> None:
    suite = load_suite("retail")
    task = suite.tasks[0].id
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        _run([task], run)
        args = [sys.executable, "-m", "bench", "replay", str(run), "--task", task, "-m", str(m), "--no-return", "failed"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        whole = json.loads(subprocess.run([*args, "--out", str(Path(tmp) / "whole"), "--json"], env=env,
                                          capture_output=True, text=True, check=True).stdout)
        total = whole["continuations"]
        child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        logged = 0
        while child.poll() is None and logged < 0.4 * total:
            folders = [p.parent for p in (run / "replays").glob("*/run.json")]
            logged = len(read_run(folders[0]).summaries) if folders else 0
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        killed = child.wait() == -signal.SIGKILL
        [folder] = [p.parent for p in (run / "replays").glob("*/run.json")]
        before = len(read_run(folder).summaries)
        again = json.loads(subprocess.run([*args, "--json"], env=env, capture_output=True, text=True, check=True).stdout)
        resumed, reference = read_run(folder), read_run(Path(tmp) / "whole")
        mine = {t: s["outcome"] for t, s in resumed.summaries.items()}
        want = {t: s["outcome"] for t, s in reference.summaries.items()}
    lost = len(set(want) - set(mine))
    print(f"task {task}: m = {m}, {total} continuations; killed (SIGKILL) mid-replay: {killed}, with {before} logged")
    print(f"after the same command: lost {lost}, duplicated {len(resumed.duplicate_summaries)}, outcomes differing "
          f"{sum(mine.get(t) != o for t, o in want.items())}, extra {len(set(mine) - set(want))}; verdict equal to the "
          f"uninterrupted replay's: {({**again, 'replay_dir': ''} == {**whole, 'replay_dir': ''})}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["speed", "mood", "store", "resume"])
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    if args.what == "mood":
        mood(args.m, args.tasks)
    else:
        {"speed": speed, "store": store, "resume": resume}[args.what](args.m)


if __name__ == "__main__":
    main()
