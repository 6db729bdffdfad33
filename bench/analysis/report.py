"""`trajbench report`: every figure recomputed from the run directory alone.

The JSON form (`--json`) follows bench/schemas/report.schema.json; the terminal form is a
rendering of the same dict (`bench.publish.text.render_report`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from bench.adapters.spec import is_simulated
from bench.analysis import metrics
from bench.analysis.divergence.keys import KeyedRun, TaskRows, TrialTable, read_keyed
from bench.analysis.divergence.options import DivergenceOptions
from bench.analysis.divergence.section import divergence_section
from bench.analysis.replays import arm_rows, causal_section, original_of, replay_info
from bench.analysis.replays import expected_trials as replay_expected
from bench.analysis.stopping import sequential_section
from bench.runs.rundir import RunLog, TrialSummary, gc_paused, is_valid, read_manifest, read_run, variant_family
from bench.world.variants import BASE

REPORT_VERSION = 1


def _task_row(task_id: str, trials: list[TrialSummary], run: KeyedRun, k: int) -> dict[str, Any]:
    """One task's headline row, its valid trials' fields gathered in one pass over them."""
    ok: list[Sequence[int]] = []  # tool calls as key ids (equal calls, equal ids), per outcome
    bad: list[Sequence[int]] = []
    hashes, steps, reached = [], [], []
    failed_checks: Counter[str] = Counter()
    true_p = None
    for t in trials:
        if not is_valid(t):
            continue
        (ok if t["outcome"] == "success" else bad).append(run.actions(t))
        failed_checks.update(name for name, chk in t.get("checks", {}).items() if not chk["passed"])
        hashes.append(t["final_state_hash"])
        steps.append(t["steps"])
        reached.append(t.get("milestones", {}))
        if len(hashes) == 1:
            true_p = t.get("agent_info", {}).get("sim", {}).get("true_p")
    n, c = len(hashes), len(ok)
    row: dict[str, Any] = {
        "task": task_id, "n": n, "successes": c, "errors": len(trials) - n,
        "pass@1": c / n if n else None,
        "pass@1_interval": list(metrics.wilson_interval(c, n)) if n else None,
        "pass^k": metrics.pass_hat_k(n, c, k) if n >= k else None,
        "flip": metrics.flip_probability(n, c) if n >= 2 else None,
        "end_states": metrics.end_state_agreement(hashes) if n else None,
        "mean_steps": float(np.mean(steps)) if n else None,
        "trajectory_distance": {"success": metrics.trajectory_consistency(ok, ids=True),
                                "failure": metrics.trajectory_consistency(bad, ids=True)},
        "failed_checks": dict(failed_checks.most_common()),
        "milestones": _milestone_shares(reached),
    }
    if true_p is not None:
        row["true_p"] = true_p
    return row


def _milestone_shares(reached: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Share of the task's valid trials (their summaries' `milestones`) that reached each milestone."""
    names = {name for r in reached for name in r}
    return {name: sum(r.get(name) is not None for r in reached) / len(reached) for name in sorted(names)}


RESOURCE_FIELDS = ("steps", "duration_s", "input_tokens", "output_tokens", "cost")


def _task_cvs(trials: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """One task's within-task coefficient of variation of each resource (valid trials)."""
    valid = [t for t in trials if is_valid(t)]
    return {field: metrics.coefficient_of_variation([t.get(field) or 0 for t in valid]) for field in RESOURCE_FIELDS}


def _resource_cv(per_task: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Mean over tasks of the within-task coefficient of variation (tasks differ in length, so a
    pooled CV would measure the suite's mix, not the agent's consistency)."""
    out: dict[str, float | None] = {}
    for field in RESOURCE_FIELDS:
        defined = [v for v in (cvs[field] for cvs in per_task) if v is not None]
        out[field] = float(np.mean(defined)) if defined else None
    return out


def task_rows(run: KeyedRun) -> tuple[list[dict[str, Any]], list[dict[str, float | None]]]:
    """The headline rows (the unperturbed input; errors reported, not scored) and each task's
    resource CVs, one task's summaries in memory at a time. The divergence analysis reads the
    same summaries' valid trials: unless it pools the input variants, its `TrialTable` is
    collected on the way, so each summary is read once per report."""
    k = int(run.log.manifest["k"])
    rows, cvs = [], []
    collect = not run.options.pool_variants and False not in run.tables
    found: dict[str, TaskRows] = {}
    for task_id, trials in run.log.by_task(base_only=True):
        rows.append(_task_row(task_id, trials, run, k))
        cvs.append(_task_cvs(trials))
        valid = [t for t in trials if is_valid(t)] if collect else []
        if valid:
            found[task_id] = TaskRows.of(task_id, valid, run.keyer.attempts)
    if collect:  # in the order the analysis walks its tasks (`RunLog.by_task` of the valid trials)
        run.tables[False] = TrialTable([found[t] for t in run.log.task_ids(base_only=True, valid_only=True)])
    return rows, cvs


@gc_paused()  # a large run's summaries and keys are millions of objects the collector need not rescan
def build_report(run_dir: str | Path, *, bootstrap: int = 2000, seed: int = 0,
                 divergence: DivergenceOptions | None = None, replays: Sequence[str | Path] = (),
                 index: bool = True) -> dict[str, Any]:
    """With `index`, the run is read through its verified index (bench.runs.runindex); without, from
    the log alone (`verify`). The same report either way."""
    if replay_info(read_manifest(Path(run_dir)), Path(run_dir)) is not None:
        return replay_report(run_dir)
    run = read_keyed(run_dir, divergence, index=index)  # the index's columns, or one pass over the log
    log = run.log
    manifest = log.manifest
    k = int(manifest["k"])
    rows, cvs = task_rows(run)
    counts = [(r["n"], r["successes"]) for r in rows]
    suite = metrics.suite_summary(counts, B=bootstrap, seed=seed)
    expected = len(log.summaries) if manifest.get("perturbations") else len(manifest.get("tasks", [])) * k
    sequential = sequential_section(log)
    if sequential is not None:  # a sequential design: each task's trials are the design's, not k
        expected = sequential["expected_trials"]
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "run": _run_section(run_dir, manifest),
        "completeness": _completeness(log, expected, sum(r["errors"] for r in rows)),
        "suite": suite,
        "trajectory_distance": _mean_distances(rows),
        "end_state_agreement": _mean_of(rows, lambda r: r["end_states"]["top_share"] if r["end_states"] else None),
        "resource_cv": _resource_cv(cvs),
        "tasks": rows,
    }
    if sequential is not None:
        report["sequential"] = sequential
    if report["run"]["agent"]["simulated"]:
        report["simulated_truth"] = _sim_truth(rows, k)
    if manifest.get("perturbations"):
        report["variants"] = variants_section(log, k, bootstrap, seed)
    report["divergence"] = divergence_section(run)
    report["causal"] = causal_section(run_dir, replays)  # bench.analysis.replays: the run's replays' verdicts
    return report


def _run_section(run_dir: str | Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    agent = manifest["agent"]
    return {"dir": str(run_dir), "run_id": manifest["run_id"], "harness_version": manifest.get("harness_version"),
            "suite": manifest["suite"], "agent": {**agent, "simulated": is_simulated(agent.get("adapter"))},
            "k": int(manifest["k"]), "base_seed": manifest.get("base_seed")}


def _completeness(log: RunLog, expected: int, errors: int) -> dict[str, Any]:
    return {"expected_trials": expected, "finished_trials": len(log.summaries), "error_trials": errors,
            "orphan_attempts": log.orphan_attempts, "torn_bytes": log.torn_bytes,
            "duplicate_summaries": log.duplicate_summaries}


def replay_report(run_dir: str | Path) -> dict[str, Any]:
    """The report of a replay directory: its arms, each apart, and its causal verdict. Its
    continuations are m per arm from one node (the node itself, forced alternatives, no-return
    prefixes), so pass^k over them pooled, a simulated agent's "known truth" or a divergence
    analysis of them would mix arms that differ by design: none is computed."""
    log = read_run(run_dir)
    info = replay_info(log.manifest, log.path) or {}
    errors = sum(1 for s in log.summaries.values() if s.get("outcome") == "error")
    return {"report_version": REPORT_VERSION, "run": _run_section(run_dir, log.manifest),
            "completeness": _completeness(log, replay_expected(log.manifest, log.path) or 0, errors),
            "replay": {"original": str(original_of(log.path, info)), "task": info["task"], "at": info["at"],
                       "node": info["node"], "m": info["m"], "arms": arm_rows(log)},
            "causal": causal_section(run_dir)}


def _family_counts(log: RunLog) -> dict[str, dict[str, tuple[int, int]]]:
    """family -> task -> (valid trials, successes), pooling the family's variants of a task."""
    counts: dict[str, dict[str, list[int]]] = {}
    for _, trials in log.by_task(base_only=False, valid_only=True):
        for s in trials:
            cell = counts.setdefault(variant_family(s), {}).setdefault(s["task"], [0, 0])
            cell[0] += 1
            cell[1] += s["outcome"] == "success"
    return {f: {t: (n, c) for t, (n, c) in tasks.items()} for f, tasks in counts.items()}


def _paired(values: np.ndarray, bootstrap: int, seed: int) -> dict[str, Any]:
    lo, hi = metrics.bootstrap_task_means(values, B=bootstrap, seed=seed) if len(values) else (None, None)
    return {"mean": float(values.mean()) if len(values) else None, "lo": lo, "hi": hi, "n_tasks": int(len(values))}


def variants_section(log: RunLog, k: int, bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Input variance, per perturbation family: pass@1 and pass^k, the paired change against
    the unperturbed input on the same tasks (interval from a bootstrap over tasks), the same-input
    flip rate beside it (the noise floor), and HAL's accuracy ratio."""
    counts = _family_counts(log)
    base = counts.get(BASE, {})
    families = []
    for family, per_task in counts.items():
        if family == BASE:
            continue
        shared = sorted(t for t in per_task if t in base and base[t][0] and per_task[t][0])
        d1 = np.array([per_task[t][1] / per_task[t][0] - base[t][1] / base[t][0] for t in shared])
        dk_tasks = [t for t in shared if per_task[t][0] >= k and base[t][0] >= k]
        dk = np.array([metrics.pass_hat_k(*per_task[t], k) - metrics.pass_hat_k(*base[t], k) for t in dk_tasks])
        flips = [metrics.flip_probability(*base[t]) for t in shared if base[t][0] >= 2]
        summary = metrics.suite_summary([per_task[t] for t in shared], B=bootstrap, seed=seed)
        base_p1 = float(np.mean([base[t][1] / base[t][0] for t in shared])) if shared else None
        delta = _paired(d1, bootstrap, seed)
        verdict = "within noise"
        if delta["hi"] is not None and delta["hi"] < 0:
            verdict = "worse"
        elif delta["lo"] is not None and delta["lo"] > 0:
            verdict = "better"
        families.append({
            "family": family,
            "n_tasks": len(shared),
            "pass@1": summary["pass@1"],
            "pass^k": next((e for e in summary["pass^k"] if e["k"] == k), None),
            "delta_pass@1": delta,
            "delta_pass^k": _paired(dk, bootstrap, seed),
            "noise_floor_flip": float(np.mean(flips)) if flips else None,
            "hal_ratio": (summary["pass@1"]["mean"] / base_p1) if base_p1 else None,
            "verdict": verdict,
        })
    return {"k": k, "families": sorted(families, key=lambda f: f["family"])}


def _mean_of(rows: list[dict[str, Any]], get: Any) -> float | None:
    values = [v for v in (get(r) for r in rows) if v is not None]
    return float(np.mean(values)) if values else None


def _mean_distances(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    return {kind: _mean_of(rows, lambda r, kind=kind: r["trajectory_distance"][kind]) for kind in ("success", "failure")}


def _sim_truth(rows: list[dict[str, Any]], k: int) -> dict[str, Any] | None:
    """For simulated agents the true success probabilities are known: show them beside the
    estimates so that a reader can see the estimators at work."""
    ps = [r["true_p"] for r in rows if "true_p" in r]
    if len(ps) != len(rows) or not ps:
        return None
    p = np.array(ps)
    return {"pass@1": float(p.mean()), "pass^k": [{"k": j, "value": float((p ** j).mean())} for j in range(1, k + 1)]}
