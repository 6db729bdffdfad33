"""The statistics of a regression check on per-task counts: did the candidate get worse?

`compare_counts` is the statistical core of `trajbench diff` (`bench.analysis.diff` feeds it the
counts of two run directories; the simulations of benchmarks/diff_power.py feed it directly).
Every random draw is seeded, so a diff is reproducible. In short (docs/regression.md explains
each figure):

* **Pairing.** Both runs must be of the same suite (same content hash; ``force`` overrides, and
  every output then says so). The comparison is paired over the tasks both runs have valid
  trials for: per task t, the base has c_A of n_A successes and the candidate c_B of n_B.
* **Change and interval.** Δ pass@1 = mean_t (c_B/n_B − c_A/n_A) and Δ pass^k = mean_t of the
  difference of the unbiased per-task pass^k estimates; 95% intervals come from a paired
  bootstrap over tasks (a task's two counts are resampled together; trials are never
  resampled within a task).
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
  detects with 80% power (a power equation with the variances of this suite's tasks, at the
  gate's effective per-statistic level), so that "no significant regression" can be read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

import numpy as np
from scipy import stats

from bench.analysis import metrics
from bench.analysis.exact import boschloo_regression_p
from bench.analysis.metrics import benjamini_hochberg
from bench.errors import BenchError

DEFAULT_ALPHA = 0.05
DEFAULT_PERMUTATIONS = 4000
DEFAULT_BOOTSTRAP = 2000
POWER = 0.80
_EPS = 1e-12


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


_BLOCK_CELLS = 1 << 21  # permutations are drawn and scored this many (permutation, task) cells at a time


def _relabel(S: np.ndarray, nA: np.ndarray, nB: np.ndarray, B: int, seed: int) -> Iterator[np.ndarray]:
    """B random relabellings of every task's pooled trials: the base's success count under the
    null, X_t ~ Hypergeometric(n_A + n_B, S_t, n_A), drawn by inverse CDF per distinct margin
    (several times faster than numpy's per-element hypergeometric sampler). Yielded in blocks of
    whole permutations (rows), so the B × tasks matrices are never all in memory (at 10k tasks
    and 4,000 permutations each was 320 MB); the uniforms are the same stream either way."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for t, key in enumerate(zip(S.tolist(), nA.tolist(), nB.tolist())):
        groups.setdefault(key, []).append(t)
    margins = [(_hypergeom_cdf(*key), idx) for key, idx in groups.items()]
    rows = max(1, _BLOCK_CELLS // max(1, S.size))
    for first in range(0, B, rows):
        U = rng.random((min(rows, B - first), S.size))
        X = np.empty(U.shape, dtype=np.int64)
        for (lo, cdf), idx in margins:
            X[:, idx] = lo + np.minimum(np.searchsorted(cdf, U[:, idx], side="right"), cdf.size - 1)
        yield X


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
    rows = np.arange(T)[None, :]
    obs_idx = pc.c_base
    kmask = pc.k_mask(k)
    names = ["pass@1"] + ([f"pass^{k}"] if use_k else []) + ["worst task"]
    observed: dict[str, float] = {"pass@1": float(d1_lut[np.arange(T), obs_idx].mean())}
    if use_k:
        observed[f"pass^{k}"] = float(dk_lut[np.arange(T), obs_idx][kmask].mean())
    observed["worst task"] = float(pw_lut[np.arange(T), obs_idx].min())
    blocks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for X in _relabel(S, pc.n_base, pc.n_cand, permutations, seed):  # each statistic is per permutation (row)
        blocks["pass@1"].append(d1_lut[rows, X].mean(axis=1))
        if use_k:
            blocks[f"pass^{k}"].append(dk_lut[rows, X][:, kmask].mean(axis=1))
        blocks["worst task"].append(pw_lut[rows, X].min(axis=1))
    reps = {name: np.concatenate(parts) for name, parts in blocks.items()}

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
        "single_task": _single_task(pc, reps["worst task"], level),
    }


def _single_task(pc: PairedCounts, worst_reps: np.ndarray, level: float) -> dict[str, Any]:
    """How far a single task that passed every trial must fall to make the gate fire on its own
    (the worst-task statistic at the effective level, against this diff's other tasks)."""
    nA, nB = int(np.median(pc.n_base)), int(np.median(pc.n_cand))
    ordered_w = np.sort(worst_reps)
    flagged = [j for j in range(nB + 1)
               if (1 + np.searchsorted(ordered_w, stats.hypergeom.sf(nA - 1, nA + nB, nA + j, nA) * (1 + 1e-9), side="right"))
               / (worst_reps.size + 1) <= level]
    return {"base": f"{nA}/{nA}", "flagged_at_or_below": max(flagged) if flagged else None, "of": nB}


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


def detectable_drop(p: np.ndarray, nA: np.ndarray, nB: np.ndarray, k: int | None, level: float, power: float) -> tuple[float, float] | None:
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
        if effect <= 0:  # nothing to drop (every rate is already 0): no drop is detectable
            return -1.0, effect
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
    """The minimum detectable effect of this diff: the smallest uniform drop in every task's success rate
    detectable with `power` by the gate, with each task's rate estimated from both runs
    pooled. Also the between-task variance of the observed change (ω², which would widen the
    MDE for the population of tasks the suite samples) and what more trials or tasks buy."""
    p = (pc.c_base + pc.c_cand) / (pc.n_base + pc.n_cand)
    nA, nB = pc.n_base.astype(float), pc.n_cand.astype(float)
    kmask = pc.k_mask(k)

    def both(p_: np.ndarray, a: np.ndarray, b: np.ndarray, km: np.ndarray) -> dict[str, Any]:
        one = detectable_drop(p_, a, b, None, level, power)
        kk = detectable_drop(p_[km], a[km], b[km], k, level, power) if (k > 1 and km.any()) else None
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
    rows: list[dict[str, Any]] = []
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
