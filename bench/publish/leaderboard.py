"""`trajbench leaderboard RUN_DIR... --out DIR`: a ranked, verified consistency leaderboard.

Builds the board — one dict; `bench.publish.leaderboard_page` renders and writes it as three
files in DIR, all from that dict (the content of `leaderboard.json`, whose
schema is bench/schemas/leaderboard.schema.json), so each can be regenerated from the JSON:

- `leaderboard.json` — every figure, per agent and per task;
- `README.md` — the ranked table (GitHub-readable);
- `index.html` — one self-contained, offline page: the table, the pass^k curves (k = 1..n,
  intervals shaded) and the per-task heat map as inline SVG rendered by matplotlib (the
  optional `plots` extra), per-task numbers and the most frequent tool errors. No script, no
  external resource; a Content-Security-Policy forbids both, and every agent- or
  model-produced string is escaped.

Rules: every run must have the same suite content hash and the same tasks (else BenchError);
every run is replayed by `bench.analysis.replay` first and a run that does not verify is **rejected**:
it is left out of the ranking and listed with its reasons (and the command exits 1). Entries are
ranked by pass^k at one k (default: the largest k every run has), ties broken by pass@1. As in
`trajbench report`'s headline, every figure is computed on the unperturbed input (`base`
trials): runs made with `--variants` rank beside runs made without.
Intervals are percentile bootstraps over tasks (never over trials within a task), as in
`trajbench report`, with a recorded number of replicates and seed, so every figure can be
recomputed from the run directories alone.

Extending the page: `HTML_SECTIONS` lists the page's sections in order; each takes the board
dict and returns HTML or None (nothing to show). When `trajbench report` gains a section worth
publishing (the divergence analysis, for one), copy its summary into each entry in `_entry`,
describe it in the schema, and add a section function in `bench.publish.leaderboard_page`;
README_SECTIONS likewise.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bench.__version__ import __version__
from bench.adapters.spec import is_simulated
from bench.analysis.replay import Mismatch, VerifyResult, check_manifest, load_run_suite, verify_run
from bench.analysis.report import build_report
from bench.canonical import step_key
from bench.errors import BenchError
from bench.imports.core import import_source
from bench.publish.text import term
from bench.runs.rundir import RunLog, read_run
from bench.runs.seal import run_digest

__all__ = ["LEADERBOARD_VERSION", "IMPORTED", "build_leaderboard", "rejection_reasons"]

LEADERBOARD_VERSION = 1
IMPORTED = "imported, not replay-verified"  # the label of every entry ranked with --unverified
DEFAULT_BOOTSTRAP = 2000
TOOL_ERRORS_LISTED = 5
_TEXT_LIMIT = 200


# =============================================================================== the board
def _generated_at() -> str:
    """Now, or SOURCE_DATE_EPOCH (reproducible builds) when set."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch and epoch.isdigit() else datetime.now(timezone.utc)
    return when.isoformat(timespec="seconds")


def _clip(text: Any, width: int = _TEXT_LIMIT) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _estimate(entry: dict[str, Any] | None) -> dict[str, Any]:
    entry = entry or {}
    return {"mean": entry.get("mean"), "lo": entry.get("lo"), "hi": entry.get("hi"), "n_tasks": entry.get("n_tasks", 0)}


def _shown_k(k: int) -> list[int]:
    """pass^k columns: powers of two below the ranking k, and the ranking k."""
    return sorted({j for j in (2 ** p for p in range(1, 12)) if j < k} | {k})


def _resources(log: RunLog) -> dict[str, Any]:
    """Per-task means over valid trials of steps, tokens and cost, then the mean over tasks.
    Tokens (cost) count as known only if some model turn reported them."""
    valid = log.counted()
    by_task: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for s in valid:
        by_task[s["task"]].append(s)
    tokens_known = cost_known = False
    for s in valid:
        for ev in log.trial_steps(s["trial"]):
            if ev.get("kind") == "model":
                tokens_known |= ev.get("input_tokens") is not None or ev.get("output_tokens") is not None
                cost_known |= ev.get("cost") is not None

    def over_tasks(field: str) -> float | None:
        return _mean([sum([float(t.get(field) or 0) for t in trials]) / len(trials) for trials in by_task.values()])

    return {
        "mean_steps": over_tasks("steps"),
        "mean_input_tokens": over_tasks("input_tokens") if tokens_known else None,
        "mean_output_tokens": over_tasks("output_tokens") if tokens_known else None,
        "mean_cost": over_tasks("cost") if cost_known else None,
    }


def _tool_errors(log: RunLog) -> dict[str, Any]:
    """The tool calls that most often returned an error, over the valid trials (agent-produced
    text: arguments; domain text that may echo them: the error)."""
    calls = errored = 0
    counts: Counter = Counter()
    trials: dict[tuple[str, str], set[str]] = defaultdict(set)
    for s in log.counted():
        for ev in log.trial_steps(s["trial"]):
            if ev.get("kind") not in ("tool", "user"):
                continue
            calls += 1
            if ev.get("error") is None:
                continue
            errored += 1
            key = (step_key(str(ev.get("tool")), ev.get("args")), str(ev["error"]))
            counts[key] += 1
            trials[key].add(s["trial"])
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOOL_ERRORS_LISTED]
    return {
        "rate": errored / calls if calls else None,
        "calls": calls,
        "errors": errored,
        "top": [{"action": _clip(action), "error": _clip(error), "count": n, "trials": len(trials[(action, error)])}
                for (action, error), n in top],
    }


def _entry(run_dir: Path, log: RunLog, verified: VerifyResult | None, K: int, bootstrap: int, seed: int) -> dict[str, Any]:
    report = build_report(run_dir, bootstrap=bootstrap, seed=seed)
    m = log.manifest
    agent = m.get("agent") or {}
    suite = report["suite"]
    curve = [{"k": e["k"], **_estimate(e)} for e in suite["pass^k"]]
    at_k = next((e for e in curve if e["k"] == K), _estimate(None) | {"k": K})
    rows = {r["task"]: r for r in report["tasks"]}
    per_task = []
    for task in m.get("tasks") or []:
        row = rows.get(task)
        n = row["n"] if row else 0
        per_task.append({"task": task, "n": n, "successes": row["successes"] if row else 0,
                         "pass@1": row["pass@1"] if row and n else None})
    base = log.base_trials()
    errors = sum(s.get("outcome") == "error" for s in base)
    entry = {
        "rank": None,
        "label": str(agent.get("name")),
        "agent": {"name": str(agent.get("name")), "adapter": agent.get("adapter"), "hash": agent.get("hash"),
                  "simulated": is_simulated(agent.get("adapter")), "options": agent.get("options") or {},
                  "target": agent.get("target")},
        "run": {"run_id": m.get("run_id"), "dir": run_dir.name, "created_at": m.get("created_at"),
                "harness_version": m.get("harness_version"), "k": int(m["k"]), "base_seed": m.get("base_seed"),
                "max_steps": m.get("max_steps"), "timeout_s": m.get("timeout_s")},
        "trials": {"expected": len(m.get("tasks") or []) * int(m["k"]), "finished": len(base),
                   "valid": len(base) - errors, "errors": errors},
        "n_tasks": suite["n_tasks"],
        "k": int(m["k"]),
        "rank_metric": {"name": f"pass^{K}", **at_k},
        "pass@1": _estimate(suite["pass@1"]),
        "pass^k": curve,
        "flip": _estimate(suite["flip"]),
        **_resources(log),
        "tool_errors": _tool_errors(log),
        "per_task": per_task,
        "simulated_truth": report.get("simulated_truth"),
        "verification": "replay-verified" if verified is not None else IMPORTED,
        "digest": run_digest(m),
        "source": _source_summary(import_source(m)),
        "verified": None if verified is None else {"trials": verified.trials, "steps_replayed": verified.steps_replayed,
                                                   "error_trials": verified.error_trials},
    }
    return entry


def _source_summary(source: dict[str, Any] | None) -> dict[str, Any] | None:
    if source is None:
        return None
    listed = source.get("files")
    files: list[Any] = listed if isinstance(listed, list) else []
    return {"format": source.get("format"), "harness_version": source.get("harness_version"),
            "files": [{"path": Path(str(f.get("path"))).name, "sha256": f.get("sha256")} for f in files if isinstance(f, dict)],
            "outcome_rule": source.get("outcome_rule")}


def _rank(entries: list[dict[str, Any]]) -> None:
    """Sort by pass^K, then pass@1 (higher first); equal figures share a rank (1, 2, 2, 4)."""
    def key(e: dict[str, Any]) -> tuple[float, float]:
        a, b = e["rank_metric"]["mean"], e["pass@1"]["mean"]
        return (-1.0 if a is None else a, -1.0 if b is None else b)

    entries.sort(key=lambda e: (tuple(-x for x in key(e)), e["label"]))
    for e in entries:
        e["rank"] = 1 + sum(1 for other in entries if key(other) > key(e))


def _unique_labels(entries: list[dict[str, Any]]) -> None:
    """Two entries of one agent name are told apart by run id, or by run folder where the ids
    agree too (imports of one task set share an id prefix)."""
    names = Counter(e["label"] for e in entries)
    ids = Counter((e["label"], str(e["run"]["run_id"])[:8]) for e in entries)
    for e in entries:
        if names[e["label"]] > 1:
            short = str(e["run"]["run_id"])[:8]
            e["label"] = f"{e['label']} (run {short})" if ids[(e["label"], short)] == 1 else f"{e['label']} ({e['run']['dir']})"


def build_leaderboard(run_dirs: Sequence[str | Path], *, k: int | None = None, bootstrap: int = DEFAULT_BOOTSTRAP,
                      seed: int = 0, suite: Any = None, progress: Callable[[str], None] | None = None,
                      unverified: bool = False) -> dict[str, Any]:
    """The leaderboard as a dict (see the schema). `suite` (a Suite, folder or built-in name) is
    where to find the runs' suite when the path recorded in their manifests is gone. Raises
    BenchError on runs that cannot be ranked together (different suite hashes or tasks, k too
    large, the same run twice), whose suite cannot be found, or that were imported while
    `unverified` is off; runs that fail verification are listed under `rejected`, not ranked.
    With `unverified`, imported runs (which cannot be replayed) are checked for their seal and
    manifest only and ranked apart, under `unverified`, never among the verified entries."""
    if not run_dirs:
        raise BenchError("give at least one run directory", field="RUN_DIR")
    paths = [Path(p) for p in run_dirs]
    logs = [read_run(p) for p in paths]
    for path, log in zip(paths, logs):  # bench.analysis.replays: continuations from one node, not a benchmark
        if "replay_of" in log.manifest:
            raise BenchError("a replay (trajbench replay: continuations resampled from one node) is not a benchmark run "
                             "and is never ranked: give its original run", file=str(path / "run.json"), field="replay_of")
    if not unverified:
        _refuse_imports(paths, logs)
    _check_comparable(paths, logs)
    first = logs[0].manifest
    native = [(p, log) for p, log in zip(paths, logs) if import_source(log.manifest) is None]
    if native:
        suite, problems = load_run_suite(native[0][1].manifest, native[0][0], suite)
        if suite is None:
            raise BenchError(problems[0].detail, file=str(native[0][0] / "run.json"), field="suite.hash")
    K = _ranking_k(logs, k)

    entries: list[dict[str, Any]] = []
    imported: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for path, log in zip(paths, logs):
        if progress:
            progress(f"verifying {path}")
        if import_source(log.manifest) is not None:
            problems = check_manifest(path, log.manifest)
            if problems:
                rejected.append(_rejected(path, log, problems, f"trajbench leaderboard --unverified {path}"))
            else:
                imported.append(_entry(path, log, None, K, bootstrap, seed))
            continue
        result = verify_run(path, suite=suite, log=log)
        if not result.ok:
            rejected.append(_rejected(path, log, result.mismatches, f"trajbench verify {path}"))
            continue
        entries.append(_entry(path, log, result, K, bootstrap, seed))
    _unique_labels(entries + imported)
    _rank(entries)
    _rank(imported)
    tasks = list(first.get("tasks") or [])
    return {
        "leaderboard_version": LEADERBOARD_VERSION,
        "generated_at": _generated_at(),
        "generator": {"name": "trajbench", "version": __version__},
        "suite": {"name": first["suite"].get("name"), "hash": first["suite"].get("hash"),
                  "description": getattr(suite, "description", "")},
        "tasks": tasks,
        "n_tasks": len(tasks),
        "rank_by": {"metric": "pass^k", "k": K},
        "shown_k": _shown_k(K),
        "confidence": 0.95,
        "bootstrap": {"replicates": bootstrap, "seed": seed, "over": "tasks"},
        "entries": entries,
        "unverified": imported,
        "rejected": rejected,
    }


def _ranking_k(logs: list[RunLog], k: int | None) -> int:
    """The ranking k: `k`, or the largest k every run has."""
    shared_k = min(int(log.manifest["k"]) for log in logs)
    if k is None:
        return shared_k
    if not 1 <= k <= shared_k:
        raise BenchError(f"--k must be between 1 and {shared_k}, the largest k every run has", field="--k")
    return k


def _refuse_imports(paths: list[Path], logs: list[RunLog]) -> None:
    """An imported run is never ranked silently: without --unverified it is refused, in one line."""
    for path, log in zip(paths, logs):
        source = import_source(log.manifest)
        if source is not None:
            raise BenchError(f"imported from {source.get('format')}, so not replay-verified: a leaderboard ranks imported runs "
                             f"only with --unverified, apart from verified ones and labelled \"{IMPORTED}\"",
                             file=str(path), field="--unverified")


def _rejected(path: Path, log: RunLog, mismatches: list[Mismatch], command: str) -> dict[str, Any]:
    agent = log.manifest.get("agent") or {}
    return {"run_dir": path.name, "run_id": log.manifest.get("run_id"), "agent": str(agent.get("name")),
            "simulated": is_simulated(agent.get("adapter")), "mismatches": len(mismatches),
            "reasons": rejection_reasons(mismatches, command)}


def rejection_reasons(mismatches: list[Mismatch], command: str, limit: int = 5) -> list[str]:
    """The first few mismatches of a run that does not verify, one short line each."""
    lines = [term(str(m), 200) for m in mismatches[:limit]]
    if len(mismatches) > limit:
        lines.append(f"... and {len(mismatches) - limit} more (run `{command}`)")
    return lines


def _check_comparable(paths: list[Path], logs: list[RunLog]) -> None:
    hashes = {log.manifest["suite"].get("hash") for log in logs}
    if len(hashes) > 1:
        listing = "; ".join(f"{p} — suite {log.manifest['suite'].get('name')} hash {str(log.manifest['suite'].get('hash'))[:12]}"
                            for p, log in zip(paths, logs))
        raise BenchError("these runs were made on different suites (content hashes differ) and cannot be ranked together: "
                         f"{listing}. Build one leaderboard per suite hash", field="RUN_DIR")
    # the same run = the same id and the same sealed contents (imports of one task set share an id)
    ids = Counter((log.manifest.get("run_id"), run_digest(log.manifest)) for log in logs)
    twice = [str(r) for (r, _), n in ids.items() if n > 1]
    if twice:
        raise BenchError(f"the same run is given more than once (run id {', '.join(twice)})", field="RUN_DIR")
    tasks = [set(log.manifest.get("tasks") or []) for log in logs]
    for p, t in zip(paths[1:], tasks[1:]):
        if t != tasks[0]:
            raise BenchError(f"{p} covers different tasks than {paths[0]} ({len(t ^ tasks[0])} differ): "
                             "means over tasks are comparable only over the same tasks", field="RUN_DIR")


# =============================================================================== formatting
