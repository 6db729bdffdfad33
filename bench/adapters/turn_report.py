"""The model turns of an agent in its own process (the `command` adapter), logged as the same
model-turn records an in-process adapter logs (`Episode.log_model_turn`), so that token and
latency columns, `view`, export and `diff` compare a command agent with any other.

The channel: the harness names a file in `TRAJBENCH_TURNS` (a fresh path per trial; the child
creates it); the child appends one JSON object per model turn, one line each, e.g.

    {"tool_calls_before": 2, "model": "smollm2", "input_tokens": 812, "output_tokens": 31,
     "latency_s": 1.9, "messages": [...], "output": {...}}

`tool_calls_before` (required) is how many tool calls the child had made in this trial before
the turn's request (`ask_user` is one, `final_answer` is not; in a `replay` continuation the
restored prefix's calls do not count). The other keys are optional: tokens (whole numbers >= 0, or null
when unknown), `latency_s` (seconds >= 0), `model` (default: the spec's model), `messages` (what
was sent new this turn) and `output` (the reply), any JSON. Any other key is an error: a
misspelt `input_token` would lose the tokens without a word.

Why a file read during the trial, not at the end: the trajectory is logged as it happens (the
step indices are its order, and milestones and divergence refer to them), so a turn must be
logged before the calls it made. The child writes a turn's line, flushed, before that turn's
first MCP call; the harness reads the new lines before it serves each MCP call (`final_answer`
included) and once more after the child exits. `tool_calls_before` is checked against the calls
logged so far: a line read past its place is the child's error, never logged out of order.

A bad line (not JSON, a wrong type, an unknown key, a misplaced turn) fails the trial
(`agent_completed`: "TRAJBENCH_TURNS line N: FIELD: ..."), the call that found it is refused
and the child is killed (its trial has failed): no later line is read. A missing file is a child
that reports no turns. Lines read after the episode ended (budget spent, time limit) are not
logged, as an in-process adapter stops before its next model turn. `cost` is the harness's, from
the spec's prices, as for every adapter.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import orjson

from bench.episode import Episode, EpisodeOver

ENV = "TRAJBENCH_TURNS"
FIELDS = ("tool_calls_before", "model", "input_tokens", "output_tokens", "latency_s", "messages", "output")


class TurnLineError(ValueError):
    """One line of the report is not a model turn (the message names the field)."""


class TurnFileError(TurnLineError):
    """The report cannot be read at all."""


@dataclass(frozen=True)
class ReportedTurn:
    tool_calls_before: int
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    latency_s: float | None
    messages: Any
    output: Any


def parse_turn(line: bytes) -> ReportedTurn:
    """One line as a model turn, or TurnLineError naming the field and what was expected."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise TurnLineError(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TurnLineError(f"expected a JSON object, got {_show(data)}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise TurnLineError(f"{unknown[0]}: unknown field; the fields are {', '.join(FIELDS)}")
    if data.get("tool_calls_before") is None:
        raise TurnLineError("tool_calls_before: missing (how many tool calls preceded this model turn)")
    before = _whole(data["tool_calls_before"], "tool_calls_before")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise TurnLineError(f"model: expected a text or null, got {_show(model)}")
    latency = data.get("latency_s")
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, (int, float))
                                or not math.isfinite(latency) or latency < 0):
        raise TurnLineError(f"latency_s: expected a number of seconds >= 0 or null, got {_show(latency)}")
    return ReportedTurn(before, model, _tokens(data, "input_tokens"), _tokens(data, "output_tokens"),
                        None if latency is None else float(latency), data.get("messages"), data.get("output"))


def _tokens(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    return None if value is None else _whole(value, key, " or null")


def _whole(value: Any, key: str, alternative: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TurnLineError(f"{key}: expected a whole number >= 0{alternative}, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = orjson.dumps(value, default=repr).decode()
    return text if len(text) <= 60 else text[:57] + "..."


class TurnReport:
    """One trial's report file, read as the trial goes (see the module doc). `read` is called
    from the MCP server's worker threads and after the child exits: one reader at a time."""

    def __init__(self, episode: Episode, path: Path, *, model: str | None,
                 cost: Callable[[int | None, int | None], float]):
        self.episode, self.path, self.model, self.cost = episode, path, model, cost
        self.restored = episode.tool_calls  # a continuation's prefix: not the child's calls
        self.on_error: Callable[[], None] = lambda: None  # set once the child runs: stop it
        self.error: str | None = None
        self.logged = self.ignored = 0
        self._offset = self._line = 0
        self._lock = threading.Lock()

    def read(self, final: bool = False) -> str | None:
        """Log the lines written since the last read; returns the report's error, if it has one.
        `final`: the child has exited by itself, so a last line without its newline counts (a
        killed child's torn last line does not)."""
        with self._lock:
            if self.error is None:
                try:
                    self._read(final)
                except TurnLineError as exc:
                    where = str(self.path) if isinstance(exc, TurnFileError) else f"line {self._line}"
                    self.error = f"{ENV} {where}: {exc}"
                    self.on_error()
            return self.error

    def _read(self, final: bool) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return  # no turns reported (yet)
        except OSError as exc:  # the child put something else there (a folder, an unreadable file)
            raise TurnFileError(f"the file cannot be read ({type(exc).__name__}: {exc})") from None
        end = len(data) if final else data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            self._line += 1
            if line.strip():
                self._log(parse_turn(line))

    def _log(self, turn: ReportedTurn) -> None:
        episode = self.episode
        if episode.budget_exhausted or episode.timed_out or episode.closed:
            self.ignored += 1
            return
        made = episode.tool_calls - self.restored
        if turn.tool_calls_before != made:
            raise TurnLineError(f"tool_calls_before: {turn.tool_calls_before}, but {made} tool call(s) had been made "
                                "when the line was read: write each turn's line, flushed, before its first tool call")
        try:
            episode.log_model_turn(messages=turn.messages, output=turn.output, input_tokens=turn.input_tokens,
                                   output_tokens=turn.output_tokens, latency_s=turn.latency_s,
                                   cost=self.cost(turn.input_tokens, turn.output_tokens), model=turn.model or self.model)
        except EpisodeOver:  # the time limit passed under the read
            self.ignored += 1
            return
        self.logged += 1
