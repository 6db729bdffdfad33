"""Prompting and scaffolding shared by the LLM adapters (`local`, `openai` structured mode, and the
local chat model behind the `langgraph` adapter).

A model without a tool-calling template is driven by **constrained decoding**: every turn it must
emit one JSON object, `{"tool": NAME, "arguments": {...}}`, where NAME is one of the episode's
tools or the pseudo-tool `final_answer` (`{"answer": "..."}`) that ends the episode. The JSON
schema of the possible calls (an `anyOf` with one branch per tool) is handed to the decoder
(llama.cpp grammar, or a server's `response_format`), so the output always parses.

Two scaffolds decide whether a small model does anything but fail (measured on SmolLM2-135M in
the design probe: 0/20 without them, 10/16 with them on a 3-step cancel task). Each can be
switched off in the agent spec:

- `one_shot` — a worked example trajectory (a fictional domain) in the system prompt;
- `enum_args` — each string argument (also inside arrays and nested objects) is constrained to
  the values that have appeared in the conversation so far and that satisfy the argument's own
  schema (pattern, length): the words, ids, emails, quoted text and short phrases of the
  instruction, every string and key of the tool results, the tokens of error messages — or, for
  an argument that none of these fit, the words of the policy.
  Free-text arguments (`question`, `summary`, `reason`, times and dates…, see `free_text_args`)
  stay free, with a length cap and their pattern; an argument with an `enum` keeps it; one with
  no fitting candidate yet stays free. With these sources, the reference solutions of 111 of the
  113 built-in tasks stay expressible (tests/test_adapter_prompting.py).

Also a loop guard: when the model asks for the same call (same tool, same arguments) more than
`max_repeats` times in a row, the repeat is not executed — in a deterministic world it could only
return the same result — and the next turn is constrained to `final_answer` (a small model that
has done its job tends to repeat its last call instead of answering). Long observations are cut
to `max_observation_chars`; more than `max_invalid` unparseable replies in a row, or a
conversation that no longer fits the context window, end the trial as the agent's failure.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Sequence

import jsonschema
import orjson

from bench.adapters.options import Scaffold
from bench.canonical import canonical_json, derive_seed

FINAL = "final_answer"

EXAMPLE = """\
# Example (a different shop, with other tools; follow the same format)
User: Hi, I'm sam.lee@example.org. Please renew my loan L552.
Assistant: {"tool": "find_member", "arguments": {"email": "sam.lee@example.org"}}
User: Result of find_member: {"member_id": "M17", "name": "Sam Lee"}
Assistant: {"tool": "get_loan", "arguments": {"loan_id": "L552"}}
User: Result of get_loan: {"loan_id": "L552", "member_id": "M17", "status": "active", "due": "2024-05-01"}
Assistant: {"tool": "renew_loan", "arguments": {"loan_id": "L552"}}
User: Result of renew_loan: {"loan_id": "L552", "due": "2024-06-01"}
Assistant: {"tool": "final_answer", "arguments": {"answer": "Your loan L552 is renewed; it is now due 2024-06-01."}}"""

FORMAT = """\
# How to reply
Reply with exactly one JSON object and nothing else: {{"tool": NAME, "arguments": {{...}}}}.
Each reply calls one tool; the next message gives you its result. Copy ids, emails and names
exactly as they appear in the request or in tool results. When the request is done (or cannot
be done), call {final} with your answer to the user, stating the facts they asked for."""

# emails; quoted text; words (ids, names, service names, zip codes, amounts: letters, digits and
# inner . _ - : #)
_CANDIDATE = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    r"|(?<!\w)'([^'\n]{1,60})'(?!\w)|\"([^\"\n]{1,60})\"|[‘“]([^’”\n]{1,60})[’”]"
    r"|#?\w(?:[\w.:#'-]*\w)?"
)
_FRAGMENT = re.compile(r"[^,;:()\[\]{}!?\n]+")
_MAX_CANDIDATE_LEN = 100
# capitalised words that start sentences rather than name things
_COMMON = {
    "hi", "hello", "hey", "dear", "please", "thanks", "thank", "i", "i'm", "i've", "i'd", "i'll", "my", "me", "we",
    "we're", "we'll", "our", "you", "your", "the", "a", "an", "this", "that", "these", "those", "it", "it's", "its",
    "is", "are", "was", "can", "could", "would", "will", "should", "do", "does", "did", "don't", "what", "which",
    "who", "when", "where", "why", "how", "and", "or", "but", "if", "so", "then", "also", "just", "only", "for",
    "in", "on", "at", "to", "of", "with", "from", "by", "as", "be", "no", "not", "yes", "ok", "okay", "there",
    "here", "now", "all", "any", "some", "let", "tell", "give", "show", "set", "make", "find", "get",
}


# -- candidate values ------------------------------------------------------------------------

def harvest(value: Any, into: dict[str, None], whole: bool = True) -> None:
    """Add the strings a model could copy from `value` to the ordered set `into`: from JSON, the
    string leaves and keys whole (`whole`) and the email / id / name / quoted tokens inside them;
    from free text (an instruction, an error message: `whole=False`) the tokens only."""
    if isinstance(value, dict):
        for key, child in value.items():
            _add(str(key), into)
            harvest(child, into)
    elif isinstance(value, (list, tuple)):
        for child in value:
            harvest(child, into)
    elif isinstance(value, str):
        if whole:
            _add(value, into)
        for match in _CANDIDATE.finditer(value):
            token = match.group(1) or match.group(2) or match.group(3) or match.group(0)
            if len(token) < 2 or token.lower() in _COMMON:
                continue
            _add(token, into)
            if token.startswith("#"):
                _add(token[1:], into)
            if token[:1].isupper() and token[1:].islower():
                _add(token.lower(), into)  # "Search is down" names the service `search`
        if not whole:  # prose: also its short phrases ("55 Market St", "San Francisco")
            for fragment in _FRAGMENT.findall(value):
                words = [w.strip(".'\"") for w in fragment.split()]
                for n in (2, 3, 4):
                    for i in range(len(words) - n + 1):
                        gram = words[i:i + n]
                        if gram[0].lower() not in _COMMON and gram[-1].lower() not in _COMMON and all(gram):
                            _add(" ".join(gram), into)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _add(str(value), into)


def _add(text: str, into: dict[str, None]) -> None:
    text = text.strip()
    # no quotes, backslashes or control characters: a grammar converter may not escape them well
    if text and len(text) <= _MAX_CANDIDATE_LEN and text.isprintable() and '"' not in text and "\\" not in text:
        into.setdefault(text, None)


# -- the schema of the next action -----------------------------------------------------------

_KEEP = ("type", "enum", "const", "pattern", "minItems", "maxItems", "minimum", "maximum", "minLength", "maxLength")


_CLASS_ESCAPES = {"d": "0-9", "w": "A-Za-z0-9_", "s": " \\t\\n"}


def simple_pattern(pattern: str) -> str:
    """The same regex with the shorthand classes (\\d \\w \\s) spelled out: llama.cpp's grammar
    parser rejects them."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt in _CLASS_ESCAPES:
                out.append(_CLASS_ESCAPES[nxt] if in_class else f"[{_CLASS_ESCAPES[nxt]}]")
            else:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
        elif ch == "]" and in_class:
            in_class = False
        out.append(ch)
        i += 1
    return "".join(out)


def without_patterns(schema: Any) -> Any:
    """A schema with every `pattern` removed (the fallback when a decoder cannot compile one)."""
    if isinstance(schema, dict):
        return {k: without_patterns(v) for k, v in schema.items() if k != "pattern"}
    if isinstance(schema, list):
        return [without_patterns(v) for v in schema]
    return schema


def _constrain(schema: dict[str, Any], name: str, candidates: tuple[list[str], list[str]] | None, scaffold: Scaffold) -> dict[str, Any]:
    """A grammar-friendly copy of one argument's schema, string values constrained to candidates."""
    out: dict[str, Any] = {k: copy.deepcopy(schema[k]) for k in _KEEP if k in schema}
    if isinstance(out.get("pattern"), str):
        out["pattern"] = simple_pattern(out["pattern"])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        out["type"] = "object"
        out["properties"] = {k: _constrain(v, k, candidates, scaffold) for k, v in props.items()}
        out["required"] = [k for k in schema.get("required", []) if k in props]
        out["additionalProperties"] = False
    elif kind == "array":
        out["items"] = _constrain(schema.get("items", {}), name, candidates, scaffold)
    elif kind == "string" and "enum" not in schema and "const" not in schema:
        free = name.lower() in scaffold.free_text_args or any(
            name.lower().endswith("_" + f) for f in scaffold.free_text_args)
        if candidates is not None and not free:
            fits = _string_check(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode())
            main, background = candidates
            allowed = [c for c in main if fits(c)][-scaffold.max_enum_values:]
            if not allowed:  # nothing from the instruction or the results fits: the policy's words
                allowed = [c for c in background if fits(c)][:scaffold.max_enum_values]
            if allowed:
                return {"type": "string", "enum": allowed}
        cap = scaffold.max_text_chars if free else _MAX_CANDIDATE_LEN
        out["maxLength"] = min(int(schema.get("maxLength", cap)), cap)
        out.pop("minLength", None) if out.get("minLength", 0) > out["maxLength"] else None
    elif not kind and not out:
        out = {"type": "string", "maxLength": scaffold.max_text_chars}
    return out


@functools.lru_cache(maxsize=1024)
def _string_check(schema_json: str) -> Callable[[str], bool]:
    """Whether a string satisfies a string schema: a direct check of pattern and length (this runs
    for every candidate and argument on every turn), jsonschema for anything else."""
    schema = orjson.loads(schema_json)
    if set(schema) <= {"type", "pattern", "minLength", "maxLength", "description", "title", "examples", "format"}:
        try:
            pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
        except re.error:
            pattern = None
        else:
            low, high = schema.get("minLength", 0), schema.get("maxLength", float("inf"))
            return lambda text: low <= len(text) <= high and (pattern is None or pattern.search(text) is not None)
    return jsonschema.Draft202012Validator(schema).is_valid


def action_schema(tool_specs: list[dict[str, Any]], scaffold: Scaffold, candidates: list[str] | None,
                  background: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON schema of one reply: a call of any tool, or the final answer. Under `enum_args`, a
    string argument may take the `candidates` (instruction and tool results, oldest first) that fit
    its schema, or if none fits the `background` ones (the policy's words) that do."""
    cands = (candidates, list(background)) if scaffold.enum_args and candidates is not None else None
    variants = []
    for spec in tool_specs:
        params = spec.get("parameters") or {"type": "object", "properties": {}}
        variants.append({
            "type": "object",
            "properties": {"tool": {"const": spec["name"]}, "arguments": _constrain(params, spec["name"], cands, scaffold)},
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        })
    variants.append(final_schema(scaffold))
    return {"anyOf": variants}  # the `tool` const tells the branches apart; anyOf is the widest supported


def final_schema(scaffold: Scaffold) -> dict[str, Any]:
    """The schema of the final answer alone."""
    return {
        "type": "object",
        "properties": {
            "tool": {"const": FINAL},
            "arguments": {"type": "object", "properties": {"answer": {"type": "string", "maxLength": scaffold.max_text_chars}},
                          "required": ["answer"], "additionalProperties": False},
        },
        "required": ["tool", "arguments"],
        "additionalProperties": False,
    }


def describe_tools(tool_specs: list[dict[str, Any]]) -> str:
    lines = []
    for spec in tool_specs:
        props = (spec.get("parameters") or {}).get("properties", {})
        required = set((spec.get("parameters") or {}).get("required", []))
        sig = ", ".join(f"{k}: {_type_name(v)}{'' if k in required else '?'}" for k, v in props.items())
        desc = " ".join((spec.get("description") or "").split())
        lines.append(f"- {spec['name']}({sig}): {desc}")
    lines.append(f"- {FINAL}(answer: string): Reply to the user and end the conversation.")
    return "\n".join(lines)


def _type_name(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " | ".join(orjson.dumps(v).decode() for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type_name(schema.get('items', {}))}"
    return kind if isinstance(kind, str) else "/".join(kind)


def system_prompt(policy: str, tool_specs: list[dict[str, Any]], scaffold: Scaffold) -> str:
    parts = [policy.strip(), "# Tools\n" + describe_tools(tool_specs), FORMAT.format(final=FINAL)]
    if scaffold.one_shot:
        parts.append(scaffold.example if scaffold.example is not None else EXAMPLE)
    return "\n\n".join(p for p in parts if p)


def tool_specs_from_openai(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI `tools=` entries ({"type": "function", "function": {...}}) as episode tool specs."""
    out = []
    for tool in tools:
        fn = tool.get("function", tool)
        out.append({"name": fn["name"], "description": fn.get("description", ""),
                    "parameters": fn.get("parameters") or {"type": "object", "properties": {}}})
    return out


def openai_tools(tool_specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Episode tool specs as OpenAI `tools=` entries (the read-only flag is not sent)."""
    return [{"type": "function", "function": {"name": s["name"], "description": s.get("description", ""),
                                              "parameters": s.get("parameters") or {"type": "object", "properties": {}}}}
            for s in tool_specs]


# -- parsing a reply -------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelAction:
    """One parsed model reply: a tool call, the final answer, or an unparseable reply (`error`)."""

    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None
    error: str | None = None

    @property
    def final(self) -> bool:
        return self.answer is not None


def parse_action(text: str) -> ModelAction:
    """Parse one reply. Tolerates code fences and text around the object; anything else is an
    invalid action (the agent is told and may try again)."""
    raw = (text or "").strip()
    if raw.startswith("```"):
        raw = raw.strip("`").removeprefix("json").strip()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        start, end = raw.find("{"), raw.rfind("}")
        try:
            data = orjson.loads(raw[start:end + 1]) if 0 <= start < end else None
        except orjson.JSONDecodeError:
            data = None
        if data is None:
            return ModelAction(error=f"not a JSON object: {_clip(text, 120)!r}")
    if not isinstance(data, dict) or not isinstance(data.get("tool"), str):
        return ModelAction(error='expected {"tool": NAME, "arguments": {...}}')
    args = data.get("arguments", {})
    if not isinstance(args, dict):
        return ModelAction(error="arguments must be a JSON object")
    if data["tool"] == FINAL:
        answer = args.get("answer", "")
        return ModelAction(answer=answer if isinstance(answer, str) else orjson.dumps(answer).decode())
    return ModelAction(tool=data["tool"], args=args)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


# -- the conversation ------------------------------------------------------------------------

class ContextOverflow(Exception):
    """The prompt does not fit the model's context window (the conversation is cut, or it ends)."""


class Stop(Exception):
    """The agent ends the episode without an answer, for a stated reason."""


class AgentGaveUp(Exception):
    """Raised out of an agent's run to fail the trial with a reason (never an infrastructure error)."""


@dataclass
class Conversation:
    """One episode's prompt state for structured-output agents: render the messages, build the
    schema of the next reply, and apply the reply (a tool call through the episode, or the end)."""

    policy: str
    instruction: str
    tool_specs: list[dict[str, Any]]
    scaffold: Scaffold
    history: list[dict[str, str]] = field(default_factory=list)   # after system + instruction
    candidates: dict[str, None] = field(default_factory=dict)
    background: dict[str, None] = field(default_factory=dict)
    turns: int = 0
    invalid_in_row: int = 0
    last_call: str | None = None
    repeats: int = 0
    dropped: int = 0
    finishing: str | None = None   # why the next reply must be the final answer
    _logged: int = 0

    def __post_init__(self) -> None:
        self.tool_specs = [{k: v for k, v in s.items() if k != "read_only"} for s in self.tool_specs]
        self.tool_names = {s["name"] for s in self.tool_specs}
        # the system prompt is part of the conversation too: its words are the candidates of an
        # argument that nothing in the instruction or the results fits
        harvest(self.policy, self.background, whole=False)
        harvest(self.instruction, self.candidates, whole=False)
        self.system = system_prompt(self.policy, self.tool_specs, self.scaffold)

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.instruction}, *self.history]

    def new_messages(self) -> list[dict[str, str]]:
        """The messages added since the last call (what a model-turn event logs)."""
        msgs = self.messages()
        new, self._logged = msgs[self._logged:], len(msgs)
        return new

    def schema(self) -> dict[str, Any]:
        if self.finishing:
            return final_schema(self.scaffold)
        return action_schema(self.tool_specs, self.scaffold, list(self.candidates), list(self.background))

    def turn_seed(self, seed: int) -> int:
        return turn_seed(seed, self.turns)

    def shrink(self) -> None:
        """Drop the oldest exchange to fit the context window; raise Stop when nothing is left."""
        if len(self.history) < 2:
            raise Stop("the conversation no longer fits the model's context window")
        del self.history[:2]
        self.dropped += 1
        self._logged = 0

    def apply(self, episode: Any, reply: str) -> str | None:
        """Apply the model's reply: run its tool call (through `episode.call`) or return the final
        answer. Returns None to continue; raises Stop to end without an answer."""
        self.turns += 1
        action = parse_action(reply)
        if action.error is not None:
            self.invalid_in_row += 1
            if self.invalid_in_row > self.scaffold.max_invalid:
                raise Stop(f"{self.invalid_in_row} invalid replies in a row (last: {action.error})")
            self.history += [{"role": "assistant", "content": reply},
                             {"role": "user", "content": f"That reply was not valid ({action.error}). Reply with one JSON object: "
                                                         '{"tool": NAME, "arguments": {...}}.'}]
            return None
        self.invalid_in_row = 0
        if action.final:
            return action.answer
        if self.finishing:
            raise Stop(f"asked for the final answer ({self.finishing}), the model replied with a call")
        assert action.tool is not None  # parse_action: an error, the answer, or a call
        try:
            self.check_repeat(action.tool, action.args)
        except Stop as exc:
            self.finishing = str(exc)
            return None
        observation = episode.call(action.tool, action.args)
        self.add_call(action.tool, action.args)
        self.add_result(action.tool, observation.text())
        return None

    def restore(self, calls: list[tuple[str, Any, Any]]) -> None:
        """Rebuild the history after a restored prefix (`Episode.restored_calls`): each call and
        its result as the loop would have added them (invalid replies of the logged run are not
        replayed: the continuation sees a clean conversation up to the node)."""
        for tool, args, observation in calls:
            self.turns += 1
            self.check_repeat(tool, args)
            self.add_call(tool, args)
            self.add_result(tool, observation.text())

    def check_repeat(self, tool: str, args: Any) -> None:
        self.repeats, self.last_call = check_repeat(self.scaffold.max_repeats, self.repeats, self.last_call, tool, args)

    def add_call(self, tool: str, args: Any) -> None:
        self.history.append({"role": "assistant", "content": call_text(tool, args)})

    def add_result(self, tool: str, result_text: str) -> None:
        """A tool's result (`Observation.text()`); its JSON strings become candidates."""
        self.history.append({"role": "user", "content": f"Result of {tool}: {_clip(result_text, self.scaffold.max_observation_chars)}"})
        try:
            harvest(orjson.loads(result_text), self.candidates)
        except orjson.JSONDecodeError:
            harvest(result_text, self.candidates, whole=False)

    def add_text(self, role: str, text: str) -> None:
        self.history.append({"role": role, "content": text})
        if role == "user":
            harvest(text, self.candidates, whole=False)


def turn_seed(seed: int, turn: int) -> int:
    """The sampling seed of a model turn: a function of the trial seed and the turn index only
    (31 bits: what llama.cpp and most endpoints accept)."""
    return derive_seed(seed, "turn", turn) % 2_147_483_647


def check_repeat(limit: int, repeats: int, last: str | None, tool: str, args: Any) -> tuple[int, str]:
    """Count identical consecutive calls; raise Stop past `limit` (0: no limit). Returns the new
    (count, last call)."""
    key = f"{tool}:{canonical_json(args)}"
    repeats = repeats + 1 if key == last else 1
    if limit and repeats > limit:
        raise Stop(f"made the same call {repeats} times in a row: {tool}({canonical_json(args)})")
    return repeats, key


def call_text(tool: str, args: Any) -> str:
    """How a call appears in the conversation (the same form the model is asked to produce)."""
    return orjson.dumps({"tool": tool, "arguments": args}).decode()


def run_conversation(episode: Any, conv: Conversation, complete: Callable[[Conversation], Any], model: str) -> str | None:
    """The synchronous structured-output loop. `complete(conv)` returns a `Completion` (or raises
    ContextOverflow). Model turns are logged; every tool call goes through `episode.call`."""
    while True:
        try:
            completion = complete(conv)
        except ContextOverflow:
            completion = None
        done = _advance(episode, conv, completion, model)
        if done is not None:
            return done[0]


async def arun_conversation(episode: Any, conv: Conversation, acomplete: Callable[[Conversation], Any], model: str) -> str | None:
    """The same loop for an async `acomplete(conv)`."""
    while True:
        try:
            completion = await acomplete(conv)
        except ContextOverflow:
            completion = None
        done = _advance(episode, conv, completion, model)
        if done is not None:
            return done[0]


def _advance(episode: Any, conv: Conversation, completion: "Completion | None", model: str) -> tuple[str | None] | None:
    """One turn of the loop: log and apply the completion (None: the prompt overflowed the context
    window, so the oldest exchange is dropped). Returns (answer,) when the episode is over."""
    if completion is None:
        _shrink_or_stop(episode, conv)
        return None
    try:
        return _turn(episode, conv, completion, model)
    except Stop as exc:
        _stopped(episode, exc)
        return None


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int | None
    output_tokens: int | None
    latency_s: float
    cost: float | None = None
    messages: Any = None


def _turn(episode: Any, conv: Conversation, completion: Completion, model: str) -> tuple[str | None] | None:
    episode.log_model_turn(messages=completion.messages if completion.messages is not None else conv.new_messages(),
                           output=completion.text, input_tokens=completion.input_tokens,
                           output_tokens=completion.output_tokens, latency_s=completion.latency_s,
                           cost=completion.cost, model=model)
    answer = conv.apply(episode, completion.text)
    if conv.finishing and "loop_guard" not in episode.annotations:
        episode.annotations["loop_guard"] = conv.finishing
    return None if answer is None else (answer,)


def _shrink_or_stop(episode: Any, conv: Conversation) -> None:
    try:
        conv.shrink()
    except Stop as exc:
        raise AgentGaveUp(str(exc)) from None
    episode.annotations["context_cuts"] = conv.dropped


def _stopped(episode: Any, exc: Stop) -> NoReturn:
    episode.annotations["stop_reason"] = str(exc)
    raise AgentGaveUp(str(exc))
