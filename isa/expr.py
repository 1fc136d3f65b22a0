"""Integer index expressions of listings: tile offsets (`m*128`), slots (`k%2`), flags (`k==0`).

Expressions are frozen trees over grid and loop variables. They print with the fewest
parentheses that keep the meaning and parse back to an equal tree, so listings round-trip.
`compile_expr` turns one into a Python closure for the interpreter's inner loops.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Union


@dataclass(frozen=True)
class Const:
    value: int


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Bin:
    op: str
    left: "Expr"
    right: "Expr"

    def __hash__(self) -> int:
        # Trees are hashed often (compile caches, kernel dedupe): compute once per node.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((self.op, self.left, self.right))
            object.__setattr__(self, "_hash", cached)
        return cached


Expr = Union[Const, Var, Bin]

# Binding strength; all operators are left-associative.
_PRECEDENCE = {"==": 1, "+": 2, "-": 2, "*": 3, "//": 3, "%": 3}
_APPLY: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "//": lambda a, b: a // b, "%": lambda a, b: a % b, "==": lambda a, b: int(a == b),
}


def const(v: int) -> Const:
    return Const(int(v))


def add(a: Expr, b: Expr) -> Expr:
    if isinstance(b, Const) and b.value == 0:
        return a
    if isinstance(a, Const) and a.value == 0:
        return b
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value + b.value)
    return Bin("+", a, b)


def mul(a: Expr, b: Expr) -> Expr:
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value * b.value)
    for x, y in ((a, b), (b, a)):
        if isinstance(y, Const) and y.value == 1:
            return x
        if isinstance(y, Const) and y.value == 0:
            return Const(0)
    return Bin("*", a, b)


def floordiv(a: Expr, divisor: int) -> Expr:
    """a // divisor, simplified when a is x * c with c a multiple of the divisor."""
    if divisor == 1:
        return a
    if isinstance(a, Const):
        return Const(a.value // divisor)
    if isinstance(a, Bin) and a.op == "*" and isinstance(a.right, Const) and a.right.value % divisor == 0:
        return mul(a.left, Const(a.right.value // divisor))
    return Bin("//", a, Const(divisor))


def to_text(e: Expr, parent: int = 0) -> str:
    if isinstance(e, Const):
        return str(e.value) if e.value >= 0 or parent == 0 else f"({e.value})"
    if isinstance(e, Var):
        return e.name
    prec = _PRECEDENCE[e.op]
    text = f"{to_text(e.left, prec)}{e.op}{to_text(e.right, prec + 1)}"
    return f"({text})" if prec < parent else text


def evaluate(e: Expr, env: dict[str, int]) -> int:
    if isinstance(e, Const):
        return e.value
    if isinstance(e, Var):
        return env[e.name]
    return _APPLY[e.op](evaluate(e.left, env), evaluate(e.right, env))


def variables(e: Expr) -> set[str]:
    if isinstance(e, Var):
        return {e.name}
    if isinstance(e, Bin):
        return variables(e.left) | variables(e.right)
    return set()


def compile_expr(e: Expr) -> Callable[[dict], int]:
    if isinstance(e, Const):
        value = e.value
        return lambda env: value
    if isinstance(e, Var):
        name = e.name
        return lambda env: env[name]
    f, left, right = _APPLY[e.op], compile_expr(e.left), compile_expr(e.right)
    return lambda env: f(left(env), right(env))


_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(//|==|[-+*%()]))")


class ExprError(ValueError):
    pass


def parse_expr(text: str) -> Expr:
    """Parse an expression; raises ExprError naming the offending position."""
    tokens = _tokenize(text)
    expr, pos = _parse(tokens, 0, 1)
    if pos != len(tokens):
        raise ExprError(f"unexpected '{tokens[pos]}' in expression '{text}'")
    return expr


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExprError(f"cannot read expression '{text}' at '{text[pos:]}'")
        tokens.append(m.group(m.lastindex))
        pos = m.end()
    return tokens


def _parse(tokens: list[str], pos: int, min_prec: int) -> tuple[Expr, int]:
    left, pos = _atom(tokens, pos)
    while pos < len(tokens) and tokens[pos] in _PRECEDENCE and _PRECEDENCE[tokens[pos]] >= min_prec:
        op = tokens[pos]
        right, pos = _parse(tokens, pos + 1, _PRECEDENCE[op] + 1)
        left = Bin(op, left, right)
    return left, pos


def _atom(tokens: list[str], pos: int) -> tuple[Expr, int]:
    if pos >= len(tokens):
        raise ExprError("expression ends too early")
    tok = tokens[pos]
    if tok == "(":
        inner, pos = _parse(tokens, pos + 1, 1)
        if pos >= len(tokens) or tokens[pos] != ")":
            raise ExprError("missing ')' in expression")
        return inner, pos + 1
    if tok == "-":
        inner, pos = _atom(tokens, pos + 1)
        return (Const(-inner.value), pos) if isinstance(inner, Const) else (Bin("-", Const(0), inner), pos)
    if tok.isdigit():
        return Const(int(tok)), pos + 1
    if tok[0].isalpha() or tok[0] == "_":
        return Var(tok), pos + 1
    raise ExprError(f"unexpected '{tok}' in expression")
