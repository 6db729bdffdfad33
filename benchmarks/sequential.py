"""Trials saved by stopping each task once its anytime-valid interval is narrow, by simulation.

Ground truth: per-task success rates p_t on a realistic spread (most tasks near 0 or 1, a few
flaky in between). Each simulated run gives every task trials one at a time until its confidence
sequence (bench.analysis.sequential.rate_cs) has half-width ≤ w, or k_max trials. Simulating
Bernoulli draws instead of logs is exact: the rule only sees each task's counts, and the sim
agent's trials are independent Bernoulli(p_t).

Printed (Markdown): the mean trials per task used against fixed k = k_max, the ratio, and the
coverage of the suite pass@1 interval (suite_pass1_cs) at the stopping time, target ≥ 95%.

    python benchmarks/sequential.py                 # 200 simulated runs
    python benchmarks/sequential.py --reps 50       # quick look
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.analysis.sequential import suite_pass1_cs, task_settled


def spread(tasks: int) -> np.ndarray:
    """70% of tasks near 0 or 1, 30% flaky in [0.3, 0.7], deterministic."""
    rng = np.random.default_rng(0)
    easy_hard = rng.choice([0.02, 0.98, 1.0, 0.0], size=int(tasks * 0.7))
    flaky = rng.uniform(0.3, 0.7, size=tasks - easy_hard.size)
    return np.concatenate([easy_hard, flaky])


def one_run(truth: np.ndarray, k_max: int, width: float, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Counts of one sequential run: trials per task until settled or k_max."""
    counts = []
    for p in truth:
        s = n = 0
        while n < k_max and not (n >= 2 and task_settled(s, n, width)):
            s += int(rng.random() < p)
            n += 1
        counts.append((s, n))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--k-max", type=int, default=32)
    parser.add_argument("--width", type=float, default=0.25)
    args = parser.parse_args()
    truth, rng = spread(args.tasks), np.random.default_rng(18)
    used, covered = [], 0
    for _ in range(args.reps):
        counts = one_run(truth, args.k_max, args.width, rng)
        used.append(np.mean([n for _, n in counts]))
        lo, hi = suite_pass1_cs(counts)
        covered += int(lo <= truth.mean() <= hi)
    mean_used = float(np.mean(used))
    print("| tasks | k_max | half-width w | mean trials/task | fixed k | ratio | suite coverage |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.tasks} | {args.k_max} | {args.width} | {mean_used:.1f} | {args.k_max} "
        f"| {mean_used / args.k_max:.2f} | {covered / args.reps:.1%} |"
    )


if __name__ == "__main__":
    main()
