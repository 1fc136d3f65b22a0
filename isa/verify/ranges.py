"""The values an index expression takes: intervals over the ranges of its variables.

Every variable of a listing's expressions is a grid or loop variable running over 0 .. n-1, so
the value of `m*128+4000` or `k%4` lies in an interval computed bottom-up, each operator
bounding its result from its operands' intervals. Sound (the true values always lie inside)
and exact for the affine forms the compiler writes with each variable once (`m*128`,
`(w*32+t)*4`, `k*64//128`); an expression naming one variable twice (`k-k`) gets a wider
interval than its values.
"""
from __future__ import annotations

from isa.expr import Const, Expr, Var, to_text

Interval = tuple[int, int]          # inclusive bounds


class RangeError(ValueError):
    """An expression that can fail at run time: a division or remainder by zero."""


def expr_range(e: Expr, ranges: dict[str, Interval]) -> Interval:
    """The smallest and largest value of `e` as its variables run over `ranges`."""
    if isinstance(e, Const):
        return e.value, e.value
    if isinstance(e, Var):
        return ranges[e.name]
    left, right = expr_range(e.left, ranges), expr_range(e.right, ranges)
    return _APPLY[e.op](left, right, e)


def _add(a: Interval, b: Interval, e) -> Interval:
    return a[0] + b[0], a[1] + b[1]


def _sub(a: Interval, b: Interval, e) -> Interval:
    return a[0] - b[1], a[1] - b[0]


def _corners(a: Interval, b: Interval, f) -> Interval:
    values = [f(x, y) for x in a for y in b]
    return min(values), max(values)


def _mul(a: Interval, b: Interval, e) -> Interval:
    return _corners(a, b, lambda x, y: x * y)


def _nonzero(b: Interval, e) -> None:
    if b[0] <= 0 <= b[1]:
        raise RangeError(f"'{to_text(e)}' divides by {to_text(e.right)}, which can be 0")


def _floordiv(a: Interval, b: Interval, e) -> Interval:
    # Floor division is monotone in the numerator and, for a divisor of one sign, in the
    # divisor: the corners bound it.
    _nonzero(b, e)
    return _corners(a, b, lambda x, y: x // y)


def _mod(a: Interval, b: Interval, e) -> Interval:
    _nonzero(b, e)
    if b[0] == b[1]:
        d = b[0]
        if a[0] // d == a[1] // d:              # one period: the remainder grows with a
            return a[0] % d, a[1] % d
    return (0, b[1] - 1) if b[0] > 0 else (b[0] + 1, 0)


def _eq(a: Interval, b: Interval, e) -> Interval:
    if a[0] == a[1] == b[0] == b[1]:
        return 1, 1
    if a[1] < b[0] or b[1] < a[0]:
        return 0, 0
    return 0, 1


_APPLY = {"+": _add, "-": _sub, "*": _mul, "//": _floordiv, "%": _mod, "==": _eq}


def affine(e: Expr) -> tuple[int, dict[str, int]] | None:
    """`e` as c0 + sum(c_v * v), or None when it is not affine (`//`, `%`, `==`, a product
    of two variables)."""
    if isinstance(e, Const):
        return e.value, {}
    if isinstance(e, Var):
        return 0, {e.name: 1}
    if e.op in ("+", "-"):
        left, right = affine(e.left), affine(e.right)
        if left is None or right is None:
            return None
        sign = 1 if e.op == "+" else -1
        coefs = dict(left[1])
        for v, c in right[1].items():
            coefs[v] = coefs.get(v, 0) + sign * c
        return left[0] + sign * right[0], {v: c for v, c in coefs.items() if c}
    if e.op == "*":
        left, right = affine(e.left), affine(e.right)
        if left is None or right is None or (left[1] and right[1]):
            return None
        (k, _), (c0, coefs) = (left, right) if not left[1] else (right, left)
        return c0 * k, {v: c * k for v, c in coefs.items() if c * k}
    return None
