"""Data-dependent row movement: MoE dispatch and combine, and embedding lookup.

Each work item loads the routing indices, computes on the vector unit which rows it needs
(`vec.expert_tokens`, `vec.route_rows`), gathers those rows with `ld.gather` and stores them
(dispatch, embedding) or reduces them with the routing weights first (combine).
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph, Node
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from isa.expr import Const, mul
from isa.program import Box, Buf, TensorRef, ViewStep
from isa.target_schema import Target


def _rows_fitting(row_bytes: float, capacity: int, limit: int) -> int:
    """Largest power of two <= limit whose rows fit in half the vector buffer."""
    rows = 1
    while rows * 2 <= limit and rows * 2 * row_bytes <= capacity // 2:
        rows *= 2
    return rows


def _whole(param: str, shape) -> Box:
    return Box(param, tuple(Const(0) for _ in shape), tuple(shape))


def lower_dispatch(node: Node, graph: Graph, tmap: TensorMap, target: Target):
    x, idx = (tmap.of(n) for n in graph.inputs_of(node))
    out = tmap.of(node)
    experts, capacity, d = node.type.shape
    tokens, k = idx.shape
    cap = target.buffer_for("vector")[1].bytes
    bc = _rows_fitting(d * x.bits / 8, cap, capacity)
    kb = KernelBuilder("dispatch", target)
    kb.note(f"dispatch: {tokens} tokens x top-{k} -> {experts} experts x "
            f"{capacity} slots x {d}; {bc} slots per work item")
    px, pi, po = kb.param("x", x), kb.param("idx", idx), kb.param("y", out, output=True)
    e = kb.grid_dim("e", experts)
    c = kb.grid_dim("c", math.ceil(capacity / bc))
    kb.buffer("sidx", idx.dtype, idx.shape, "vector")
    kb.buffer("stok", "i32", (bc,), "vector")
    kb.buffer("sx", x.dtype, (bc, d), "vector")
    for name in ("idx_ready", "tok_ready", "x_ready"):
        kb.token(name)
    row0 = mul(c, Const(bc))
    kb.emit("ld.tile", Buf("sidx"), _whole(pi, idx.shape), signal=("idx_ready",))
    kb.emit("vec.expert_tokens", Buf("stok"), Buf("sidx"), wait=("idx_ready",),
            signal=("tok_ready",), n=tokens * k, experts=experts, capacity=capacity, expert=e,
            row0=row0, rows=bc)
    kb.emit("ld.gather", Buf("sx"), TensorRef(px), Buf("stok"), wait=("tok_ready",),
            signal=("x_ready",), rows=bc)
    kb.emit("st.tile", Box(po, (e, row0, Const(0)), (1, bc, d)), Buf("sx"), wait=("x_ready",))
    return kb.build()


def lower_combine(node: Node, graph: Graph, tmap: TensorMap, target: Target):
    y, idx, w = (tmap.of(n) for n in graph.inputs_of(node))
    experts, capacity, d = y.shape
    tokens, k = idx.shape
    rows_view = tmap.view(y, (ViewStep("reshape", (experts * capacity, d)),), "rows")
    out = tmap.of(node)
    cap = target.buffer_for("vector")[1].bytes
    bt = _rows_fitting(k * d * (y.bits / 8 + 4 / k), cap, tokens)
    kb = KernelBuilder("combine", target)
    kb.note(f"combine: {tokens} tokens x top-{k} from {experts} x {capacity} "
            f"expert rows of {d}; {bt} tokens per work item")
    py, pi, pw = kb.param("y", rows_view), kb.param("idx", idx), kb.param("w", w)
    po = kb.param("out", out, output=True)
    t = kb.grid_dim("t", math.ceil(tokens / bt))
    kb.buffer("sidx", idx.dtype, idx.shape, "vector")
    kb.buffer("sw", w.dtype, (bt, k), "vector")
    kb.buffer("srow", "i32", (bt, k), "vector")
    kb.buffer("sy", y.dtype, (bt * k, d), "vector")
    kb.buffer("so", out.dtype, (bt, d), "vector")
    for name in ("loaded", "rows_ready", "y_ready", "done"):
        kb.token(name)
    row0 = mul(t, Const(bt))
    kb.emit("ld.tile", Buf("sidx"), _whole(pi, idx.shape))
    kb.emit("ld.tile", Buf("sw"), Box(pw, (row0, Const(0)), (bt, k)), signal=("loaded",))
    kb.emit("vec.route_rows", Buf("srow"), Buf("sidx"), wait=("loaded",), signal=("rows_ready",),
            n=tokens * k, experts=experts, capacity=capacity, row0=row0, rows=bt)
    kb.emit("ld.gather", Buf("sy"), TensorRef(py), Buf("srow"), wait=("rows_ready",),
            signal=("y_ready",), rows=bt * k)
    kb.emit("vec.weighted_sum", Buf("so"), Buf("sy"), Buf("sw"), wait=("y_ready",),
            signal=("done",), n=bt * k * d)
    kb.emit("st.tile", Box(po, (row0, Const(0)), (bt, d)), Buf("so"), wait=("done",))
    return kb.build()


def lower_embedding(node: Node, graph: Graph, tmap: TensorMap, target: Target):
    ids, table = (tmap.of(n) for n in graph.inputs_of(node))
    tokens = math.prod(ids.shape)
    d = table.shape[1]
    ids_rows = tmap.view(ids, (ViewStep("reshape", (tokens, 1)),), "rows")
    out = tmap.view(tmap.of(node), (ViewStep("reshape", (tokens, d)),), "rows")
    bt = _rows_fitting(d * table.bits / 8, target.buffer_for("vector")[1].bytes, tokens)
    kb = KernelBuilder("embedding", target)
    kb.note(f"embedding: {tokens} rows of {d} from a {table.shape[0]}-row table; "
            f"{bt} rows per work item")
    pi, pt, po = kb.param("ids", ids_rows), kb.param("table", table), kb.param("y", out, output=True)
    t = kb.grid_dim("t", math.ceil(tokens / bt))
    kb.buffer("sids", ids.dtype, (bt, 1), "vector")
    kb.buffer("srows", table.dtype, (bt, d), "vector")
    kb.token("ids_ready")
    kb.token("rows_ready")
    row0 = mul(t, Const(bt))
    kb.emit("ld.tile", Buf("sids"), Box(pi, (row0, Const(0)), (bt, 1)), signal=("ids_ready",))
    kb.emit("ld.gather", Buf("srows"), TensorRef(pt), Buf("sids"), wait=("ids_ready",),
            signal=("rows_ready",), rows=bt)
    kb.emit("st.tile", Box(po, (row0, Const(0)), (bt, d)), Buf("srows"), wait=("rows_ready",))
    return kb.build()
