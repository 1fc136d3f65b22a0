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

A block-scaled input is read through its scales: it is loaded with its scale tile and
dequantised (`vec.dequant`, to FP32) before the ops; the elements alone mean nothing. (A value
the group quantises is only stored: the fuse pass gives its users a kernel of their own.)
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph, Node
from compiler.ir.ops import OPS
from compiler.kernels.groups import Group
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from compiler.kernels.rows import (STAGES, is_whole_row, row_count, row_view_base, streamable,
                                   tile_cols)
from compiler.lower.templates.tile_ops import emit_node
from isa.expr import Bin, Const, add, floordiv, mul
from isa.program import Box, Buf, TensorDecl, ViewStep, scale_name
from isa.target_schema import Target



def as_rows(tmap: TensorMap, decl: TensorDecl, rows: int, suffix: str = "rows") -> TensorDecl:
    return tmap.view(decl, (ViewStep("reshape", (rows, decl.shape[-1] if decl.shape else 1)),),
                     suffix)


def _rows_of(shape, R: int) -> int:
    rows = math.prod(shape[:-1])
    if rows not in (R, 1):
        raise ValueError(f"a {list(shape)} operand has {rows} rows; the group works on {R}")
    return rows


def _tile_shape(row_bytes: float, fixed_bytes: float, capacity: int, rows: int, cols: int,
                split_cols: bool):
    """(rows, cols) of a tile whose pipelined buffers fit: up to 256 whole rows, or, when one
    row is too wide and the group is elementwise, a power-of-two split of the columns.
    `fixed_bytes` are one-row (broadcast) tiles, whatever the row count."""
    fits = lambda br, bc: STAGES * (br * row_bytes + fixed_bytes) * bc / cols <= capacity
    bc = cols
    while not fits(1, bc):
        if not split_cols or bc == 1:
            raise ValueError(f"one row of tiles needs {STAGES * (row_bytes + fixed_bytes):,.0f} "
                             f"bytes double-buffered; the vector buffer has {capacity:,}")
        bc = (bc + 1) // 2
    br = 256
    while br > 1 and not fits(br, bc):
        br //= 2
    return min(br, 1 << max(0, (rows - 1).bit_length())), bc


def lower_vector_group(group: Group, graph: Graph, tmap: TensorMap, target: Target):
    nodes = list(group.nodes)
    # Buffers are named by position, so the same group in another layer is the same kernel.
    local = {n.id: k for k, n in enumerate(nodes)}
    R = row_count(nodes[0], graph)
    for n in nodes:
        x = graph.node(n.inputs[0]).type if n.inputs else n.type
        if OPS[n.op].category == "reduction" and n.attr("axis") % max(x.rank, 1) != x.rank - 1:
            raise ValueError(f"{n.op} over dim {n.attr('axis')} of {list(x.shape)}: the vector "
                             "unit reduces along the last dim (transpose the operand first)")
        if row_count(n, graph) != R:
            raise ValueError(f"{n.name} works on {row_count(n, graph)} rows, the group on {R}")
    members = {n.id for n in nodes}
    external = [v for v in group.inputs if v.op != "const" and row_view_base(graph, v) not in members]
    kb = KernelBuilder("_".join(dict.fromkeys(n.op for n in nodes)), target)
    # External inputs as [rows, cols] views.
    ins = {}
    for k, v in enumerate(external):
        if any(n.op == "cache_write" and n.inputs[0] == v.id for n in nodes):
            continue                                   # the cache itself is only written
        decl = as_rows(tmap, tmap.of(v), _rows_of(v.type.shape, R))
        ins[v.id] = (kb.param(f"x{k}", decl), decl)
    # Values to store: external outputs, and cache appends into their window.
    stores = []
    for n in group.outputs:
        if n.op == "cache_write":
            continue
        decl = as_rows(tmap, tmap.of(n), R)
        stores.append((n, kb.param(f"y{len(stores)}", decl, output=True), decl))
    for n in nodes:
        if n.op == "cache_write":
            cache, new = tmap.of(graph.node(n.inputs[0])), graph.node(n.inputs[1])
            offset = n.attr("offset")
            window = tmap.view(cache, (ViewStep("slice", (1, offset, offset + new.type.shape[1])),),
                               f"at{offset}")
            decl = as_rows(tmap, window, R)
            stores.append((n, kb.param(f"y{len(stores)}", decl, output=True), decl))
    for n, _, d in stores:
        _check_rows_keep_blocks(n, d)
    for vid, (_, decl) in ins.items():
        _check_rows_keep_blocks(graph.node(vid), decl)
    in_scales = {vid: kb.param(f"{param}_scale", tmap.decls[scale_name(decl.name)])
                 for vid, (param, decl) in ins.items() if decl.scaling is not None}
    scale_stores = [(n, p, d) for n, p, d in stores if d.scaling is not None]
    scale_params = {n.id: kb.param(f"{p}_scale", tmap.decls[scale_name(d.name)], output=True)
                    for n, p, d in scale_stores}

    elementwise_only = not any(is_whole_row(n) for n in nodes)
    width = max([d.shape[-1] for _, d in ins.values()] + [tile_cols(n, graph) for n in nodes])
    row_bytes = sum(d.bits * d.shape[-1] / 8 for _, d in ins.values() if d.shape[0] > 1) \
        + sum(n.type.format.bits * tile_cols(n, graph) / 8 for n in nodes
              if n.op != "cache_write" or _converts(n, graph))
    fixed = sum(d.bits * d.shape[-1] / 8 for _, d in ins.values() if d.shape[0] == 1)
    # FP32 copies of the scaled inputs (scales themselves are a few bytes per block).
    row_bytes += sum(4 * d.shape[-1] for vid, (_, d) in ins.items()
                     if vid in in_scales and d.shape[0] > 1)
    fixed += sum(4 * d.shape[-1] for vid, (_, d) in ins.items()
                 if vid in in_scales and d.shape[0] == 1)
    try:
        br, bc = _tile_shape(row_bytes, fixed, target.buffer_for("vector")[1].bytes, R, width,
                             elementwise_only and not scale_stores and not in_scales)
    except ValueError:
        from compiler.lower.templates import select, streamed_rows
        if select.selectable(group, graph):
            return select.lower_select(group, graph, tmap, target, as_rows)
        if elementwise_only or in_scales or not streamable(group.nodes, graph):
            raise
        return streamed_rows.lower_streamed_rows(group, graph, tmap, target, as_rows)
    for d in [d for _, _, d in scale_stores] + [ins[vid][1] for vid in in_scales]:
        br = max(br, d.scaling.block[0])
    col_tiles = math.ceil(width / bc)
    tiles = math.ceil(R / br) * col_tiles
    per_item = math.ceil(tiles / target.cores)
    kb.note(f"{' + '.join(n.op for n in nodes)}: {R} rows x {width}, tiles of {br} rows"
            + (f" x {bc} columns" if col_tiles > 1 else "") + f", {per_item} per work item")
    w = kb.grid_dim("w", math.ceil(tiles / per_item))
    kb.token("free", STAGES)
    kb.token("loaded")
    kb.token("done")
    cols = lambda c: bc if col_tiles > 1 and c == width else c
    for vid, (param, decl) in ins.items():
        shape = (min(br, decl.shape[0]), cols(decl.shape[-1]))
        kb.buffer(f"s_{param}", decl.dtype, shape, "vector", STAGES)
        if vid in in_scales:
            kb.buffer(f"s_{param}s", decl.scaling.dtype, _blocks(shape, decl.scaling.block),
                      "vector", STAGES)
            kb.buffer(f"d_{param}", "fp32", shape, "vector", STAGES)
    for n in nodes:
        if n.op != "cache_write" or _converts(n, graph):
            kb.buffer(f"v{local[n.id]}", n.type.format.dtype, (br, cols(tile_cols(n, graph))), "vector",
                      STAGES)
        if n.type.format.scaling and n.op in ("cast", "cache_write"):
            block = n.type.format.scaling.block
            kb.buffer(f"v{local[n.id]}s", n.type.format.scaling.dtype,
                      (math.ceil(br / block[0]), math.ceil(tile_cols(n, graph) / block[1])),
                      "vector", STAGES)
    with kb.loop("t", per_item) as t:
        slot = Bin("%", t, Const(STAGES)) if per_item > 1 else Const(0)
        tile = add(mul(w, Const(per_item)), t)
        if col_tiles > 1:
            row0 = mul(floordiv(tile, col_tiles), Const(br))
            col0 = mul(Bin("%", tile, Const(col_tiles)), Const(bc))
        else:
            row0, col0 = mul(tile, Const(br)), Const(0)

        def box(param, decl):
            r = row0 if decl.shape[0] > 1 else Const(0)
            c = col0 if col_tiles > 1 and decl.shape[-1] == width else Const(0)
            return Box(param, (r, c), (min(br, decl.shape[0]), cols(decl.shape[-1])))

        loads = [(Buf(f"s_{param}", slot), box(param, decl))
                 for param, decl in ins.values()]
        loads += [(Buf(f"s_{ins[vid][0]}s", slot), _scale_box(scale, row0, ins[vid][1], br))
                  for vid, scale in in_scales.items()]
        for k, (buf, b) in enumerate(loads):
            kb.emit("ld.tile", buf, b, wait=("free",) if k == 0 else (),
                    signal=("loaded",) if k == len(loads) - 1 else ())
        sources = _RowViews(graph, {vid: Buf(f"s_{param}", slot) for vid, (param, _) in ins.items()})
        computed = [n for n in nodes if n.op != "cache_write" or _converts(n, graph)]
        # Scaled inputs an op reads are dequantised first (the first waits for the loads); an
        # append in the entries' own format copies the elements.
        read = [vid for vid in in_scales
                if any(vid in n.inputs for n in computed) or not computed]
        for k, vid in enumerate(read if computed else ()):
            param, decl = ins[vid]
            shape = (min(br, decl.shape[0]), cols(decl.shape[-1]))
            kb.emit("vec.dequant", Buf(f"d_{param}", slot), sources[vid],
                    Buf(f"s_{param}s", slot), wait=("loaded",) if k == 0 else (),
                    n=shape[0] * shape[1], block=decl.scaling.block)
            sources[vid] = Buf(f"d_{param}", slot)
        opened = bool(read and computed)
        for n in nodes:
            if n not in computed:              # an append in the entries' own format
                sources[n.id] = sources[n.inputs[1]]
                continue
            k = computed.index(n)
            dst = [Buf(f"v{local[n.id]}", slot)]
            if n.type.format.scaling and n.op in ("cast", "cache_write"):
                dst.append(Buf(f"v{local[n.id]}s", slot))
            wait = (("loaded",) if loads else ("free",)) if k == 0 and not opened else ()
            signal = ("done",) if k == len(computed) - 1 else ()
            if n.op == "cache_write":      # entries converted to the cache's format
                op = "vec.quant" if n.type.format.scaling else "vec.cvt"
                kb.emit(op, *dst, sources[n.inputs[1]], wait=wait, signal=signal,
                        n=br * tile_cols(n, graph))
            else:
                emit_node(kb, graph, n, dst, sources, br, cols(tile_cols(n, graph)), row0,
                          wait=wait, signal=signal)
            sources[n.id] = dst[0]
        if not computed:                     # a pure copy (cache append of a loaded value)
            kb.emit("sync.ld", wait=("loaded",), signal=("done",))
        out_ops = []
        for n, param, decl in stores:
            out_ops.append((box(param, decl), sources[n.id]))
            if n.id in scale_params:
                block = decl.scaling.block
                out_ops.append((Box(scale_params[n.id], (floordiv(row0, block[0]), Const(0)),
                                    (math.ceil(br / block[0]),
                                     math.ceil(decl.shape[-1] / block[1]))),
                                Buf(f"v{local[n.id]}s", slot)))
        for k, (b, src) in enumerate(out_ops):
            kb.emit("st.tile", b, src, wait=("done",) if k == 0 else (),
                    signal=("free",) if k == len(out_ops) - 1 else ())
    return kb.build()


def _blocks(shape, block) -> tuple[int, int]:
    """Scale entries of a [rows, cols] tile: one per block, partial blocks included."""
    return math.ceil(shape[0] / block[0]), math.ceil(shape[1] / block[1])


def _scale_box(param: str, row0, decl: TensorDecl, br: int) -> Box:
    """The scale tile of the rows a tile of `decl` covers (whole rows: no column split)."""
    block = decl.scaling.block
    rows = min(br, decl.shape[0])
    first = floordiv(row0, block[0]) if decl.shape[0] > 1 else Const(0)
    return Box(param, (first, Const(0)), _blocks((rows, decl.shape[-1]), block))


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


class _RowViews(dict):
    """Tile buffers by value id, where a reshape keeping rows whole reads its base's tile."""

    def __init__(self, graph: Graph, items: dict):
        super().__init__(items)
        self.graph = graph

    def __missing__(self, vid: int):
        base = row_view_base(self.graph, self.graph.node(vid))
        if base is None:
            raise KeyError(vid)
        return self[base]


def _converts(node: Node, graph: Graph) -> bool:
    """A cache append whose entries change format on the way in."""
    return node.type.format != graph.node(node.inputs[1]).type.format
