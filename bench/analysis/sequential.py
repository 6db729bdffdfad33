"""Anytime-valid statistics for one task's success rate: intervals and a drop test that survive peeking.

A fixed-k interval or p-value is only valid if the number of trials was fixed in advance. Once
trials are run in rounds and someone stops "when the answer is known", the error rates of those
fixed-n methods inflate. Everything here is built from Robbins' Beta-binomial mixture, a
nonnegative (super)martingale under the null, so Ville's inequality bounds the chance that it
EVER crosses 1/α by α, whatever the stopping rule (docs/sequential.md explains each figure):

* ``rate_cs`` — the confidence sequence for a Bernoulli rate p: all p0 whose mixture e-value
  ``E_n(p0) = [B(a+S, b+n−S)/B(a, b)] / [p0^S (1−p0)^(n−S)]`` is below 1/α. It covers p at
  every n simultaneously with probability ≥ 1 − α.
* ``drop_e_value`` — an e-process for H0: p ≥ p0 ("no regression from the base rate p0"): the
  same mixture restricted to q < p0. Each factor q^X (1−q)^(1−X) / p0^X (1−p0)^(1−X) has mean
  ≤ 1 under any p ≥ p0 when q < p0, so the mixture is a supermartingale under the whole null.
* ``drop_decision`` — the gate at level α: "regressed" once the e-value reaches 1/α, else
  "not yet decided", with the extra trials that would decide it if the observed rate held.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from scipy.special import betainc, betaln

_EPS = 1e-12


def _validate(successes: int, n: int, alpha: float) -> None:
    """Reject counts and levels the formulas are not defined for, in one clear message."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def log_mixture_e_value(successes: int, n: int, p0: float, a: float = 1.0, b: float = 1.0) -> float:
    """log E_n(p0) of the two-sided Beta(a, b) mixture against the point null p = p0."""
    failures = n - successes
    log_null = _xlogy(successes, p0) + _xlogy(failures, 1.0 - p0)
    return betaln(a + successes, b + failures) - betaln(a, b) - log_null


def _xlogy(x: float, y: float) -> float:
    """x·log(y) with 0·log(0) = 0, as the likelihood of zero events needs."""
    return 0.0 if x == 0 else x * math.log(y) if y > 0 else -math.inf


def _bisect(inside: float, outside: float, is_inside: Callable[[float], bool], steps: int = 60) -> float:
    """The boundary between a point known inside the set and one known outside it."""
    for _ in range(steps):
        mid = (inside + outside) / 2
        if is_inside(mid):
            inside = mid
        else:
            outside = mid
    return inside


def rate_cs(successes: int, n: int, alpha: float = 0.05, a: float = 1.0, b: float = 1.0) -> tuple[float, float]:
    """Anytime-valid (1 − α) confidence sequence for a success rate after ``successes`` of ``n``.

    The set {p0 : E_n(p0) < 1/α} is an interval around S/n because −log E_n(p0) is concave in
    p0 with its maximum at the MLE; its ends are found by bisection.
    """
    _validate(successes, n, alpha)
    threshold = math.log(1.0 / alpha)

    def inside(p: float) -> bool:
        return bool(log_mixture_e_value(successes, n, p, a, b) < threshold)

    centre = min(max(successes / n if n else 0.5, _EPS), 1 - _EPS)
    lo = 0.0 if inside(_EPS) else _bisect(centre, _EPS, inside)
    hi = 1.0 if inside(1 - _EPS) else _bisect(centre, 1 - _EPS, inside)
    return lo, hi


def log_drop_e_value(successes: int, n: int, p0: float, a: float = 1.0, b: float = 1.0) -> float:
    """log of the e-process for H0: p ≥ p0, the Beta(a, b) mixture truncated to q < p0."""
    if not 0 < p0 <= 1:
        raise ValueError(f"base rate p0 must be in (0, 1], got {p0}")
    failures = n - successes
    mass = float(betainc(a, b, p0))
    part = float(betainc(a + successes, b + failures, p0))
    if part <= 0.0:
        return -math.inf
    log_alt = betaln(a + successes, b + failures) + math.log(part) - betaln(a, b) - math.log(mass)
    return log_alt - (_xlogy(successes, p0) + _xlogy(failures, 1.0 - p0))


@dataclass(frozen=True)
class DropDecision:
    """The gate's answer at one look: "regressed" or "not yet decided", and why."""

    outcome: str
    e_value: float
    extra_trials: int | None


def drop_decision(successes: int, n: int, p0: float, alpha: float = 0.05, max_extra: int = 10_000) -> DropDecision:
    """Test H0: p ≥ p0 at level α, valid however often it is looked at.

    When undecided, ``extra_trials`` is the fewest further trials that would reach 1/α if they
    succeeded at the rate seen so far (None if that rate gives no evidence of a drop, or more
    than ``max_extra`` would be needed) — a planning figure, not a promise.
    """
    _validate(successes, n, alpha)
    threshold = math.log(1.0 / alpha)
    log_e = log_drop_e_value(successes, n, p0)
    if log_e >= threshold:
        return DropDecision("regressed", math.exp(log_e), 0)
    return DropDecision("not yet decided", math.exp(log_e), _extra_needed(successes, n, p0, threshold, max_extra))


def _extra_needed(successes: int, n: int, p0: float, threshold: float, max_extra: int) -> int | None:
    """Smallest m with the e-value ≥ 1/α after m more trials at the observed rate (doubling, then bisection)."""
    rate = (successes + 0.5) / (n + 1)
    if rate >= p0:
        return None

    def decides(m: int) -> bool:
        return log_drop_e_value(successes + round(rate * m), n + m, p0) >= threshold

    high = 1
    while not decides(high):
        high *= 2
        if high > max_extra:
            return None
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if decides(mid) else (mid, high)
    return high


def suite_pass1_cs(counts: list[tuple[int, int]], alpha: float = 0.05) -> tuple[float, float]:
    """Anytime-valid (1 − α) interval for the suite's pass@1 = mean over tasks of p_t.

    Each task gets its own sequence at level α/T (a union bound over the T tasks), so every task
    is covered at every n at once with probability ≥ 1 − α, and the mean of the ends then covers
    the mean of the rates — whatever per-task stopping rule produced the counts. Conservative
    (it ignores averaging across tasks) but needs no assumption about how tasks differ.
    """
    if not counts:
        raise ValueError("suite_pass1_cs needs at least one task's counts")
    ends = [rate_cs(s, n, alpha / len(counts)) for s, n in counts]
    return sum(lo for lo, _ in ends) / len(ends), sum(hi for _, hi in ends) / len(ends)


def task_settled(successes: int, n: int, half_width: float, alpha: float = 0.05) -> bool:
    """The per-task stopping rule of ``--until``: the task's sequence is no wider than 2·half_width."""
    lo, hi = rate_cs(successes, n, alpha)
    return (hi - lo) / 2 <= half_width


@dataclass(frozen=True)
class PairedGate:
    """The sequential regression gate over paired trials (docs/sequential.md): the candidate's
    i-th trial of a task against the baseline's i-th trial of the same task."""

    outcome: str  # "regressed" or "not yet decided"
    e_value: float
    pairs: int
    better: int  # candidate succeeded where the baseline failed
    worse: int  # candidate failed where the baseline succeeded
    extra_trials_per_task: int | None


def paired_gate(base: dict[str, list[str]], cand: dict[str, list[str]], alpha: float = 0.05) -> PairedGate:
    """Test H0 "on no task is the candidate's success rate below the baseline's" at level α,
    valid at every look and under any stopping rule.

    Per task, trial i of each run form a pair (pairs with an infrastructure error are left out).
    A pair is discordant when exactly one run succeeded; for independent Bernoulli(p_b) and
    Bernoulli(p_c) trials, P(candidate is the one that succeeded | discordant) =
    p_c(1−p_b) / (p_c(1−p_b) + p_b(1−p_c)), which is ≥ 1/2 exactly when p_c ≥ p_b. So under H0
    every discordant pair, in any order, is a "better" with probability ≥ 1/2 given the past,
    and the drop e-process of `log_drop_e_value` at p0 = 1/2 on the count of "better" pairs is
    a supermartingale: the gate's false-alarm rate is ≤ α however often it is looked at.
    ``extra_trials_per_task``: further trials per task (spread over the paired tasks, at the
    observed discordance rate) that would decide, if the observed balance held.
    """
    pairs = better = worse = 0
    tasks = 0
    for task, row in cand.items():
        other = base.get(task) or []
        counted = [(b, c) for b, c in zip(other, row) if b in _VALID and c in _VALID]
        tasks += bool(counted)
        pairs += len(counted)
        better += sum(c == "success" and b == "failure" for b, c in counted)
        worse += sum(c == "failure" and b == "success" for b, c in counted)
    decision = drop_decision(better, better + worse, 0.5, alpha)
    extra = None
    if decision.outcome == "regressed":
        extra = 0
    elif decision.extra_trials is not None and better + worse:
        extra = math.ceil(decision.extra_trials * pairs / (better + worse) / max(tasks, 1))
    return PairedGate(decision.outcome, decision.e_value, pairs, better, worse, extra)


_VALID = ("success", "failure")
