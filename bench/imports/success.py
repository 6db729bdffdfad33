"""The outcome rule of an import (`--success EXPR`, docs/import.md): over an Inspect sample's
scores, or a τ² simulation's reward. A small grammar, parsed here and never handed to eval():

    expr  := term ("or" term)*          term := factor ("and" factor)*
    factor:= "not" factor | "(" expr ")" | operand [OP operand]
    OP    := == | != | < | <= | > | >=
    operand := NAME | NUMBER | STRING | true | false | null
    NAME  := one of the format's names, optionally ":QUALIFIER" and ".KEY"

Inspect's names: `score` and `accuracy`, ":SCORER", ".KEY" a key of a dict-valued score.
`score` is the raw value, `accuracy` the value as Inspect's accuracy metric counts it (C/I/P/N →
1/0/0.5/0, true → 1). Without ":SCORER" a name means the only scorer. A bare operand must be a
boolean. `==` between different kinds (a string and a number) is false; `<` with a null (a value
the record lacks) is false; `<` on anything else but numbers is an error naming the record."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Union

from bench.errors import BenchError

_TOKEN = re.compile(r"""\s*(?:
    (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|<|>|\(|\))
  | (?P<name>[A-Za-z_]\w*(?::[\w\-/]+)?(?:\.[\w\-]+)?)
)""", re.VERBOSE)
_COMPARE = ("==", "!=", "<", "<=", ">", ">=")
_LITERALS = {"true": True, "false": False, "null": None}


@dataclass(frozen=True)
class Ref:
    """A name in a rule: what (`score` or `accuracy`), of which scorer (None = the only one), and
    which key of a dict-valued score."""

    kind: str
    scorer: str | None
    key: str | None

    def __str__(self) -> str:
        return self.kind + (f":{self.scorer}" if self.scorer else "") + (f".{self.key}" if self.key else "")


Node = Union[tuple[Any, ...], Ref, float, str, bool, None]  # tuples: (op, operand...)
Resolve = Callable[[Ref], Any]


@dataclass(frozen=True)
class Rule:
    """A parsed `--success` rule: `passes(resolve)` evaluates it with names looked up by `resolve`."""

    text: str
    tree: Node

    def refs(self) -> list[Ref]:
        found: list[Ref] = []

        def walk(node: Node) -> None:
            if isinstance(node, Ref):
                found.append(node)
            elif isinstance(node, tuple):
                for child in node[1:]:
                    walk(child)
        walk(self.tree)
        return found

    def passes(self, resolve: Resolve) -> bool:
        value = _evaluate(self.tree, resolve)
        if not isinstance(value, bool):
            raise BenchError(f"--success {self.text!r}: the rule gives {value!r}, not true or false")
        return value


INSPECT_NAMES = ("score", "accuracy")


def parse_rule(text: str, names: tuple[str, ...] = INSPECT_NAMES) -> Rule:
    """Parse a rule whose names are `names` (each optionally :QUALIFIER and .KEY; Inspect's by
    default); a syntax error is one clear error pointing at the offending token."""
    tokens = _tokens(text)
    parser = _Parser(text, tokens, names)
    tree = parser.expr()
    if parser.pos != len(tokens):
        parser.fail(f"unexpected {tokens[parser.pos][1]!r}")
    return Rule(text, tree)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while text[pos:].strip():
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise BenchError(f"--success {text!r}: cannot read {text[pos:].strip()[:20]!r} (see docs/import.md)",
                             field="success")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, tokens: list[tuple[str, str]], names: tuple[str, ...]):
        self.text, self.tokens, self.pos, self.names = text, tokens, 0, names

    def fail(self, why: str) -> None:
        example = " or ".join(f"'{n} == 1'" for n in self.names)
        raise BenchError(f"--success {self.text!r}: {why} (expected e.g. {example}; see docs/import.md)",
                         field="success")

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def expr(self) -> Node:
        node = self.term()
        while self.peek() == "or":
            self.pos += 1
            node = ("or", node, self.term())
        return node

    def term(self) -> Node:
        node = self.factor()
        while self.peek() == "and":
            self.pos += 1
            node = ("and", node, self.factor())
        return node

    def factor(self) -> Node:
        if self.peek() == "not":
            self.pos += 1
            return ("not", self.factor())
        if self.peek() == "(":
            self.pos += 1
            node = self.expr()
            if self.peek() != ")":
                self.fail("missing ')'")
            self.pos += 1
            return node
        left = self.operand()
        if self.peek() in _COMPARE:
            op = self.tokens[self.pos][1]
            self.pos += 1
            return (op, left, self.operand())
        return left

    def operand(self) -> Node:
        if self.pos >= len(self.tokens):
            self.fail("the rule ends too early")
        kind, text = self.tokens[self.pos]
        self.pos += 1
        if kind == "num":
            return float(text)
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        if kind == "name" and text in _LITERALS:
            return _LITERALS[text]
        if kind == "name" and text.split(":")[0].split(".")[0] in self.names:
            head, _, key = text.partition(".")
            what, _, scorer = head.partition(":")
            return Ref(what, scorer or None, key or None)
        self.fail(f"unknown name {text!r} (names: {', '.join(self.names)}, each optionally :QUALIFIER)")
        return None  # unreachable: fail raises


def _evaluate(node: Node, resolve: Resolve) -> Any:
    if isinstance(node, Ref):
        return resolve(node)
    if not isinstance(node, tuple):
        return node
    op = node[0]
    if op == "not":
        return not _truth(_evaluate(node[1], resolve), "not")
    if op in ("and", "or"):
        left = _truth(_evaluate(node[1], resolve), op)
        if (op == "and" and not left) or (op == "or" and left):
            return left
        return _truth(_evaluate(node[2], resolve), op)
    return _compare(op, _evaluate(node[1], resolve), _evaluate(node[2], resolve))


def _truth(value: Any, op: str) -> bool:
    if not isinstance(value, bool):
        raise BenchError(f"'{op}' needs true or false, not {value!r}", field="success")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _compare(op: str, left: Any, right: Any) -> bool:
    if op in ("==", "!="):
        same_kind = (_number(left) and _number(right)) or type(left) is type(right)
        equal = same_kind and left == right
        return equal if op == "==" else not equal
    if left is None or right is None:
        return False  # a value the record does not have is below, above and equal to nothing
    if not (_number(left) and _number(right)):
        raise BenchError(f"'{op}' compares numbers, not {left!r} and {right!r} (for C/I/P/N scores use "
                         "accuracy, which counts them as 1/0/0.5/0)", field="success")
    return bool({"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op])
