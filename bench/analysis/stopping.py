"""The stopping rules of `trajbench run --k-max N --until TARGET`, and what a sequential run reports.

`bench.runs.design` owns the rounds (`walk`); the rules that decide which tasks stop live here,
built from the anytime-valid statistics of `bench.analysis.sequential`, so that the runner, the
report and `trajbench verify` all use the same rule on the same outcomes:

* ``task:W`` — a task stops once its own (1 − α) confidence sequence for pass@1 is narrower
  than W (`task_settled` at half-width W/2).
* ``pass1:W`` — every task stops once the suite's pass@1 interval (`suite_pass1_cs`, union bound
  over tasks) has half-width ≤ W; before that, a task stops once its own level-α/T sequence has
  half-width ≤ W (it already pulls the suite's mean half-width below W).
* ``gate`` — every task stops once the paired sequential gate (`paired_gate`) against the
  baseline says "regressed"; a task also stops when the baseline has no further trial to pair.

Each rule sees only a task's trials below the round's n (the runner's `walk` guarantees it),
and is a deterministic function of them, so a resumed run takes the same decisions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from bench.analysis.metrics import pass_hat_k
from bench.analysis.sequential import PairedGate, paired_gate, rate_cs, suite_pass1_cs, task_settled
from bench.errors import BenchError
from bench.runs.design import Design, StopRule, outcomes_of, walk
from bench.runs.rundir import Manifest, RunLog, read_run

PASS_K_ESTIMATOR = ("the headline pass@1 and pass^k use all of each task's trials (C(c,k)/C(n_t,k), k ≤ -k); the "
                    "stopping rule makes those lean towards 0 and 1; `unbiased_pass^k` uses each task's first -k "
                    "trials only (run before any decision, so unbiased); the anytime-valid intervals hold whatever "
                    "the stopping rule (docs/sequential.md)")


def counts(rows: Mapping[str, Sequence[str | None]]) -> dict[str, tuple[int, int]]:
    """task -> (successes, valid trials) of each task's outcomes."""
    return {t: (sum(o == "success" for o in row), sum(o in ("success", "failure") for o in row)) for t, row in rows.items()}


def build_rule(design: Design, baseline: Mapping[str, Sequence[str]] | None = None) -> StopRule:
    """The design's stopping rule; `baseline` (outcomes by task and index) for until=gate."""
    target, width = design.target
    alpha = design.alpha
    if target == "task":
        assert width is not None
        half = width / 2

        def task_rule(seen: Mapping[str, Sequence[str]], active: Sequence[str], n: int) -> dict[str, str]:
            c = counts({t: seen[t] for t in active})
            return {t: f"settled: interval narrower than {width}" for t in active if task_settled(*c[t], half, alpha)}

        return task_rule
    if target == "pass1":
        assert width is not None
        w = width

        def suite_rule(seen: Mapping[str, Sequence[str]], active: Sequence[str], n: int) -> dict[str, str]:
            c = counts(seen)
            lo, hi = suite_pass1_cs(list(c.values()), alpha)
            if (hi - lo) / 2 <= w:
                return {t: f"suite pass@1 half-width ≤ {w}" for t in active}
            level = alpha / len(c)
            return {t: f"task half-width ≤ {w} at level α/T" for t in active if _half_width(*c[t], level) <= w}

        return suite_rule
    if baseline is None:
        raise BenchError("--until gate needs the baseline run's outcomes", field="--baseline")
    base = baseline

    def gate_rule(seen: Mapping[str, Sequence[str]], active: Sequence[str], n: int) -> dict[str, str]:
        decision = paired_gate({t: list(base.get(t, [])) for t in seen}, {t: list(r) for t, r in seen.items()}, alpha)
        if decision.outcome == "regressed":
            return {t: "gate: regressed" for t in active}
        return {t: "baseline has no more trials to pair" for t in active if n >= len(base.get(t, []))}

    return gate_rule


def _half_width(successes: int, n: int, alpha: float) -> float:
    lo, hi = rate_cs(successes, n, alpha)
    return (hi - lo) / 2


def baseline_outcomes(design: Design) -> dict[str, list[str]] | None:
    """The recorded baseline's outcomes by task and index (until=gate), from its directory."""
    if design.target[0] != "gate":
        return None
    info = design.baseline or {}
    path = Path(str(info.get("dir")))
    log = read_run(path)
    if info.get("run_id") and log.manifest["run_id"] != info["run_id"]:
        raise BenchError(f"the baseline directory now holds another run ({log.manifest['run_id']}, the design "
                         f"recorded {info['run_id']})", file=str(path / "run.json"), field="design.baseline")
    return {t: [str(o) for o in row] for t, row in outcomes_of(log.summaries.values()).items()}


def design_of(manifest: Manifest) -> Design | None:
    data = manifest.get("design")
    return None if data is None else Design.from_dict(data)


def recompute(log: RunLog, outcomes: Mapping[str, Sequence[str | None]] | None = None) -> dict[str, Any] | None:
    """The design's progress recomputed from the log's outcomes (or the given ones, e.g. replayed),
    as `walk` gives it, for verify and report; None for a fixed-k run."""
    design = design_of(log.manifest)
    if design is None:
        return None
    rule = build_rule(design, baseline_outcomes(design))
    rows = outcomes if outcomes is not None else outcomes_of(log.summaries.values())
    return walk(design, rule, list(log.manifest.get("tasks") or []), rows).as_dict()


def sequential_section(log: RunLog) -> dict[str, Any] | None:
    """What `trajbench report` adds for a sequential run: the recorded design, the anytime-valid
    suite pass@1 interval, the spread of trials per task, and the pass^k estimates that stay
    unbiased under the stopping rule: those of each task's first k_min trials, which every task
    gets before any decision is taken, so no stopping rule can touch them."""
    design = design_of(log.manifest)
    if design is None:
        return None
    recorded = log.manifest.get("design") or {}
    rows = outcomes_of(log.summaries.values())
    all_counts = [c for c in counts(rows).values() if c[1] > 0]
    first = counts({t: row[:design.k_min] for t, row in rows.items()})
    lo, hi = suite_pass1_cs(all_counts, design.alpha) if all_counts else (None, None)
    per_task = list((recorded.get("per_task_n") or {}).values())
    return {
        "design": {k: recorded.get(k) for k in ("k_min", "k_max", "until", "alpha", "round_size", "schedule", "baseline")},
        "rounds": recorded.get("rounds") or [],
        "finished": bool(recorded.get("finished")),
        "trials_per_task": {"min": min(per_task, default=0), "max": max(per_task, default=0),
                            "mean": sum(per_task) / len(per_task) if per_task else 0.0},
        "expected_trials": sum(per_task),
        "fixed_k_trials": design.k_max * len(per_task),
        "suite_pass@1_cs": {"lo": lo, "hi": hi, "level": 1 - design.alpha},
        "unbiased_pass^k": _first_trials_curve(list(first.values()), design.k_min),
        "pass^k_estimator": PASS_K_ESTIMATOR,
    }


def _first_trials_curve(first: list[tuple[int, int]], k_min: int) -> list[dict[str, Any]]:
    """pass^j for j = 1..k_min from each task's first k_min trials: mean over tasks of
    C(c, j)/C(n, j), unbiased because n (k_min, less infrastructure errors) was fixed in advance."""
    out = []
    for j in range(1, k_min + 1):
        values = [pass_hat_k(n, c, j) for c, n in first if n >= j]
        out.append({"k": j, "value": sum(values) / len(values) if values else None, "n_tasks": len(values)})
    return out


def sequential_diff(base: RunLog, cand: RunLog, alpha: float) -> dict[str, Any]:
    """The sequential gate of `trajbench diff --sequential`: regressed (exit 1), not yet decided
    (exit 3: the candidate can still get trials: an unfinished design or run), or no regression
    detected within the candidate's budget (exit 0)."""
    a = outcomes_of(base.summaries.values())
    b = outcomes_of(cand.summaries.values())
    decision: PairedGate = paired_gate({t: [str(o) for o in r] for t, r in a.items()},
                                       {t: [str(o) for o in r] for t, r in b.items()}, alpha)
    budget_left = _budget_left(cand)
    if decision.outcome == "regressed":
        verdict, code = "regressed", 1
    elif budget_left:
        verdict, code = "not yet decided", 3
    else:
        verdict, code = "no regression detected", 0
    return {"method": "paired sign e-process (Beta mixture, H0: no task's rate below the baseline's), "
                      "valid at every look", "alpha": alpha, "outcome": verdict, "exit_code": code,
            "e_value": decision.e_value, "threshold": 1 / alpha, "pairs": decision.pairs, "better": decision.better,
            "worse": decision.worse, "extra_trials_per_task": decision.extra_trials_per_task,
            "candidate_budget_left": budget_left}


def _budget_left(log: RunLog) -> bool:
    """Can the candidate run still get trials? A design that is not finished, or a fixed-k run
    with trials missing."""
    recorded = log.manifest.get("design")
    if recorded is not None:
        return not recorded.get("finished")
    expected = len(log.manifest.get("tasks") or []) * int(log.manifest["k"])
    return len(log.base_trials()) < expected
