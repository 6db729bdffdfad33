"""`trajbench diff BASE CAND`: did the candidate run get worse than the baseline, and where?

DESIGN.md "Regression", shared/reference/metrics.md §2.4–2.5 and §5. Everything is recomputed
from the two run directories alone; every random draw is seeded, so a diff is reproducible.

The statistics, in short (docs/regression.md explains each figure):

* **Pairing.** Both runs must be of the same suite (same content hash; ``force`` overrides, and
  every output then says so). The comparison is paired over the tasks both runs have valid
  trials for: per task t, the base has c_A of n_A successes and the candidate c_B of n_B.
* **Change and interval.** Δ pass@1 = mean_t (c_B/n_B − c_A/n_A) and Δ pass^k = mean_t of the
  difference of the unbiased per-task pass^k estimates; 95% intervals come from a paired
  bootstrap over tasks (a task's two counts are resampled together; trials are never
  resampled within a task, DESIGN.md "Metrics").
* **The gate** (exit status 1) is ONE one-sided test at level α of
  H0: "on every shared task, the candidate's success probability equals the base's".
  It is a stratified permutation test: within each task, the base/candidate labels of its
  n_A + n_B trials are shuffled (equivalently, c_A is redrawn from its hypergeometric
  distribution given the task's pooled successes). This is exact at any n and k, needs no
  normal approximation (per-task differences of 0/1 counts are few-valued and heavily tied
  at 0, which is where a paired t-test and a sign-flip test are shakiest), copes with
  unequal trial counts in the two runs (infrastructure errors, different k) and with tasks
  that have a single trial. The gate watches three statistics at once — Δ pass@1, Δ pass^k
  and the single worst task (the smallest per-task one-sided exact p-value: Fisher's, the
  task's own permutation p-value, which ranks tasks with equal trial counts exactly as
  Boschloo's does and costs nothing to recompute per permutation) — and combines them by
  the permutation distribution of their minimum p-value (Westfall & Young's min-p), so the
  family-wise false-alarm rate of the gate is α, not 3α. A diffuse drop is caught by
  pass@1, a loss of consistency on near-perfect tasks by pass^k ("3/3 → 2/3 averages away"
  in pass@1 but not in pass^3), and a single newly broken task by the worst-task statistic.
* **Per task**: scipy's ``boschloo_exact`` (one-sided: the base's rate is higher), and
  Benjamini–Hochberg across the tasks that could reach significance at all (tasks whose
  pooled outcomes cannot give p ≤ α, such as 8/8 vs 8/8, are left out of the family, after
  Tarone). The per-task list controls the false-discovery rate; it is for reading, the exit
  status comes from the gate alone.
* **Minimum detectable effect**: the smallest drop in every task's success rate that the gate
  detects with 80% power (metrics.md §2.5 with the variances of this suite's tasks, at the
  gate's effective per-statistic level), so that "no significant regression" can be read.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from scipy import stats

from bench.analysis import metrics
from bench.analysis.metrics import benjamini_hochberg
from bench.errors import BenchError
from bench.run.rundir import RunLog, read_run

try:  # divergence analysis is optional: compare divergence points only when it is installed
    from bench.analysis.divergence.tree import divergence_section
except ImportError:  # pragma: no cover - depends on the installed version
    divergence_section = None

__all__ = [
    "DIFF_VERSION",
    "PairedCounts",
    "boschloo_regression_p",
    "benjamini_hochberg",
    "suite_test",
    "paired_bootstrap",
    "minimum_detectable_effect",
    "task_tests",
    "compare_counts",
    "diff_runs",
    "render_text",
    "render_markdown",
    "run_diff",
    "gate",
    "check_baseline",
]

DIFF_VERSION = 1
DEFAULT_ALPHA = 0.05
DEFAULT_PERMUTATIONS = 4000
DEFAULT_BOOTSTRAP = 2000
POWER = 0.80
_EPS = 1e-12


# ---------------------------------------------------------------------------------------
# Per-task exact test and FDR
# ---------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def boschloo_regression_p(c_base: int, n_base: int, c_cand: int, n_cand: int) -> float:
    """One-sided Boschloo exact test of H1 "the base's success rate is higher than the
    candidate's" for one task (scipy.stats.boschloo_exact; columns are the two runs)."""
    if n_base < 1 or n_cand < 1:
        return 1.0
    if (c_base == 0 and c_cand == 0) or (c_base == n_base and c_cand == n_cand):
        return 1.0  # no information on a difference: the one-sided p-value is 1
    table = [[c_base, c_cand], [n_base - c_base, n_cand - c_cand]]
    p = float(stats.boschloo_exact(table, alternative="greater").pvalue)
    return 1.0 if math.isnan(p) else min(1.0, max(0.0, p))


# ---------------------------------------------------------------------------------------
# Paired counts
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedCounts:
    """Per shared task: the base run's valid trials and successes, and the candidate's."""

    tasks: tuple[str, ...]
    n_base: np.ndarray
    c_base: np.ndarray
    n_cand: np.ndarray
    c_cand: np.ndarray

    @classmethod
    def of(cls, tasks: Any, n_base: Any, c_base: Any, n_cand: Any, c_cand: Any) -> "PairedCounts":
        arrays = [np.asarray(a, dtype=np.int64).ravel() for a in (n_base, c_base, n_cand, c_cand)]
        tasks = tuple(str(t) for t in tasks)
        if any(a.size != len(tasks) for a in arrays):
            raise ValueError("one count per task and run is needed")
        nA, cA, nB, cB = arrays
        if np.any(nA < 1) or np.any(nB < 1) or np.any(cA < 0) or np.any(cB < 0) or np.any(cA > nA) or np.any(cB > nB):
            raise ValueError("need 0 <= c <= n and n >= 1 for every task in both runs")
        return cls(tasks, nA, cA, nB, cB)

    def __len__(self) -> int:
        return len(self.tasks)

    def k_mask(self, k: int) -> np.ndarray:
        """Tasks where pass^k is defined in both runs (at least k valid trials in each)."""
        return (self.n_base >= k) & (self.n_cand >= k)


@lru_cache(maxsize=None)
def _pass_hat_k_table(n: int, k: int) -> np.ndarray:
    """pass^k for c = 0..n successes of n trials (the unbiased estimator)."""
    return np.array([metrics.pass_hat_k(n, c, k) for c in range(n + 1)])


def _phk(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    return np.array([_pass_hat_k_table(int(a), k)[int(b)] if a >= k else np.nan for a, b in zip(n, c)])


def _per_task_deltas(pc: PairedCounts, k: int) -> tuple[np.ndarray, np.ndarray]:
    d1 = pc.c_cand / pc.n_cand - pc.c_base / pc.n_base
    dk = _phk(pc.n_cand, pc.c_cand, k) - _phk(pc.n_base, pc.c_base, k)
    return d1, dk


# ---------------------------------------------------------------------------------------
# The gate: a stratified permutation test, min-p over three statistics
# ---------------------------------------------------------------------------------------


def _lookups(pc: PairedCounts, k: int, use_k: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every task and every base count x its pooled successes allow: Δpass@1, Δpass^k and
    the task's one-sided exact p-value (Fisher's, i.e. the task's own permutation p-value) if
    the base had x successes."""
    T = len(pc)
    S = pc.c_base + pc.c_cand
    W = int(pc.n_base.max()) + 1
    d1 = np.full((T, W), np.nan)
    dk = np.full((T, W), np.nan)
    pw = np.full((T, W), np.nan)
    kmask = pc.k_mask(k)
    for t in range(T):
        x, r1, rk, rw = _lut_row(int(pc.n_base[t]), int(pc.n_cand[t]), int(S[t]), k if (use_k and kmask[t]) else 0)
        d1[t, x], pw[t, x] = r1, rw
        if rk is not None:
            dk[t, x] = rk
    return d1, dk, pw


@lru_cache(maxsize=None)
def _lut_row(nA: int, nB: int, s: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """One task's row of the lookups, for pooled successes s (k = 0: no pass^k)."""
    x = np.arange(max(0, s - nB), min(s, nA) + 1)
    d1 = (s - x) / nB - x / nA
    dk = _pass_hat_k_table(nB, k)[s - x] - _pass_hat_k_table(nA, k)[x] if k else None
    pw = stats.hypergeom.sf(x - 1, nA + nB, s, nA)  # Fisher's one-sided p: P(base count >= x | margins)
    return x, d1, dk, pw


def _relabel(S: np.ndarray, nA: np.ndarray, nB: np.ndarray, B: int, seed: int) -> np.ndarray:
    """B random relabellings of every task's pooled trials: the base's success count under the
    null, X_t ~ Hypergeometric(n_A + n_B, S_t, n_A), drawn by inverse CDF per distinct margin
    (several times faster than numpy's per-element hypergeometric sampler)."""
    U = np.random.default_rng(seed).random((B, S.size))
    X = np.empty((B, S.size), dtype=np.int64)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for t, key in enumerate(zip(S.tolist(), nA.tolist(), nB.tolist())):
        groups.setdefault(key, []).append(t)
    for (s, a, b), idx in groups.items():
        lo, cdf = _hypergeom_cdf(s, a, b)
        X[:, idx] = lo + np.minimum(np.searchsorted(cdf, U[:, idx], side="right"), cdf.size - 1)
    return X


@lru_cache(maxsize=None)
def _hypergeom_cdf(s: int, a: int, b: int) -> tuple[int, np.ndarray]:
    lo, hi = max(0, s - b), min(s, a)
    cdf = np.cumsum(stats.hypergeom.pmf(np.arange(lo, hi + 1), a + b, s, a))
    cdf[-1] = 1.0
    return lo, cdf


def _left_p(obs: float, reps: np.ndarray) -> float:
    """Monte-Carlo one-sided p-value (1 + #{rep ≤ obs}) / (B + 1): valid at any B."""
    return float((1 + np.count_nonzero(reps <= obs + _EPS)) / (reps.size + 1))


def _rep_left_p(reps: np.ndarray) -> np.ndarray:
    """The same p-value for each replicate against the others (for the min-p combination)."""
    ordered = np.sort(reps)
    return np.searchsorted(ordered, reps + _EPS, side="right") / (reps.size + 1)


def suite_test(pc: PairedCounts, k: int, *, alpha: float = DEFAULT_ALPHA, permutations: int = DEFAULT_PERMUTATIONS,
               seed: int = 0) -> dict[str, Any]:
    """The gate's one-sided test of "no change on any task" against "the candidate is worse".

    Returns the observed statistics, each one's own permutation p-value, the min-p combined
    p-value (the gate: reject when ≤ alpha) and the effective per-statistic level (a single
    statistic whose own p-value is below it makes the gate reject)."""
    T = len(pc)
    if T == 0:
        raise ValueError("no shared tasks")
    if permutations < 100:
        raise ValueError(f"use at least 100 permutations, got {permutations}")
    use_k = k > 1 and bool(pc.k_mask(k).any())
    d1_lut, dk_lut, pw_lut = _lookups(pc, k, use_k)
    S = pc.c_base + pc.c_cand
    X = _relabel(S, pc.n_base, pc.n_cand, permutations, seed)
    rows = np.arange(T)[None, :]
    obs_idx = pc.c_base
    names = ["pass@1"] + ([f"pass^{k}"] if use_k else []) + ["worst task"]
    observed: dict[str, float] = {}
    reps: dict[str, np.ndarray] = {}

    observed["pass@1"] = float(d1_lut[np.arange(T), obs_idx].mean())
    reps["pass@1"] = d1_lut[rows, X].mean(axis=1)
    if use_k:
        kmask = pc.k_mask(k)
        observed[f"pass^{k}"] = float(dk_lut[np.arange(T), obs_idx][kmask].mean())
        reps[f"pass^{k}"] = dk_lut[rows, X][:, kmask].mean(axis=1)
    observed["worst task"] = float(pw_lut[np.arange(T), obs_idx].min())
    reps["worst task"] = pw_lut[rows, X].min(axis=1)

    p_each = {name: _left_p(observed[name] if name != "worst task" else observed[name] * (1 + 1e-9), reps[name])
              for name in names}
    rep_p = np.min(np.vstack([_rep_left_p(reps[name]) for name in names]), axis=0)
    m_obs = min(p_each.values())
    p_combined = float((1 + np.count_nonzero(rep_p <= m_obs + _EPS)) / (permutations + 1))
    # effective level: an observed min-p strictly below the (j+1)-th smallest replicate min-p,
    # j = floor(alpha (B + 1) - 1), gives a combined p-value <= alpha
    j = int(math.floor(alpha * (permutations + 1) - 1 + 1e-9))
    ordered = np.sort(rep_p)
    level = float(ordered[j]) if 0 <= j < ordered.size else 0.0  # 0: too few permutations to ever reject
    worst_task = pc.tasks[int(np.argmin(pw_lut[np.arange(T), obs_idx]))]  # smallest Fisher p (first on ties)
    # how far a single task that passed every trial must fall to make the gate fire on its own
    # (the worst-task statistic at the effective level, against this diff's other tasks)
    nA, nB = int(np.median(pc.n_base)), int(np.median(pc.n_cand))
    ordered_w = np.sort(reps["worst task"])
    flagged = [j for j in range(nB + 1)
               if (1 + np.searchsorted(ordered_w, stats.hypergeom.sf(nA - 1, nA + nB, nA + j, nA) * (1 + 1e-9), side="right"))
               / (permutations + 1) <= level]
    return {
        "method": "stratified permutation (within-task relabelling), one-sided, min-p over "
                  + ", ".join(names),
        "permutations": int(permutations),
        "seed": int(seed),
        "statistics": [{"name": n, "observed": observed[n], "p_value": p_each[n]} for n in names],
        "worst_task": worst_task,
        "p_value": p_combined,
        "effective_level": level,
        "alpha": float(alpha),
        "significant_regression": p_combined <= alpha,
        "single_task": {"base": f"{nA}/{nA}", "flagged_at_or_below": max(flagged) if flagged else None, "of": nB},
    }


# ---------------------------------------------------------------------------------------
# Paired bootstrap interval, minimum detectable effect
# ---------------------------------------------------------------------------------------


def paired_bootstrap(pc: PairedCounts, k: int, *, B: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, Any]:
    """Mean per-task change and its percentile interval, resampling tasks (both runs' counts of
    a task move together: that is the pairing)."""
    d1, dk = _per_task_deltas(pc, k)
    table = np.column_stack([d1, dk])
    lo, hi = metrics.bootstrap_task_means(table, B=B, confidence=confidence, seed=seed)
    kmask = ~np.isnan(dk)
    out = {}
    for j, (name, d, base, cand) in enumerate([
        ("pass@1", d1, pc.c_base / pc.n_base, pc.c_cand / pc.n_cand),
        (f"pass^{k}", dk, _phk(pc.n_base, pc.c_base, k), _phk(pc.n_cand, pc.c_cand, k)),
    ]):
        defined = ~np.isnan(d)
        n = int(defined.sum())
        out[name] = {
            "base": _opt(np.mean(base[defined])) if n else None,
            "candidate": _opt(np.mean(cand[defined])) if n else None,
            "delta": _opt(np.mean(d[defined])) if n else None,
            "lo": _opt(lo[j]), "hi": _opt(hi[j]), "n_tasks": n,
            "paired_se": _opt(np.std(d[defined], ddof=1) / math.sqrt(n)) if n >= 2 else None,
        }
    out[f"pass^{k}"]["tasks_without_k_trials"] = int((~kmask).sum())
    return out


def _u_variance(n: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """Exact variance of the unbiased pass^k estimate from n Bernoulli(p) trials, per task."""
    out = np.empty(p.size)
    for n_value in np.unique(n):
        sel = n == n_value
        c = np.arange(n_value + 1)
        u = _pass_hat_k_table(int(n_value), k)
        pmf = stats.binom.pmf(c[None, :], int(n_value), p[sel][:, None])
        mean = pmf @ u
        out[sel] = np.maximum(pmf @ (u * u) - mean * mean, 0.0)
    return out


def _detectable(p: np.ndarray, nA: np.ndarray, nB: np.ndarray, k: int | None, level: float, power: float) -> tuple[float, float] | None:
    """Smallest uniform drop δ of every task's success rate (clipped at 0) that a one-sided test
    at `level` detects with `power`, for the mean change of pass@1 (k None) or of pass^k.
    Power equation: effect(δ) = z_{1-level}·SE_0(δ) + z_power·SE_1(δ), with SE_1 the standard
    error of the mean change under the drop and SE_0 that of the permutation distribution
    (both runs at the pooled rate). Returns (δ, the metric's mean change at δ)."""
    za, zb = stats.norm.ppf(1 - level), stats.norm.ppf(power)
    T = p.size
    N = nA + nB

    def f(delta: float) -> tuple[float, float]:
        q = np.clip(p - delta, 0.0, 1.0)
        m = (nA * p + nB * q) / N
        if k is None:
            effect = float(np.mean(p - q))
            var1 = np.mean(p * (1 - p) / nA + q * (1 - q) / nB)
            var0 = np.mean(m * (1 - m) * (1 / nA + 1 / nB) * N / np.maximum(N - 1, 1))
        else:
            effect = float(np.mean(p ** k - q ** k))
            var1 = np.mean(_u_variance(nA, p, k) + _u_variance(nB, q, k))
            var0 = np.mean(_u_variance(nA, m, k) + _u_variance(nB, m, k))
        return effect - za * math.sqrt(var0 / T) - zb * math.sqrt(var1 / T), effect

    if T == 0 or f(1.0)[0] < 0:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if f(mid)[0] >= 0:
            hi = mid
        else:
            lo = mid
    return hi, f(hi)[1]


def minimum_detectable_effect(pc: PairedCounts, k: int, level: float, *, power: float = POWER,
                              alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    """metrics.md §2.5 for this diff: the smallest uniform drop in every task's success rate
    detectable with `power` by the gate, with each task's rate estimated from both runs
    pooled. Also the between-task variance of the observed change (ω², which would widen the
    MDE for the population of tasks the suite samples) and what more trials or tasks buy."""
    p = (pc.c_base + pc.c_cand) / (pc.n_base + pc.n_cand)
    nA, nB = pc.n_base.astype(float), pc.n_cand.astype(float)
    kmask = pc.k_mask(k)

    def both(p_: np.ndarray, a: np.ndarray, b: np.ndarray, km: np.ndarray) -> dict[str, Any]:
        one = _detectable(p_, a, b, None, level, power)
        kk = _detectable(p_[km], a[km], b[km], k, level, power) if (k > 1 and km.any()) else None
        out: dict[str, Any] = {"pass@1": None if one is None else {"drop": one[0], "delta": -one[1]}}
        out[f"pass^{k}"] = None if kk is None else {"drop": kk[0], "delta": -kk[1]}
        drops = [x["drop"] for x in out.values() if x is not None]
        out["drop"] = min(drops) if drops else None
        return out

    d1, _ = _per_task_deltas(pc, k)
    within = p * (1 - p) * (1 / nA + 1 / nB) * (nA + nB) / np.maximum(nA + nB - 1, 1)
    omega2 = max(0.0, float(np.var(d1, ddof=1) - within.mean())) if len(pc) >= 2 else None
    result: dict[str, Any] = {
        "power": power, "alpha": alpha, "level": level, "n_tasks": len(pc),
        "trials_base": _trials(pc.n_base), "trials_candidate": _trials(pc.n_cand),
        "mean_within_task_variance": _opt(np.mean(p * (1 - p))),
        "omega2": omega2,
        **both(p, nA, nB, kmask),
    }
    result["with_double_trials"] = both(p, 2 * nA, 2 * nB, kmask)["drop"]
    result["with_double_tasks"] = both(np.tile(p, 2), np.tile(nA, 2), np.tile(nB, 2), np.tile(kmask, 2))["drop"]
    return result


def _trials(n: np.ndarray) -> int | str:
    lo, hi = int(n.min()), int(n.max())
    return lo if lo == hi else f"{lo}-{hi}"


# ---------------------------------------------------------------------------------------
# Per-task tests and categories
# ---------------------------------------------------------------------------------------


def task_tests(pc: PairedCounts, alpha: float = DEFAULT_ALPHA) -> dict[str, np.ndarray]:
    """Per-task one-sided Boschloo p-values, the Tarone family (tasks whose pooled outcomes
    allow p ≤ alpha at all) and BH q-values within that family (nan outside it)."""
    T = len(pc)
    p = np.array([boschloo_regression_p(int(a), int(n), int(b), int(m))
                  for a, n, b, m in zip(pc.c_base, pc.n_base, pc.c_cand, pc.n_cand)]) if T else np.zeros(0)
    S = pc.c_base + pc.c_cand
    best_x = np.minimum(S, pc.n_base)  # the most extreme table for a regression, given the margin
    p_min = np.array([boschloo_regression_p(int(x), int(n), int(s - x), int(m))
                      for x, n, s, m in zip(best_x, pc.n_base, S, pc.n_cand)]) if T else np.zeros(0)
    family = p_min <= alpha
    q = np.full(T, np.nan)
    if family.any():
        q[family] = benjamini_hochberg(p[family])
    return {"p": p, "p_min": p_min, "in_family": family, "q": q}


def _category(cA: int, nA: int, cB: int, nB: int) -> str:
    if cA == nA and cB == nB:
        return "stable"
    if cA == 0 and cB == 0:
        return "stable"
    if cA == nA:
        return "newly_broken" if cB / nB < 0.5 else "newly_flaky"
    if cB == nB:
        return "fixed"
    return "still_mixed"


CATEGORIES = ("newly_broken", "newly_flaky", "fixed", "still_mixed", "stable")
_CATEGORY_TEXT = {
    "newly_broken": "newly broken (was all-pass, now fails most runs)",
    "newly_flaky": "newly flaky (was all-pass, now mixed)",
    "fixed": "fixed (now all-pass, was failing)",
    "still_mixed": "failing at times in both runs (all-pass in neither)",
    "stable": "stable (all-pass in both, or all-fail in both)",
}


# ---------------------------------------------------------------------------------------
# The statistical core on counts (used by diff_runs and by the simulations)
# ---------------------------------------------------------------------------------------


def compare_counts(pc: PairedCounts, *, k: int, alpha: float = DEFAULT_ALPHA, permutations: int = DEFAULT_PERMUTATIONS,
                   bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, with_mde: bool = True) -> dict[str, Any]:
    """Every statistic of a diff from per-task counts: suite change with paired-bootstrap
    intervals, the gate, per-task tests with BH, categories, and the MDE."""
    if not 0 < alpha < 1:
        raise BenchError(f"alpha must be in (0, 1), got {alpha}", field="--alpha")
    if len(pc) == 0:
        raise BenchError("the two runs share no task with a valid trial: nothing to compare", field="BASE/CAND")
    test = suite_test(pc, k, alpha=alpha, permutations=permutations, seed=seed)
    out: dict[str, Any] = {"k": k, "alpha": alpha, "n_tasks": len(pc), "test": test}
    if bootstrap:
        out["suite"] = paired_bootstrap(pc, k, B=bootstrap, seed=seed)
    tt = task_tests(pc, alpha)
    d1, dk = _per_task_deltas(pc, k)
    rows = []
    for t, task in enumerate(pc.tasks):
        nA, cA, nB, cB = (int(a[t]) for a in (pc.n_base, pc.c_base, pc.n_cand, pc.c_cand))
        q = tt["q"][t]
        rows.append({
            "task": task,
            "base": {"n": nA, "successes": cA, "pass@1": cA / nA, "pass^k": _opt(_phk(pc.n_base[t:t + 1], pc.c_base[t:t + 1], k)[0])},
            "candidate": {"n": nB, "successes": cB, "pass@1": cB / nB, "pass^k": _opt(_phk(pc.n_cand[t:t + 1], pc.c_cand[t:t + 1], k)[0])},
            "delta_pass@1": float(d1[t]), "delta_pass^k": _opt(dk[t]),
            "p": float(tt["p"][t]), "q": None if math.isnan(q) else float(q),
            "in_family": bool(tt["in_family"][t]),
            "significant": bool(not math.isnan(q) and q <= alpha),
            "category": _category(cA, nA, cB, nB),
        })
    out["tasks"] = rows
    out["tested_tasks"] = int(tt["in_family"].sum())
    out["categories"] = {c: [r["task"] for r in rows if r["category"] == c] for c in CATEGORIES}
    out["categories_expected_by_chance"] = _expected_categories(pc)
    out["significant_tasks"] = [r["task"] for r in sorted(rows, key=lambda r: r["p"]) if r["significant"]]
    if with_mde:
        level = test["effective_level"]
        n_stats = len(test["statistics"])
        if not (alpha / n_stats <= level <= alpha):  # degenerate permutation distribution
            level = alpha / n_stats
        out["mde"] = minimum_detectable_effect(pc, k, level, alpha=alpha)
        out["mde"]["single_task"] = test["single_task"]
    return out


def _expected_categories(pc: PairedCounts) -> dict[str, float]:
    """How many tasks would land in each moving category by chance alone if nothing changed:
    each task's rate estimated from both runs pooled (smoothed, (S + ½)/(N + 1), so a task
    that passed every trial still has a small chance to fail), the two runs independent."""
    p = (pc.c_base + pc.c_cand + 0.5) / (pc.n_base + pc.n_cand + 1.0)
    nA, nB = pc.n_base, pc.n_cand
    all_a, all_b = p ** nA, p ** nB
    below_half = stats.binom.cdf(np.ceil(nB / 2) - 1, nB, p)  # candidate passes fewer than half its trials
    broken = all_a * below_half
    return {
        "newly_broken": float(broken.sum()),
        "newly_flaky": float((all_a * (1 - all_b - below_half)).sum()),
        "fixed": float(((1 - all_a) * all_b).sum()),
    }


def _opt(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


# ---------------------------------------------------------------------------------------
# Run directories
# ---------------------------------------------------------------------------------------


BASE_FAMILY = "base"


def _unperturbed(summary: dict[str, Any]) -> bool:
    """Trials on the task's own input (not a perturbed variant): the diff's population, as for
    the headline figures of `trajbench report`."""
    return summary.get("variant_family", BASE_FAMILY) == BASE_FAMILY


def _counts(log: RunLog) -> dict[str, tuple[int, int, int]]:
    """task -> (valid trials, successes, infrastructure errors), unperturbed inputs only."""
    out: dict[str, list[int]] = {}
    for s in log.summaries.values():
        if not _unperturbed(s):
            continue
        row = out.setdefault(s["task"], [0, 0, 0])
        if s["outcome"] == "error":
            row[2] += 1
        else:
            row[0] += 1
            row[1] += s["outcome"] == "success"
    return {t: (n, c, e) for t, (n, c, e) in out.items()}


def _renames(manifest: dict[str, Any]) -> dict[str, str]:
    """Tool names the run's overlay gave (suite name -> name the agent saw)."""
    overlay = manifest.get("overlay") or {}
    return dict(overlay.get("renamed") or {})


def _tool_mix(log: RunLog, tasks: set[str]) -> tuple[Counter[str], Counter[str], int]:
    """Calls per tool (under the suite's own names) and calls that got an error observation,
    over the run's valid trials of the given tasks; and the number of those trials."""
    back = {new: old for old, new in _renames(log.manifest).items()}
    calls: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    trials = 0
    for trial_id, summary in log.summaries.items():
        if summary["outcome"] == "error" or summary["task"] not in tasks or not _unperturbed(summary):
            continue
        trials += 1
        for step in log.trial_steps(trial_id):
            if step.get("kind") in ("tool", "user") and step.get("tool"):
                name = back.get(step["tool"], step["tool"])
                calls[name] += 1
                errors[name] += step.get("error") is not None
    return calls, errors, trials


def _tool_changes(base: dict[str, Any], cand: dict[str, Any]) -> dict[str, Any]:
    """Which tools differ between the runs, keyed by the suite's own tool names; what the
    overlays say about each change when the runs used overlays."""
    def by_suite_name(manifest: dict[str, Any]) -> dict[str, tuple[str, str]]:
        back = {new: old for old, new in _renames(manifest).items()}
        return {back.get(name, name): (name, h) for name, h in (manifest.get("tool_schema_hashes") or {}).items()}

    a, b = by_suite_name(base), by_suite_name(cand)
    ov_a, ov_b = base.get("overlay") or {}, cand.get("overlay") or {}
    notes_a, notes_b = ov_a.get("changes") or {}, ov_b.get("changes") or {}
    changed = []
    for name in sorted(set(a) & set(b)):
        (name_a, hash_a), (name_b, hash_b) = a[name], b[name]
        if hash_a != hash_b or name_a != name_b:
            changed.append({
                "tool": name, "base_name": name_a, "candidate_name": name_b,
                "base_hash": hash_a, "candidate_hash": hash_b,
                "base_overlay_changes": notes_a.get(name, []), "candidate_overlay_changes": notes_b.get(name, []),
            })
    return {
        "available": bool(a) and bool(b),
        "changed": changed,
        "added": sorted(set(b) - set(a)),
        "removed": sorted(set(a) - set(b)),
        "unchanged": len(set(a) & set(b)) - len(changed),
        "overlay": {"base": _overlay_brief(ov_a), "candidate": _overlay_brief(ov_b)},
    }


def _overlay_brief(overlay: dict[str, Any]) -> dict[str, Any] | None:
    if not overlay:
        return None
    return {"name": overlay.get("name"), "hash": overlay.get("hash"), "source": overlay.get("source")}


def _mix_section(base: RunLog, cand: RunLog, shared: set[str]) -> dict[str, Any]:
    """How the mix of tool calls moved: each tool's share of all calls, calls per trial, and the
    share of its calls that got an error observation (invalid arguments, domain refusals)."""
    ca, ea, ta = _tool_mix(base, shared)
    cb, eb, tb = _tool_mix(cand, shared)
    total_a, total_b = sum(ca.values()), sum(cb.values())
    names_b = _renames(cand.manifest)
    rows = []
    for tool in sorted(set(ca) | set(cb)):
        sa = ca[tool] / total_a if total_a else 0.0
        sb = cb[tool] / total_b if total_b else 0.0
        rows.append({"tool": tool, "candidate_name": names_b.get(tool, tool), "base_calls": ca[tool], "candidate_calls": cb[tool],
                     "base_share": sa, "candidate_share": sb, "delta_share": sb - sa,
                     "base_per_trial": ca[tool] / ta if ta else None, "candidate_per_trial": cb[tool] / tb if tb else None,
                     "base_error_rate": ea[tool] / ca[tool] if ca[tool] else None,
                     "candidate_error_rate": eb[tool] / cb[tool] if cb[tool] else None})
    rows.sort(key=lambda r: (-abs(r["delta_share"]), r["tool"]))
    return {"base_calls": total_a, "candidate_calls": total_b,
            "base_calls_per_trial": total_a / ta if ta else None, "candidate_calls_per_trial": total_b / tb if tb else None,
            "tools": rows}


def _divergence_points(log: RunLog) -> dict[str, dict[str, Any] | None]:
    section = divergence_section(log, load_reference=False)
    out: dict[str, dict[str, Any] | None] = {}
    for row in section.get("tasks", []):
        # the task's divergence point when one is significant, else its top-scoring branch node
        mixed = 0 < row.get("successes", 0) < row.get("n", 0)
        d = row.get("divergence") or next((b for b in row.get("branches") or [] if b["successes"] < b["n"]), None)
        if d is None or not mixed:
            out[row["task"]] = None
            continue
        # the branch into failure: the alternative with the lowest smoothed success estimate
        worst = min(d["alternatives"], key=lambda alt: ((alt["successes"] + 1) / (alt["n"] + 2), -alt["n"]))
        out[row["task"]] = {"step": d["step"], "action": worst.get("action") or "<end>",
                            "rate": worst["successes"] / worst["n"] if worst["n"] else None,
                            "significant": bool(d.get("significant")), "p": d.get("p"), "q": d.get("q")}
    return out


def _divergence_diff(base: RunLog, cand: RunLog, shared: list[str]) -> dict[str, Any]:
    """Per shared task, where its runs branch into failure in each run — the divergence point
    when the divergence analysis finds a significant one, else the top-scoring branch node
    (marked not significant) — and whether it appeared, was resolved, moved (another step or
    another failing action) or stayed. A task with no mixed outcomes has no branch into
    failure. Labels use the names the agent saw, so an overlay's renames show as a move."""
    a, b = _divergence_points(base), _divergence_points(cand)
    rows = []
    counts: Counter[str] = Counter()
    for task in shared:
        da, db = a.get(task), b.get(task)
        if da is None and db is None:
            continue
        if da is None:
            change = "appeared"
        elif db is None:
            change = "resolved"
        elif (da["step"], da["action"]) != (db["step"], db["action"]):
            change = "moved"
        else:
            change = "same"
        counts[change] += 1
        rows.append({"task": task, "base": da, "candidate": db, "change": change})
    order = {"appeared": 0, "moved": 1, "resolved": 2, "same": 3}
    rows.sort(key=lambda r: (order[r["change"]], not _significant(r), r["task"]))
    return {"available": True, "counts": {c: counts[c] for c in order}, "tasks": rows}


def _divergence_or_reason(base: RunLog, cand: RunLog, shared: list[str], wanted: bool) -> dict[str, Any]:
    """The divergence comparison, or why there is none. The gate never depends on it: a failure
    of the (auxiliary) divergence analysis is reported in the output, not raised."""
    if not wanted or divergence_section is None:
        reason = "not requested" if not wanted else "divergence analysis is not available in this installation"
        return {"available": False, "reason": reason, "counts": None, "tasks": []}
    try:
        return _divergence_diff(base, cand, shared)
    except Exception as exc:  # noqa: BLE001 - report, never break the gate
        return {"available": False, "reason": f"the divergence analysis failed: {type(exc).__name__}: {exc}",
                "counts": None, "tasks": []}


def _significant(row: dict[str, Any]) -> bool:
    return any(p is not None and p["significant"] for p in (row["base"], row["candidate"]))


def _run_brief(log: RunLog, counts: dict[str, tuple[int, int, int]]) -> dict[str, Any]:
    m = log.manifest
    expected = len(m.get("tasks", [])) * int(m["k"])
    return {
        "dir": str(log.path), "run_id": m["run_id"], "suite": {"name": m["suite"].get("name"), "hash": m["suite"].get("hash")},
        "agent": {"name": m["agent"].get("name"), "hash": m["agent"].get("hash"), "simulated": bool(m["agent"].get("simulated"))},
        "k": int(m["k"]), "base_seed": m.get("base_seed"), "harness_version": m.get("harness_version"),
        "expected_trials": expected, "finished_trials": sum(map(_unperturbed, log.summaries.values())),
        "perturbed_trials": sum(not _unperturbed(s) for s in log.summaries.values()),
        "error_trials": sum(e for _, _, e in counts.values()), "overlay": _overlay_brief(m.get("overlay") or {}),
    }


def diff_runs(base_dir: str | Path, cand_dir: str | Path, *, alpha: float = DEFAULT_ALPHA, k: int | None = None,
              force: bool = False, permutations: int = DEFAULT_PERMUTATIONS, bootstrap: int = DEFAULT_BOOTSTRAP,
              seed: int = 0, divergence: bool = True) -> dict[str, Any]:
    """The diff of two run directories as a JSON-serialisable dict (bench/schemas/diff.schema.json).
    Raises BenchError on bad input: unreadable runs, different suites (unless `force`), bad
    alpha or k, no shared task."""
    if not 0 < alpha < 1:
        raise BenchError(f"alpha must be in (0, 1), got {alpha}", field="--alpha")
    base, cand = read_run(base_dir), read_run(cand_dir)
    hash_a, hash_b = base.manifest["suite"].get("hash"), cand.manifest["suite"].get("hash")
    warnings: list[str] = []
    forced = False
    if hash_a != hash_b:
        what = (f"suite {base.manifest['suite'].get('name')} (hash {str(hash_a)[:12]}) vs "
                f"suite {cand.manifest['suite'].get('name')} (hash {str(hash_b)[:12]})")
        if not force:
            raise BenchError(f"the runs are of different suites: {what}. Tasks, data or tool code differ, so the "
                             "results are not comparable; re-run both on the same suite, or pass --force to "
                             "compare anyway (the output is then marked FORCED)", file=str(Path(cand_dir) / "run.json"),
                             field="suite.hash")
        forced = True
        warnings.append(f"FORCED: comparing runs of different suites ({what}); the figures may be meaningless")
    k_runs = min(int(base.manifest["k"]), int(cand.manifest["k"]))
    if k is None:
        k = k_runs
    if not isinstance(k, int) or k < 1:
        raise BenchError(f"k must be a whole number ≥ 1, got {k!r}", field="--k")
    if k > k_runs:
        raise BenchError(f"k = {k} exceeds the runs' trials per task (base k = {base.manifest['k']}, candidate k = "
                         f"{cand.manifest['k']}); pass^k needs at least k trials in both", field="--k")
    ca, cb = _counts(base), _counts(cand)
    order = list(base.manifest.get("tasks") or sorted(ca))
    order += [t for t in sorted(ca) if t not in order]
    shared = [t for t in order if ca.get(t, (0,))[0] > 0 and cb.get(t, (0,))[0] > 0]
    only_base = [t for t in order if t in ca and ca[t][0] > 0 and t not in shared]
    only_cand = [t for t in sorted(cb) if cb[t][0] > 0 and t not in shared and (t not in ca or ca[t][0] == 0)]
    if not shared:
        raise BenchError("the two runs share no task with a valid (non-error) trial: nothing to compare",
                         file=str(cand_dir), field="tasks")
    pc = PairedCounts.of(shared, [ca[t][0] for t in shared], [ca[t][1] for t in shared],
                         [cb[t][0] for t in shared], [cb[t][1] for t in shared])
    core = compare_counts(pc, k=k, alpha=alpha, permutations=permutations, bootstrap=bootstrap, seed=seed)
    brief_a, brief_b = _run_brief(base, ca), _run_brief(cand, cb)
    for label, brief in (("base", brief_a), ("candidate", brief_b)):
        if brief["finished_trials"] < brief["expected_trials"]:
            warnings.append(f"the {label} run is unfinished ({brief['finished_trials']}/{brief['expected_trials']} trials); "
                            "re-run its command to complete it")
        if brief["error_trials"]:
            warnings.append(f"the {label} run has {brief['error_trials']} infrastructure-error trials (left out of every figure)")
    if base.manifest["agent"].get("hash") == cand.manifest["agent"].get("hash") and \
            base.manifest.get("base_seed") == cand.manifest.get("base_seed") and \
            (base.manifest.get("overlay") or {}).get("hash") == (cand.manifest.get("overlay") or {}).get("hash"):
        warnings.append("both runs used the same agent spec, overlay and base seed: with a seeded agent their trials "
                        "are replays, not independent samples (use another --seed for a fresh sample)")
    if int(base.manifest["k"]) != int(cand.manifest["k"]):
        warnings.append(f"the runs have different k (base {base.manifest['k']}, candidate {cand.manifest['k']}); "
                        f"pass^k uses k = {k}")
    if brief_a["perturbed_trials"] or brief_b["perturbed_trials"]:
        warnings.append(f"perturbed-input trials ({brief_a['perturbed_trials']} in the base, {brief_b['perturbed_trials']} "
                        "in the candidate) are left out: the diff compares the tasks' own inputs, like the headline "
                        "figures of `trajbench report`")
    if only_base or only_cand:
        warnings.append(f"{len(only_base)} task(s) only in the base and {len(only_cand)} only in the candidate are left out")
    diff: dict[str, Any] = {
        "diff_version": DIFF_VERSION,
        "forced": forced,
        "warnings": warnings,
        "base": brief_a,
        "candidate": brief_b,
        "alpha": alpha,
        "k": k,
        "task_sets": {"shared": len(shared), "only_base": only_base, "only_candidate": only_cand},
        "suite": core["suite"],
        "test": core["test"],
        "mde": core["mde"],
        "tested_tasks": core["tested_tasks"],
        "significant_tasks": core["significant_tasks"],
        "categories": core["categories"],
        "categories_expected_by_chance": core["categories_expected_by_chance"],
        "tasks": core["tasks"],
        "tools": _tool_changes(base.manifest, cand.manifest),
        "tool_mix": _mix_section(base, cand, set(shared)),
        "divergence": _divergence_or_reason(base, cand, shared, divergence),
    }
    regression = core["test"]["significant_regression"]
    diff["verdict"] = "significant regression" if regression else "no significant regression"
    diff["exit_code"] = 1 if regression else 0
    return diff


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------


def _pp(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "n/a"
    return f"{x * 100:+.1f} pp" if signed else f"{x * 100:.1f}%"


def _num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _p(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.4f}" if x >= 0.0001 else f"{x:.1e}"


def _safe(text: Any, width: int | None = None) -> str:
    """Run-produced text for a terminal: control characters escaped, cut to width."""
    s = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))
    if width is not None and len(s) > width:
        s = s[: width - 1] + "…"
    return s


def _md(text: Any) -> str:
    """Text for a Markdown table cell or line: no HTML, no table breaks."""
    s = _safe(text)
    for ch, rep in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("`", "'")):
        s = s.replace(ch, rep)
    return s


def _agent(brief: dict[str, Any]) -> str:
    sim = " (SIMULATED)" if brief["agent"]["simulated"] else ""
    overlay = brief.get("overlay")
    ov = f", overlay {overlay.get('name') or overlay.get('source')} ({str(overlay.get('hash'))[:12]})" if overlay else ""
    return (f"{brief['agent']['name']}{sim}{ov}; k = {brief['k']}, seed {brief['base_seed']}, "
            f"{brief['finished_trials']}/{brief['expected_trials']} trials")


def _gate_line(diff: dict[str, Any]) -> str:
    t = diff["test"]
    if t["significant_regression"]:
        return f"SIGNIFICANT REGRESSION: p = {_p(t['p_value'])} ≤ α = {diff['alpha']} (exit 1)"
    return f"no significant regression: p = {_p(t['p_value'])} > α = {diff['alpha']} (exit 0)"


def mde_statement(diff: dict[str, Any]) -> str:
    """One readable sentence: what this diff could and could not have detected."""
    m = diff["mde"]
    k = diff["k"]
    n = m["n_tasks"]
    head = f"With n = {n} tasks and k = {m['trials_base']}/{m['trials_candidate']} trials (base/candidate), "
    if m["drop"] is None:
        return head + "no drop in success rate, however large, would be detected with 80% power: add tasks or trials."
    parts = []
    if m["pass@1"] is not None:
        parts.append(f"pass@1 {_pp(m['pass@1']['delta'])} (a drop of {m['pass@1']['drop'] * 100:.1f} pp on every task)")
    pk = m.get(f"pass^{k}")
    if pk is not None:
        parts.append(f"pass^{k} {_num(pk['delta'], True)} (a drop of {pk['drop'] * 100:.1f} pp on every task)")
    text = (head + "this diff detects, with 80% power at α = " + f"{m['alpha']}" + ", a change of " + " or ".join(parts)
            + ". Smaller regressions can pass unnoticed: \"no significant regression\" is not \"no regression\".")
    single = m.get("single_task")
    if single and single["flagged_at_or_below"] is not None:
        text += (f" A single task that was {single['base']} is flagged on its own only if it falls to "
                 f"{single['flagged_at_or_below']}/{single['of']} or below.")
    if m["with_double_trials"] is not None:
        text += f" Twice the trials would detect a uniform drop of {m['with_double_trials'] * 100:.1f} pp"
        if m["with_double_tasks"] is not None:
            text += f"; twice the tasks, {m['with_double_tasks'] * 100:.1f} pp"
        text += "."
    return text


def _tool_change_text(change: dict[str, Any]) -> str:
    name = change["tool"]
    if change["base_name"] != change["candidate_name"]:
        name = f"{change['base_name']} → {change['candidate_name']}"
    notes = change["candidate_overlay_changes"] or change["base_overlay_changes"]
    side = "" if change["candidate_overlay_changes"] else (" (base overlay)" if change["base_overlay_changes"] else "")
    detail = "; ".join(notes) if notes else "schema hash differs"
    return f"{name}: {detail}{side}"


def _changed_tasks(diff: dict[str, Any]) -> list[dict[str, Any]]:
    """Tasks whose counts moved, most significant first (both renderings list these)."""
    rows = [r for r in diff["tasks"] if r["category"] != "stable" or r["delta_pass@1"] != 0]
    return sorted(rows, key=lambda r: (r["p"], r["delta_pass@1"]))


def render_text(diff: dict[str, Any], max_tasks: int = 40) -> str:
    k, alpha = diff["k"], diff["alpha"]
    banner = "!!! FORCED: the runs are of DIFFERENT SUITES; these figures may be meaningless !!!"
    lines = []
    if diff["forced"]:
        lines.append(banner)
    a, b = diff["base"], diff["candidate"]
    lines += [
        f"trajbench diff — {_safe(a['dir'])} → {_safe(b['dir'])}",
        f"  base       {_safe(_agent(a))}",
        f"  candidate  {_safe(_agent(b))}",
        f"  suite {_safe(a['suite']['name'])} (hash {str(a['suite']['hash'])[:12]})"
        + ("" if diff["forced"] else ", the same in both runs")
        + f"; paired over n = {diff['task_sets']['shared']} shared tasks",
    ]
    for w in diff["warnings"]:
        lines.append(f"  warning: {_safe(w)}")
    s = diff["suite"]
    lines += ["", "Suite (candidate − base; 95% intervals from a paired bootstrap over tasks)"]
    stat_p = {st["name"]: st["p_value"] for st in diff["test"]["statistics"]}
    for name in ("pass@1", f"pass^{k}"):
        e = s.get(name)
        if not e or e["delta"] is None:
            continue
        p = f"   one-sided p = {_p(stat_p[name])}" if name in stat_p else ""
        lines.append(f"  {name:<8} {_num(e['base'])} → {_num(e['candidate'])}   Δ {_num(e['delta'], True)} "
                     f"[{_num(e['lo'], True)}, {_num(e['hi'], True)}]   (n = {e['n_tasks']} tasks){p}")
    t = diff["test"]
    worst = next(r for r in diff["tasks"] if r["task"] == t["worst_task"])
    lines.append(f"  worst task {_safe(worst['task'], 48)} ({worst['base']['successes']}/{worst['base']['n']} → "
                 f"{worst['candidate']['successes']}/{worst['candidate']['n']}, Boschloo p = {_p(worst['p'])}): "
                 f"as the worst of {len(diff['tasks'])} tasks, one-sided p = {_p(stat_p['worst task'])}")
    lines += [f"  gate: {t['method']}; {t['permutations']} permutations",
              f"  → {_gate_line(diff)}", "", "Minimum detectable effect", "  " + mde_statement(diff)]

    cats = diff["categories"]
    lines += ["", f"Tasks (one-sided Boschloo per task; Benjamini–Hochberg over the {diff['tested_tasks']} tasks that "
                  f"can reach significance; * = q ≤ {alpha})"]
    chance = diff["categories_expected_by_chance"]
    for c in CATEGORIES:
        if cats[c] or c in chance:
            listed = ", ".join(_safe(x) for x in cats[c][:12]) + (f", … {len(cats[c]) - 12} more" if len(cats[c]) > 12 else "")
            expect = f" (≈{chance[c]:.1f} by chance alone)" if c in chance else ""
            lines.append(f"  {_CATEGORY_TEXT[c]}: {len(cats[c])}{expect}" + (f" — {listed}" if cats[c] and c != "stable" else ""))
    lines.append(f"  significant regressions (q ≤ {alpha}): {len(diff['significant_tasks'])}"
                 + (" — " + ", ".join(_safe(x) for x in diff["significant_tasks"][:12]) if diff["significant_tasks"] else ""))
    changed = _changed_tasks(diff)
    if changed:
        lines.append(f"  {'task':<44} {'base':>6} {'cand':>6} {'pass^' + str(k):>13} {'p':>8} {'q':>8}")
        for r in changed[:max_tasks]:
            pk = f"{_num(r['base']['pass^k'])}→{_num(r['candidate']['pass^k'])}" if r["base"]["pass^k"] is not None else "n/a"
            mark = "*" if r["significant"] else " "
            lines.append(f" {mark}{_safe(r['task'], 44):<44} {r['base']['successes']:>3}/{r['base']['n']:<2} "
                         f"{r['candidate']['successes']:>3}/{r['candidate']['n']:<2} {pk:>13} {_p(r['p']):>8} "
                         f"{_p(r['q']) if r['q'] is not None else '-':>8}")
        if len(changed) > max_tasks:
            lines.append(f"  … {len(changed) - max_tasks} more changed tasks (see --json)")

    tools = diff["tools"]
    lines += ["", "Tools"]
    if not tools["available"]:
        lines.append("  a run's manifest has no tool_schema_hashes: tool changes cannot be shown")
    elif not (tools["changed"] or tools["added"] or tools["removed"]):
        lines.append(f"  no tool changed ({tools['unchanged']} tools with identical schemas)")
    for ch in tools["changed"]:
        lines.append(f"  changed  {_safe(_tool_change_text(ch))}")
    for name in tools["added"]:
        lines.append(f"  added    {_safe(name)}")
    for name in tools["removed"]:
        lines.append(f"  removed  {_safe(name)}")
    mix = diff["tool_mix"]
    lines.append(f"  tool calls per trial: {_num(mix['base_calls_per_trial'])} → {_num(mix['candidate_calls_per_trial'])}; "
                 "share of calls by tool (largest moves first, and every tool whose error rate moved):")
    shown = [r for i, r in enumerate(mix["tools"]) if i < 8 or _error_move(r)]
    for r in shown[:20]:
        label = r["tool"] if r["candidate_name"] == r["tool"] else f"{r['tool']} (now {r['candidate_name']})"
        lines.append(f"    {_safe(label, 44):<44} {_pp(r['base_share'], False):>6} → {_pp(r['candidate_share'], False):>6}"
                     f"  ({_pp(r['delta_share'])})" + _error_move(r))

    dv = diff["divergence"]
    lines += ["", "Divergence points (the branch into failure, per task)"]
    if not dv["available"]:
        lines.append(f"  not shown: {_safe(dv['reason'])}")
    else:
        c = dv["counts"]
        sig = Counter(r["change"] for r in dv["tasks"] if _significant(r))
        lines.append(f"  appeared {c['appeared']}, moved {c['moved']}, resolved {c['resolved']}, unchanged {c['same']} "
                     f"(of which involve a significant divergence point: {sig['appeared']}, {sig['moved']}, {sig['resolved']}, "
                     f"{sig['same']})")
        lines.append("  (significant divergence points, or else the top-scoring branch, marked n.s.)")
        for r in [r for r in dv["tasks"] if r["change"] != "same"][:15]:
            lines.append(f"  {r['change']:<9} {_safe(r['task'], 40)}: {_div(r['base'])} → {_div(r['candidate'])}")
    lines += ["", f"verdict: {_gate_line(diff)}"]
    if diff["forced"]:
        lines.append(banner)
    return "\n".join(lines)


def _rate(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def _error_move(row: dict[str, Any]) -> str:
    """'; errors 0% → 47% of calls' when a tool's error rate moved by 5 points or more."""
    a, b = row["base_error_rate"], row["candidate_error_rate"]
    if a is None or b is None or abs(b - a) < 0.05:
        return ""
    return f"; errors {a:.0%} → {b:.0%} of its calls"


def _div(point: dict[str, Any] | None, width: int = 48) -> str:
    if point is None:
        return "none"
    rate = "" if point.get("rate") is None else f" ({point['rate']:.0%} pass)"
    ns = "" if point["significant"] else " n.s."
    return f"step {point['step']} {_safe(point['action'], width)}{rate}{ns}"


def render_markdown(diff: dict[str, Any], max_tasks: int = 30) -> str:
    """A pull-request comment. All run-produced text is escaped."""
    k, alpha = diff["k"], diff["alpha"]
    a, b = diff["base"], diff["candidate"]
    t = diff["test"]
    icon = "🔴" if t["significant_regression"] else "🟢"
    out = []
    if diff["forced"]:
        out += ["> [!WARNING]", "> **FORCED comparison: the runs are of different suites. These figures may be meaningless.**", ""]
    out += [f"### {icon} trajbench diff: {_md(diff['verdict'])}", "",
            f"**Gate:** one-sided p = {_p(t['p_value'])} (α = {alpha}; {_md(t['method'])}; {t['permutations']} permutations)", "",
            "| | base | candidate |", "|---|---|---|",
            f"| agent | {_md(a['agent']['name'])}{' (simulated)' if a['agent']['simulated'] else ''} | "
            f"{_md(b['agent']['name'])}{' (simulated)' if b['agent']['simulated'] else ''} |",
            f"| overlay | {_md((a['overlay'] or {}).get('name') or '—')} | {_md((b['overlay'] or {}).get('name') or '—')} |",
            f"| trials | {a['finished_trials']}/{a['expected_trials']} (k = {a['k']}) | "
            f"{b['finished_trials']}/{b['expected_trials']} (k = {b['k']}) |",
            f"| suite | {_md(a['suite']['name'])} `{str(a['suite']['hash'])[:12]}` | {_md(b['suite']['name'])} `{str(b['suite']['hash'])[:12]}` |",
            ""]
    for w in diff["warnings"]:
        out.append(f"> ⚠️ {_md(w)}")
    if diff["warnings"]:
        out.append("")
    stat_p = {st["name"]: st["p_value"] for st in t["statistics"]}
    out += [f"| metric (n = {diff['task_sets']['shared']} tasks) | base | candidate | Δ [95% CI] | one-sided p |", "|---|---|---|---|---|"]
    for name in ("pass@1", f"pass^{k}"):
        e = diff["suite"].get(name)
        if e and e["delta"] is not None:
            out.append(f"| {name} | {_num(e['base'])} | {_num(e['candidate'])} | {_num(e['delta'], True)} "
                       f"[{_num(e['lo'], True)}, {_num(e['hi'], True)}] | {_p(stat_p.get(name))} |")
    out += ["", f"**Minimum detectable effect.** {_md(mde_statement(diff))}", ""]
    cats = diff["categories"]
    out.append("**Tasks:** " + ", ".join(f"{c.replace('_', ' ')} {len(cats[c])}" for c in CATEGORIES)
               + f"; significant regressions (BH q ≤ {alpha}): {len(diff['significant_tasks'])}")
    rows = _changed_tasks(diff)
    if rows:
        out += ["", "<details><summary>Changed tasks</summary>", "",
                "| task | base | candidate | category | p | q |", "|---|---|---|---|---|---|"]
        for r in rows[:max_tasks]:
            sig = " **⚠**" if r["significant"] else ""
            out.append(f"| {_md(r['task'])}{sig} | {r['base']['successes']}/{r['base']['n']} | "
                       f"{r['candidate']['successes']}/{r['candidate']['n']} | {r['category'].replace('_', ' ')} | "
                       f"{_p(r['p'])} | {_p(r['q']) if r['q'] is not None else '—'} |")
        if len(rows) > max_tasks:
            out.append(f"| … {len(rows) - max_tasks} more | | | | | |")
        out += ["", "</details>"]
    tools = diff["tools"]
    if tools["changed"] or tools["added"] or tools["removed"]:
        out += ["", "**Tool changes**", ""]
        out += [f"- {_md(_tool_change_text(ch))}" for ch in tools["changed"]]
        out += [f"- added {_md(x)}" for x in tools["added"]] + [f"- removed {_md(x)}" for x in tools["removed"]]
    moved = [r for r in diff["tool_mix"]["tools"] if abs(r["delta_share"]) >= 0.005 or _error_move(r)][:12]
    if moved:
        out += ["", "<details><summary>Tool-call mix</summary>", "",
                "| tool | base share | candidate share | Δ | errors base → candidate |", "|---|---|---|---|---|"]
        out += [f"| {_md(r['tool'])} | {_pp(r['base_share'], False)} | {_pp(r['candidate_share'], False)} | {_pp(r['delta_share'])} | "
                f"{_rate(r['base_error_rate'])} → {_rate(r['candidate_error_rate'])} |" for r in moved]
        out += ["", "</details>"]
    dv = diff["divergence"]
    if dv["available"] and any(r["change"] != "same" for r in dv["tasks"]):
        out += ["", "<details><summary>Divergence points that moved or appeared</summary>", "",
                "| task | change | base | candidate |", "|---|---|---|---|"]
        out += [f"| {_md(r['task'])} | {r['change']} | {_md(_div(r['base']))} | {_md(_div(r['candidate']))} |"
                for r in dv["tasks"] if r["change"] != "same"][:20]
        out += ["", "</details>"]
    if diff["forced"]:
        out += ["", "> [!WARNING]", "> **FORCED comparison of different suites.**"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# Entry points for the CLI, the baseline flow and the pytest plugin
# ---------------------------------------------------------------------------------------


def run_diff(base_dir: str | Path, cand_dir: str | Path, *, alpha: float = DEFAULT_ALPHA, k: int | None = None,
             fmt: str = "text", force: bool = False, out: TextIO | None = None, **options: Any) -> int:
    """`trajbench diff`: print the diff (fmt: text, json or markdown) and return the exit status:
    0 no significant regression, 1 significant regression. Bad input raises BenchError (the
    CLI prints it and exits 2)."""
    import orjson

    out = out or sys.stdout
    diff = diff_runs(base_dir, cand_dir, alpha=alpha, k=k, force=force, **options)
    if fmt == "json":
        out.write(orjson.dumps(diff, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
    elif fmt == "markdown":
        out.write(render_markdown(diff))
    elif fmt == "text":
        out.write(render_text(diff) + "\n")
    else:
        raise BenchError(f"unknown output format {fmt!r} (text, json, markdown)", field="format")
    return int(diff["exit_code"])


def gate(baseline_dir: str | Path, candidate_dir: str | Path, alpha: float = DEFAULT_ALPHA, *, k: int | None = None,
         fmt: str = "text", out: TextIO | None = None) -> int:
    """`trajbench run ... --baseline RUN_DIR`: diff the fresh run against the stored baseline and
    return the diff's exit status. A baseline of another suite is bad input (exit 2 through
    BenchError): a CI baseline must be re-recorded when the suite changes, never forced."""
    if not Path(baseline_dir).is_dir():
        raise BenchError("the baseline run directory does not exist (record one with `trajbench run ... --out DIR`)",
                         file=str(baseline_dir), field="--baseline")
    return run_diff(baseline_dir, candidate_dir, alpha=alpha, k=k, fmt=fmt, out=out)


def check_baseline(baseline_dir: str | Path, suite_hash: str) -> None:
    """Before `trajbench run ... --baseline DIR` spends time on a run: the baseline must be a run
    directory of the same suite (content hash), else BenchError (exit 2)."""
    from bench.run.rundir import read_manifest

    manifest = read_manifest(Path(baseline_dir))
    if manifest["suite"].get("hash") != suite_hash:
        raise BenchError(f"the baseline is a run of suite {manifest['suite'].get('name')} with hash "
                         f"{str(manifest['suite'].get('hash'))[:12]}, but this suite's hash is {suite_hash[:12]}: its tasks, "
                         "data or tool code changed since the baseline was recorded; record a new baseline",
                         file=str(Path(baseline_dir) / "run.json"), field="--baseline")
