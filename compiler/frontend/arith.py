"""Arithmetic: `+ - * / // %` on numbers, and `+ - * / @` and unary `-` on tensors.

Numbers fold at build time; `/` of two ints is an int when exact, else a float. A tensor with
a number makes a `const` node and a broadcast elementwise node; two tensors broadcast; `@` is
`matmul`.
"""
from __future__ import annotations

import math
import operator

from compiler.errors import DscError
from compiler.frontend import ast
from compiler.frontend.limits import MAX_INT
from compiler.frontend.values import Tensor, describe, is_int, is_number
from compiler.ir.ops import dims

TENSOR_OPS = {"+": "add", "-": "sub", "*": "mul", "/": "div", "@": "matmul"}
BROADCASTING = ("add", "sub", "mul", "div")     # as operators and as calls


def _divide(a, b):
    if is_int(a) and is_int(b) and a % b == 0:
        return a // b
    return a / b


NUMBER_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": _divide,
              "//": operator.floordiv, "%": operator.mod}


def binary(b, frame, e: ast.BinOp, left, right, hint):
    """`left e.op right` on evaluated operands."""
    if is_number(left) and is_number(right) and e.op in NUMBER_OPS:
        return _fold(e, left, right)
    if isinstance(left, Tensor) or isinstance(right, Tensor):
        return _tensor_op(b, frame, e, left, right, hint)
    if e.op == "+" and isinstance(left, list) and isinstance(right, list):
        return left + right                                    # lists join
    raise DscError(f"'{e.op}' cannot combine {describe(left)} and {describe(right)}", e.loc,
                   _operands_hint(e.op))


def negate(b, frame, e: ast.Neg, value, hint):
    if is_number(value):
        return -value
    if isinstance(value, Tensor):
        return b.emit(frame, "neg", [value], {}, e.loc, hint)
    raise DscError(f"'-' cannot negate {describe(value)}", e.loc, "a number or a tensor")


def _fold(e: ast.BinOp, left, right):
    if e.op in ("/", "//", "%") and right == 0:
        raise DscError(f"division by zero in '{ast.show(e)}'", e.loc, "a non-zero divisor")
    try:
        value = NUMBER_OPS[e.op](left, right)
    except OverflowError:
        value = math.inf
    if (is_int(value) and abs(value) > MAX_INT) or (isinstance(value, float)
                                                    and not math.isfinite(value)):
        raise DscError(f"'{ast.show(e)}' overflows", e.loc,
                       "integers up to 2^53 (exact in the float arithmetic of FLOPs and "
                       "bytes), floats up to about 1.8e308")
    return value


def _tensor_op(b, frame, e: ast.BinOp, left, right, hint):
    if e.op not in TENSOR_OPS:
        raise DscError(f"'{e.op}' works on numbers only, got {describe(left)} and "
                       f"{describe(right)}", e.loc, _operands_hint(e.op))
    if e.op == "@" and not (isinstance(left, Tensor) and isinstance(right, Tensor)):
        raise DscError(f"'@' needs two tensors, got {describe(left)} and {describe(right)}",
                       e.loc, "tensor @ tensor")
    operands = [_as_tensor(b, frame, v, e) for v in (left, right)]
    return b.emit(frame, TENSOR_OPS[e.op], operands, {}, e.loc, hint)


def _as_tensor(b, frame, value, e: ast.BinOp) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if not is_number(value):
        raise DscError(f"'{e.op}' cannot combine a tensor with {describe(value)}", e.loc,
                       "a tensor or a number")
    if abs(value) > 1.8e308:
        raise DscError(f"{describe(value)} is too large for a 64-bit float", e.loc,
                       "a number below about 1.8e308")
    return b.emit(frame, "const", [], {"value": float(value)}, e.loc)


def _operands_hint(op: str) -> str:
    return "numbers or tensors" if op in TENSOR_OPS else "two numbers"


def check_broadcast(op: str, shapes: list[tuple[int, ...]], result: tuple[int, ...],
                    loc) -> None:
    """Broadcasting stretches one operand to the other's shape (a number, a row, size-1
    dims), never both: a result of a shape neither operand has is almost always a missing
    reshape (a residual [B, S, d] plus tokens [B * S, d] would silently become [B, B * S, d]
    with S = 1), so it is refused where it is written."""
    if op not in BROADCASTING or result in shapes:
        return
    a, b = shapes
    err = DscError(f"'{op}' would broadcast {dims(a)} with {dims(b)} to {dims(result)}, "
                   "growing both operands", loc,
                   "operands of one shape, or one that stretches to the other's shape "
                   "(a number, a row, size-1 dims)")
    if math.prod(a) == math.prod(b):
        err = err.with_note(f"both hold {math.prod(a):,} elements: a reshape of one to the "
                            f"other's shape, e.g. reshape(..., {dims(a)}), may be missing")
    raise err
