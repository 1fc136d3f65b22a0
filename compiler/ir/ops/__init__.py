"""The op registry: every IR op is one `OpDef` record with everything about it.

An op cannot exist without its shape rule, result format rule, FLOP count, byte counts and
numpy reference; passes and lowering ask the record (and its `category`) rather than listing
op names. Families of ops live in the modules of this package; each registers its records.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from isa.lazy_numpy import np

from compiler.ir.graph import TensorType
from isa.formats import Format

REQUIRED = object()


class ShapeError(ValueError):
    """An op applied to operands of the wrong shape; the builder adds the source position."""


@dataclass(frozen=True)
class WritesInto:
    """An op whose result is operand `target`'s storage with operand `value` written into one
    region of it, converted to the target's format (the KV-cache append): the target is only
    written, never read, and nothing outside the region changes."""
    target: int
    value: int
    region: Callable[[list[TensorType], dict], tuple[int, int, int]]   # (axis, start, stop)


@dataclass(frozen=True)
class OpDef:
    name: str
    category: str   # source | elementwise | contraction | rowwise | reduction | routing | view
                    # | memory | collective
    arity: int | None                       # tensor operands; None = one or more
    infer: Callable[[list[TensorType], dict], tuple[int, ...]]
    reference: Callable[..., np.ndarray]     # (list of arrays, attrs) -> array, float32 math
    doc: str
    attrs: dict[str, Any] = field(default_factory=dict)   # name -> default (REQUIRED)
    result: str = "default"     # result format: "default" policy, "input" (operand 0), or a dtype
    flops: Callable[[list[TensorType], TensorType, dict], float] = lambda ins, out, a: 0.0
    bytes_read: Callable[[list[TensorType], TensorType, dict], int] | None = None
    bytes_written: Callable[[list[TensorType], TensorType, dict], int] | None = None
    writes_into: WritesInto | None = None    # the result is an operand's storage, written in place

    def read_bytes(self, ins: list[TensorType], out: TensorType, attrs: dict) -> int:
        if self.bytes_read:
            return self.bytes_read(ins, out, attrs)
        return 0 if self.category in ("view", "source") else sum(t.nbytes for t in ins)

    def written_bytes(self, ins: list[TensorType], out: TensorType, attrs: dict) -> int:
        if self.bytes_written:
            return self.bytes_written(ins, out, attrs)
        return 0 if self.category in ("view", "source") else out.nbytes

    def result_format(self, ins: list[TensorType], attrs: dict, default: Format) -> Format:
        """The format a new node of this op gets; declarations and passes may override it."""
        if self.result == "declared":
            raise ValueError(f"'{self.name}' takes its format from its declaration")
        rules = {"default": lambda: default, "input": lambda: ins[0].format,
                 "attr": lambda: attrs["format"]}
        return rules.get(self.result, lambda: Format(self.result))()

    def full_attrs(self, given: dict) -> dict:
        """Given attributes plus defaults; raises KeyError naming an unknown or missing one."""
        unknown = sorted(set(given) - set(self.attrs))
        if unknown:
            raise KeyError(f"'{self.name}' has no attribute '{unknown[0]}'"
                           f" (attributes: {', '.join(sorted(self.attrs)) or 'none'})")
        missing = [k for k, v in self.attrs.items() if v is REQUIRED and k not in given]
        if missing:
            raise KeyError(f"'{self.name}' needs attribute '{missing[0]}'")
        return {**{k: v for k, v in self.attrs.items() if v is not REQUIRED}, **given}


OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    assert op.name not in OPS, f"op {op.name} defined twice"
    OPS[op.name] = op
    return op


def read_operands(node) -> tuple[int, ...]:
    """The value ids a node's computation reads: its inputs, but only the written value of an
    op that writes into another operand's storage."""
    into = OPS[node.op].writes_into
    return (node.inputs[into.value],) if into else tuple(node.inputs)


def written_target(node) -> int | None:
    """The value id whose storage `node` writes in place (the cache of an append), or None."""
    into = OPS[node.op].writes_into
    return node.inputs[into.target] if into else None


def written_region(node, graph) -> tuple[int, int, int] | None:
    """(axis, start, stop) of the target operand an in-place op writes, else None."""
    into = OPS[node.op].writes_into
    if into is None:
        return None
    return into.region([graph.node(i).type for i in node.inputs], node.attr_dict)


def numel(shape) -> int:
    return math.prod(shape)


def check(cond: bool, message: str) -> None:
    if not cond:
        raise ShapeError(message)


def dims(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def norm_axis(axis: int, rank: int) -> int:
    check(-rank <= axis < rank, f"axis {axis} is out of range for a rank-{rank} tensor")
    return axis % rank


# Importing the families registers their ops.
from compiler.ir.ops import (collective, contraction, elementwise, memory,  # noqa: E402,F401
                             reduction, routing, rowwise, sources, views)
