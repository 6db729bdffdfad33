"""Exact tests on small tables of successes, shared by the divergence analysis and the diff.

- `exact_test`: the conditional exact test of an r × 2 table (alternatives × outcome) with fixed
  margins — Fisher's two-sided test for two rows, the Freeman–Halton extension by full
  enumeration beyond, a seeded Monte-Carlo permutation test when there are too many tables.
  It also gives the smallest p-value the margins allow (for Tarone's screening).
- `boschloo_test`: Boschloo's unconditional test for two rows, two-sided (more powerful than
  Fisher's at small k), with its smallest attainable p-value.
- `boschloo_regression_p`: the one-sided Boschloo test of a task's drop between two runs.
- `information_gain` and `binary_entropy`: how much a split tells about the outcome.

The p-values are cached per table: a suite's nodes and tasks repeat the same small tables.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import stats
from scipy.special import gammaln

from bench.canonical import derive_seed

_LOG1P_TOL = math.log1p(1e-7)  # scipy's relative tolerance for "as or less likely" tables
_ENUM_LIMIT = 200_000  # largest number of tables enumerated exactly; beyond: permutations


def binary_entropy(p: np.ndarray | float) -> np.ndarray:
    """Binary entropy in bits (0 at p = 0 or 1)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.where((p <= 0) | (p >= 1), 0.0, out)


def information_gain(n: int, s: int, children: Sequence[tuple[int, int]], smoothed: bool = True) -> float:
    """IG of splitting a node (n trials, s successes) into children [(n_u, s_u), ...]:
    h(V(v)) − Σ (n_u/n) h(V(u)), with V = (S+1)/(N+2) when `smoothed`, else S/N (then IG is
    the empirical mutual information between outcome and child, ≥ 0)."""
    est = (lambda a, b: (b + 1) / (a + 2)) if smoothed else (lambda a, b: b / a)
    total = float(binary_entropy(est(n, s)))
    for nu, su in children:
        total -= nu / n * float(binary_entropy(est(nu, su)))
    return total


def _log_comb(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


_LOG_FACT = np.array([math.lgamma(i + 1) for i in range(4097)])


def _log_comb_row(n: int) -> np.ndarray:
    """log C(n, x) for x = 0..n."""
    if n < _LOG_FACT.size:
        return _LOG_FACT[n] - _LOG_FACT[: n + 1] - _LOG_FACT[n::-1]
    x = np.arange(n + 1, dtype=np.float64)
    return _log_comb(np.float64(n), x)


def _enumerate_log_weights(sizes: tuple[int, ...], total: int) -> np.ndarray | None:
    """log Π C(n_i, x_i) for every table with Σ x_i = total, 0 ≤ x_i ≤ n_i (None if there
    are more than _ENUM_LIMIT partial tables). The partial tables are extended in blocks of
    `_BLOCK` cells, and the last child's count is the one the total leaves, so memory stays
    a few MB at any number of trials (a node of 2,778 trials in three children held 1.1 GB
    when every partial table met every count of the last child at once)."""
    sizes = tuple(sorted(sizes, reverse=True))  # big children first: fewer partial tables
    cap_after = [sum(sizes[i + 1:]) for i in range(len(sizes))]  # room left in later children
    sums = np.zeros(1, dtype=np.int64)
    logw = np.zeros(1)
    for i, n in enumerate(sizes[:-1]):
        lc = _log_comb_row(n)
        x = np.arange(n + 1)
        kept_s, kept_w, count = [], [], 0
        step = max(1, _BLOCK // (n + 1))
        for lo in range(0, sums.size, step):  # in order: the tables come out as one outer product would give them
            new_s = (sums[lo:lo + step, None] + x[None, :]).ravel()
            keep = (new_s <= total) & (new_s + cap_after[i] >= total)
            count += int(keep.sum())
            if count > _ENUM_LIMIT:
                return None
            kept_w.append((logw[lo:lo + step, None] + lc[None, :]).ravel()[keep])
            kept_s.append(new_s[keep])
        sums, logw = np.concatenate(kept_s), np.concatenate(kept_w)
    last = total - sums  # the last child takes what is left: exactly one count per partial table
    keep = (last >= 0) & (last <= sizes[-1])
    if int(keep.sum()) > _ENUM_LIMIT:
        return None
    return logw[keep] + _log_comb_row(sizes[-1])[last[keep]]


_BLOCK = 1 << 20  # cells of a partial-table block in `_enumerate_log_weights` (8 MB of int64)


@lru_cache(maxsize=200_000)
def _exact_cached(table: tuple[tuple[int, int], ...], permutations: int, seed: int) -> tuple[float, float | None, str]:
    sizes = tuple(n for n, _ in table)
    succ = tuple(s for _, s in table)
    N, S = sum(sizes), sum(succ)
    if S == 0 or S == N or len(sizes) < 2:
        return 1.0, 1.0, "trivial"
    lognorm = float(_log_comb(np.float64(N), np.float64(S)))
    obs = float(np.sum(_log_comb(np.array(sizes, float), np.array(succ, float))))
    if len(sizes) == 2:  # the hypergeometric support directly
        n1, n2 = sizes
        lo, hi = max(0, S - n2), min(n1, S)
        logw = _log_comb_row(n1)[lo:hi + 1] + _log_comb_row(n2)[S - hi:S - lo + 1][::-1]
    else:
        logw = _enumerate_log_weights(sizes, S)
    if logw is not None:
        logp = logw - lognorm
        prob = np.exp(logp)
        p = float(min(1.0, prob[logp <= obs - lognorm + _LOG1P_TOL].sum()))
        pmin = float(min(1.0, prob[logp <= logp.min() + _LOG1P_TOL].sum()))
        return p, pmin, "fisher" if len(sizes) == 2 else "exact"
    # Monte Carlo: random tables with the same margins (a permutation of the outcomes),
    # drawn child by child from the hypergeometric; statistic = the table's probability.
    rng = np.random.default_rng(derive_seed("divergence-permutation", seed, table))
    good = np.full(permutations, S, dtype=np.int64)
    left = N
    logw_sim = np.zeros(permutations)
    for n in sizes[:-1]:
        bad = left - good
        x = rng.hypergeometric(np.maximum(good, 0), np.maximum(bad, 0), n) if n > 0 else np.zeros(permutations, np.int64)
        logw_sim += _log_comb(np.float64(n), x.astype(np.float64))
        good = good - x
        left -= n
    logw_sim += _log_comb(np.float64(sizes[-1]), good.astype(np.float64))
    hits = int(np.sum(logw_sim <= obs + _LOG1P_TOL))
    return (1 + hits) / (permutations + 1), None, "permutation"


def exact_test(sizes: Sequence[int] | np.ndarray, successes: Sequence[int] | np.ndarray, *, permutations: int = 10_000,
               seed: int = 0) -> tuple[float, float | None, str]:
    """Conditional exact test of independence between alternative and outcome (an r × 2 table
    with fixed margins). Returns (p-value, smallest p-value attainable with these margins or
    None when unknown, method). The p-value sums the probabilities of all tables as or less
    likely than the observed one (Fisher's two-sided test for r = 2; Freeman–Halton for r > 2),
    by full enumeration when there are at most 200k tables, else a seeded Monte-Carlo
    permutation test, (1 + hits)/(B + 1)."""
    table = tuple(sorted(zip((int(n) for n in sizes), (int(s) for s in successes))))
    return _exact_cached(table, int(permutations), int(seed))


_PI_GRID = np.linspace(0.0, 1.0, 401)[1:-1]
_LOG_PI, _LOG_1MPI = np.log(_PI_GRID), np.log1p(-_PI_GRID)


@lru_cache(maxsize=512)
def _bernstein_basis(N: int) -> np.ndarray:
    """π^j (1−π)^(N−j) on the coarse grid of π (rows) for j = 0..N (columns)."""
    j = np.arange(N + 1)
    return np.exp(j[None, :] * _LOG_PI[:, None] + (N - j)[None, :] * _LOG_1MPI[:, None])


@lru_cache(maxsize=2048)
def _boschloo_space(n1: int, n2: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For groups of n1 and n2 trials: every table's one-sided Fisher p-values ('less' for
    group 1's successes, 'greater'), the binomial weights C(n1,x1)·C(n2,x2), and x1 + x2."""
    x1 = np.arange(n1 + 1)[:, None]
    x2 = np.arange(n2 + 1)[None, :]
    k = x1 + x2
    N = n1 + n2
    less = stats.hypergeom.cdf(x1, N, k, n1)
    greater = stats.hypergeom.cdf(x2, N, k, n2)
    logw = _log_comb(np.float64(n1), x1.astype(float)) + _log_comb(np.float64(n2), x2.astype(float))
    return less, greater, logw, k


def _log_bernstein(logc: np.ndarray, j: np.ndarray, N: int, pi: np.ndarray) -> np.ndarray:
    """log Σ_j c_j π^j (1−π)^(N−j) for each π (0 < π < 1)."""
    terms = logc[None, :] + j[None, :] * np.log(pi)[:, None] + (N - j)[None, :] * np.log1p(-pi)[:, None]
    m = terms.max(axis=1)
    return m + np.log(np.exp(terms - m[:, None]).sum(axis=1))


def _sup_over_pi(mask: np.ndarray, logw: np.ndarray, k: np.ndarray, N: int) -> float:
    """sup over π of P(the table falls in `mask`) when both groups are Binomial(n, π):
    P(π) = Σ_j c_j π^j (1−π)^(N−j), c_j = Σ_{x1+x2=j, mask} C(n1,x1) C(n2,x2). Evaluated on a
    grid of 399 values of π, then twice on a 65-point grid around the best (resolution ~1e-7;
    P is a smooth polynomial, so the sup is found to ~1e-12 relative)."""
    if not mask.any():
        return 0.0
    lw = logw[mask]
    top = lw.max()
    c = np.bincount(k[mask], weights=np.exp(lw - top), minlength=N + 1)
    j = np.flatnonzero(c > 0)
    logc = np.log(c[j]) + top
    best = -np.inf
    if c[0] > 0:  # π → 0 and π → 1: the all-failure / all-success tables alone
        best = max(best, float(np.log(c[0]) + top))
    if c[N] > 0:
        best = max(best, float(np.log(c[N]) + top))
    with np.errstate(divide="ignore"):
        values = np.log(_bernstein_basis(N)[:, j] @ np.exp(logc - top)) + top
    grid = _PI_GRID
    for step in range(3):
        if step:
            values = _log_bernstein(logc, j, N, grid)
        i = int(np.argmax(values))
        best = max(best, float(values[i]))
        lo = grid[i - 1] if i > 0 else grid[i] / 2
        hi = grid[i + 1] if i + 1 < grid.size else (1 + grid[i]) / 2
        grid = np.linspace(lo, hi, 65)
    return float(min(1.0, np.exp(best)))


@lru_cache(maxsize=200_000)
def _boschloo_cached(n1: int, s1: int, n2: int, s2: int) -> float:
    less, greater, logw, k = _boschloo_space(n1, n2)
    N = n1 + n2
    p_less = _sup_over_pi(less <= less[s1, s2] * (1 + 1e-13), logw, k, N)
    p_greater = _sup_over_pi(greater <= greater[s1, s2] * (1 + 1e-13), logw, k, N)
    return float(min(1.0, 2 * min(p_less, p_greater)))


def boschloo_test(sizes: Sequence[int] | np.ndarray, successes: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """Boschloo's exact unconditional test for two alternatives, two-sided as in scipy
    (twice the smaller one-sided p-value; the nuisance success rate is maximised over a grid
    of 399 values plus a local refinement, instead of scipy's 32-point shgo). Returns
    (p-value, smallest p-value attainable with the same group sizes and total successes)."""
    (n1, n2), (s1, s2) = (int(sizes[0]), int(sizes[1])), (int(successes[0]), int(successes[1]))
    if (n1, s1) > (n2, s2):
        n1, s1, n2, s2 = n2, s2, n1, s1
    S = s1 + s2
    p = _boschloo_cached(n1, s1, n2, s2)
    pmin = min(_boschloo_cached(n1, a, n2, S - a) for a in {min(n1, S), max(0, S - n2)})
    return p, pmin


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
