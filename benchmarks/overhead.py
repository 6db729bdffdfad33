"""Harness overhead per tool step: `sim:oracle` on every built-in task (k = 8) through the full
runner (episode, argument validation, hashing, logging, goal checks, summaries) against a bare
loop that calls the same tool functions directly, in the same process, interleaved A B A B.

    python benchmarks/overhead.py [--k 8] [--rounds 5]

Prints per round: bare and harness seconds, tool steps, overhead per step (µs) and the ratio;
then the medians. Overhead per step = (harness − bare) / steps. Last, argument validation alone
on the same calls: the fast path the harness uses (`Tool.accepts`, compiled; explain only on failure)
against the previous one (`best_match(iter_errors(args))` on every call), interleaved, µs per call.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import jsonschema
import orjson

from bench.adapters.spec import parse_agent_spec
from bench.runs.runner import RunConfig, run_benchmark
from bench.world.suite import builtin_suites, load_suite


def bare_loop(suites, k: int) -> tuple[float, int]:
    """The work an agent framework would do anyway: copy the state, call each tool function."""
    steps = 0
    start = time.perf_counter()
    for suite in suites:
        for task in suite.tasks:
            initial = suite.initial_state_for(task)
            for _ in range(k):
                state = orjson.loads(orjson.dumps(initial))
                for action in task.reference_actions:
                    if action.tool == "ask_user":
                        continue
                    suite.tools[action.tool].func(state, **action.args)
                    steps += 1
    return time.perf_counter() - start, steps


def harness(suites, k: int, workdir: Path, round_no: int) -> float:
    spec = parse_agent_spec("sim:oracle")
    start = time.perf_counter()
    for suite in suites:
        out = workdir / f"{suite.name}-{round_no}"
        run_benchmark(suite, spec, None, RunConfig(k=k, out=out, concurrency=1, progress=False))
    return time.perf_counter() - start


def validation_cost(suites, rounds: int) -> tuple[float, float]:
    """Median µs per call of (fast path, previous path) over every reference call's arguments."""
    calls = [(s.tools[a.tool], a.args) for s in suites for t in s.tasks
             for a in t.reference_actions if a.tool in s.tools]
    fast, slow = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for tool, args in calls:
            if not tool.accepts(args):
                jsonschema.exceptions.best_match(tool.validator.iter_errors(args))
        fast.append((time.perf_counter() - start) / len(calls) * 1e6)
        start = time.perf_counter()
        for tool, args in calls:
            jsonschema.exceptions.best_match(tool.validator.iter_errors(args))
        slow.append((time.perf_counter() - start) / len(calls) * 1e6)
    return statistics.median(fast), statistics.median(slow)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    suites = [load_suite(name) for name in builtin_suites()]
    n_tasks = sum(len(s.tasks) for s in suites)
    # tool calls the harness makes (ask_user included, the bare loop skips it)
    harness_calls = sum(len(t.reference_actions) for s in suites for t in s.tasks) * args.k
    print(f"suites {', '.join(s.name for s in suites)}: {n_tasks} tasks, k = {args.k}, {harness_calls} tool calls per round")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        harness(suites, 1, Path(tmp), -1)  # warm-up: imports, caches of expected states
        for r in range(args.rounds):
            bare_s, steps = bare_loop(suites, args.k)
            harness_s = harness(suites, args.k, Path(tmp), r)
            per_step_us = (harness_s - bare_s) / harness_calls * 1e6
            rows.append((bare_s, harness_s, per_step_us, harness_s / bare_s))
            print(f"round {r}: bare {bare_s:.3f} s ({steps} calls), harness {harness_s:.3f} s, "
                  f"overhead {per_step_us:.1f} µs/step, ratio {harness_s / bare_s:.1f}x")
    med = [statistics.median(col) for col in zip(*rows)]
    print(f"median: bare {med[0]:.3f} s, harness {med[1]:.3f} s, overhead {med[2]:.1f} µs per tool step "
          f"(target ≤ 40), harness/bare ratio {med[3]:.1f}x")
    fast_us, slow_us = validation_cost(suites, args.rounds * 20)
    print(f"argument validation: fast path {fast_us:.1f} µs/call, previous path {slow_us:.1f} µs/call, "
          f"previous/fast {slow_us / fast_us:.1f}x")


if __name__ == "__main__":
    main()
