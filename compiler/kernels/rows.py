"""The rows a row-wise kernel works on: how many, how wide a node's tile is, which nodes need
whole rows, and which reshapes keep rows as they are.

A vector kernel works on tiles of `br` rows of a value laid out as [rows, last dim]. The fuse
pass groups nodes that work on the same rows; the templates then tile those rows.
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph, Node
from compiler.ir.ops import OPS, read_operands

WHOLE_ROW_OPS = ("topk", "topk_weights", "concat", "cache_write")
STAGES = 2          # a vector kernel's buffer slots: loads of one tile overlap work on another
# The row-wise ops whose rows can stream through the vector buffer in column chunks
# (compiler/lower/templates/streamed_rows.py): (statistics op, apply op, attributes of the
# apply op); and the elementwise ops a streamed group may hold beside one of them.
STREAMED = {
    "softmax": ("softmax_stats", "softmax_apply", ()),
    "rmsnorm": ("sumsq_stats", "rmsnorm_apply", ("eps",)),
    "layernorm": ("moments_stats", "layernorm_apply", ("eps",)),
}
ELEMENTWISE = ("add", "sub", "mul", "div", "neg", "relu", "exp", "sqrt", "softplus", "sigmoid",
               "silu", "gelu", "gelu_tanh", "cast")


def is_whole_row(node: Node) -> bool:
    return OPS[node.op].category in ("rowwise", "reduction") or node.op in WHOLE_ROW_OPS


def row_count(node: Node, graph: Graph) -> int:
    """Rows of a node's work: its output's, its input's for reductions, the written value's
    for an op writing into another operand (a cache append: the new entries)."""
    if OPS[node.op].category == "reduction":
        return math.prod(graph.node(node.inputs[0]).type.shape[:-1])
    if OPS[node.op].writes_into:
        return math.prod(graph.node(read_operands(node)[0]).type.shape[:-1])
    return math.prod(node.type.shape[:-1])


def tile_cols(node: Node, graph: Graph) -> int:
    """Columns of the node's result tile (whole rows)."""
    if OPS[node.op].writes_into:
        return graph.node(read_operands(node)[0]).type.shape[-1]
    if OPS[node.op].category == "reduction":
        return 1
    return node.type.shape[-1]


def row_view_base(graph: Graph, node: Node) -> int | None:
    """The value a chain of reshapes reads when they keep the last dim (the same rows)."""
    base = None
    while node.op == "reshape" and node.type.shape[-1] == graph.node(node.inputs[0]).type.shape[-1]:
        base = node.inputs[0]
        node = graph.node(base)
    return base


def whole_rows_fit(graph: Graph, members: list[int], capacity: int) -> bool:
    """Can a vector group with whole-row ops (which cannot be tiled along columns) hold one
    row of each value it loads or computes, in every buffer slot? (The vector template's rule,
    counted before the group exists: the fuse pass stops growing a group that would not.)"""
    nodes = [graph.node(i) for i in members]
    if not any(is_whole_row(n) for n in nodes):
        return True
    inside = set(members)
    inputs = {i for n in nodes for i in n.inputs if i not in inside}
    row = sum(n.type.format.bits * tile_cols(n, graph) / 8 for n in nodes)
    row += sum(graph.node(i).type.format.bits * graph.node(i).type.shape[-1] / 8
               for i in inputs if graph.node(i).type.shape)
    return STAGES * row <= capacity


def streamable(nodes: list[Node], graph: Graph) -> bool:
    """One streamable row-wise op, every other node an elementwise op on the same rows."""
    rowwise = [n for n in nodes if n.op in STREAMED]
    others = [n for n in nodes if n.op not in STREAMED]
    return (len(rowwise) == 1
            and all(n.op in ELEMENTWISE and not (n.op == "cast" and n.type.format.scaling)
                    for n in others)
            and len({tile_cols(n, graph) for n in nodes}) == 1)


SELECT_PREFIX = ("causal_mask", "mul", "add", "relu")


def selectable(nodes: list[Node], graph: Graph) -> bool:
    """A plain top-k (one group, no bias) last, elementwise ops before it on the same rows
    whose values nothing else reads: the selection template streams any row length."""
    *prefix, last = sorted(nodes, key=lambda n: n.id)
    members = {n.id for n in nodes}
    return (last.op == "topk" and last.attr("groups") == 1 and len(last.inputs) == 1
            and all(n.op in SELECT_PREFIX and not _used_outside(graph, n.id, members)
                    for n in prefix)
            and len({tile_cols(n, graph) for n in prefix}
                    | {tile_cols(graph.node(last.inputs[0]), graph)}) == 1)


def _used_outside(graph: Graph, node_id: int, members: set[int]) -> bool:
    """Some use of the value, directly or through views, is not a member (or it is returned)."""
    return node_id in graph.outputs or any(
        (_used_outside(graph, u.id, members) if u.op in ("reshape", "transpose", "slice")
         else u.id not in members) for u in graph.users(node_id))
