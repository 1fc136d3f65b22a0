"""Data-dependent row movement: MoE routing, dispatch and combine, and embedding lookup.

A route kernel turns the top-k indices into tables (which token sits in each expert slot, and
which expert-output row serves each choice); dispatch gathers token rows by the first, combine
gathers expert rows by the second and sums them with the routing weights; embedding gathers
table rows by token id. Every gather is `ld.gather` driven by an index tile.
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph, Node
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from isa.expr import Bin, Const, mul
from isa.program import Box, Buf, TensorRef, ViewStep
from isa.target_schema import Target


def _rows_fitting(row_bytes: float, capacity: int, limit: int) -> int:
    """Largest power of two <= limit whose rows fit in half the vector buffer (at least one);
    a row that does not fit the buffer at all is refused here, where the error can name the
    operation (the buffer check after lowering could not)."""
    if row_bytes > capacity:
        raise ValueError(f"one row of {row_bytes:,.0f} bytes does not fit the vector buffer "
                         f"({capacity:,} bytes): the rows are gathered whole")
    rows = 1
    while rows * 2 <= limit and rows * 2 * row_bytes <= capacity // 2:
        rows *= 2
    return rows


def _whole(param: str, shape) -> Box:
    return Box(param, tuple(Const(0) for _ in shape), tuple(shape))


def _routes(idx_node: Node, tmap: TensorMap, target: Target, experts: int, capacity: int):
    """The route kernel of one set of routing indices, and its two tables (made once).

    One work item per expert streams the [tokens, k] indices in chunks and lists the expert's
    (token, choice) pairs in token order: `slots` [experts, capacity] holds each slot's token
    (dispatch gathers by it) and `rows` [tokens*k, 1] each choice's row expert*capacity+slot of
    the experts' output (combine gathers by it), scattered by the expert that took it.
    """
    idx = tmap.of(idx_node)
    tokens, k = idx.shape
    slots = tmap.scratch(f"{idx.name}.slots", "i32", (experts, capacity))
    rows = tmap.scratch(f"{idx.name}.rows", "i32", (tokens * k, 1))
    space = target.buffer_for("vector")[1].bytes // 2
    bt = _rows_fitting(k * 4, space // 2, tokens)            # index chunks, two in flight
    window = _rows_fitting(3 * 4, space // 2, capacity)      # slots recorded per work item
    kb = KernelBuilder("route", target)
    kb.note(f"route: {tokens} tokens x top-{k} over {experts} experts x {capacity} slots; "
            f"indices streamed {bt} rows at a time, {window} slots per work item")
    pi = kb.param("idx", idx)
    ps, pr = kb.param("slots", slots, output=True), kb.param("rows", rows, output=True)
    e = kb.grid_dim("e", experts)
    w = kb.grid_dim("w", math.ceil(capacity / window))
    slot0 = mul(w, Const(window))
    kb.buffer("sidx", idx.dtype, (bt, k), "vector", 2)
    for name in ("stok", "sflat", "srow"):
        kb.buffer(name, "i32", (window,), "vector")
    kb.buffer("scount", "i32", (1,), "vector")
    kb.token("free", 2)
    kb.token("loaded")
    kb.token("scanned")
    chunks = math.ceil(tokens / bt)
    with kb.loop("c", chunks) as c:
        slot = Bin("%", c, Const(2)) if chunks > 1 else Const(0)
        row0 = mul(c, Const(bt))
        kb.emit("ld.tile", Buf("sidx", slot), Box(pi, (row0, Const(0)), (bt, k)),
                wait=("free",), signal=("loaded",))
        kb.emit("vec.route_scan", Buf("stok"), Buf("sflat"), Buf("srow"), Buf("scount"),
                Buf("sidx", slot), wait=("loaded",), signal=("free",), n=bt * k, expert=e,
                capacity=capacity, row0=row0, first=Bin("==", c, Const(0)) if chunks > 1 else 1,
                slot0=slot0)
    kb.emit("sync.vec", signal=("scanned",))
    kb.emit("st.tile", Box(ps, (e, slot0), (1, window)), Buf("stok"), wait=("scanned",))
    kb.emit("st.scatter", TensorRef(pr), Buf("srow"), Buf("sflat"), rows=window)
    tmap.routes[idx.name] = (slots, rows)
    return kb.build(), slots, rows


def lower_dispatch(node: Node, graph: Graph, tmap: TensorMap, target: Target):
    x_node, idx_node = graph.inputs_of(node)
    x, out = tmap.of(x_node), tmap.of(node)
    experts, capacity, d = node.type.shape
    route, slots, _ = _routes(idx_node, tmap, target, experts, capacity)
    x_scale, out_scale = tmap.scales_of(x), tmap.scales_of(out)
    block = x_node.type.format.scaling.block if x_node.type.format.scaling else (1, 1)
    if block[0] > 1:        # a token's row moves alone; its scales must move with it
        raise ValueError(f"'{x_node.name}' {x_node.type} is dispatched to experts row by row, "
                         f"but its {block[0]}x{block[1]} scale blocks span {block[0]} rows; "
                         f"use blocks of one row (e.g. 1x{block[1]}) for routed activations")
    row_bytes = d * x.bits / 8 + (x_scale.shape[-1] * x_scale.bits / 8 if x_scale else 0)
    bc = _rows_fitting(row_bytes, target.buffer_for("vector")[1].bytes, capacity)
    kb = KernelBuilder("dispatch", target)
    kb.note(f"dispatch: rows to {experts} experts x {capacity} slots x {d}"
            + (" with their scales" if x_scale else "") + f"; {bc} slots per work item")
    pt, px, po = kb.param("slots", slots), kb.param("x", x), kb.param("y", out, output=True)
    if x_scale:
        pxs, pos = kb.param("x_scale", x_scale), kb.param("y_scale", out_scale, output=True)
    e = kb.grid_dim("e", experts)
    c = kb.grid_dim("c", math.ceil(capacity / bc))
    kb.buffer("stok", "i32", (bc,), "vector")
    kb.buffer("sx", x.dtype, (bc, d), "vector")
    if x_scale:
        kb.buffer("sxs", x_scale.dtype, (bc, x_scale.shape[-1]), "vector")
    kb.token("tok_ready")
    kb.token("x_ready")
    row0 = mul(c, Const(bc))
    kb.emit("ld.tile", Buf("stok"), Box(pt, (e, row0), (1, bc)), signal=("tok_ready",))
    kb.emit("ld.gather", Buf("sx"), TensorRef(px), Buf("stok"), wait=("tok_ready",),
            signal=() if x_scale else ("x_ready",), rows=bc)
    if x_scale:
        kb.emit("ld.gather", Buf("sxs"), TensorRef(pxs), Buf("stok"), signal=("x_ready",), rows=bc)
    kb.emit("st.tile", Box(po, (e, row0, Const(0)), (1, bc, d)), Buf("sx"), wait=("x_ready",))
    if x_scale:
        kb.emit("st.tile", Box(pos, (e, row0, Const(0)), (1, bc, x_scale.shape[-1])), Buf("sxs"))
    return [route, kb.build()]


def lower_combine(node: Node, graph: Graph, tmap: TensorMap, target: Target):
    y_node, idx_node, w_node = graph.inputs_of(node)
    y, idx, w = tmap.of(y_node), tmap.of(idx_node), tmap.of(w_node)
    experts, capacity, d = y.shape
    tokens, k = idx.shape
    if idx.name not in tmap.routes:
        raise ValueError("combine needs the routing tables of a dispatch of the same indices")
    _, rows = tmap.routes[idx.name]
    rows_view = tmap.view(y, (ViewStep("reshape", (experts * capacity, d)),), "rows")
    out = tmap.of(node)
    cap = target.buffer_for("vector")[1].bytes
    bt = _rows_fitting(k * d * (y.bits / 8 + 4 / k), cap, tokens)
    kb = KernelBuilder("combine", target)
    kb.note(f"combine: {tokens} tokens x top-{k} from {experts} x {capacity} expert rows of "
            f"{d}; {bt} tokens per work item")
    pr, py, pw = kb.param("rows", rows), kb.param("y", rows_view), kb.param("w", w)
    po = kb.param("out", out, output=True)
    t = kb.grid_dim("t", math.ceil(tokens / bt))
    kb.buffer("srow", "i32", (bt * k, 1), "vector")
    kb.buffer("sw", w.dtype, (bt, k), "vector")
    kb.buffer("sy", y.dtype, (bt * k, d), "vector")
    kb.buffer("so", out.dtype, (bt, d), "vector")
    for name in ("loaded", "y_ready", "done"):
        kb.token(name)
    row0 = mul(t, Const(bt))
    kb.emit("ld.tile", Buf("srow"), Box(pr, (mul(t, Const(bt * k)), Const(0)), (bt * k, 1)))
    kb.emit("ld.tile", Buf("sw"), Box(pw, (row0, Const(0)), (bt, k)), signal=("loaded",))
    kb.emit("ld.gather", Buf("sy"), TensorRef(py), Buf("srow"), wait=("loaded",),
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
