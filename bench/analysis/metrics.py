"""Suite metrics: pass@k, pass^k, flip probability, intervals, and consistency measures.

Pure functions, no I/O (docs/regression.md and the README's "Metrics" define each figure).
Two rules shape the code:

* Per-task estimators are the unbiased combinatorial ones (U-statistics), written as
  products so they stay finite for thousands of trials (float ``comb`` ratios overflow).
* Suite uncertainty comes from variation *across tasks*: the bootstrap resamples task
  rows and keeps each task's trials fixed. Resampling trials within a task biases pass^k
  upward (for c=5, n=8, k=4: 0.071 becomes ~0.152).
"""

from __future__ import annotations

import copy
import math
import operator
import warnings
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein
from scipy import stats

__all__ = [
    "pass_at_k",
    "pass_hat_k",
    "pass_at_k_curve",
    "pass_hat_k_curve",
    "flip_probability",
    "wilson_interval",
    "beta_interval",
    "bootstrap_task_replicates",
    "bootstrap_task_means",
    "clustered_se",
    "suite_summary",
    "end_state_agreement",
    "normalized_edit_distance",
    "trajectory_consistency",
    "coefficient_of_variation",
]


# ---------------------------------------------------------------------------------------
# Per-task estimators
# ---------------------------------------------------------------------------------------


def _check_counts(n: int, c: int) -> tuple[int, int]:
    n, c = operator.index(n), operator.index(c)
    if n < 0 or c < 0 or c > n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    return n, c


def _check_nck(n: int, c: int, k: int) -> tuple[int, int, int]:
    n, c = _check_counts(n, c)
    k = operator.index(k)
    if k < 1 or k > n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    return n, c, k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of 1 - (1-p)^k: chance at least one of k runs (drawn without
    replacement from the n observed) succeeds. Product form (Chen et al. 2021) avoids
    overflow of C(n, k) for large n."""
    n, c, k = _check_nck(n, c, k)
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of p^k (tau-bench pass^k): chance all k runs drawn without
    replacement from the n observed succeed. The plug-in (c/n)^k is biased high."""
    n, c, k = _check_nck(n, c, k)
    if c < k:
        return 0.0
    i = np.arange(k, dtype=np.float64)
    return float(np.prod((c - i) / (n - i)))


def pass_hat_k_curve(n: int, c: int) -> np.ndarray:
    """pass^k for k = 1..n at once (array of length n): running product of (c-i)/(n-i),
    which becomes exactly 0 from k = c+1 on."""
    n, c = _check_counts(n, c)
    i = np.arange(n, dtype=np.float64)
    return np.cumprod((c - i) / (n - i))


def pass_at_k_curve(n: int, c: int) -> np.ndarray:
    """pass@k for k = 1..n at once: 1 - C(n-c, k)/C(n, k) = 1 - "fail^k"."""
    n, c = _check_counts(n, c)
    return 1.0 - pass_hat_k_curve(n, n - c)


def flip_probability(n: int, c: int) -> float:
    """Unbiased estimate of 2p(1-p), the chance two distinct runs of the task disagree
    (= 2 x the ddof=1 sample variance of the 0/1 outcomes). nan if n < 2."""
    n, c = _check_counts(n, c)
    if n < 2:
        return math.nan
    return 2.0 * c * (n - c) / (n * (n - 1))


@lru_cache(maxsize=64)  # a report asks for the same z once per task: scipy's ppf costs ~0.1 ms a call
def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def wilson_interval(c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for one task's success rate; unlike Wald it behaves at
    c = 0 or c = n and small n. (nan, nan) if n = 0 (no information)."""
    n, c = _check_counts(n, c)
    z = _z(confidence)
    if n == 0:
        return (math.nan, math.nan)
    p = c / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    # At c = 0 (c = n) the bound is exactly 0 (1); pin it so rounding cannot leave 1e-17.
    lo = 0.0 if c == 0 else max(0.0, center - half)
    hi = 1.0 if c == n else min(1.0, center + half)
    return (lo, hi)


def beta_interval(c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Equal-tailed posterior interval for p under a uniform Beta(1, 1) prior, i.e. the
    Beta(c+1, n-c+1) posterior. Uniform (rather than Jeffreys) is chosen because it is the
    plain "every rate equally likely" prior and gives a sensible interval even at n = 0."""
    n, c = _check_counts(n, c)
    _z(confidence)  # validates confidence
    tail = (1.0 - confidence) / 2.0
    lo, hi = stats.beta.ppf([tail, 1.0 - tail], c + 1, n - c + 1)
    return (float(lo), float(hi))


# ---------------------------------------------------------------------------------------
# Suite-level uncertainty
# ---------------------------------------------------------------------------------------


def bootstrap_task_replicates(
    values: np.ndarray, B: int = 2000, seed: int | np.random.Generator | None = 0
) -> np.ndarray:
    """Bootstrap replicate means, resampling TASKS (rows) only.

    ``values`` is (T,) or (T, M): one row per task, holding per-task estimates that already
    summarise all of that task's trials. A (B, T) index matrix is drawn; replicate b is the
    nan-aware mean over the rows ``values[idx[b]]`` (a nan marks a task where that column is
    undefined, e.g. pass^k with k > n_t). Returns (B,) or (B, M); a replicate with no defined
    value in a column is nan.

    Computed as (resample counts) @ values rather than materialising ``values[idx]``, and the
    index matrix is drawn `_DRAW_CELLS` cells (whole replicates) at a time, so memory stays
    O(_DRAW_CELLS + B*M) instead of O(B*T*M) (the whole (B, T) matrix at 10k tasks: 160 MB,
    with its counts ~0.5 GB).
    """
    arr = _bootstrap_input(values, B)
    out_shape = (operator.index(B),) if arr.ndim == 1 else (operator.index(B), arr.shape[1])
    if arr.shape[0] == 0:
        return np.full(out_shape, np.nan)
    mat = arr.reshape(arr.shape[0], -1)
    out = np.empty((operator.index(B), mat.shape[1]))
    for rows, counts in _resample_counts(arr.shape[0], B, np.random.default_rng(seed)):
        out[rows] = _replicate_means(counts, mat)
    return out.reshape(out_shape)


def _bootstrap_input(values: np.ndarray, B: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(f"values must be 1-D or 2-D, got shape {arr.shape}")
    if operator.index(B) < 1:
        raise ValueError(f"B must be >= 1, got {B}")
    return arr


_DRAW_CELLS = 1 << 20  # (replicate, task) cells of the index matrix drawn at once (8 MB)


def _resample_counts(T: int, B: int, rng: np.random.Generator) -> Iterator[tuple[slice, np.ndarray]]:
    """Blocks (rows, counts) of the (B, T) matrix of how many times each task appears in each
    replicate, a few whole replicates at a time. numpy draws the same integers in blocks as
    in one (B, T) call, so the replicates do not depend on the block size."""
    step = max(1, _DRAW_CELLS // max(T, 1))
    for a in range(0, operator.index(B), step):
        b = min(operator.index(B), a + step)
        cells = rng.integers(0, T, size=(b - a, T)) + T * np.arange(b - a)[:, None]
        yield slice(a, b), np.bincount(cells.ravel(), minlength=(b - a) * T).reshape(b - a, T).astype(np.float64)


def _replicate_means(counts: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """(R, M) nan-aware replicate means of the (T, M) columns `mat` under the (R, T) `counts`.
    The sums are one vector-matrix product per replicate: a matrix product's rounding depends
    on how many rows it is given, and a replicate must not depend on its block."""
    defined = ~np.isnan(mat)
    filled = np.where(defined, mat, 0.0)
    sums = np.array([row @ filled for row in counts]).reshape(counts.shape[0], mat.shape[1])
    ns = counts @ defined.astype(np.float64)  # exact: sums of small integers
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ns > 0, sums / np.where(ns > 0, ns, 1.0), np.nan)


_CELLS_AT_ONCE = 1_000_000  # cells of the (B, M) replicate matrix formed at once (8 MB)


def bootstrap_task_means(
    values: np.ndarray,
    B: int = 2000,
    confidence: float = 0.95,
    seed: int | np.random.Generator | None = 0,
) -> tuple[Any, Any]:
    """Percentile-bootstrap interval for the mean over tasks (see
    ``bootstrap_task_replicates``). Returns floats for 1-D input, arrays of length M for
    (T, M) input. Replicates where a column is undefined (no sampled task has it) are
    dropped for that column; an all-undefined column gives nan. The replicates are formed
    `_CELLS_AT_ONCE` // B columns at a time: a suite's pass^k curve has 2k + 1 columns, and
    (B, 2k + 1) replicates at k = 27,780 would be 900 MB. Each column block redraws the same
    index matrix (the generator's state is replayed), in blocks of replicates like
    ``bootstrap_task_replicates``. (One column block up to k = 249 at B = 2000; past it, a
    bound may differ from the one-block product in its last bit.)"""
    _z(confidence)
    arr = _bootstrap_input(values, B)
    tail = 100.0 * (1.0 - confidence) / 2.0
    mat = arr[:, None] if arr.ndim == 1 else arr
    M = mat.shape[1]
    lo, hi = np.full(M, np.nan), np.full(M, np.nan)
    rng = np.random.default_rng(seed)
    width = max(1, _CELLS_AT_ONCE // operator.index(B))
    start = copy.deepcopy(rng.bit_generator.state) if M > width else None
    for a in range(0, M, width):
        b = min(M, a + width)
        reps = np.full((operator.index(B), b - a), np.nan)
        if mat.shape[0]:
            if start is not None:
                rng.bit_generator.state = copy.deepcopy(start)
            for rows, counts in _resample_counts(mat.shape[0], B, rng):
                reps[rows] = _replicate_means(counts, mat[:, a:b])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns -> nan
            lo[a:b], hi[a:b] = np.nanpercentile(reps, [tail, 100.0 - tail], axis=0)
    if np.ndim(values) == 1:
        return (float(lo[0]), float(hi[0]))
    return (lo, hi)


def clustered_se(values: np.ndarray, clusters: Sequence[Hashable]) -> float:
    """Cluster-robust standard error of the mean (Inspect AI form, Miller 2024):
    sqrt(C/(C-1) * sum_c (sum_{i in c} (s_i - mean))^2) / n. Use when tasks share a
    template/domain, so they are not independent draws. nan if fewer than 2 clusters."""
    s = np.asarray(values, dtype=np.float64).ravel()
    labels = list(clusters)
    if len(labels) != s.size:
        raise ValueError(f"{s.size} values but {len(labels)} cluster labels")
    ids: dict[Hashable, int] = {}
    inv = np.fromiter((ids.setdefault(lab, len(ids)) for lab in labels), dtype=np.intp,
                      count=len(labels))
    C = len(ids)
    if C < 2:
        return math.nan
    resid = s - s.mean()
    per_cluster = np.bincount(inv, weights=resid, minlength=C)
    return float(math.sqrt(C / (C - 1) * float(np.sum(per_cluster**2))) / s.size)


def _opt(x: float) -> float | None:
    """nan -> None, numpy scalar -> float (for JSON)."""
    x = float(x)
    return None if math.isnan(x) else x


def suite_summary(
    counts: Sequence[tuple[int, int]],
    *,
    B: int = 2000,
    seed: int | np.random.Generator | None = 0,
    confidence: float = 0.95,
    clusters: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """Suite figures from per-task (n_t, c_t): means over tasks with task-bootstrap intervals.

    Tasks with n_t = 0 are excluded (counted in ``n_tasks_without_trials``). pass^k / pass@k
    for k uses only tasks with n_t >= k; flip uses tasks with n_t >= 2. All columns share one
    bootstrap index matrix, so the curve's intervals are mutually consistent. ``clusters``
    (one label per entry of ``counts``, including n_t = 0 entries) adds the clustered SE of
    pass@1. Result is JSON-serialisable; undefined numbers are None.
    """
    pairs = [_check_counts(n, c) for n, c in counts]
    if clusters is not None:
        clusters = list(clusters)
        if len(clusters) != len(pairs):
            raise ValueError(f"{len(pairs)} tasks but {len(clusters)} cluster labels")
    keep = [i for i, (n, _) in enumerate(pairs) if n > 0]
    valid = [pairs[i] for i in keep]
    T = len(valid)
    K = max((n for n, _ in valid), default=0)

    # Columns: pass^1..pass^K | pass@1..pass@K | flip ; nan where undefined for a task.
    table = np.full((T, 2 * K + 1), np.nan)
    for t, (n, c) in enumerate(valid):
        table[t, :n] = pass_hat_k_curve(n, c)
        table[t, K : K + n] = pass_at_k_curve(n, c)
        table[t, 2 * K] = flip_probability(n, c)
    defined = ~np.isnan(table)
    n_def = defined.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(table, axis=0) if T else np.full(table.shape[1], np.nan)
    lo, hi = bootstrap_task_means(table, B=B, confidence=confidence, seed=seed)

    def entry(j: int) -> dict[str, Any]:
        return {"mean": _opt(means[j]), "lo": _opt(lo[j]), "hi": _opt(hi[j]),
                "n_tasks": int(n_def[j])}

    pass1: dict[str, Any] = (entry(0) if T else
                             {"mean": None, "lo": None, "hi": None, "n_tasks": 0})
    pass1["clustered_se"] = None
    pass1["n_clusters"] = None
    if clusters is not None:
        labels = [clusters[i] for i in keep]
        pass1["n_clusters"] = len(set(labels))
        if T:
            pass1["clustered_se"] = _opt(clustered_se(table[:, 0], labels))

    flip = entry(2 * K) if T else {"mean": None, "lo": None, "hi": None, "n_tasks": 0}
    return {
        "n_tasks": T,
        "n_tasks_without_trials": len(pairs) - T,
        "trials_min": min((n for n, _ in valid), default=None),
        "trials_max": K if T else None,
        "confidence": float(confidence),
        "bootstrap_B": int(B),
        "pass@1": pass1,
        "pass^k": [{"k": k, **entry(k - 1)} for k in range(1, K + 1)],
        "pass@k": [{"k": k, **entry(K + k - 1)} for k in range(1, K + 1)],
        "flip": flip,
    }


# ---------------------------------------------------------------------------------------
# Consistency of end states, trajectories and resources
# ---------------------------------------------------------------------------------------


def end_state_agreement(hashes: Sequence[str]) -> dict[str, Any]:
    """Number of distinct final-state hashes and the share of the most common one; catches
    "a different wrong answer every run", which pass/fail alone hides. top_share is None
    for no hashes."""
    counter = Counter(hashes)
    total = sum(counter.values())
    if total == 0:
        return {"distinct": 0, "top_share": None}
    return {"distinct": len(counter), "top_share": counter.most_common(1)[0][1] / total}


def normalized_edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Levenshtein distance between two action sequences divided by the longer length, in
    [0, 1]; 0 if both are empty. Items are compared by equality: they are mapped to dense
    integer ids first, so rapidfuzz never relies on (possibly colliding) hash values and a
    ``str`` item is one action, not a sequence of characters."""
    la, lb = len(a), len(b)
    if la == 0 and lb == 0:
        return 0.0
    ids: dict[Hashable, int] = {}
    ia = [ids.setdefault(x, len(ids)) for x in a]
    ib = [ids.setdefault(x, len(ids)) for x in b]
    return Levenshtein.distance(ia, ib) / max(la, lb)


MAX_DISTINCT_COMPARED = 2000  # distinct sequences compared exactly; beyond, a seeded sample of the trials
_ROWS_AT_ONCE = 250  # rows of the distinct × distinct distance matrix formed at once (4 MB at the cap)


def trajectory_consistency(seqs: Sequence[Sequence[Hashable]], *, seed: int = 0, ids: bool = False) -> float | None:
    """Mean pairwise normalized edit distance over all pairs of trials (0 = identical
    action sequences; higher = less consistent). None with fewer than 2 sequences. Apply
    separately to successful and to failed trials.

    The figure depends only on the multiset of sequences, never on the trials' order (logs
    interleaved, resumed or imported give the same figure): the work is on the distinct
    sequences, sorted canonically, with their counts. Exact while there are at most
    MAX_DISTINCT_COMPARED distinct sequences (each distinct pair once, weighted by the trial
    pairs it stands for). Beyond, the same mean over the pairs of a seeded uniform sample,
    without replacement, of MAX_DISTINCT_COMPARED of the trials, drawn as a multivariate
    hypergeometric over the sorted distinct sequences' counts: an unbiased estimate of the
    all-pairs mean (a U-statistic of a subsample), in bounded memory and time however many
    trials a task has (all-pairs over 27,780 distinct trials would be 6 GB). With `ids`, the
    items are already small non-negative ints (key ids: the report's), compared as they are."""
    if len(seqs) < 2:
        return None
    groups = Counter(map(tuple, seqs))
    distinct = _canonical_order(list(groups))
    weights = np.array([groups[g] for g in distinct], dtype=np.int64)
    if len(distinct) > MAX_DISTINCT_COMPARED:
        take = np.random.default_rng(seed).multivariate_hypergeometric(weights, MAX_DISTINCT_COMPARED)
        kept = np.flatnonzero(take)
        distinct, weights = [distinct[i] for i in kept.tolist()], take[kept]
    if len(distinct) < 2:
        return 0.0
    if not ids:  # items mapped to dense integer ids, as in normalized_edit_distance
        dense: dict[Hashable, int] = {}
        distinct = [tuple(dense.setdefault(x, len(dense)) for x in g) for g in distinct]
    return _weighted_pair_mean(distinct, weights.astype(np.float64))


def _canonical_order(distinct: list[tuple[Hashable, ...]]) -> list[tuple[Hashable, ...]]:
    """The distinct sequences in an order that depends on their content only: sorted, or
    sorted by repr when the items do not compare (mixed types)."""
    try:
        return sorted(distinct)
    except TypeError:
        return sorted(distinct, key=repr)


def _weighted_pair_mean(distinct: list[tuple[Hashable, ...]], weights: np.ndarray) -> float:
    """Mean distance over the trial pairs of distinct sequences with these counts (identical
    pairs contribute 0), by rapidfuzz's cdist a block of rows at a time (upper triangle)."""
    total = 0.0
    for a in range(0, len(distinct), _ROWS_AT_ONCE):
        b = min(len(distinct), a + _ROWS_AT_ONCE)
        dist = process.cdist(distinct[a:b], distinct[a:], scorer=Levenshtein.normalized_distance, dtype=np.float64)
        pair_weights = np.triu(np.outer(weights[a:b], weights[a:]), k=1)
        total += float((pair_weights * dist).sum())
    n = float(weights.sum())
    return total / (n * (n - 1) / 2)


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), q_(i) = min_{j ≥ i} m p_(j) / j:
    scipy's implementation, which also accepts an empty list here."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.size == 0:
        return p.copy()
    return stats.false_discovery_control(p, method="bh")


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """sd (ddof=1) / mean. For cost, tokens, steps and latency only -- never for pass/fail
    outcomes, where it is just sqrt((1-p)/p) and makes weak agents look "inconsistent" (use
    flip_probability instead). None with fewer than 2 values or a zero mean."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 2:
        return None
    m = float(x.mean())
    if m == 0.0:
        return None
    return float(x.std(ddof=1) / m)
