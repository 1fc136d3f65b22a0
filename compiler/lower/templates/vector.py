"""Elementwise, row-wise, reduction and cast ops as a pipelined vector kernel.

Every operand is seen as a 2-D [rows, cols] tensor: the output as [prod(leading dims), last],
each input the same or broadcast along rows and/or cols ([1, C], [R, 1]); scalar constants
become immediates. A work item walks P tiles of `br` full rows with two buffer slots, so the
load of tile t+1 and the store of tile t-1 overlap the vector work on tile t:

    for t:  ld  inputs            wait(free)   signal(loaded)
            vec OP                wait(loaded) signal(done)
            st  output            wait(done)   signal(free)
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph, Node
from compiler.ir.ops import OPS
from compiler.ir.ops.rowwise import rows_layout
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from isa.expr import Bin, Const, add, floordiv, mul
from isa.program import Box, Buf, TensorDecl, ViewStep, scale_name
from isa.target_schema import Target

STAGES = 2


def _as_rows(tmap: TensorMap, decl: TensorDecl, rows: int, cols: int, suffix: str) -> TensorDecl:
    return tmap.view(decl, (ViewStep("reshape", (rows, cols)),), suffix)


def _broadcast_2d(in_shape, out_shape, whole_rows: bool) -> tuple[int, int]:
    """The [rows, cols] an input contributes to an output flattened to [R, C].

    Elementwise inputs match the output or broadcast whole rows or columns; ops that consume
    whole rows (row-wise ops, reductions, top-k) take each input's rows at its own width.
    """
    R, C = math.prod(out_shape[:-1]), out_shape[-1]
    lead, last = tuple(in_shape[:-1]), (in_shape[-1] if in_shape else 1)
    full_lead = tuple(out_shape[:-1])
    rows = R if lead and lead == full_lead[len(full_lead) - len(lead):] and math.prod(lead) == R \
        else (1 if math.prod(lead) == 1 else None)
    cols = last if whole_rows else (C if last == C else (1 if last == 1 else None))
    if rows is None or cols is None:
        raise ValueError(f"broadcasting {list(in_shape)} to {list(out_shape)} is not supported "
                         "by the vector lowering (only whole rows or columns broadcast)")
    return rows, cols


def _tile_shape(row_bytes: float, capacity: int, rows: int, cols: int,
                whole_rows: bool) -> tuple[int, int]:
    """(rows, cols) of a tile whose pipelined buffers fit the vector buffer: up to 256 whole
    rows; when one row is too wide, elementwise ops split columns by powers of two."""
    fits = lambda br, bc: STAGES * br * row_bytes * bc / cols <= capacity
    bc = cols
    while not fits(1, bc):
        if whole_rows or bc == 1:
            raise ValueError(f"one row of {row_bytes:.0f} bytes does not fit the {capacity}-byte "
                             "vector buffer")
        bc = (bc + 1) // 2
    br = 256
    while br > 1 and not fits(br, bc):
        br //= 2
    return min(br, 1 << max(0, (rows - 1).bit_length())), bc


def _vector_op(node: Node) -> tuple[str, dict]:
    """The vec.OP instruction for a node, and its attributes other than positions."""
    a = node.attr_dict
    if node.op == "cast":
        return ("quant" if node.type.format.scaling else "cvt"), {}
    if node.op in ("sum", "max", "mean"):
        return node.op, {}
    if node.op == "rmsnorm":
        return "rmsnorm", {"eps": a["eps"]}
    if node.op == "rope":
        return "rope", {"offset": a["offset"], "theta": a["theta"]}
    if node.op == "causal_mask":
        return "causal_mask", {"offset": a["offset"]}
    if node.op == "topk":
        return "topk", {"k": a["k"], "groups": a["groups"], "topk_groups": a["topk_groups"]}
    if node.op == "topk_weights":
        return "route_weights", {"norm": a["norm"], "scale": a["scale"]}
    return node.op, {}


WHOLE_ROW_OPS = ("topk", "topk_weights")


def lower_vector(node: Node, graph: Graph, tmap: TensorMap, target: Target):
    op_name, attrs = _vector_op(node)
    ins = graph.inputs_of(node)
    src_shape = ins[0].type.shape
    reduces = OPS[node.op].category == "reduction"
    whole_rows = OPS[node.op].category in ("rowwise", "reduction") or node.op in WHOLE_ROW_OPS
    if reduces and node.attr("axis") % len(src_shape) != len(src_shape) - 1:
        raise ValueError(f"{node.name}: reductions lower over the last axis only")
    out_decl = tmap.of(node)
    shape = src_shape if reduces else node.type.shape
    R, C = math.prod(shape[:-1]), shape[-1]
    out_cols = 1 if reduces else C
    width = max(C, *(n.type.shape[-1] for n in ins if n.type.shape)) if whole_rows else C
    out = _as_rows(tmap, out_decl, R, out_cols, "rows")
    kb = KernelBuilder(node.op, target)
    operands = []          # (param, 2-D decl, rows, cols) of tensor inputs
    for i, src in enumerate(ins):
        if src.op == "const":
            attrs[f"imm{i}"] = float(src.attr("value"))
            continue
        rows, cols = _broadcast_2d(src.type.shape, shape, whole_rows)
        decl = _as_rows(tmap, tmap.of(src), rows, cols, "rows")
        operands.append((kb.param(f"x{i}", decl), decl, rows, cols))
    pout = kb.param("y", out, output=True)
    scaled_out = node.op == "cast" and out_decl.scaling is not None
    if scaled_out:
        pscale = kb.param("y_scale", tmap.decls[scale_name(out.name)], output=True)
    row_bytes = sum(d.bits * cols / 8 for _, d, rows, cols in operands) + out.bits * out_cols / 8
    capacity = target.buffer_for("vector")[1].bytes
    br, bc = _tile_shape(row_bytes, capacity, R, C, whole_rows or scaled_out)
    if scaled_out:
        br = max(br, out_decl.scaling.block[0])
    col_tiles = math.ceil(C / bc)
    tiles = math.ceil(R / br) * col_tiles
    per_item = math.ceil(tiles / target.cores)
    items = math.ceil(tiles / per_item)
    shape_note = f"{br} rows" + (f" x {bc} columns" if col_tiles > 1 else "")
    kb.note(f"{node.op}: {R} rows x {C}, tiles of {shape_note}, "
            f"{per_item} tile(s) per work item")
    w = kb.grid_dim("w", items)
    kb.token("free", STAGES)
    kb.token("loaded")
    kb.token("done")
    tile_cols = lambda cols: bc if cols == C and col_tiles > 1 else cols
    for param, decl, rows, cols in operands:
        kb.buffer(f"s_{param}", decl.dtype, (min(br, rows), tile_cols(cols)), "vector", STAGES)
    kb.buffer("so", out.dtype, (br, tile_cols(out_cols)), "vector", STAGES)
    if scaled_out:
        sblock = out_decl.scaling.block
        kb.buffer("sos", out_decl.scaling.dtype,
                  (math.ceil(br / sblock[0]), math.ceil(out_cols / sblock[1])), "vector", STAGES)
    if node.op in ("rope", "causal_mask"):
        axis = node.attr("axis") if node.op == "rope" else len(shape) - 2
        attrs.update(rows_layout(shape, axis))
    with kb.loop("t", per_item) as t:
        slot = Bin("%", t, Const(STAGES)) if per_item > 1 else Const(0)
        tile = add(mul(w, Const(per_item)), t)
        if col_tiles > 1:
            row0 = mul(floordiv(tile, col_tiles), Const(br))
            col0 = mul(Bin("%", tile, Const(col_tiles)), Const(bc))
        else:
            row0, col0 = mul(tile, Const(br)), Const(0)

        def box(param, rows, cols):
            start_r = row0 if rows > 1 else Const(0)
            start_c = col0 if cols == C and col_tiles > 1 else Const(0)
            return Box(param, (start_r, start_c), (min(br, rows), tile_cols(cols)))

        for i, (param, decl, rows, cols) in enumerate(operands):
            kb.emit("ld.tile", Buf(f"s_{param}", slot), box(param, rows, cols),
                    wait=("free",) if i == 0 else (),
                    signal=("loaded",) if i == len(operands) - 1 else ())
        srcs = [Buf(f"s_{p}", slot) for p, *_ in operands]
        position = {"row0": row0} if node.op in ("rope", "causal_mask") else {}
        dsts = [Buf("so", slot)] + ([Buf("sos", slot)] if scaled_out else [])
        wait = ("loaded",) if operands else ("free",)
        kb.emit(f"vec.{op_name}", *dsts, *srcs, wait=wait, signal=("done",),
                n=br * (width if whole_rows else tile_cols(C)), **attrs, **position)
        kb.emit("st.tile", box(pout, R, out_cols), Buf("so", slot),
                wait=("done",), signal=() if scaled_out else ("free",))
        if scaled_out:
            sb = out_decl.scaling.block
            kb.emit("st.tile", Box(pscale, (floordiv(row0, sb[0]), Const(0)),
                                   (math.ceil(br / sb[0]), math.ceil(out_cols / sb[1]))),
                    Buf("sos", slot), signal=("free",))
    return kb.build()

