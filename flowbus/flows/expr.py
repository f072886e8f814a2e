"""Safe condition language for ``when:``: a tiny tokenizer, recursive-descent parser and evaluator.

Never ``eval``: the grammar only knows literals, three name roots and boolean/comparison
operators, so a flow file cannot run code.

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := operand (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") operand)?
    operand    := literal | name | list | "(" expr ")"
    list       := "[" (literal ("," literal)* ","?)? "]"
    literal    := 'text' | "text" | 12 | 3.5 | true | false | null
    name       := fields.<field> | files.<field> | document.state | document.flow

Run-time semantics never raise: a missing field is ``null``; an ordering comparison between
values that cannot be ordered (null, text against number) is false.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from flowbus.errors import ConfigError

NAME_ROOTS = ("fields", "files", "document")
DOCUMENT_NAMES = ("state", "flow")
KEYWORDS = ("and", "or", "not", "in", "true", "false", "null")
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")


class ExprError(ConfigError):
    """A condition does not parse; ``column`` is 1-based within the expression text."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.column = column

    def __str__(self) -> str:
        return f"column {self.column}: {self.message}"


# ---- tokens ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    kind: str  # "name", "string", "number", "op", "kw", "eof"
    value: Any
    column: int  # 1-based
    text: str


_TOKEN_RE = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>\d+(?:\.\d+)?(?![\w.]))
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
""", re.VERBOSE)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            ch = text[pos]
            if ch in "'\"":
                raise ExprError(f"unterminated string starting with {ch}", pos + 1)
            if ch == "=":
                raise ExprError('unexpected "=": write "==" to compare', pos + 1)
            raise ExprError(f"unexpected character {ch!r}", pos + 1)
        kind = m.lastgroup
        raw = m.group()
        col = pos + 1
        pos = m.end()
        if kind == "space":
            continue
        if kind == "number":
            value: Any = Decimal(raw) if "." in raw else int(raw)
            tokens.append(Token("number", value, col, raw))
        elif kind == "string":
            body = raw[1:-1]
            value = re.sub(r"\\(.)", r"\1", body)
            tokens.append(Token("string", value, col, raw))
        elif kind == "name":
            if raw in KEYWORDS:
                tokens.append(Token("kw", raw, col, raw))
            else:
                tokens.append(Token("name", raw, col, raw))
        else:
            tokens.append(Token("op", raw, col, raw))
    tokens.append(Token("eof", None, len(text) + 1, ""))
    return tokens


# ---- syntax tree -------------------------------------------------------------------------------

class Node:
    """Base of the syntax tree; each subclass defines ``evaluate(ctx)``."""

    column: int

    def walk(self):
        yield self


@dataclass(frozen=True)
class Literal(Node):
    value: Any
    column: int

    def evaluate(self, ctx: Mapping[str, Any]) -> Any:
        return self.value

    def __str__(self) -> str:
        if self.value is None:
            return "null"
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        if isinstance(self.value, str):
            return "'" + self.value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return str(self.value)


@dataclass(frozen=True)
class ListLit(Node):
    items: tuple[Literal, ...]
    column: int

    def evaluate(self, ctx: Mapping[str, Any]) -> Any:
        return [i.value for i in self.items]

    def walk(self):
        yield self
        yield from self.items

    def __str__(self) -> str:
        return "[" + ", ".join(str(i) for i in self.items) + "]"


@dataclass(frozen=True)
class Name(Node):
    path: str  # "fields.objet", "files.arrete", "document.state"
    column: int

    def evaluate(self, ctx: Mapping[str, Any]) -> Any:
        root, _, rest = self.path.partition(".")
        scope = ctx.get(root)
        if not isinstance(scope, Mapping):
            return False if root == "files" else None
        value = scope.get(rest)
        if root == "files":
            return bool(value)
        return value

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True)
class Not(Node):
    operand: Node
    column: int

    def evaluate(self, ctx: Mapping[str, Any]) -> Any:
        return not truthy(self.operand.evaluate(ctx))

    def walk(self):
        yield self
        yield from self.operand.walk()

    def __str__(self) -> str:
        return f"not {self.operand}"


@dataclass(frozen=True)
class BoolOp(Node):
    op: str  # "and" | "or"
    operands: tuple[Node, ...]
    column: int

    def evaluate(self, ctx: Mapping[str, Any]) -> Any:
        if self.op == "and":
            return all(truthy(o.evaluate(ctx)) for o in self.operands)
        return any(truthy(o.evaluate(ctx)) for o in self.operands)

    def walk(self):
        yield self
        for o in self.operands:
            yield from o.walk()

    def __str__(self) -> str:
        return f" {self.op} ".join(_paren(o) for o in self.operands)


@dataclass(frozen=True)
class Compare(Node):
    op: str
    left: Node
    right: Node
    column: int

    def evaluate(self, ctx: Mapping[str, Any]) -> Any:
        return compare(self.op, self.left.evaluate(ctx), self.right.evaluate(ctx))

    def walk(self):
        yield self
        yield from self.left.walk()
        yield from self.right.walk()

    def __str__(self) -> str:
        return f"{_paren(self.left)} {self.op} {_paren(self.right)}"


def _paren(node: Node) -> str:
    return f"({node})" if isinstance(node, (BoolOp, Compare)) else str(node)


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value != ""
    return bool(value)


def _norm(value: Any) -> Any:
    """Numbers compare by value whatever their type (int, float, Decimal); bools stay bools."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float, Decimal)):
        try:
            return Decimal(str(value))
        except ArithmeticError:  # pragma: no cover - NaN/inf never reach here from fields
            return value
    return value


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return _norm(a) == _norm(b)


def compare(op: str, left: Any, right: Any) -> bool:
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if op in ("in", "not in"):
        if isinstance(right, (list, tuple)):
            found = any(_equal(left, item) for item in right)
        elif isinstance(right, str) and isinstance(left, str):
            found = left in right
        else:
            found = False
        return found if op == "in" else not found
    a, b = _norm(left), _norm(right)
    if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
        return False
    if not ((isinstance(a, Decimal) and isinstance(b, Decimal)) or (isinstance(a, str) and isinstance(b, str))):
        return False
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b  # ">="


# ---- parser ------------------------------------------------------------------------------------

class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, kind: str, value: Any = None) -> bool:
        return self.tok.kind == kind and (value is None or self.tok.value == value)

    def expect(self, kind: str, value: str, what: str) -> Token:
        if not self.at(kind, value):
            raise ExprError(f"expected {what}, found {self._describe(self.tok)}", self.tok.column)
        return self.advance()

    @staticmethod
    def _describe(tok: Token) -> str:
        return "the end of the condition" if tok.kind == "eof" else f'"{tok.text}"'

    def parse(self) -> Node:
        if self.at("eof"):
            raise ExprError("empty condition", 1)
        node = self.parse_or()
        if not self.at("eof"):
            hint = ""
            if self.tok.kind in ("name", "string", "number"):
                hint = ' (missing "and" / "or"?)'
            raise ExprError(f"unexpected {self._describe(self.tok)}{hint}", self.tok.column)
        return node

    def parse_or(self) -> Node:
        first = self.parse_and()
        items = [first]
        while self.at("kw", "or"):
            self.advance()
            items.append(self.parse_and())
        return first if len(items) == 1 else BoolOp("or", tuple(items), first.column)

    def parse_and(self) -> Node:
        first = self.parse_not()
        items = [first]
        while self.at("kw", "and"):
            self.advance()
            items.append(self.parse_not())
        return first if len(items) == 1 else BoolOp("and", tuple(items), first.column)

    def parse_not(self) -> Node:
        if self.at("kw", "not"):
            tok = self.advance()
            return Not(self.parse_not(), tok.column)
        return self.parse_comparison()

    def _comparison_op(self) -> str | None:
        if self.tok.kind == "op" and self.tok.value in ("==", "!=", "<", "<=", ">", ">="):
            return self.advance().value
        if self.at("kw", "in"):
            self.advance()
            return "in"
        if self.at("kw", "not") and self.tokens[self.i + 1].kind == "kw" and self.tokens[self.i + 1].value == "in":
            self.advance()
            self.advance()
            return "not in"
        return None

    def parse_comparison(self) -> Node:
        left = self.parse_operand()
        op = self._comparison_op()
        if op is None:
            return left
        right = self.parse_operand()
        if self._comparison_op() is not None:
            raise ExprError("comparisons cannot be chained: combine them with and", self.tokens[self.i - 1].column)
        return Compare(op, left, right, left.column)

    def parse_literal(self) -> Literal | None:
        tok = self.tok
        if tok.kind in ("string", "number"):
            self.advance()
            return Literal(tok.value, tok.column)
        if tok.kind == "kw" and tok.value in ("true", "false", "null"):
            self.advance()
            return Literal({"true": True, "false": False, "null": None}[tok.value], tok.column)
        return None

    def parse_operand(self) -> Node:
        tok = self.tok
        lit = self.parse_literal()
        if lit is not None:
            return lit
        if tok.kind == "name":
            self.advance()
            return self._name(tok)
        if tok.kind == "op" and tok.value == "(":
            self.advance()
            node = self.parse_or()
            self.expect("op", ")", '")"')
            return node
        if tok.kind == "op" and tok.value == "[":
            self.advance()
            items: list[Literal] = []
            while not self.at("op", "]"):
                item = self.parse_literal()
                if item is None:
                    raise ExprError(f"a list holds only literals ('text', numbers, true, false, null), "
                                    f"found {self._describe(self.tok)}", self.tok.column)
                items.append(item)
                if not self.at("op", ","):
                    break
                self.advance()
            self.expect("op", "]", '"]" to close the list')
            return ListLit(tuple(items), tok.column)
        raise ExprError(f"expected a value, a name or \"(\", found {self._describe(tok)}", tok.column)

    @staticmethod
    def _name(tok: Token) -> Name:
        parts = tok.value.split(".")
        root = parts[0]
        if root not in NAME_ROOTS:
            raise ExprError(f'unknown name "{tok.value}": names are fields.<name>, files.<name> or document.state',
                            tok.column)
        if len(parts) != 2 or not parts[1]:
            raise ExprError(f'"{tok.value}": write {root}.<name> (exactly one dot)', tok.column)
        if root == "document" and parts[1] not in DOCUMENT_NAMES:
            raise ExprError(f'unknown name "{tok.value}": the document exposes '
                            + ", ".join(f"document.{n}" for n in DOCUMENT_NAMES), tok.column)
        return Name(tok.value, tok.column)


@dataclass(frozen=True)
class Expr:
    """A parsed condition.  ``evaluate`` never raises; ``names`` lists the names it reads."""

    source: str
    root: Node

    def evaluate(self, ctx: Mapping[str, Any]) -> Any:
        return self.root.evaluate(ctx)

    def names(self) -> set[str]:
        return {n.path for n in self.root.walk() if isinstance(n, Name)}

    def name_refs(self) -> list[tuple[str, int]]:
        """(name, 1-based column) for each name, in text order, for precise error positions."""
        return sorted(((n.path, n.column) for n in self.root.walk() if isinstance(n, Name)), key=lambda x: x[1])

    def comparisons(self) -> list[Compare]:
        return [n for n in self.root.walk() if isinstance(n, Compare)]

    def __str__(self) -> str:
        return self.source


def parse(text: str) -> Expr:
    """Parse a condition; raise ExprError(message, column) on the first syntax error."""
    if not isinstance(text, str):
        raise ExprError(f"a condition is text, not {type(text).__name__}", 1)
    return Expr(text, _Parser(text).parse())


def context(fields: Mapping[str, Any], files: Any = (), document: Mapping[str, Any] | None = None
            ) -> dict[str, Any]:
    """The evaluation context the engine builds: fields, attached file fields, document facts."""
    present = files if isinstance(files, Mapping) else {name: True for name in files}
    return {"fields": dict(fields), "files": dict(present), "document": dict(document or {})}
