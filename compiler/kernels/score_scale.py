"""The factor a `mul` or `div` by a constant applies to attention scores, shared by the fuse
pass (which folds it into a flash-attention group) and the flash lowering (which applies it).

Only `x * c`, `c * x` and `x / c` with a finite, non-zero `c` are a scale: `c / x` is not one,
and a zero or infinite factor would turn the online softmax's running maximum into NaN where
the unfused ops give the values IEEE arithmetic gives, so such a node stays out of the group.
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph, Node


def score_scale(graph: Graph, node: Node) -> float | None:
    if node.op not in ("mul", "div") or len(node.inputs) != 2:
        return None
    a, b = (graph.node(i) for i in node.inputs)
    const = b if b.op == "const" else (a if a.op == "const" and node.op == "mul" else None)
    if const is None:
        return None
    value = float(const.attr("value"))
    if not math.isfinite(value) or value == 0:
        return None
    return value if node.op == "mul" else 1.0 / value
