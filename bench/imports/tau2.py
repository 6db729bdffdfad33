"""τ²-bench results (`Results.model_dump_json`: one JSON object with `info`, `tasks` and
`simulations`, or the `dir` layout: results.json + simulations/<id>.json; docs/import.md).

Each `SimulationRun` is one trial `TASK_ID/base/TRIAL`. Its messages become steps: an agent
message is a `model` step (tokens, cost and latency as recorded), each of its tool calls plus the
`ToolMessage` answering it (joined on the call id) a `tool` step, a user message a `user` step
(`ask_user`; the question is the agent's last text); user-side tool calls (telecom) are `user`
steps named after their tool. The outcome rule is τ²-bench's own (success iff
`1 - 1e-6 <= reward <= 1 + 1e-6`) unless `--success` gives another over the reward;
`termination_reason == infrastructure_error` is an `error`
(τ²-bench drops those from pass^k, as trajbench drops errors). The gold actions of each task
(`evaluation_criteria.actions`) are the run's reference. What τ² does not record (state hashes,
zone-less timestamps as Unix time) is null."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import orjson

from bench.errors import BenchError
from bench.imports.core import ImportedRun, check_suffix, iter_json_members
from bench.imports.success import Ref, Rule, parse_rule

FORMAT = "tau2"
_ALWAYS = "termination_reason infrastructure_error -> error; reward null -> failure"
OUTCOME_RULE = f"success iff 1-1e-6 <= reward_info.reward <= 1+1e-6 (reward == 1, as tau2-bench); {_ALWAYS}"
RULE_NAMES = ("reward", "db")
_REWARD_TYPES = ("DB", "ENV_ASSERTION", "COMMUNICATE", "NL_ASSERTION", "ACTION")
_STREAMED = frozenset({"tasks", "simulations"})
_TOOL_TYPES = {"read": True, "write": False}


class _Source:
    """One results file being read: its tasks (gold actions, instructions), run info and the
    read/write flags learnt from action checks."""

    def __init__(self, path: Path, run: ImportedRun, rule: Rule | None):
        self.path, self.run, self.rule = path, run, rule
        self.tasks: dict[str, dict[str, Any]] = {}
        self.info: dict[str, Any] = {}
        self.read_only: dict[str, bool] = {}


def import_files(sources: list[Path], out: Path, success: str | None = None) -> ImportedRun:
    """Import every simulation of every results file into one run directory at `out`; `success`
    replaces τ²'s own rule (`reward`, `reward:COMPONENT`, `db`; docs/import.md)."""
    rule = _rule(success)
    results = [_results_file(p) for p in sources]
    versions: list[str] = []
    agents: list[str] = []
    planned = 0
    with ImportedRun(out, FORMAT) as run:
        for path in results:
            source = _Source(path, run, rule)
            _read(source)
            if isinstance(source.info.get("num_trials"), int):
                planned = max(planned, source.info["num_trials"])
            label = _agent_name(source.info)
            if label and label not in agents:
                agents.append(label)
            commit = source.info.get("git_commit")
            if commit and f"tau2-bench git {commit}" not in versions:
                versions.append(f"tau2-bench git {commit}")
        if len(run.trials) < planned:
            run.notes.append(f"info.num_trials is {planned} but the sources hold trials {sorted(run.trials)} "
                             "(an unfinished run, or a file left out?)")
        outcome_rule = OUTCOME_RULE if rule is None else f"success iff {rule.text}; {_ALWAYS}"
        run.finish(results, ", ".join(versions) or None, outcome_rule, agent_name=" + ".join(agents) or None)
    return run


def _rule(success: str | None) -> Rule | None:
    """The user's rule, its reward components checked against τ²'s RewardType names up front (a
    typo would otherwise make every trial a failure)."""
    if success is None:
        return None
    rule = parse_rule(success, RULE_NAMES)
    for ref in rule.refs():
        if ref.key is not None or (ref.kind == "db" and ref.scorer is not None):
            raise BenchError(f"--success {success!r}: {ref} has no such part (names: reward, reward:COMPONENT, db)",
                             field="success")
        if ref.kind == "reward" and ref.scorer is not None and ref.scorer not in _REWARD_TYPES:
            raise BenchError(f"--success {success!r}: {ref.scorer!r} is not a τ² reward component (one of: "
                             f"{', '.join(_REWARD_TYPES)})", field="success")
    return rule


def _passes(source: _Source, reward_info: dict[str, Any], where: str) -> bool:
    """The outcome rule on one simulation: τ²'s own (reward within 1e-6 of 1) or the user's; a
    null reward fails either way (τ² counts it as NaN)."""
    reward = reward_info.get("reward")
    if not isinstance(reward, (int, float)) or isinstance(reward, bool):
        return False
    if source.rule is None:
        return 1 - 1e-6 <= reward <= 1 + 1e-6
    try:
        return source.rule.passes(lambda ref: _lookup(reward_info, ref))
    except BenchError as exc:
        raise BenchError(f"{where}: {exc.args[0]}", file=str(source.path), field="success") from None


def _lookup(reward_info: dict[str, Any], ref: Ref) -> Any:
    """`reward`, `reward:COMPONENT` (reward_breakdown) or `db` (db_check.db_match); null when the
    simulation does not have it (premature terminations have no breakdown)."""
    if ref.kind == "db":
        db = reward_info.get("db_check")
        return db.get("db_match") if isinstance(db, dict) else None
    if ref.scorer is None:
        return reward_info.get("reward")
    return (reward_info.get("reward_breakdown") or {}).get(ref.scorer)


def _results_file(path: Path) -> Path:
    """A results file, or a `dir`-layout folder (its results.json)."""
    if path.is_dir():
        path = path / "results.json"
        if not path.is_file():
            raise BenchError("a folder without results.json is not a tau2 results directory", file=str(path.parent))
        return path
    check_suffix(path, (".json",), "a τ²-bench results file (results.json) or its folder")
    return path


def _read(source: _Source) -> None:
    """Stream one file: tasks and info first (as τ² writes them), then each simulation."""
    pending: list[tuple[int, dict[str, Any]]] = []  # simulations met before the tasks (a hand-made file)
    index_entries: list[Any] | None = None
    for key, index, value in iter_json_members(source.path, _STREAMED):
        if key == "tasks" and index is not None:
            _add_task(source, index, value)
        elif key == "info" and isinstance(value, dict):
            source.info = value
        elif key == "simulation_index" and isinstance(value, list):
            index_entries = value
        elif key == "simulations" and index is not None:
            if not source.tasks:
                pending.append((index, value))
            else:
                _add_simulation(source, index, value)
    for index, simulation in pending:
        _add_simulation(source, index, simulation)
    if index_entries:
        for index, simulation in enumerate(_dir_simulations(source.path, index_entries)):
            _add_simulation(source, index, simulation)


def _dir_simulations(results: Path, entries: list[Any]) -> Iterator[Any]:
    """The `dir` layout: one simulations/<id>.json per entry of simulation_index, in its order."""
    folder = results.parent / "simulations"
    for number, entry in enumerate(entries):
        sim_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(sim_id, str):
            raise BenchError(f"simulation_index {number}: missing field 'id'", file=str(results))
        path = folder / f"{sim_id}.json"
        try:
            yield orjson.loads(path.read_bytes())
        except FileNotFoundError:
            raise BenchError(f"simulation_index {number} names {sim_id} but the file is missing", file=str(path)) from None
        except orjson.JSONDecodeError as exc:
            raise BenchError(f"truncated or invalid JSON ({exc})", file=str(path)) from None


def _add_task(source: _Source, index: int, task: Any) -> None:
    if not isinstance(task, dict) or "id" not in task:
        raise BenchError(f"task {index}: expected an object with an 'id'", file=str(source.path), field="tasks")
    task_id = str(task["id"])
    criteria = task.get("evaluation_criteria") or {}
    gold = [_gold(action) for action in criteria.get("actions") or []]
    instruction = _instruction(task)
    source.tasks[task_id] = {"instruction": instruction, "gold": gold}
    source.run.tasks.add(task_id, instruction, gold)


def _gold(action: dict[str, Any]) -> dict[str, Any]:
    """A gold action as the reference holds it: `name` and `kwargs` (as for τ-bench), with τ²'s
    own `action_id`, `requestor` and `compare_args` kept."""
    return {"name": action.get("name"), "kwargs": action.get("arguments") or {},
            "action_id": action.get("action_id"), "requestor": action.get("requestor", "assistant"),
            "compare_args": action.get("compare_args")}


def _instruction(task: dict[str, Any]) -> str | None:
    """The user scenario's instructions as text (τ² may give them as a structured object)."""
    instructions = (task.get("user_scenario") or {}).get("instructions")
    if instructions is None or isinstance(instructions, str):
        return instructions
    return orjson.dumps(instructions, option=orjson.OPT_SORT_KEYS).decode()


def _add_simulation(source: _Source, index: int, sim: Any) -> None:
    where = f"simulation {index}"
    if not isinstance(sim, dict):
        raise BenchError(f"{where}: expected an object", file=str(source.path))
    if isinstance(sim.get("id"), str):
        where += f" (id {sim['id']})"
    for key in ("task_id", "termination_reason"):
        if key not in sim:
            raise BenchError(f"{where}: missing field {key!r}", file=str(source.path), field=key)
    infra = sim["termination_reason"] == "infrastructure_error"
    reward_info = sim.get("reward_info")
    if not infra and (not isinstance(reward_info, dict) or "reward" not in reward_info):
        raise BenchError(f"{where}: missing field 'reward_info.reward' (termination {sim['termination_reason']})",
                         file=str(source.path), field="reward_info.reward")
    messages = sim.get("messages")
    if messages is None and sim.get("ticks"):
        raise BenchError(f"{where}: a full-duplex (voice) simulation, with ticks instead of messages, cannot be "
                         "imported", file=str(source.path))
    task_id = str(sim["task_id"])
    if task_id not in source.tasks:
        source.run.tasks.add(task_id, None, [])
    trial = sim.get("trial")
    if not isinstance(trial, int):
        raise BenchError(f"{where}: field 'trial' must be an integer, not {trial!r}", file=str(source.path),
                         field="trial")
    for check in (reward_info or {}).get("action_checks") or []:
        tool_type = check.get("tool_type") if isinstance(check, dict) else None
        name = (check.get("action") or {}).get("name") if isinstance(check, dict) else None
        if name and tool_type in _TOOL_TYPES:
            source.read_only[name] = _TOOL_TYPES[tool_type]
    steps = _steps(messages or [], source.read_only, _agent_model(source.info))
    summary = _summary(source, sim, task_id, trial, steps, infra, where)
    source.run.add(summary, steps, f"file {source.path}, {where}", f"file {source.path}")


def _summary(source: _Source, sim: dict[str, Any], task_id: str, trial: int, steps: list[dict[str, Any]],
             infra: bool, where: str) -> dict[str, Any]:
    reward_info = sim.get("reward_info") or {}
    reward = reward_info.get("reward")
    if infra:
        error = (sim.get("info") or {}).get("error")
        outcome, reason = "error", f"infrastructure_error: {error}" if error else "infrastructure_error"
    elif _passes(source, reward_info, where):
        outcome, reason = "success", None
    else:
        outcome = "failure"
        reason = f"reward {reward} (termination {sim['termination_reason']})"
    trial_id = f"{task_id}/base/{trial}"
    model_steps = [s for s in steps if s["kind"] == "model"]
    agent_cost = sim.get("agent_cost")
    return {
        "trial": trial_id, "attempt": f"{trial_id}#0", "task": task_id, "variant": "base",
        "variant_family": "base", "variant_params": {},
        "instruction": source.tasks.get(task_id, {}).get("instruction"),
        "index": trial, "seed": sim.get("seed") if isinstance(sim.get("seed"), int) else None,
        "started_at": _unix(sim.get("start_time")), "attempts": 1, "outcome": outcome, "reason": reason,
        "checks": {} if infra else _checks(reward_info),
        "milestones": {}, "final_state_hash": None, "answer": None,
        "steps": sum(1 for s in steps if s["kind"] != "model"), "events": len(steps),
        "input_tokens": sum(s["input_tokens"] or 0 for s in model_steps),
        "output_tokens": sum(s["output_tokens"] or 0 for s in model_steps),
        "cost": float(agent_cost) if isinstance(agent_cost, (int, float)) else 0.0,
        "duration_s": float(sim.get("duration") or 0.0),
        "agent_info": {"simulation_id": sim.get("id"), "termination_reason": sim["termination_reason"],
                       "agent_cost": agent_cost, "user_cost": sim.get("user_cost"),
                       "start_time": sim.get("start_time"), "end_time": sim.get("end_time"),
                       "info": sim.get("info")},
    }


def _checks(reward_info: dict[str, Any]) -> dict[str, Any]:
    """τ²'s reward and each of its component checks, as trajbench checks (passed + detail)."""
    reward = reward_info.get("reward")
    checks: dict[str, Any] = {"reward": {
        "passed": isinstance(reward, (int, float)) and abs(reward - 1) <= 1e-6, "detail": f"reward {reward}",
        "value": reward, "reward_basis": reward_info.get("reward_basis"),
        "reward_breakdown": reward_info.get("reward_breakdown"), "info": reward_info.get("info")}}
    db = reward_info.get("db_check")
    if isinstance(db, dict):
        checks["db"] = {"passed": bool(db.get("db_match")), "detail": f"db_match {db.get('db_match')}",
                        "value": db.get("db_reward")}
    for i, check in enumerate(reward_info.get("action_checks") or []):
        action = check.get("action") or {}
        checks[f"action:{action.get('action_id') or i}"] = {
            "passed": bool(check.get("action_match")), "detail": f"gold action {action.get('name')}",
            "value": check.get("action_reward"), "tool_type": check.get("tool_type"), "action": action}
    for key, field_name, text in (("env_assertions", "env", "env_assertion"),
                                  ("communicate_checks", "communicate", "info"),
                                  ("nl_assertions", "nl", "nl_assertion")):
        for i, check in enumerate(reward_info.get(key) or []):
            checks[f"{field_name}:{i}"] = {"passed": bool(check.get("met")), "detail": check.get(text),
                                           "value": check.get("reward"),
                                           "justification": check.get("justification")}
    return checks


def _steps(messages: list[Any], read_only: dict[str, bool], model: str | None) -> list[dict[str, Any]]:
    """The messages as steps, in order; each tool call's result joined on the call id (in order,
    so calls with τ²'s default empty id still pair with their answers)."""
    results: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "tool":
            for part in message.get("tool_messages") or [message]:
                results.setdefault(str(part.get("id") or ""), []).append(part)
    steps: list[dict[str, Any]] = []
    said: str | None = None  # the agent's last text turn: what the user is answering
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "assistant":
            said = message.get("content") if message.get("content") is not None else said
            steps.append(_model_step(message, model))
            steps.extend(_tool_step(call, results, "tool", read_only) for call in message.get("tool_calls") or [])
        elif role == "user":
            if message.get("content") is not None or not message.get("tool_calls"):
                steps.append({"kind": "user", "tool": "ask_user", "args": {"question": said},
                              "observation": message.get("content"), "error": None, "read_only": True,
                              "user_model": _usage(message), **_times(message)})
            steps.extend(_tool_step(call, results, "user", None) for call in message.get("tool_calls") or [])
    return steps


def _model_step(message: dict[str, Any], model: str | None) -> dict[str, Any]:
    usage = _usage(message)
    output: dict[str, Any] = {"content": message.get("content")}
    if message.get("tool_calls"):
        output["tool_calls"] = message["tool_calls"]
    return {"kind": "model", "model": model, "output": output, **usage,
            "latency_s": message.get("generation_time_seconds"), **_times(message)}


def _usage(message: dict[str, Any]) -> dict[str, Any]:
    usage = message.get("usage") or {}
    cost = message.get("cost")
    return {"input_tokens": usage.get("prompt_tokens"), "output_tokens": usage.get("completion_tokens"),
            "cost": float(cost) if isinstance(cost, (int, float)) else None}


def _tool_step(call: dict[str, Any], results: dict[str, list[dict[str, Any]]], kind: str,
               read_only: dict[str, bool] | None) -> dict[str, Any]:
    queue = results.get(str(call.get("id") or ""), [])
    answer = queue.pop(0) if queue else None
    observation = answer.get("content") if answer else None
    error = observation if answer and answer.get("error") else None
    name = call.get("name")
    flag = (read_only or {}).get(name) if isinstance(name, str) else None
    return {"kind": kind, "tool": name, "args": call.get("arguments"), "observation": observation,
            "error": error if error is None else str(error), "read_only": flag,
            "requestor": call.get("requestor", "assistant"), "call_id": call.get("id"),
            **_times(answer or {})}


def _times(message: dict[str, Any]) -> dict[str, Any]:
    """τ² timestamps are local time without a zone: a Unix time would be a guess, so t_start and
    t_end are null unless the timestamp carries its offset; the text is kept as `timestamp`."""
    stamp = message.get("timestamp")
    at = _unix(stamp)
    return {"state_hash": None, "t_start": at, "t_end": at, "timestamp": stamp}


def _unix(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        parsed = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def _agent_model(info: dict[str, Any]) -> str | None:
    llm = (info.get("agent_info") or {}).get("llm")
    return llm if isinstance(llm, str) else None


def _agent_name(info: dict[str, Any]) -> str | None:
    agent = info.get("agent_info") or {}
    parts = [p for p in (agent.get("implementation"), agent.get("llm")) if isinstance(p, str)]
    return ":".join(parts) or None
