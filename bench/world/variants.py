"""Input variants: the same intent in varied words — the second axis of variance.

Each family rewrites a task's instruction deterministically from a seed and never changes the
goal state:

- `typos` (rate r, default 0.06): misspells alphabetic words (swap, drop, double, neighbour key);
- `paraphrase`: rule-based rewrites of polite phrasing that keep every fact;
- `reorder`: shuffles the sentences;
- `distractors`: adds irrelevant chatter;
- `formats`: writes dates, times, money and phone numbers in other local formats (the agent must
  convert them back; every rewrite is reversible, see `parse_back`);
- `drop`: removes one needed fact (an email, an id, a phone number) from the instruction and
  moves it to the scripted user's hidden facts; the variant's reference asks for it first, so
  the task stays solvable and its goal state is unchanged.

*Needed facts* are the spans of the instruction that the goal depends on: values of the
reference actions' arguments, required outputs, and the user's hidden facts. Typos, paraphrase,
reorder and distractors never touch them; `formats` rewrites them reversibly; only `drop`
removes one.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from bench.canonical import derive_seed
from bench.errors import BenchError
from bench.world.task import Action, Task

BASE = "base"
FAMILIES = ("typos", "paraphrase", "reorder", "distractors", "formats", "drop")


@dataclass(frozen=True)
class Variant:
    id: str
    family: str
    params: dict[str, Any]
    task: Task


@dataclass(frozen=True)
class VariantSpec:
    """What `--variants` asked for: families with their parameters, and how many variants of
    each family per task (different seeds)."""

    families: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_family: int = 1

    def as_list(self) -> list[dict[str, Any]]:
        return [{"family": f, "params": p, "count": self.per_family} for f, p in self.families.items()]


def parse_variant_spec(text: str | None, per_family: int = 1) -> VariantSpec:
    """`typos=0.1,paraphrase,drop` or `all`. The unperturbed input is always run as `base`."""
    if not text:
        return VariantSpec({}, per_family)
    families: dict[str, dict[str, Any]] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, value = part.partition("=")
        if name == "all":
            families.update({f: {} for f in FAMILIES if f not in families})
            continue
        if name not in FAMILIES:
            raise BenchError(f"unknown perturbation family {name!r}; choose from {', '.join(FAMILIES)} or all", field="--variants")
        params: dict[str, Any] = {}
        if value:
            if name != "typos":
                raise BenchError(f"family {name} takes no parameter (only typos=RATE)", field="--variants")
            try:
                params["rate"] = float(value)
            except ValueError:
                raise BenchError(f"typos rate must be a number, got {value!r}", field="--variants") from None
            if not 0 < params["rate"] <= 1:
                raise BenchError(f"typos rate must be in (0, 1], got {value}", field="--variants")
        families[name] = params
    return VariantSpec(families, per_family)


# ---------------------------------------------------------------------------- needed facts
def needed_facts(task: Task) -> list[str]:
    """Strings whose presence in the instruction the goal may depend on, longest first."""
    values: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, (int, float)):
            values.add(str(value))
        elif isinstance(value, str):
            values.add(value)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    for action in task.reference_actions:
        collect(action.args)
    for spec in task.required_outputs:
        collect(spec if isinstance(spec, str) else spec["any_of"])
    collect(task.user_facts)
    present = [v for v in values if len(v) >= 2 and v.lower() in task.instruction.lower()]
    return sorted(present, key=len, reverse=True)


def protected_mask(text: str, facts: list[str]) -> list[bool]:
    mask = [False] * len(text)
    lowered = text.lower()
    for fact in facts:
        start = lowered.find(fact.lower())
        while start >= 0:
            for i in range(start, start + len(fact)):
                mask[i] = True
            start = lowered.find(fact.lower(), start + 1)
    return mask


def _plain_words(text: str, mask: list[bool]) -> list[tuple[int, int]]:
    """(start, end) of plain words (4+ letters, in a whitespace token with no digit, @, _ or
    inner dot) outside every needed fact: emails and identifiers are never misspelt."""
    spans = []
    for token in re.finditer(r"\S+", text):
        if re.search(r"[\d@_]|\w\.\w", token.group()):
            continue
        for m in re.finditer(r"[A-Za-z]{4,}", token.group()):
            start, end = token.start() + m.start(), token.start() + m.end()
            if not any(mask[start:end]):
                spans.append((start, end))
    return spans


# ---------------------------------------------------------------------------- families
_NEIGHBOURS = {c: n for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm") for c, n in zip(row, row[1:] + row[-2])}


def _misspell(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "drop", "double", "neighbour"))
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "drop":
        return word[:i] + word[i + 1:]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    lower = word[i].lower()
    repl = _NEIGHBOURS.get(lower, lower)
    return word[:i] + (repl.upper() if word[i].isupper() else repl) + word[i + 1:]


def typos(task: Task, rng: random.Random, rate: float = 0.06) -> tuple[str, dict[str, Any]] | None:
    text = task.instruction
    words = _plain_words(text, protected_mask(text, needed_facts(task)))
    if not words:
        return None
    chosen = [w for w in words if rng.random() < rate] or [rng.choice(words)]
    out, last = [], 0
    for start, end in chosen:
        out += [text[last:start], _misspell(text[start:end], rng)]
        last = end
    return "".join(out) + text[last:], {"rate": rate, "words_changed": len(chosen)}


_PARAPHRASES = [
    (r"\bI want to\b", "I'd like to"), (r"\bI'd like to\b", "I want to"), (r"\bI would like to\b", "I'd like to"),
    (r"\bPlease\b", "Kindly"), (r"\bplease\b", "kindly"), (r"\bCan you\b", "Could you"), (r"\bCould you\b", "Can you"),
    (r"^Hi,", "Hello,"), (r"^Hello,", "Hi there,"), (r"\bThanks\b", "Thank you"), (r"\bI need\b", "I require"),
    (r"\bTell me\b", "Let me know"), (r"\btell me\b", "let me know"), (r"\bI'm\b", "I am"),
]


def paraphrase(task: Task, rng: random.Random) -> tuple[str, dict[str, Any]]:
    text = task.instruction
    mask = protected_mask(text, needed_facts(task))
    rules = [r for r in _PARAPHRASES if re.search(r[0], text)]
    rng.shuffle(rules)
    applied = []
    for pattern, repl in rules[:3]:
        m = re.search(pattern, text)
        if m and not any(mask[m.start():m.end()]):
            text = text[:m.start()] + repl + text[m.end():]
            mask = protected_mask(text, needed_facts(task))
            applied.append(pattern)
    if not applied:
        text = "Hello. " + text
        applied.append("greeting")
    return text, {"rules": applied}


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def reorder(task: Task, rng: random.Random) -> tuple[str, dict[str, Any]] | None:
    sentences = _SENTENCE.split(task.instruction.strip())
    if len(sentences) < 2:
        return None
    order = list(range(len(sentences)))
    while order == sorted(order):
        rng.shuffle(order)
    return " ".join(sentences[i] for i in order), {"order": order}


_CHATTER = [
    "By the way, I'm writing this from my phone.", "It's been a long week.", "My colleague says hello.",
    "I had a coffee before writing this.", "Sorry if this is a bit rushed.", "The weather here is terrible today.",
    "I also read your newsletter last month.", "No rush, but sooner is better.",
]


def distractors(task: Task, rng: random.Random) -> tuple[str, dict[str, Any]]:
    sentences = _SENTENCE.split(task.instruction.strip())
    added = rng.sample(_CHATTER, 2)
    for sentence in added:
        sentences.insert(rng.randrange(0, len(sentences) + 1), sentence)
    return " ".join(sentences), {"added": added}


_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b(?!T)")
_TIME = re.compile(r"(?<![\d:T])([01]\d|2[0-3]):([0-5]\d)(?![\d:])")
_MONEY = re.compile(r"\$(\d[\d,]*(?:\.\d{2})?)")
_PHONE = re.compile(r"\b(\d{3})-(\d{3})-(\d{4})\b")
_MONTH_DAY = re.compile(r"\b(" + "|".join(_MONTHS) + r") (\d{1,2})\b")


def _fmt_time(m: re.Match) -> str:
    hour, minute = int(m.group(1)), m.group(2)
    suffix = "am" if hour < 12 else "pm"
    return f"{(hour - 1) % 12 + 1}:{minute} {suffix}"


FORMATTERS: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (_ISO_DATE, lambda m: f"{int(m.group(3))} {_MONTHS[int(m.group(2)) - 1]} {m.group(1)}"),
    (_TIME, _fmt_time),
    (_MONEY, lambda m: f"{m.group(1)} USD"),
    (_PHONE, lambda m: f"({m.group(1)}) {m.group(2)} {m.group(3)}"),
    (_MONTH_DAY, lambda m: f"{m.group(2)} {m.group(1)}"),
]


def parse_back(text: str) -> str:
    """Undo `formats` (used by the tests to prove that the rewrite kept every fact)."""
    months = "|".join(_MONTHS)
    text = re.sub(r"\b(\d{1,2}) (" + months + r") (\d{4})\b",
                  lambda m: f"{m.group(3)}-{_MONTHS.index(m.group(2)) + 1:02d}-{int(m.group(1)):02d}", text)
    text = re.sub(r"\b(\d{1,2}):(\d{2}) (am|pm)\b",
                  lambda m: f"{(int(m.group(1)) % 12) + (12 if m.group(3) == 'pm' else 0):02d}:{m.group(2)}", text)
    text = re.sub(r"(\d[\d,]*(?:\.\d{2})?) USD", r"$\1", text)
    text = re.sub(r"\((\d{3})\) (\d{3}) (\d{4})", r"\1-\2-\3", text)
    return re.sub(r"\b(\d{1,2}) (" + months + r")\b", r"\2 \1", text)


def formats(task: Task, rng: random.Random) -> tuple[str, dict[str, Any]] | None:
    text, changed = task.instruction, 0
    for pattern, fmt in FORMATTERS:
        text, count = pattern.subn(fmt, text)
        changed += count
    return (text, {"rewrote": changed}) if changed else None


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_IDENT = re.compile(r"#?\b(?=[A-Za-z-]*\d)[A-Za-z][A-Za-z0-9_-]*\d[A-Za-z0-9_-]*\b")


def _key_for(task: Task, fact: str) -> str:
    """The hidden fact's key, named after the argument that takes the value ("order_id" →
    "order id number"), so that a natural question ("what is the order number?") reveals it."""
    for action in task.reference_actions:
        for name, value in action.args.items():
            if value == fact:
                words = name.replace("_", " ").strip()
                return words + " number" if words.endswith(" id") else words
    return "reference number"


def droppable_facts(task: Task) -> list[tuple[str, str]]:
    """(span, hidden-fact key) pairs a `drop` variant can remove: emails, phone numbers and
    identifiers (W1001, AL-3005, EV0007) that the goal needs and the user has not already got
    as a hidden fact."""
    out = []
    for fact in needed_facts(task):
        if fact in task.user_facts.values():
            continue
        if _EMAIL.fullmatch(fact):
            out.append((fact, "email address"))
        elif _PHONE.fullmatch(fact) or _IDENT.fullmatch(fact):
            out.append((fact, _key_for(task, fact)))
    return out


def drop(task: Task, rng: random.Random) -> tuple[str, dict[str, Any]] | None:
    candidates = droppable_facts(task)
    if not candidates:
        return None
    fact, key = rng.choice(sorted(candidates))
    text = task.instruction
    span = re.escape("#" + fact) if "#" + fact in text else re.escape(fact)

    def phrase(m: re.Match) -> str:
        inside_parens = text[:m.start()].endswith("(") and text[m.end():].startswith(")")
        ask = "ask me for my email" if key == "email address" else f"ask me for the {key}"
        return ask if inside_parens else f"({ask})"

    return re.sub(span, phrase, text), {"dropped": fact, "key": key}


_FAMILY_FUNCS: dict[str, Callable[..., Any]] = {
    "typos": typos, "paraphrase": paraphrase, "reorder": reorder, "distractors": distractors,
    "formats": formats, "drop": drop,
}


def make_variant(task: Task, family: str, index: int, params: dict[str, Any], base_seed: int) -> Variant | None:
    """One variant of a task, or None when the family does not apply (nothing to drop)."""
    rng = random.Random(derive_seed("variant", base_seed, task.id, family, index))
    result = _FAMILY_FUNCS[family](task, rng, **params)
    if result is None:
        return None
    instruction, details = result
    variant_task = replace(task, instruction=instruction)
    if family == "drop":
        key = details["key"]
        variant_task = replace(
            variant_task,
            user_facts={**task.user_facts, key: details["dropped"]},
            reference_actions=(Action("ask_user", {"question": f"What is the {key}?"}),) + task.reference_actions,
        )
    return Variant(f"{family}-{index}", family, {**params, **details}, variant_task)


def variants_of(task: Task, spec: VariantSpec, base_seed: int) -> list[Variant]:
    """The base variant first, then every applicable perturbed variant."""
    out = [Variant(BASE, BASE, {}, task)]
    for family, params in spec.families.items():
        for index in range(spec.per_family):
            variant = make_variant(task, family, index, params, base_seed)
            if variant is not None:
                out.append(variant)
    return out
