"""Harness overhead per tool step: `sim:oracle` on every built-in task (k = 8) through the full
runner (episode, argument validation, hashing, logging, goal checks, summaries) against a bare
loop that calls the same tool functions directly, in the same process, interleaved A B A B.

    python benchmarks/overhead.py [--k 8] [--rounds 5] [--concurrency 1,4] [--cart 50]

`--cart N` runs the shopping-cart workload of benchmarks/vs_inspect.py instead (N samples, its
scripted agent `cart_workload.py:CartAgent`, which logs a model turn before each call), and also
prints the harness CPU per step (the vs_inspect figure: a step is a model turn and its call).

Times are CPU seconds of the process (`time.process_time()`: every thread, user + system), so a
loaded machine slows the figures less than it would wall time. Prints per round: bare and
harness CPU, tool steps, overhead per step (µs) and the ratio, for each `--concurrency` (the
harness runs of one round alternate between them); then the medians, and the CPU per step of
each concurrency against the first's. Overhead per step = (harness − bare) / steps. Last,
argument validation alone on the same calls: the fast path the harness uses (`Tool.accepts`,
compiled; explain only on failure) against the previous one (`best_match(iter_errors(args))` on
every call), interleaved, µs per call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
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
    start = time.process_time()
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
    return time.process_time() - start, steps


HERE = Path(__file__).resolve().parent
CART_AGENT = f"{HERE / 'cart_workload.py'}:CartAgent"


def cart_suite(samples: int, workdir: Path):
    sys.path.insert(0, str(HERE))
    import cart_workload  # the sibling module (benchmarks/ is no package)

    return load_suite(str(cart_workload.write_suite(workdir / "cart-suite", samples)))


def harness(suites, k: int, workdir: Path, label: str, concurrency: int = 1, agent: str = "sim:oracle") -> float:
    spec = parse_agent_spec(agent)
    start = time.process_time()
    for suite in suites:
        out = workdir / f"{suite.name}-{label}"
        run_benchmark(suite, spec, None, RunConfig(k=k, out=out, concurrency=concurrency, progress=False))
    return time.process_time() - start


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
    parser.add_argument("--concurrency", default="1", help="comma-separated --concurrency values to compare (default 1)")
    parser.add_argument("--cart", type=int, metavar="N", help="the cart workload of vs_inspect.py with N samples")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        suites = [cart_suite(args.cart, Path(tmp))] if args.cart else [load_suite(name) for name in builtin_suites()]
        agent = CART_AGENT if args.cart else "sim:oracle"
        n_tasks = sum(len(s.tasks) for s in suites)
        # tool calls the harness makes (ask_user included, the bare loop skips it)
        harness_calls = sum(len(t.reference_actions) for s in suites for t in s.tasks) * args.k
        print(f"suites {', '.join(s.name for s in suites)}: {n_tasks} tasks, agent {agent}, k = {args.k}, "
              f"{harness_calls} tool calls per round; concurrency {', '.join(map(str, levels))}; CPU seconds")
        rows = _rounds(args, suites, levels, agent, harness_calls, Path(tmp))
    _summary(args, suites, levels, rows)


def _rounds(args, suites, levels: list[int], agent: str, harness_calls: int, tmp: Path) -> dict[int, list[tuple[float, ...]]]:
    rows: dict[int, list[tuple[float, ...]]] = {c: [] for c in levels}
    harness(suites, 1, tmp, "warm-up", 1, agent)  # imports, caches of expected states
    for r in range(args.rounds):
        bare_s, steps = bare_loop(suites, args.k)
        for c in (levels if r % 2 == 0 else levels[::-1]):
            harness_s = harness(suites, args.k, tmp, f"{r}-{c}", c, agent)
            per_step_us = (harness_s - bare_s) / harness_calls * 1e6
            rows[c].append((bare_s, harness_s, per_step_us, harness_s / bare_s))
            print(f"round {r}, concurrency {c}: bare {bare_s:.3f} s ({steps} calls), harness {harness_s:.3f} s, "
                  f"overhead {per_step_us:.1f} µs/step, ratio {harness_s / bare_s:.1f}x")
    return rows


def _summary(args, suites, levels: list[int], rows: dict[int, list[tuple[float, ...]]]) -> None:
    medians = {c: [statistics.median(col) for col in zip(*rows[c])] for c in levels}
    for c, med in medians.items():
        print(f"median, concurrency {c}: bare {med[0]:.3f} s, harness {med[1]:.3f} s, overhead {med[2]:.1f} µs per "
              f"tool step (target ≤ 40), harness/bare ratio {med[3]:.1f}x")
    if args.cart:  # vs_inspect's step: a model turn and its call (the submit turn too)
        import cart_workload as w  # on sys.path since cart_suite

        model_turns = sum(len(w.planned_ops(w.instruction(w.make_ops(i)), w.sample_id(i), e)) + 1
                          for i in range(args.cart) for e in range(1, args.k + 1))
        for c, med in medians.items():
            print(f"harness CPU per step (model turn + call), concurrency {c}: {med[1] / model_turns * 1e6:.1f} µs")
    first = levels[0]
    for c in levels[1:]:
        print(f"harness CPU, concurrency {c} / concurrency {first}: {medians[c][1] / medians[first][1]:.2f}x (target ≤ 1)")
    fast_us, slow_us = validation_cost(suites, args.rounds * 20)
    print(f"argument validation: fast path {fast_us:.1f} µs/call, previous path {slow_us:.1f} µs/call, "
          f"previous/fast {slow_us / fast_us:.1f}x")


if __name__ == "__main__":
    main()
