"""Inspect AI eval logs (`.eval` zip or `.json`), read through the `inspect_ai.log` API (the
stable surface its maintainers name; the files' layout is versioned but not frozen): the header
with `read_eval_log(header_only=True)`, each sample validated as `EvalSample` and resolved with
`resolve_sample_attachments`, one at a time (docs/import.md).

Each sample × epoch is one trial `SAMPLE_ID/base/EPOCH-1` (epochs are 1-based). Its final
conversation becomes steps: a user message is a `user` step (`ask_user`), an assistant message a
`model` step (tokens, cost and latency from the matching `model` event), each tool call plus the
tool message answering it a `tool` step (times from the matching `tool` event). The outcome is
the `--success` rule over the sample's scores (default `accuracy == 1`); a sample that halted
on an error is an infrastructure `error`. Inspect has gold answers (`target`), not gold actions,
so the reference is empty."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import orjson

from bench.errors import BenchError
from bench.imports.core import ImportedRun, check_suffix, iter_json_members
from bench.imports.success import Ref, Resolve, Rule, parse_rule

FORMAT = "inspect"
DEFAULT_RULE = "accuracy == 1"
_SUFFIXES = (".eval", ".json")


def _api() -> Any:
    """The inspect_ai.log module, or one clear line naming the extra that provides it."""
    try:
        import inspect_ai.log as log
    except ImportError:
        raise BenchError("importing Inspect logs needs inspect-ai: pip install 'trajbench[inspect]'",
                         field="format") from None
    return log


def import_files(sources: list[Path], out: Path, success: str | None = None) -> ImportedRun:
    """Import every sample × epoch of every log into one run directory at `out`."""
    rule = parse_rule(success or DEFAULT_RULE)
    log_api = _api()
    for path in sources:
        check_suffix(path, _SUFFIXES, "an Inspect AI log")
    headers = [(path, _header(log_api, path)) for path in sources]
    several = len({h.eval.task for _, h in headers}) > 1
    with ImportedRun(out, FORMAT) as run:
        for path, header in headers:
            prefix = f"{header.eval.task}:" if several else ""
            for sample in _samples(log_api, path):
                where = f"sample {sample.id!r} epoch {sample.epoch}"
                summary, steps = map_sample(sample, header, rule, prefix, path, where)
                run.tasks.add(summary["task"], _text(sample.input), [], target=_jsonable(sample.target))
                run.add(summary, steps, f"file {path}, {where}", f"file {path}")
        for path, header in headers:
            if header.status != "success":
                total = header.eval.dataset.samples
                runs = f"{total} samples × {header.eval.config.epochs or 1} epochs" if total else "its samples"
                run.notes.append(f"{path}: the eval's status is {header.status!r}: it did not finish, so the run "
                                 f"holds only the samples it logged (of {runs})")
        models = sorted({h.eval.model for _, h in headers})
        versions = sorted({f"inspect_ai {h.eval.packages.get('inspect_ai')}" for _, h in headers
                           if h.eval.packages.get("inspect_ai")})
        run.finish(sources, ", ".join(versions) or None, rule.text, agent_name=" + ".join(models),
                   details={"evals": [_eval_details(path, h) for path, h in headers]})
    return run


def _header(log_api: Any, path: Path) -> Any:
    """The log without its samples; an unreadable file is one clear error naming it."""
    try:
        return log_api.read_eval_log(str(path), header_only=True)
    except FileNotFoundError:
        raise BenchError("cannot be read: no such file", file=str(path)) from None
    except Exception as exc:  # noqa: BLE001 - inspect raises many kinds on a damaged log
        raise BenchError(f"not a readable Inspect log ({type(exc).__name__}: {_first_line(exc)})",
                         file=str(path)) from None


def _samples(log_api: Any, path: Path) -> Iterator[Any]:
    """The samples one at a time, each validated as the API's `EvalSample` and resolved with the
    API's `resolve_sample_attachments` (condensed events expanded, attachments inlined), in the
    order the file holds them. `read_eval_log_samples` itself re-opens the log for every sample,
    which is quadratic in the samples (800 took 17 s, see docs/import.md), so the file is opened
    once: a `.eval` zip's `samples/` entries, a `.json` log's `samples` array streamed."""
    raw = _eval_entries(path) if path.suffix.lower() == ".eval" else _json_entries(path)
    context = _deserializing_context()
    number = 0
    while True:
        try:
            data = next(raw)
        except StopIteration:
            return
        except BenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged zip surfaces as many kinds
            raise BenchError(f"truncated or unreadable after {number} samples ({type(exc).__name__}: "
                             f"{_first_line(exc)})", file=str(path)) from None
        try:
            sample = log_api.EvalSample.model_validate(data, context=context)
        except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError, kept to one line
            where = f"sample {data.get('id')!r} epoch {data.get('epoch')}" if isinstance(data, dict) else f"sample {number}"
            raise BenchError(f"{where}: not a valid Inspect sample ({_first_line(exc)})", file=str(path)) from None
        yield log_api.resolve_sample_attachments(sample, True)
        number += 1


def _eval_entries(path: Path) -> Iterator[Any]:
    """The parsed `samples/*.json` entries of a `.eval` zip (zstd entries through zipfile_zstd,
    which inspect-ai installs before Python 3.14)."""
    import zipfile

    try:
        import zipfile_zstd  # noqa: F401 - registers zip method 93
    except ImportError:
        pass
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.startswith("samples/") and name.endswith(".json"):
                yield orjson.loads(archive.read(name))


def _json_entries(path: Path) -> Iterator[Any]:
    """The elements of a `.json` log's `samples` array, streamed (core.iter_json_members)."""
    for key, index, value in iter_json_members(path, frozenset({"samples"})):
        if key == "samples" and index is not None:
            yield value


def _deserializing_context() -> dict[str, Any] | None:
    """The validation context inspect's own readers pass (a shared message cache)."""
    try:
        from inspect_ai._util.constants import get_deserializing_context
    except ImportError:
        return None
    context: dict[str, Any] = get_deserializing_context()
    return context


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _eval_details(path: Path, header: Any) -> dict[str, Any]:
    spec = header.eval
    return {"file": str(path), "task": spec.task, "task_version": spec.task_version, "eval_id": spec.eval_id,
            "model": spec.model, "status": header.status, "epochs": spec.config.epochs,
            "generate_seed": spec.model_generate_config.seed,
            "scorers": [s.name for s in (header.results.scores if header.results else [])]}


def map_sample(sample: Any, header: Any, rule: Rule, prefix: str, path: Path,
               where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One EvalSample → a trial summary and its steps."""
    task_id = f"{prefix}{sample.id}"
    trial = int(sample.epoch) - 1
    trial_id = f"{task_id}/base/{trial}"
    scores = sample.scores or {}
    reason: str | None = None
    if sample.error is not None:
        outcome, reason = "error", f"sample error: {_first_line_text(sample.error.message)}"
    elif not scores:
        raise BenchError(f"{where}: no scores (was the eval run without a scorer?), so no outcome can be "
                         "decided", file=str(path), field="scores")
    else:
        try:
            passed = rule.passes(_resolver(scores))
        except BenchError as exc:
            raise BenchError(f"{where}: {exc.args[0]}", file=str(path), field="success") from None
        outcome = "success" if passed else "failure"
        shown = ", ".join(f"{name} = {score.value!r}" for name, score in scores.items())
        if not passed:
            limit = f"; {sample.limit.type} limit {sample.limit.limit} hit" if sample.limit is not None else ""
            reason = f"{rule.text} is false ({shown}){limit}"
    steps = _steps(sample, header.eval.model)
    model_steps = [s for s in steps if s["kind"] == "model"]
    costs = [s["cost"] for s in model_steps if s["cost"] is not None]
    summary: dict[str, Any] = {
        "trial": trial_id, "attempt": f"{trial_id}#0", "task": task_id, "variant": "base",
        "variant_family": "base", "variant_params": {}, "instruction": _text(sample.input),
        "index": trial, "seed": None, "started_at": _unix(sample.started_at), "attempts": 1,
        "outcome": outcome, "reason": reason, "checks": _checks(scores),
        "milestones": {}, "final_state_hash": None, "answer": _answer(sample),
        "steps": sum(1 for s in steps if s["kind"] != "model"), "events": len(steps),
        "input_tokens": sum(s["input_tokens"] or 0 for s in model_steps),
        "output_tokens": sum(s["output_tokens"] or 0 for s in model_steps),
        "cost": float(sum(costs)), "duration_s": float(sample.total_time or 0.0),
        "agent_info": {"uuid": sample.uuid, "target": _jsonable(sample.target),
                       "limit": _jsonable(sample.limit), "working_time": sample.working_time,
                       "error": _jsonable(sample.error), "metadata": _jsonable(sample.metadata)},
    }
    return summary, steps


def _first_line_text(text: str | None) -> str:
    return ((text or "").strip().splitlines() or [""])[0][:200]


def _resolver(scores: dict[str, Any]) -> Resolve:
    """Names of the rule looked up in one sample's scores (value_to_float: Inspect's own mapping)."""
    from inspect_ai.scorer import value_to_float

    to_float = value_to_float()

    def resolve(ref: Ref) -> Any:
        name = ref.scorer
        if name is None:
            if len(scores) != 1:
                raise BenchError(f"the sample has {len(scores)} scorers ({', '.join(scores)}): name one, e.g. "
                                 f"--success '{ref.kind}:{next(iter(scores))} == 1'")
            name = next(iter(scores))
        if name not in scores:
            raise BenchError(f"no scorer {name!r} in the sample (scorers: {', '.join(scores)})")
        value = scores[name].value
        if ref.key is not None:
            if not isinstance(value, dict) or ref.key not in value:
                raise BenchError(f"{ref}: the score {value!r} has no key {ref.key!r}")
            value = value[ref.key]
        if ref.kind == "accuracy":
            if isinstance(value, (dict, list)):
                raise BenchError(f"{ref}: the score {value!r} is not one value; name a key (accuracy:SCORER.KEY)")
            return to_float(value)
        return value
    return resolve


def _checks(scores: dict[str, Any]) -> dict[str, Any]:
    """Each scorer as a check; `passed` = full credit as Inspect's accuracy counts it."""
    from inspect_ai.scorer import value_to_float

    to_float = value_to_float()
    checks: dict[str, Any] = {}
    for name, score in scores.items():
        value = score.value
        full = not isinstance(value, (dict, list)) and to_float(value) >= 1.0
        checks[f"score:{name}"] = {"passed": full, "detail": f"{name} = {value!r}", "value": _jsonable(value),
                                   "answer": score.answer, "explanation": score.explanation}
    return checks


def _steps(sample: Any, eval_model: str | None) -> list[dict[str, Any]]:
    """The final conversation as steps, enriched from the transcript's model and tool events."""
    model_events = {e.output.message.id: e for e in sample.events
                    if e.event == "model" and e.output is not None and e.output.choices}
    tool_events = {e.id: e for e in sample.events if e.event == "tool"}
    answers = {m.tool_call_id: m for m in sample.messages if m.role == "tool"}
    steps: list[dict[str, Any]] = []
    said: str | None = None
    for message in sample.messages:
        if message.role == "user":
            steps.append({"kind": "user", "tool": "ask_user", "args": {"question": said}, "observation": message.text,
                          "error": None, "read_only": True, "state_hash": None, "t_start": None, "t_end": None})
        elif message.role == "assistant":
            said = message.text or said
            steps.append(_model_step(message, model_events.get(message.id), eval_model))
            for call in message.tool_calls or []:
                steps.append(_tool_step(call, answers.get(call.id), tool_events.get(call.id)))
    return steps


def _model_step(message: Any, event: Any, eval_model: str | None) -> dict[str, Any]:
    usage = event.output.usage if event is not None else None
    output: dict[str, Any] = {"content": message.text}
    if message.tool_calls:
        output["tool_calls"] = [{"id": c.id, "function": c.function, "arguments": c.arguments}
                                for c in message.tool_calls]
    return {"kind": "model", "model": message.model or (event.model if event is not None else eval_model),
            "output": output,
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "cost": usage.total_cost if usage else None,
            "latency_s": event.output.time if event is not None else None,
            "state_hash": None, "t_start": _unix(event.timestamp) if event is not None else None,
            "t_end": _unix(event.completed) if event is not None else None}


def _tool_step(call: Any, answer: Any, event: Any) -> dict[str, Any]:
    error = (answer.error if answer is not None else None) or (event.error if event is not None else None)
    return {"kind": "tool", "tool": call.function, "args": call.arguments,
            "observation": answer.text if answer is not None else None,
            "error": f"{error.type}: {error.message}" if error is not None else None,
            "read_only": None, "state_hash": None, "call_id": call.id,
            "latency_s": event.working_time if event is not None else None,
            "t_start": _unix(event.timestamp) if event is not None else None,
            "t_end": _unix(event.completed) if event is not None else None}


def _text(value: Any) -> str | None:
    """A sample input (a string or chat messages) as text."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(_jsonable(value), option=orjson.OPT_SORT_KEYS).decode()


def _answer(sample: Any) -> str | None:
    output = sample.output
    if output is None or not output.choices:
        return None
    return str(output.completion) if output.completion else None


def _jsonable(value: Any) -> Any:
    """A pydantic value (or list of them) as plain JSON data; None stays None."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    dump = getattr(value, "model_dump", None)
    return dump(mode="json", exclude_none=True) if dump else str(value)


def _unix(stamp: Any) -> float | None:
    if isinstance(stamp, datetime):
        return stamp.timestamp() if stamp.tzinfo is not None else None
    if isinstance(stamp, str):
        try:
            parsed = datetime.fromisoformat(stamp)
        except ValueError:
            return None
        return parsed.timestamp() if parsed.tzinfo is not None else None
    return None
