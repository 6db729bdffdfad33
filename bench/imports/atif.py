"""Harbor ATIF (Agent Trajectory Interchange Format, RFC 0001, v1.0-v1.7; docs/import.md).

One ATIF document is one trial. Its steps become trajbench steps: a `user` step before the first
agent step is the task's instruction; a later `user` step is an ask_user turn (the question is
the agent's last message); an `agent` step is a model turn (unless `llm_call_count` is 0: a
dispatch without a model call) followed by one tool step per tool call, its observation the
result whose `source_call_id` names the call; `system` steps (the prompt) are not steps.

ATIF carries no task id, trial index, seed, outcome, state hash or read/write flag. The task id
and trial index come from `extra.task_id` / `extra.trial` when the producer wrote them, and the
outcome from a reward (`extra.reward`, or Harbor's verifier files beside `agent/trajectory.json`);
the rest is null, never invented. trajbench's own ATIF export (bench/publish/atif.py) puts
everything ATIF has no field for under `extra.trajbench`, which this importer reads back, so a
run survives the round trip step for step.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import jsonschema
import jsonschema_rs
import orjson

from bench.errors import BenchError
from bench.imports.core import ImportedRun, iter_json_array
from bench.world.task import load_schema

FORMAT = "atif"
EXTRA = "trajbench"  # the key of trajbench's own data in ATIF `extra` objects
SCHEMA = "atif.schema.json"
OUTCOME_RULE = ("extra.trajbench.outcome if present (a trajbench export); else success iff "
                "1-1e-6 <= reward <= 1+1e-6, the reward from extra.reward or Harbor's verifier "
                "(verifier/reward.txt, verifier/reward.json 'reward', result.json verifier_result.rewards.reward); "
                "result.json exception_info -> error")


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(load_schema(SCHEMA), format_checker=jsonschema.FormatChecker())


@lru_cache(maxsize=1)
def _fast_check() -> Callable[[Any], bool]:
    """The compiled schema (jsonschema_rs, ~50x faster): documents that pass skip the reference
    validator, which runs only to explain a failure."""
    return jsonschema_rs.Draft202012Validator(load_schema(SCHEMA), validate_formats=True).is_valid


def check_trajectory(doc: Any, where: str, path: Path | None = None) -> None:
    """Is `doc` a valid ATIF trajectory? The schema (bench/schemas/atif.schema.json), then the
    RFC validator's rules a schema cannot state. One clear error naming the record and field."""
    file = None if path is None else str(path)
    if isinstance(doc, dict) and isinstance(doc.get("schema_version"), str) and doc["schema_version"] not in _versions():
        raise BenchError(f"{where}: unsupported schema_version {doc['schema_version']!r} (expected one of "
                         f"{', '.join(_versions())})", file=file, field="schema_version")
    error = None if _fast_check()(doc) else jsonschema.exceptions.best_match(_validator().iter_errors(doc))
    if error is not None:
        at = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".") or "(root)"
        raise BenchError(f"{where}: not ATIF at {at}: {error.message}", file=file, field=at)
    for number, step in enumerate(doc["steps"], start=1):
        if step["step_id"] != number:
            raise BenchError(f"{where}: steps[{number - 1}].step_id is {step['step_id']}, expected {number} "
                             "(step ids run 1, 2, 3... in order)", file=file, field="step_id")
        ids = {call["tool_call_id"] for call in step.get("tool_calls") or []}
        for result in (step.get("observation") or {}).get("results") or []:
            if result.get("source_call_id") is not None and result["source_call_id"] not in ids:
                raise BenchError(f"{where}: steps[{number - 1}] has a result for call {result['source_call_id']!r}, "
                                 "which is not a tool call of that step", file=file, field="source_call_id")
    sub_ids = [sub.get("trajectory_id") for sub in doc.get("subagent_trajectories") or []]
    if len(sub_ids) != len(set(sub_ids)):
        raise BenchError(f"{where}: subagent trajectory ids are not unique", file=file, field="subagent_trajectories")


@lru_cache(maxsize=1)
def _versions() -> tuple[str, ...]:
    return tuple(load_schema(SCHEMA)["properties"]["schema_version"]["enum"])


def iter_documents(path: Path) -> Iterator[tuple[str, Any]]:
    """The trajectories in one file, with where each is: a file holding one ATIF object (Harbor's
    `agent/trajectory.json`), a JSON array of them (streamed), or JSON Lines (one per line)."""
    if path.suffix == ".jsonl":
        yield from _jsonl(path)
        return
    try:
        with path.open("rb") as fh:
            head = fh.read(64).lstrip()
    except OSError as exc:
        raise BenchError(f"cannot be read: {exc.strerror}", file=str(path)) from None
    if head[:1] == b"[":
        for index, doc in enumerate(iter_json_array(path)):
            yield f"record {index}", doc
        return
    try:
        yield "record 0", orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise BenchError(f"record 0: truncated or invalid JSON ({exc})", file=str(path)) from None


def _jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise BenchError(f"cannot be read: {exc.strerror}", file=str(path)) from None
    with fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    yield f"line {number}", orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise BenchError(f"line {number}: truncated or invalid JSON ({exc})", file=str(path)) from None


def import_files(sources: list[Path], out: Path) -> ImportedRun:
    """Import every trajectory of every source into one run directory at `out` (k trials of a
    task may be spread over any number of files)."""
    sources = [file for path in sources for file in _expand(path)]
    with ImportedRun(out, FORMAT) as run:  # staged: a failed import leaves nothing behind
        versions = _import_into(run, sources)
        run.finish(sources, ", ".join(sorted(versions)) or None, OUTCOME_RULE)
    return run


def _expand(path: Path) -> list[Path]:
    """A file as it is; a folder as the Harbor `trajectory.json` files under it (a job or trial
    folder), else the `.json` / `.jsonl` files directly in it (a `trajbench export --format atif`)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BenchError("no such file or folder", file=str(path))
    found = sorted(path.rglob("trajectory.json")) or sorted(p for p in path.iterdir()
                                                           if p.is_file() and p.suffix in (".json", ".jsonl"))
    if not found:
        raise BenchError("a folder with no trajectory.json under it and no .json files in it", file=str(path))
    return found


def _import_into(run: ImportedRun, sources: list[Path]) -> set[str]:
    """Map and append every trajectory; returns the ATIF schema versions seen."""
    counters: dict[str, int] = {}
    seen: set[str] = set()
    versions: set[str] = set()
    for path in sources:
        for where, doc in iter_documents(path):
            check_trajectory(doc, where, path)
            versions.add(doc["schema_version"])
            mapped = map_trajectory(doc, path, where, counters)
            summary = mapped.summary
            if summary["trial"] in seen:
                raise BenchError(f"{where}: a second trajectory for trial {summary['trial']} (task and trial index "
                                 "already imported)", file=str(path), field="extra.trial")
            seen.add(summary["trial"])
            run.tasks.add(summary["task"], mapped.instruction, mapped.gold)
            run.add(summary, mapped.steps)
    return versions


class Mapped:
    """One trajectory as a trial: its summary, its steps, the task instruction it carried and the
    gold actions (only a trajbench export of an import carries them)."""

    def __init__(self, summary: dict[str, Any], steps: list[dict[str, Any]], instruction: str | None,
                 gold: list[dict[str, Any]] | None = None):
        self.summary, self.steps, self.instruction, self.gold = summary, steps, instruction, gold or []


def map_trajectory(doc: dict[str, Any], path: Path, where: str, counters: dict[str, int]) -> Mapped:
    """One checked ATIF document → a trial. `counters` numbers the trials of each task in order
    of appearance when the document names no trial index."""
    ours = (doc.get("extra") or {}).get(EXTRA)
    try:
        steps, instruction, said = _steps(doc)
    except ValueError as exc:  # a timestamp that is not ISO 8601, content flagged as JSON that is not
        raise BenchError(f"{where}: {exc}", file=str(path), field="steps") from None
    if isinstance(ours, dict) and isinstance(ours.get("summary"), dict):
        restored = {k: v for k, v in ours["summary"].items() if k != "type"}
        for key in ("trial", "task", "variant", "index", "outcome"):
            if key not in restored:
                raise BenchError(f"{where}: extra.{EXTRA}.summary lacks {key!r} (not a trajbench export, or edited)",
                                 file=str(path), field=f"extra.{EXTRA}.summary.{key}")
        restored["attempt"] = f"{restored['trial']}#0"
        return Mapped(restored, steps, instruction if instruction is not None else restored.get("instruction"),
                      ours.get("reference") or [])
    extra = doc.get("extra") or {}
    harbor = _harbor_result(path)
    task = _task_id(extra, harbor, instruction, path, where)
    index = extra.get("trial")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        index = counters.get(task, 0)
    counters[task] = max(counters.get(task, 0), index + 1)
    outcome, reason, reward = _outcome(extra, harbor, path, where)
    times = [t for s in steps for t in (s.get("t_start"),) if t is not None]
    model_steps = [s for s in steps if s["kind"] == "model"]
    trial = f"{task}/base/{index}"
    summary: dict[str, Any] = {
        "trial": trial, "attempt": f"{trial}#0", "task": task, "variant": "base", "variant_family": "base",
        "variant_params": {}, "instruction": instruction, "index": index, "seed": None,
        "started_at": min(times) if times else None, "attempts": 1, "outcome": outcome, "reason": reason,
        "checks": {"reward": {"passed": outcome == "success", "detail": f"reward {reward}", "value": reward}},
        "milestones": {}, "final_state_hash": None, "answer": said,
        "steps": sum(1 for s in steps if s["kind"] != "model"), "events": len(steps),
        "input_tokens": sum(s["input_tokens"] or 0 for s in model_steps),
        "output_tokens": sum(s["output_tokens"] or 0 for s in model_steps),
        "cost": sum(s["cost"] or 0.0 for s in model_steps),
        "duration_s": (max(times) - min(times)) if times else 0.0,
        "agent_info": {"model": doc["agent"].get("model_name"), "agent": {"name": doc["agent"]["name"],
                                                                          "version": doc["agent"]["version"]},
                       "session_id": doc.get("session_id"), "trajectory_id": doc.get("trajectory_id"),
                       "final_metrics": doc.get("final_metrics"), "notes": doc.get("notes"), "extra": extra or None},
    }
    return Mapped(summary, steps, instruction)


def _steps(doc: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """The trajbench steps, the instruction (the user's text before the first agent step) and the
    agent's last message (its answer)."""
    steps: list[dict[str, Any]] = []
    opening: list[str] = []
    said: str | None = None
    seen_agent = False
    for atif in doc["steps"]:
        if atif.get("is_copied_context"):  # copied from an earlier trajectory: not this trial's
            continue
        ours = (atif.get("extra") or {}).get(EXTRA) or {}
        when = _unix(atif.get("timestamp"))
        if atif["source"] == "user":
            if not seen_agent and not ours:
                opening.append(_text(atif["message"]))
                continue
            steps.append(_user_step(atif, ours, said, when))
        elif atif["source"] == "agent":
            seen_agent = True
            steps.extend(_agent_steps(atif, ours, doc["agent"].get("model_name"), when))
            text = _text(atif["message"])
            said = text if text else said
    return steps, "\n\n".join(opening) if opening else None, said


def _user_step(atif: dict[str, Any], ours: dict[str, Any], said: str | None, when: float | None) -> dict[str, Any]:
    step = {"kind": "user", "tool": "ask_user", "args": {"question": said}, "observation": _text(atif["message"]),
            "error": None, "read_only": True, "state_hash": None, "t_start": when, "t_end": None}
    return _restore(step, ours)


def _agent_steps(atif: dict[str, Any], ours: dict[str, Any], default_model: str | None,
                 when: float | None) -> list[dict[str, Any]]:
    """An agent step → its model turn (unless llm_call_count is 0) and one tool step per call."""
    out: list[dict[str, Any]] = []
    results = (atif.get("observation") or {}).get("results") or []
    if atif.get("llm_call_count") != 0:
        metrics = atif.get("metrics") or {}
        model = {"kind": "model", "model": atif.get("model_name") or default_model, "messages": None,
                 "output": atif["message"], "input_tokens": metrics.get("prompt_tokens"),
                 "output_tokens": metrics.get("completion_tokens"), "latency_s": None, "cost": metrics.get("cost_usd"),
                 "t_start": when, "t_end": None}
        for key, value in (("cached_tokens", metrics.get("cached_tokens")), ("reasoning", atif.get("reasoning_content")),
                           ("llm_call_count", atif.get("llm_call_count") if (atif.get("llm_call_count") or 0) > 1 else None),
                           ("observations", [r.get("content") for r in results if r.get("source_call_id") is None])):
            if value:
                model[key] = value
        out.append(_restore(model, ours.get("model") or {}))
    for call in atif.get("tool_calls") or []:
        matched = [r for r in results if r.get("source_call_id") == call["tool_call_id"]]
        observation: Any = matched[0].get("content") if len(matched) == 1 else [r.get("content") for r in matched] or None
        step = {"kind": "tool", "tool": call["function_name"], "args": call["arguments"], "observation": observation,
                "error": None, "read_only": None, "state_hash": None, "t_start": when, "t_end": None}
        mine = ((matched[0].get("extra") or {}).get(EXTRA) if matched else None) or {}
        out.append(_restore(step, mine))
    return out


def _restore(step: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """The step as trajbench's export kept it under `extra.trajbench` (exactly its fields, none
    added), with the observation from the ATIF content (parsed back when it was JSON)."""
    if not ours:
        return step
    restored = {k: v for k, v in ours.items() if k != "json"}
    if step["kind"] != "model" and "observation" not in restored:
        observation = step.get("observation")
        restored["observation"] = orjson.loads(observation) if ours.get("json") and isinstance(observation, str) else observation
    return restored


def _text(message: Any) -> str:
    """ATIF content as text: a string, or its text parts joined (images are referenced files)."""
    if isinstance(message, str):
        return message
    return "\n".join(part.get("text") or "" for part in message if part.get("type") == "text")


def _unix(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"timestamp {stamp!r} is not an ISO 8601 date-time") from None


def _task_id(extra: dict[str, Any], harbor: dict[str, Any], instruction: str | None, path: Path, where: str) -> str:
    """The producer's task id, Harbor's task name, else one derived from the instruction (runs of
    one task share it): documented, since ATIF itself has no task field."""
    for value in (extra.get("task_id"), harbor.get("task_name"), harbor.get("task_id")):
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    if instruction:
        return "task-" + hashlib.sha256(instruction.encode()).hexdigest()[:12]
    raise BenchError(f"{where}: cannot tell which task this is: no extra.task_id, no Harbor result.json task_name "
                     "and no user message before the first agent step", file=str(path), field="extra.task_id")


def _harbor_result(path: Path) -> dict[str, Any]:
    """Harbor's trial `result.json` when the trajectory sits at TRIAL/agent/trajectory.json."""
    result = path.parent.parent / "result.json"
    if path.parent.name != "agent" or not result.is_file():
        return {}
    try:
        data = orjson.loads(result.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise BenchError(f"not valid JSON ({exc})", file=str(result)) from None
    return data if isinstance(data, dict) else {}


def _outcome(extra: dict[str, Any], harbor: dict[str, Any], path: Path,
             where: str) -> tuple[str, str | None, float | None]:
    """(outcome, reason, reward) under OUTCOME_RULE; no reward anywhere is an error, not a guess."""
    if harbor.get("exception_info"):
        info = harbor["exception_info"]
        return "error", str(info.get("exception_message") if isinstance(info, dict) else info), None
    reward = _reward(extra, harbor, path)
    if reward is None:
        raise BenchError(f"{where}: no outcome: ATIF records none; expected extra.reward (a number) or Harbor's "
                         "verifier/reward.txt, verifier/reward.json or result.json beside agent/trajectory.json",
                         file=str(path), field="extra.reward")
    if 1 - 1e-6 <= reward <= 1 + 1e-6:
        return "success", None, reward
    return "failure", f"reward {reward}", reward


def _reward(extra: dict[str, Any], harbor: dict[str, Any], path: Path) -> float | None:
    value = extra.get("reward")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    trial = path.parent.parent if path.parent.name == "agent" else None
    if trial is not None and (trial / "verifier" / "reward.txt").is_file():
        text = (trial / "verifier" / "reward.txt").read_text().strip()
        try:
            return float(text)
        except ValueError:
            raise BenchError(f"expected one number, found {text[:40]!r}", file=str(trial / "verifier" / "reward.txt")) from None
    if trial is not None and (trial / "verifier" / "reward.json").is_file():
        try:
            data = orjson.loads((trial / "verifier" / "reward.json").read_bytes())
        except orjson.JSONDecodeError as exc:
            raise BenchError(f"not valid JSON ({exc})", file=str(trial / "verifier" / "reward.json")) from None
        if isinstance(data, dict) and _number(data.get("reward")):
            return float(data["reward"])
    rewards = (harbor.get("verifier_result") or {}).get("rewards") if isinstance(harbor.get("verifier_result"), dict) else None
    if isinstance(rewards, dict) and _number(rewards.get("reward")):
        return float(rewards["reward"])
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
