"""`trajbench diff BASE CAND`: did the candidate run get worse than the baseline, and where?

The diff of two run directories, as a JSON-ready dict (bench/schemas/diff.schema.json),
recomputed from the directories alone: the paired statistics of `bench.analysis.regression` on
the tasks both runs have valid trials for (the trials `bench.runs.rundir.RunLog.counted` counts),
the tools that changed between the runs (their schema hashes, and what the runs' overlays say),
how the mix of tool calls moved, and where each task's branch into failure moved (the
divergence analysis). Text and Markdown renderings are in `bench.publish`; the exit status is
the CLI's (`trajbench diff` exits 1 when `exit_code` is 1).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bench.adapters.spec import is_simulated
from bench.analysis.divergence.keys import read_keyed
from bench.analysis.divergence.options import DivergenceOptions
from bench.analysis.divergence.section import divergence_section
from bench.analysis.regression import (
    DEFAULT_ALPHA,
    DEFAULT_BOOTSTRAP,
    DEFAULT_PERMUTATIONS,
    PairedCounts,
    compare_counts,
)
from bench.analysis.replays import refuse_as_benchmark
from bench.analysis.stopping import sequential_diff
from bench.errors import BenchError
from bench.runs.rundir import Manifest, RunLog, is_valid, iter_trials, read_manifest, read_run, variant_family
from bench.world.variants import BASE

DIFF_VERSION = 1


# ---------------------------------------------------------------------------------------
# Run directories
# ---------------------------------------------------------------------------------------


def _counts(log: RunLog) -> dict[str, tuple[int, int, int]]:
    """task -> (valid trials, successes, infrastructure errors), on the unperturbed input."""
    out: dict[str, list[int]] = {}
    for task, trials in log.by_task(base_only=True):  # one task in memory at a time
        row = out.setdefault(task, [0, 0, 0])
        for s in trials:
            if is_valid(s):
                row[0] += 1
                row[1] += s["outcome"] == "success"
            elif s["outcome"] == "error":
                row[2] += 1
    return {t: (n, c, e) for t, (n, c, e) in out.items()}


def _renames(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Tool names the run's overlay gave (suite name -> name the agent saw)."""
    overlay = manifest.get("overlay") or {}
    return dict(overlay.get("renamed") or {})


@dataclass
class _TaskMix:
    """One task's tool calls over its valid unperturbed trials: calls per tool (the suite's own
    names), calls that got an error observation, and the number of those trials."""

    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    trials: int = 0


def _task_mixes(run_dir: Path, manifest: Manifest) -> dict[str, _TaskMix]:
    """Every task's `_TaskMix`, in one streaming pass over the log (`iter_trials`: only the
    attempts in flight are held), so the mix costs no index of the run's steps."""
    back = {new: old for old, new in _renames(manifest).items()}
    out: dict[str, _TaskMix] = {}
    for summary, steps in iter_trials(run_dir):
        if variant_family(summary) != BASE or not is_valid(summary):
            continue
        task = summary["task"] if isinstance(summary["task"], str) else repr(summary["task"])
        mix = out.get(task) or out.setdefault(task, _TaskMix())
        mix.trials += 1
        for step in steps:
            if step.get("kind") in ("tool", "user") and step.get("tool"):
                name = back.get(step["tool"], step["tool"])
                mix.calls[name] += 1
                mix.errors[name] += step.get("error") is not None
    return out


def _tool_mix(mixes: Mapping[str, _TaskMix], tasks: set[str]) -> tuple[Counter[str], Counter[str], int]:
    """Calls per tool and calls that got an error observation over the given tasks' valid
    trials; and the number of those trials."""
    calls: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    trials = 0
    for task in tasks & mixes.keys():
        calls.update(mixes[task].calls)
        errors.update(mixes[task].errors)
        trials += mixes[task].trials
    return calls, errors, trials


@dataclass
class _Side:
    """What the diff keeps of one run once it is read: its figures, not its index (the two runs
    are read one after the other, never both held: at a million trials each index and its
    divergence keys are hundreds of MB)."""

    path: Path
    manifest: Manifest
    counts: dict[str, tuple[int, int, int]]
    finished: int  # trials on the unperturbed input
    perturbed: int
    mixes: dict[str, _TaskMix]
    points: dict[str, dict[str, Any] | None] | None  # `_divergence_points`, None when not computed
    failure: str | None  # why the divergence analysis failed
    log: RunLog | None  # the summaries, kept for the sequential gate only


def _read_side(run_dir: str | Path, divergence: bool, keep_log: bool) -> _Side:
    """Read one run for the diff: its summaries with each step keyed as it is read (the
    divergence points), then its tool mix in a second streaming pass. A failure of the
    (auxiliary) divergence analysis is kept as its reason, never raised; bad input is."""
    path = Path(run_dir)
    keyed, failure, points = None, None, None
    if divergence:
        try:  # the per-trial rows are not compared: not listing them keeps a million-trial section small
            keyed = read_keyed(path, DivergenceOptions(max_trials_listed=0))
        except BenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - report, never break the gate
            failure = _failed(exc)
    log = keyed.log if keyed is not None else read_run(path, on_step=_ignore)
    if keyed is not None:
        try:
            points = _divergence_points(divergence_section(keyed, load_reference=False))
        except Exception as exc:  # noqa: BLE001
            failure = _failed(exc)
        del keyed  # its keys: the largest part of the run in memory
    finished = log.n_base_trials()
    return _Side(path, log.manifest, _counts(log), finished, len(log.summaries) - finished,
                 _task_mixes(path, log.manifest), points, failure, log if keep_log else None)


def _ignore(step: Any) -> None:
    """`read_run`'s step hook when the steps are not needed: nothing of them is indexed."""


def _failed(exc: Exception) -> str:
    return f"the divergence analysis failed: {type(exc).__name__}: {exc}"


def _tool_changes(base: Mapping[str, Any], cand: Mapping[str, Any]) -> dict[str, Any]:
    """Which tools differ between the runs, keyed by the suite's own tool names; what the
    overlays say about each change when the runs used overlays."""
    def by_suite_name(manifest: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
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


def _mix_section(base: _Side, cand: _Side, shared: set[str]) -> dict[str, Any]:
    """How the mix of tool calls moved: each tool's share of all calls, calls per trial, and the
    share of its calls that got an error observation (invalid arguments, domain refusals)."""
    ca, ea, ta = _tool_mix(base.mixes, shared)
    cb, eb, tb = _tool_mix(cand.mixes, shared)
    total_a, total_b = sum(ca.values()), sum(cb.values())
    names_b = _renames(cand.manifest)
    rows: list[dict[str, Any]] = []
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


def _divergence_points(section: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Per task of a divergence section, where its trials branch into failure (None: nowhere)."""
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


def _divergence_diff(a: dict[str, dict[str, Any] | None], b: dict[str, dict[str, Any] | None],
                     shared: list[str]) -> dict[str, Any]:
    """Per shared task, where its runs branch into failure in each run — the divergence point
    when the divergence analysis finds a significant one, else the top-scoring branch node
    (marked not significant) — and whether it appeared, was resolved, moved (another step or
    another failing action) or stayed. A task with no mixed outcomes has no branch into
    failure. Labels use the names the agent saw, so an overlay's renames show as a move."""
    rows: list[dict[str, Any]] = []
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
    rows.sort(key=lambda r: (order[r["change"]], not has_significant_point(r), r["task"]))
    return {"available": True, "counts": {c: counts[c] for c in order}, "tasks": rows}


def _divergence_or_reason(base: _Side, cand: _Side, shared: list[str], wanted: bool) -> dict[str, Any]:
    """The divergence comparison, or why there is none. The gate never depends on it: a failure
    of the (auxiliary) divergence analysis is reported in the output, not raised."""
    if not wanted:
        return {"available": False, "reason": "not requested", "counts": None, "tasks": []}
    failure = base.failure or cand.failure
    if failure is None and base.points is not None and cand.points is not None:
        try:
            return _divergence_diff(base.points, cand.points, shared)
        except Exception as exc:  # noqa: BLE001 - report, never break the gate
            failure = _failed(exc)
    return {"available": False, "reason": failure, "counts": None, "tasks": []}


def has_significant_point(row: dict[str, Any]) -> bool:
    """Does a divergence-diff row involve a significant divergence point (in either run)?"""
    return any(p is not None and p["significant"] for p in (row["base"], row["candidate"]))


def _run_brief(side: _Side) -> dict[str, Any]:
    m = side.manifest
    design = m.get("design") or {}
    expected = sum((design.get("per_task_n") or {}).values()) if design else len(m.get("tasks", [])) * int(m["k"])
    return {
        "dir": str(side.path), "run_id": m["run_id"], "suite": {"name": m["suite"].get("name"), "hash": m["suite"].get("hash")},
        "agent": {"name": m["agent"].get("name"), "hash": m["agent"].get("hash"), "simulated": is_simulated(m["agent"].get("adapter"))},
        "k": int(m["k"]), "base_seed": m.get("base_seed"), "harness_version": m.get("harness_version"),
        "expected_trials": expected, "finished_trials": side.finished,
        "perturbed_trials": side.perturbed,
        "error_trials": sum(e for _, _, e in side.counts.values()), "overlay": _overlay_brief(m.get("overlay") or {}),
    }


def diff_runs(base_dir: str | Path, cand_dir: str | Path, *, alpha: float = DEFAULT_ALPHA, k: int | None = None,
              force: bool = False, permutations: int = DEFAULT_PERMUTATIONS, bootstrap: int = DEFAULT_BOOTSTRAP,
              seed: int = 0, divergence: bool = True, sequential: bool = False) -> dict[str, Any]:
    """The diff of two run directories as a JSON-serialisable dict (bench/schemas/diff.schema.json).
    With `sequential`, the verdict and exit code are the sequential gate's (`sequential_diff`:
    valid at every look; exit 3 while not yet decided); the fixed-k figures are still shown.
    Raises BenchError on bad input: unreadable runs, different suites (unless `force`), bad
    alpha or k, no shared task. The runs are read one after the other (`_read_side`), so the
    diff holds one run's index at a time."""
    if not 0 < alpha < 1:
        raise BenchError(f"alpha must be in (0, 1), got {alpha}", field="--alpha")
    for where in (base_dir, cand_dir):
        refuse_as_benchmark(where, "diff")
    manifest_a, manifest_b = read_manifest(Path(base_dir)), read_manifest(Path(cand_dir))
    forced, warnings = _suite_check(manifest_a, manifest_b, force, cand_dir)
    k = _pass_k(manifest_a, manifest_b, k)
    base = _read_side(base_dir, divergence, sequential)
    cand = _read_side(cand_dir, divergence, sequential)
    ca, cb = base.counts, cand.counts
    shared, only_base, only_cand = _task_sets(base.manifest, ca, cb)
    if not shared:
        raise BenchError("the two runs share no task with a valid (non-error) trial: nothing to compare",
                         file=str(cand_dir), field="tasks")
    pc = PairedCounts.of(shared, [ca[t][0] for t in shared], [ca[t][1] for t in shared],
                         [cb[t][0] for t in shared], [cb[t][1] for t in shared])
    core = compare_counts(pc, k=k, alpha=alpha, permutations=permutations, bootstrap=bootstrap, seed=seed)
    brief_a, brief_b = _run_brief(base), _run_brief(cand)
    warnings += _run_warnings(base.manifest, cand.manifest, brief_a, brief_b, k)
    if only_base or only_cand:
        warnings.append(f"{len(only_base)} task(s) only in the base and {len(only_cand)} only in the candidate are left out")
    regression = core["test"]["significant_regression"]
    if not sequential and (base.manifest.get("design") or cand.manifest.get("design")):
        warnings.append("a run used a sequential design (--until): its trials per task depend on its outcomes, which "
                        "the fixed-k gate does not allow for; use `trajbench diff --sequential`")
    out = {
        "diff_version": DIFF_VERSION, "forced": forced,
        "warnings": warnings, "base": brief_a, "candidate": brief_b, "alpha": alpha, "k": k,
        "task_sets": {"shared": len(shared), "only_base": only_base, "only_candidate": only_cand},
        **{key: core[key] for key in ("suite", "test", "mde", "tested_tasks", "significant_tasks", "categories",
                                      "categories_expected_by_chance", "tasks")},
        "tools": _tool_changes(base.manifest, cand.manifest),
        "tool_mix": _mix_section(base, cand, set(shared)),
        "divergence": _divergence_or_reason(base, cand, shared, divergence),
        "verdict": "significant regression" if regression else "no significant regression",
        "exit_code": 1 if regression else 0,
    }
    if sequential:
        assert base.log is not None and cand.log is not None  # kept for it
        gate = sequential_diff(base.log, cand.log, alpha)
        out.update(sequential=gate, verdict=gate["outcome"], exit_code=gate["exit_code"])
    return out


def _suite_check(base: Manifest, cand: Manifest, force: bool, cand_dir: str | Path) -> tuple[bool, list[str]]:
    """Runs of different suites are not comparable: refused, or with `force` marked FORCED.
    Returns (forced, the warning that says so)."""
    hash_a, hash_b = base["suite"].get("hash"), cand["suite"].get("hash")
    if hash_a == hash_b:
        return False, []
    what = (f"suite {base['suite'].get('name')} (hash {str(hash_a)[:12]}) vs "
            f"suite {cand['suite'].get('name')} (hash {str(hash_b)[:12]})")
    if not force:
        raise BenchError(f"the runs are of different suites: {what}. Tasks, data or tool code differ, so the "
                         "results are not comparable; re-run both on the same suite, or pass --force to "
                         "compare anyway (the output is then marked FORCED)", file=str(Path(cand_dir) / "run.json"),
                         field="suite.hash")
    return True, [f"FORCED: comparing runs of different suites ({what}); the figures may be meaningless"]


def _pass_k(base: Manifest, cand: Manifest, k: int | None) -> int:
    """The k of pass^k: as asked, at most the smaller k of the two runs (its default)."""
    k_runs = min(int(base["k"]), int(cand["k"]))
    if k is None:
        k = k_runs
    if not isinstance(k, int) or k < 1:
        raise BenchError(f"k must be a whole number ≥ 1, got {k!r}", field="--k")
    if k > k_runs:
        raise BenchError(f"k = {k} exceeds the runs' trials per task (base k = {base['k']}, candidate k = "
                         f"{cand['k']}); pass^k needs at least k trials in both", field="--k")
    return k


def _task_sets(base: Manifest, ca: dict[str, tuple[int, int, int]],
               cb: dict[str, tuple[int, int, int]]) -> tuple[list[str], list[str], list[str]]:
    """The tasks both runs have valid trials for (in the base's order), and those only one has."""
    order = list(base.get("tasks") or sorted(ca))
    order += [t for t in sorted(ca) if t not in order]
    shared = [t for t in order if ca.get(t, (0,))[0] > 0 and cb.get(t, (0,))[0] > 0]
    only_base = [t for t in order if t in ca and ca[t][0] > 0 and t not in shared]
    only_cand = [t for t in sorted(cb) if cb[t][0] > 0 and t not in shared and (t not in ca or ca[t][0] == 0)]
    return shared, only_base, only_cand


def _run_warnings(base: Manifest, cand: Manifest, brief_a: dict[str, Any], brief_b: dict[str, Any], k: int) -> list[str]:
    warnings = []
    for label, brief in (("base", brief_a), ("candidate", brief_b)):
        if brief["finished_trials"] < brief["expected_trials"]:
            warnings.append(f"the {label} run is unfinished ({brief['finished_trials']}/{brief['expected_trials']} trials); "
                            "re-run its command to complete it")
        if brief["error_trials"]:
            warnings.append(f"the {label} run has {brief['error_trials']} infrastructure-error trials (left out of every figure)")
    if base["agent"].get("hash") == cand["agent"].get("hash") and base.get("base_seed") == cand.get("base_seed") and \
            (base.get("overlay") or {}).get("hash") == (cand.get("overlay") or {}).get("hash"):
        warnings.append("both runs used the same agent spec, overlay and base seed: with a seeded agent their trials "
                        "are replays, not independent samples (use another --seed for a fresh sample)")
    if int(base["k"]) != int(cand["k"]):
        warnings.append(f"the runs have different k (base {base['k']}, candidate {cand['k']}); pass^k uses k = {k}")
    if brief_a["perturbed_trials"] or brief_b["perturbed_trials"]:
        warnings.append(f"perturbed-input trials ({brief_a['perturbed_trials']} in the base, {brief_b['perturbed_trials']} "
                        "in the candidate) are left out: the diff compares the tasks' own inputs, like the headline "
                        "figures of `trajbench report`")
    return warnings


def check_baseline(baseline_dir: str | Path, suite_hash: str) -> None:
    """Before `trajbench run ... --baseline DIR` spends time on a run: the baseline must be a run
    directory of the same suite (content hash), else BenchError (exit 2)."""
    manifest = read_manifest(Path(baseline_dir))
    if manifest["suite"].get("hash") != suite_hash:
        raise BenchError(f"the baseline is a run of suite {manifest['suite'].get('name')} with hash "
                         f"{str(manifest['suite'].get('hash'))[:12]}, but this suite's hash is {suite_hash[:12]}: its tasks, "
                         "data or tool code changed since the baseline was recorded; record a new baseline",
                         file=str(Path(baseline_dir) / "run.json"), field="--baseline")
