"""τ-bench historical trajectories (one JSON array of `EnvRunResult`; docs/import.md).

Each record is one (task, trial). Its `traj` (OpenAI chat messages) becomes steps: an assistant
message is a `model` step, its first tool call plus the following `tool` message is a `tool`
step, a user message is a `user` step (an `ask_user` whose question is the agent's last text). The outcome rule is τ-bench's own: success when
`1 - 1e-6 <= reward <= 1 + 1e-6`; an `info.error` record is an infrastructure `error`.
Unknowable per-step fields (state hash, timestamps, tokens, cost, read_only) are null."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.imports.core import ImportedRun, check_suffix, iter_json_array

FORMAT = "tau-bench"
OUTCOME_RULE = "success iff 1-1e-6 <= reward <= 1+1e-6; info.error -> error"


def import_files(sources: list[Path], out: Path) -> ImportedRun:
    """Import every record of every source file into one run directory at `out`."""
    with ImportedRun(out, FORMAT) as run:
        for path in sources:
            check_suffix(path, (".json",), "a τ-bench trajectory file")
            for index, record in enumerate(iter_json_array(path)):
                summary, steps = map_record(record, path, index)
                info = record["info"]
                task = info.get("task") or {}
                run.tasks.add(summary["task"], task.get("instruction"), task.get("actions") or [])
                run.add(summary, steps, f"file {path}, record {index}", f"file {path}")
        run.finish(sources, None, OUTCOME_RULE)
    return run


def map_record(record: Any, path: Path, index: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One `EnvRunResult` → a trial summary and its steps; a missing field is one clear error."""
    where = f"record {index}"
    if not isinstance(record, dict):
        raise BenchError(f"{where}: expected an object", file=str(path))
    for key in ("task_id", "trial", "reward", "info"):
        if key not in record:
            raise BenchError(f"{where}: missing field {key!r}", file=str(path), field=key)
    info = record["info"] if isinstance(record["info"], dict) else {}
    task_id, trial = str(record["task_id"]), int(record["trial"])
    trial_id = f"{task_id}/base/{trial}"
    steps = _steps(record.get("traj") or [])
    reward = float(record["reward"])
    if "error" in info:
        outcome, reason = "error", str(info["error"])
    elif 1 - 1e-6 <= reward <= 1 + 1e-6:
        outcome, reason = "success", None
    else:
        outcome = "failure"
        reason = "step cap hit (no reward_info)" if info.get("reward_info") is None else f"reward {reward}"
    reward_info = info.get("reward_info") or {}
    summary: dict[str, Any] = {
        "trial": trial_id, "attempt": f"{trial_id}#0", "task": task_id, "variant": "base",
        "variant_family": "base", "variant_params": {}, "instruction": (info.get("task") or {}).get("instruction"),
        "index": trial, "seed": None, "started_at": None, "attempts": 1, "outcome": outcome, "reason": reason,
        "checks": {"reward": {"passed": outcome == "success", "detail": f"reward {reward}", "value": reward,
                              "reward_info": reward_info.get("info")}},
        "milestones": {}, "final_state_hash": None, "answer": None,
        "steps": sum(1 for s in steps if s["kind"] == "tool"), "events": len(steps),
        "input_tokens": 0, "output_tokens": 0, "cost": 0.0, "duration_s": 0.0,
        "agent_info": {"user_cost": info.get("user_cost"), "source": info.get("source")},
    }
    return summary, steps


def _steps(traj: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages as steps, the system prompt skipped (it is the policy, not a turn)."""
    steps: list[dict[str, Any]] = []
    results = {m.get("tool_call_id"): m.get("content") for m in traj if m.get("role") == "tool"}
    said: str | None = None  # the agent's last text turn: what the user is answering
    for message in traj:
        role = message.get("role")
        if role == "user":
            steps.append({"kind": "user", "tool": "ask_user", "args": {"question": said},
                          "observation": message.get("content"), "error": None, "read_only": True, **_unknown()})
        elif role == "assistant":
            said = message.get("content")
            steps.append({"kind": "model", "model": None, "output": message.get("content"),
                          "input_tokens": None, "output_tokens": None, "latency_s": None, "cost": None,
                          **_unknown()})
            for call in (message.get("tool_calls") or [])[:1]:  # τ-bench executes only the first
                steps.append(_tool_step(call, results.get(call.get("id"))))
    return steps


def _tool_step(call: dict[str, Any], observation: Any) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        args = json.loads(function.get("arguments") or "{}")
    except json.JSONDecodeError:
        args = function.get("arguments")
    error = observation if isinstance(observation, str) and observation.startswith(("Error:", "Unknown action")) else None
    return {"kind": "tool", "tool": function.get("name"), "args": args, "observation": observation,
            "error": error, "read_only": None, **_unknown()}


def _unknown() -> dict[str, Any]:
    """The fields τ-bench does not record: null, never invented."""
    return {"state_hash": None, "t_start": None, "t_end": None}
