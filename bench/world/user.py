"""The scripted user: answers `ask_user` questions deterministically from a task's hidden facts.

A fact is revealed when the question mentions a word of its key ("What is your email?"
reveals the fact `email`; "which order number?" reveals `order number`). Matching ignores case,
punctuation and a plural 's'. The same question always gets the same answer.
"""

from __future__ import annotations

import re
from typing import Any

_WORD = re.compile(r"[a-z0-9]+")
_STOP = {"the", "and", "for", "you", "your", "what", "which", "with", "from", "are", "can", "please", "this", "that", "have", "id"}


def _words(text: Any) -> set[str]:
    out: set[str] = set()
    if not isinstance(text, str):  # a question that is not text reveals nothing (validate names it)
        return out
    for word in _WORD.findall(text.lower()):
        out.add(word)
        if len(word) > 3 and word.endswith("s"):
            out.add(word[:-1])
    return out


class ScriptedUser:
    def __init__(self, facts: dict[str, Any]):
        self.facts = facts
        self._keys = {key: {w for w in _words(key) if len(w) >= 3 and w not in _STOP} | ({key.lower()} if len(key) <= 3 else set()) for key in facts}

    def revealed(self, question: str) -> list[str]:
        asked = _words(question)
        return [key for key in self.facts if self._keys[key] & asked]

    def reveals(self, question: str) -> bool:
        return bool(self.revealed(question))

    def answer(self, question: str) -> str:
        revealed = [f"{key}: {self.facts[key]}" for key in self.revealed(question)]
        if revealed:
            return "; ".join(revealed)
        if not self.facts:
            return "I have nothing to add; please go ahead with what I asked."
        return "I'm not sure what you are asking. I can tell you my " + ", ".join(self.facts) + "."
