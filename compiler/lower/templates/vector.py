"""A fused group of vector ops (elementwise, row-wise, reductions, casts, concat, cache append)
as one pipelined kernel over tiles of rows.

Every value is seen as [rows, last dim]; the group's ops share the row space. A work item walks
P tiles of `br` rows with two buffer slots, so loads of tile t+1 and stores of tile t-1 overlap
the vector work of tile t:

    for t:  ld   external inputs        wait(free)   signal(loaded)
            vec  each op, in order      wait(loaded) signal(done)
            st   external outputs       wait(done)   signal(free)

Only values used outside the group are stored; the rest never leave the chip. A group of
elementwise ops whose row does not fit is tiled along columns too.

An op that writes into another operand's storage (a cache append, by its op record's
`writes_into`) is an ordinary member: its target is never loaded, its value is the written one
converted to the target's format (or that value's own tile when the formats agree), and its
store's destination is the region its record names (the window of new positions).

A block-scaled input is read through its scales: it is loaded with its scale tile and
dequantised (`vec.dequant`, to FP32) before the ops; the elements alone mean nothing. (A value
the group quantises is only stored: the fuse pass gives its users a kernel of their own.)
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph, Node
from compiler.ir.ops import OPS, read_operands, written_region, written_target
from compiler.kernels.groups import Group
from compiler.kernels.rows import (STAGES, is_whole_row, row_count, row_view_base, streamable,
                                   tile_cols)
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from compiler.lower.templates.tile_ops import emit_node, vector_op
from compiler.lower.templates.vector_tiles import (Io, OnChip, Tiling, TileOrigin, blocks,
                                                   choose_tiling)
from isa.expr import Bin, Const, add, mul
from isa.program import Buf, TensorDecl, ViewStep, scale_name
from isa.target_schema import Target


def as_rows(tmap: TensorMap, decl: TensorDecl, rows: int, suffix: str = "rows") -> TensorDecl:
    """`decl` seen as [rows, cols]. A reduction's result has one element a row (a sum over
    the last dim of [B, S, m, k] is [B, S, m]: B*S*m rows of one), so the columns are the
    elements a row holds, not the last dim."""
    elements = math.prod(decl.shape)
    cols = elements // rows if rows and elements % rows == 0 else \
        (decl.shape[-1] if decl.shape else 1)
    return tmap.view(decl, (ViewStep("reshape", (rows, cols)),), suffix)


def lower_vector_group(group: Group, graph: Graph, tmap: TensorMap, target: Target):
    nodes = list(group.nodes)
    rows = _group_rows(nodes, graph)
    loaded = _loaded(group, graph, tmap, rows)
    stored = _stored(group, graph, tmap, rows)
    for node, io in stored:
        _check_rows_keep_blocks(node, io.decl)
    for vid, io in loaded.items():
        _check_rows_keep_blocks(graph.node(vid), io.decl)
    kb = KernelBuilder("_".join(dict.fromkeys(n.op for n in nodes)), target)
    _declare_params(kb, tmap, loaded, stored)
    computed = [n for n in nodes if _computes(n, graph)]
    dequantised = [vid for vid, io in loaded.items()
                   if io.scales and any(vid in n.inputs for n in computed)]
    try:
        tiling = choose_tiling(nodes, computed, loaded, dequantised, stored, graph, target, rows)
    except ValueError:
        # Rows too wide for the buffer: a top-k selects in passes, one row-wise op streams
        # them in column chunks.
        from compiler.lower.templates import select, streamed_rows
        if select.selectable(group, graph):
            return select.lower_select(group, graph, tmap, target, as_rows)
        if not any(is_whole_row(n) for n in nodes) or any(io.scales for io in loaded.values()) \
                or not streamable(group.nodes, graph):
            raise
        return streamed_rows.lower_streamed_rows(group, graph, tmap, target, as_rows)
    kb.note(f"{' + '.join(n.op for n in nodes)}: {rows} rows x {tiling.width}, tiles of "
            f"{tiling.rows} row" + ("s" if tiling.rows != 1 else "")
            + (f" x {tiling.cols} columns" if tiling.col_tiles > 1 else "")
            + f", {tiling.per_item} per work item")
    w = kb.grid_dim("w", math.ceil(tiling.count / tiling.per_item))
    kb.token("free", STAGES)
    kb.token("loaded")
    kb.token("done")
    # Buffers are named by position, so the same group in another layer is the same kernel.
    local = {n.id: k for k, n in enumerate(nodes)}
    _declare_buffers(kb, graph, loaded, dequantised, computed, local, tiling)
    with kb.loop("t", tiling.per_item) as t:
        slot = Bin("%", t, Const(STAGES)) if tiling.per_item > 1 else Const(0)
        at = TileOrigin.of(tiling, add(mul(w, Const(tiling.per_item)), t))
        tiles = OnChip(graph, loaded, slot)
        any_loads = _emit_loads(kb, loaded, at, slot)
        opened = _emit_dequants(kb, loaded, dequantised, tiles, tiling, slot)
        opening = () if opened else (("loaded",) if any_loads else ("free",))
        _emit_members(kb, graph, nodes, computed, local, tiles, tiling, at, slot, opening)
        _emit_stores(kb, stored, tiles, at)
    return kb.build()


# -- what the kernel reads and writes --

def _group_rows(nodes: list[Node], graph: Graph) -> int:
    """The rows every member works on; a reduction must run along the last dim."""
    R = row_count(nodes[0], graph)
    for n in nodes:
        x = graph.node(n.inputs[0]).type if n.inputs else n.type
        if OPS[n.op].category == "reduction" and n.attr("axis") % max(x.rank, 1) != x.rank - 1:
            raise ValueError(f"{n.op} over dim {n.attr('axis')} of {list(x.shape)}: the vector "
                             "unit reduces along the last dim (transpose the operand first)")
        if row_count(n, graph) != R:
            raise ValueError(f"{n.name} works on {row_count(n, graph)} rows, the group on {R}")
    return R


def _loaded(group: Group, graph: Graph, tmap: TensorMap, R: int) -> dict[int, Io]:
    """The values read from memory, as rows (x0, x1, ... by position among the group's
    inputs): not constants, not values a member reshapes, not what a member only writes into."""
    members = {n.id for n in group.nodes}
    written = {written_target(n) for n in group.nodes}
    external = [v for v in group.inputs
                if v.op != "const" and row_view_base(graph, v) not in members]
    return {v.id: Io(f"x{k}", as_rows(tmap, tmap.of(v), _rows_of(v.type.shape, R)))
            for k, v in enumerate(external) if v.id not in written}


def _stored(group: Group, graph: Graph, tmap: TensorMap, R: int) -> list[tuple[Node, Io]]:
    """What leaves the kernel, as rows: each value used outside the group in its own tensor,
    then each in-place write in the region of its target its op names."""
    destinations = []
    for n in group.outputs:
        if written_target(n) is None:
            destinations.append((n, as_rows(tmap, tmap.of(n), R)))
    for n in group.nodes:
        if written_target(n) is not None:
            axis, start, stop = written_region(n, graph)
            region = tmap.view(tmap.of(graph.node(written_target(n))),
                               (ViewStep("slice", (axis, start, stop)),), f"at{start}")
            destinations.append((n, as_rows(tmap, region, R)))
    return [(n, Io(f"y{k}", decl)) for k, (n, decl) in enumerate(destinations)]


def _declare_params(kb, tmap: TensorMap, loaded: dict[int, Io],
                    stored: list[tuple[Node, Io]]) -> None:
    """Elements first (inputs, outputs), then the scales of the block-scaled ones."""
    for io in loaded.values():
        kb.param(io.param, io.decl)
    for _, io in stored:
        kb.param(io.param, io.decl, output=True)
    for output, ios in ((False, loaded.values()), (True, [io for _, io in stored])):
        for io in ios:
            if io.decl.scaling is not None:
                io.scales = kb.param(f"{io.param}_scale", tmap.decls[scale_name(io.decl.name)],
                                     output=output)


def _computes(node: Node, graph: Graph) -> bool:
    """Whether a member takes an instruction: all do but an in-place write of a value already
    in its target's format, which stores the value's own tile."""
    if written_target(node) is None:
        return True
    return node.type.format != graph.node(read_operands(node)[0]).type.format


def _quantises(node: Node) -> bool:
    return vector_op(node)[0] == "quant"


def _declare_buffers(kb, graph: Graph, loaded: dict[int, Io], dequantised: list[int],
                     computed: list[Node], local: dict[int, int], tiling: Tiling) -> None:
    for vid, io in loaded.items():
        shape = tiling.shape_of(io.decl)
        kb.buffer(f"s_{io.param}", io.decl.dtype, shape, "vector", STAGES)
        if io.scales:
            kb.buffer(f"s_{io.param}s", io.decl.scaling.dtype, blocks(shape, io.decl.scaling.block),
                      "vector", STAGES)
        if vid in dequantised:
            kb.buffer(f"d_{io.param}", "fp32", shape, "vector", STAGES)
    for n in computed:
        kb.buffer(f"v{local[n.id]}", n.type.format.dtype,
                  (tiling.rows, tiling.cols_of(tile_cols(n, graph))), "vector", STAGES)
        if _quantises(n):
            block = n.type.format.scaling.block
            kb.buffer(f"v{local[n.id]}s", n.type.format.scaling.dtype,
                      (math.ceil(tiling.rows / block[0]), math.ceil(tile_cols(n, graph) / block[1])),
                      "vector", STAGES)


# -- one tile's instructions --

def _emit_loads(kb, loaded: dict[int, Io], at: TileOrigin, slot) -> bool:
    """Every loaded tile, then their scale tiles: the first waits for a free slot, the last
    signals `loaded`."""
    loads = [(Buf(f"s_{io.param}", slot), at.box(io)) for io in loaded.values()]
    loads += [(Buf(f"s_{io.param}s", slot), at.loaded_scale_box(io))
              for io in loaded.values() if io.scales]
    for k, (buf, box) in enumerate(loads):
        kb.emit("ld.tile", buf, box, wait=("free",) if k == 0 else (),
                signal=("loaded",) if k == len(loads) - 1 else ())
    return bool(loads)


def _emit_dequants(kb, loaded: dict[int, Io], dequantised: list[int], tiles: OnChip,
                   tiling: Tiling, slot) -> bool:
    """Scaled inputs an op reads become FP32 tiles first; the first waits for the loads."""
    for k, vid in enumerate(dequantised):
        io = loaded[vid]
        rows, cols = tiling.shape_of(io.decl)
        kb.emit("vec.dequant", Buf(f"d_{io.param}", slot), tiles.elements[vid],
                Buf(f"s_{io.param}s", slot), wait=("loaded",) if k == 0 else (),
                n=rows * cols, block=io.decl.scaling.block)
        tiles.elements[vid] = Buf(f"d_{io.param}", slot)
    return bool(dequantised)


def _emit_members(kb, graph: Graph, nodes: list[Node], computed: list[Node],
                  local: dict[int, int], tiles: OnChip, tiling: Tiling, at: TileOrigin, slot,
                  opening: tuple) -> None:
    """Each member in order; the first instruction opens with `opening`, the last signals
    `done` (a group with nothing to compute, a pure copy, hands its loads on as they are)."""
    doing = {n.id for n in computed}
    for n in nodes:
        if n.id not in doing:
            tiles.forward(n.id, read_operands(n)[0])
            continue
        k = computed.index(n)
        dst = [Buf(f"v{local[n.id]}", slot)]
        if _quantises(n):
            dst.append(Buf(f"v{local[n.id]}s", slot))
        emit_node(kb, graph, n, dst, tiles.elements, tiling.rows,
                  tiling.cols_of(tile_cols(n, graph)), at.row0,
                  wait=opening if k == 0 else (),
                  signal=("done",) if k == len(computed) - 1 else ())
        tiles.made(n.id, *dst)
    if not computed:
        kb.emit("sync.ld", wait=("loaded",), signal=("done",))


def _emit_stores(kb, stored: list[tuple[Node, Io]], tiles: OnChip, at: TileOrigin) -> None:
    writes = []
    for node, io in stored:
        writes.append((at.box(io), tiles.elements[node.id]))
        if io.scales:
            writes.append((at.stored_scale_box(io), tiles.scales_of(node)))
    for k, (box, src) in enumerate(writes):
        kb.emit("st.tile", box, src, wait=("done",) if k == 0 else (),
                signal=("free",) if k == len(writes) - 1 else ())


# -- checks --

def _rows_of(shape, R: int) -> int:
    rows = math.prod(shape[:-1])
    if rows not in (R, 1):
        raise ValueError(f"a {list(shape)} operand has {rows} rows; the group works on {R}")
    return rows


def _check_rows_keep_blocks(node, rows: TensorDecl) -> None:
    """A value is handled as rows [R, C]; blocks that span several rows of a tensor of rank 3
    or more do not survive the leading dims merging into the rows, and the rows would have no
    scales to store: refuse rather than drop them."""
    scaling = node.type.format.scaling
    if scaling is not None and rows.scaling is None:
        raise ValueError(f"'{node.name}' {node.type}: its {scaling.block[0]}x{scaling.block[1]} "
                         f"scale blocks span rows, which a vector kernel cannot keep once the "
                         f"leading dims merge into rows [{rows.shape[0]}, {rows.shape[-1]}]; "
                         f"use blocks of one row (e.g. 1x{scaling.block[1]}) for a tensor of "
                         "rank 3 or more")
