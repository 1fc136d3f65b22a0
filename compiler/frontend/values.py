"""Run-time values of the builder: what an expression evaluates to.

Numbers are Python `int` / `float` (compile-time constants), `bool` for true/false, `str` for
string literals, `list` for list literals, `tuple` for the several results of split, topk or a
block returning more than one value, and `Tensor` for a graph node.
"""
from __future__ import annotations

from dataclasses import dataclass

from compiler.errors import DscError, Loc
from compiler.frontend.limits import MAX_INT
from compiler.ir.graph import TensorType
from compiler.ir.ops import dims


@dataclass(frozen=True)
class Tensor:
    """A reference to a graph node and the type it had when referenced."""
    id: int
    type: TensorType

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def describe(value) -> str:
    """A short description for error messages: `int 3`, `tensor bf16[4, 8]`, ..."""
    if isinstance(value, bool):
        return f"bool {'true' if value else 'false'}"
    if is_number(value):
        return f"{type(value).__name__} {value:g}" if isinstance(value, float) else f"int {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, Tensor):
        return f"tensor {value.type.format.dtype}{dims(value.shape)}"
    if isinstance(value, list):
        return f"list of {len(value)}"
    if isinstance(value, tuple):
        return f"{len(value)} values"
    return "nothing"


def expect_int(value, loc: Loc, what: str, minimum: int | None = None) -> int:
    """`value` as an int, or a DscError saying that `what` must be one."""
    bound = "" if minimum is None else (" positive" if minimum == 1 else " non-negative")
    if not is_int(value):
        raise DscError(f"{what} must be an integer, got {describe(value)}", loc,
                       f"a{bound} integer")
    if minimum is not None and value < minimum:
        raise DscError(f"{what} must be{bound or ''} (>= {minimum}), got {value}", loc,
                       f"a{bound} integer")
    if abs(value) > MAX_INT:
        raise DscError(f"{what} must be at most 2^53, got {value}", loc,
                       "an integer exact in the float arithmetic of FLOPs and bytes")
    return value


def expect_tensor(value, loc: Loc, what: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise DscError(f"{what} must be a tensor, got {describe(value)}", loc, "a tensor")
    return value


def expect_single(value, loc: Loc, what: str):
    """A value that can be bound to one name: not several results, not nothing."""
    if isinstance(value, tuple):
        raise DscError(f"{what} gives {len(value)} values; unpack them with "
                       f"{', '.join('v%d' % i for i in range(len(value)))} = ...", loc,
                       "one value")
    if value is None:
        raise DscError(f"{what} gives no value (the block has no return)", loc, "a value")
    return value
