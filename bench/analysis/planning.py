"""`trajbench plan`: how many tasks × trials a regression check needs, before running; and what
a finished run can detect, after.

The power equation is the one `trajbench diff` reports its minimum detectable effect with
(`bench.analysis.regression.detectable_drop`): a one-sided test of the mean per-task change,
with each task's binomial (pass@1) or exact U-statistic (pass^k) variance, under a uniform
drop of every task's success rate (clipped at 0). The effect is stated in the metric's own
units (the drop of the suite's pass@1 or pass^k). The diff gate watches three statistics under
one min-p correction; its effective per-statistic level lies between α/3 and α, so planning at
α/3 (Bonferroni) is conservative: the real gate's power at the planned design is at least the
stated power (benchmarks/sequential.py checks it by simulation).

Per-task rates come from a pilot run (`--pilot RUN`: each task's (c + ½)/(n + 1), so a 0/2 task
is not treated as certain) or an assumed spread (`--spread`): `beta:a,b` (quantiles of a
Beta(a, b)) or `near01:F` (a share F of the tasks near 0 or 1 — 0.03 and 0.97, alternately —
the rest spread evenly over [0.3, 0.7], the shape of most agent suites). Both runs of the planned
diff get the same trials per task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats

from bench.analysis.regression import POWER, detectable_drop
from bench.errors import BenchError
from bench.runs.design import outcomes_of
from bench.runs.rundir import read_run

TRIALS_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
TASKS_GRID = (25, 50, 100, 200)
STATISTICS = 3  # the diff gate's min-p family: pass@1, pass^k, worst task


def parse_spread(text: str) -> Any:
    """`beta:a,b` or `near01:F` -> a function of T giving T deterministic per-task rates."""
    kind, _, value = text.partition(":")
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError:
        numbers = []
    if kind == "beta" and len(numbers) == 2 and min(numbers) > 0:
        a, b = numbers
        return lambda T: stats.beta.ppf((np.arange(T) + 0.5) / T, a, b)
    if kind == "near01" and len(numbers) == 1 and 0 <= numbers[0] <= 1:
        share = numbers[0]

        def near01(T: int) -> np.ndarray:
            edge = int(round(share * T))
            ends = np.where(np.arange(edge) % 2 == 0, 0.97, 0.03)
            middle = 0.3 + 0.4 * (np.arange(T - edge) + 0.5) / max(T - edge, 1)
            return np.concatenate([ends, middle])

        return near01
    raise BenchError(f"--spread must be beta:A,B (A, B > 0) or near01:F (0 ≤ F ≤ 1), not {text!r}", field="--spread")


def pilot_rates(run_dir: str | Path) -> tuple[np.ndarray, dict[str, int]]:
    """Each task's shrunk rate (c + ½)/(n + 1) from a pilot run, and its trials per task."""
    log = read_run(run_dir)
    rows = outcomes_of(log.summaries.values())
    c = {t: sum(o == "success" for o in r) for t, r in rows.items()}
    n = {t: sum(o in ("success", "failure") for o in r) for t, r in rows.items()}
    tasks = [t for t in rows if n[t] > 0]
    if not tasks:
        raise BenchError("the pilot run has no valid (non-error) trial", file=str(run_dir), field="--pilot")
    return np.array([(c[t] + 0.5) / (n[t] + 1) for t in tasks]), {t: n[t] for t in tasks}


def resample(rates: np.ndarray, T: int) -> np.ndarray:
    """The pilot's spread of rates at another number of tasks (its quantiles)."""
    return rates.copy() if T == rates.size else np.quantile(rates, (np.arange(T) + 0.5) / T)


def mde(rates: np.ndarray, trials: int | np.ndarray, k: int | None, alpha: float, power: float) -> float | None:
    """The smallest drop of the suite's pass@1 (k None) or pass^k a diff of two runs with these
    trials per task detects with `power` (None: not even a drop to 0 is detectable)."""
    n = np.broadcast_to(np.asarray(trials, dtype=float), rates.shape).copy()
    found = detectable_drop(rates, n, n, k, alpha / STATISTICS, power)
    return None if found is None else found[1]


def plan(rate_of: Any, *, effect: float, k: int | None, alpha: float = 0.05, power: float = POWER,
         tasks: Sequence[int] = TASKS_GRID, trials: Sequence[int] = TRIALS_GRID) -> dict[str, Any]:
    """For each number of tasks: the MDE at each trials-per-task value, and the fewest trials
    per task whose MDE is at most `effect` (None if the grid has none)."""
    if not 0 < effect < 1:
        raise BenchError(f"--effect must be in (0, 1), got {effect}", field="--effect")
    grid = [n for n in trials if k is None or n >= k]
    rows = []
    for T in tasks:
        rates = rate_of(T)
        cells = [{"trials": n, "mde": mde(rates, n, k, alpha, power)} for n in grid]
        enough = next((c["trials"] for c in cells if c["mde"] is not None and c["mde"] <= effect), None)
        rows.append({"tasks": T, "mean_rate": float(np.mean(rates)), "cells": cells, "trials_needed": enough,
                     "total_trials_per_run": None if enough is None else enough * T})
    return {"metric": "pass@1" if k is None else f"pass^{k}", "effect": effect, "alpha": alpha, "power": power,
            "level": alpha / STATISTICS, "rows": rows}


def achieved(run_dir: str | Path, *, k: int | None, alpha: float = 0.05, power: float = POWER) -> dict[str, Any]:
    """What a finished run can detect: the MDE of a diff of it against a run of the same size,
    at its own per-task rates and trials (a sequential run's unequal n included)."""
    rates, n = pilot_rates(run_dir)
    trials = np.array(list(n.values()), dtype=float)
    keep = trials >= (k or 1)
    return {"run_dir": str(run_dir), "metric": "pass@1" if k is None else f"pass^{k}", "alpha": alpha, "power": power,
            "tasks": int(keep.sum()), "trials_per_task": {"min": int(trials.min()), "max": int(trials.max())},
            "mde": mde(rates[keep], trials[keep], k, alpha, power) if keep.any() else None}
