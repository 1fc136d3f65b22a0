"""Ops that only move (and maybe convert) data: KV-cache append and concat.

Both are row copies between 2-D views: the new cache entries into the cache's window at
`offset`, each concat input into its slice of the output. Copies convert formats on the vector
unit when source and destination dtypes differ.
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph, Node
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from isa.expr import Bin, Const, add, mul
from isa.program import Box, Buf, TensorDecl, ViewStep
from isa.target_schema import Target

STAGES = 2


def _rows(tmap: TensorMap, decl: TensorDecl, suffix: str) -> TensorDecl:
    rows = math.prod(decl.shape[:-1])
    return tmap.view(decl, (ViewStep("reshape", (rows, decl.shape[-1])),), suffix)


def _copy_kernel(name: str, pairs: list[tuple[TensorDecl, TensorDecl]], target: Target,
                 note: str):
    """One kernel copying each (src, dst) pair of equal [R, C_i] views, R rows per pair."""
    rows = pairs[0][0].shape[0]
    row_bytes = sum(src.shape[1] * (src.bits + dst.bits) / 8 for src, dst in pairs)
    capacity = target.buffer_for("vector")[1].bytes
    br = 1
    while br * 2 <= rows and STAGES * br * 2 * row_bytes <= capacity:
        br *= 2
    tiles = math.ceil(rows / br)
    per_item = math.ceil(tiles / target.cores)
    kb = KernelBuilder(name, target)
    kb.note(f"{note}: {rows} rows, {br} per tile, {per_item} tile(s) per work item")
    params = [(kb.param(f"x{i}", src), kb.param(f"y{i}", dst, output=True), src, dst)
              for i, (src, dst) in enumerate(pairs)]
    w = kb.grid_dim("w", math.ceil(tiles / per_item))
    kb.token("free", STAGES)
    for i, (_, _, src, dst) in enumerate(params):
        kb.buffer(f"s{i}", src.dtype, (br, src.shape[1]), "vector", STAGES)
        if dst.dtype != src.dtype:
            kb.buffer(f"c{i}", dst.dtype, (br, src.shape[1]), "vector", STAGES)
        kb.token(f"loaded{i}")
        kb.token(f"ready{i}")
    with kb.loop("t", per_item) as t:
        slot = Bin("%", t, Const(STAGES)) if per_item > 1 else Const(0)
        row0 = mul(add(mul(w, Const(per_item)), t), Const(br))
        for i, (px, py, src, dst) in enumerate(params):
            cols = src.shape[1]
            kb.emit("ld.tile", Buf(f"s{i}", slot), Box(px, (row0, Const(0)), (br, cols)),
                    wait=("free",) if i == 0 else (), signal=(f"loaded{i}",))
            out = Buf(f"s{i}", slot)
            ready = f"loaded{i}"
            if dst.dtype != src.dtype:
                kb.emit("vec.cvt", Buf(f"c{i}", slot), out, wait=(ready,), signal=(f"ready{i}",),
                        n=br * cols)
                out, ready = Buf(f"c{i}", slot), f"ready{i}"
            kb.emit("st.tile", Box(py, (row0, Const(0)), (br, cols)), out, wait=(ready,),
                    signal=("free",) if i == len(params) - 1 else ())
    return kb.build()


def lower_cache_write(node: Node, graph: Graph, tmap: TensorMap, target: Target):
    cache, new = (tmap.of(n) for n in graph.inputs_of(node))
    offset, positions = node.attr("offset"), new.shape[1]
    window = tmap.view(cache, (ViewStep("slice", (1, offset, offset + positions)),),
                       f"at{offset}")
    pairs = [(_rows(tmap, new, "rows"), _rows(tmap, window, "rows"))]
    return _copy_kernel("cache_write", pairs, target,
                        f"cache_write: {positions} new positions at {offset}")


def lower_concat(node: Node, graph: Graph, tmap: TensorMap, target: Target):
    out = tmap.of(node)
    axis = node.attr("axis") % len(out.shape)
    pairs, start = [], 0
    for src_node in graph.inputs_of(node):
        src = tmap.of(src_node)
        stop = start + src.shape[axis]
        part = tmap.view(out, (ViewStep("slice", (axis, start, stop)),), f"part{start}")
        flat_src, flat_dst = _flatten_at(tmap, src, axis), _flatten_at(tmap, part, axis)
        pairs.append((flat_src, flat_dst))
        start = stop
    rows = {p[0].shape[0] for p in pairs}
    if len(rows) != 1:
        raise ValueError(f"{node.name}: concat inputs flatten to different row counts")
    return _copy_kernel("concat", pairs, target, f"concat along axis {axis}")


def _flatten_at(tmap: TensorMap, decl: TensorDecl, axis: int) -> TensorDecl:
    """[rows, cols] where cols are the dims from `axis` on (so each input is whole rows)."""
    rows, cols = math.prod(decl.shape[:axis]), math.prod(decl.shape[axis:])
    return tmap.view(decl, (ViewStep("reshape", (rows, cols)),), "rows")
