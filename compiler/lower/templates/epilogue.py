"""The epilogue of a GEMM kernel: from the finished accumulator tile to the values that leave.

Four ways, chosen from target data (compiler/kernels/epilogue.py decides the split):

  vector only      vec ops on the accumulator tile, then st.tile (GPUs)
  pipe, direct     fix ops drain the accumulator (cvt, quant, bias, add, relu...), the rest
                   on the vector unit, which reads the pipe's output on chip
  pipe, memory     the pipe's part, then fix.st hands the tile over through memory; a vector
                   core loads it (vld.tile), runs the rest and stores (vst.tile). Split
                   cube/vector cores (Ascend) exchange data this way.
  memory, no pipe  the cube core's store engine hands the raw FP32 tile over (st.tile); a
                   vector core converts it and runs the whole epilogue.

The pipe works concurrently with the matrix unit's next tile; the report's per-unit busy time
shows what moved off the vector unit.

Scales that factor out of the K sum come first, once per output tile: their row (per-token)
and column (per-channel) vectors are loaded with the epilogue's other inputs, and the pipe
(`fix.dequant`, per channel) or the vector unit (`vec.rowscale`, `vec.colscale`) multiplies
the product by them, on the accumulator or, on split cores, on the handed-over FP32 tile.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.kernels.epilogue import OUTPUT_SCALE_OPS, Epilogue, drain_store, pipe_op
from compiler.lower.templates.tile_ops import emit_node
from isa.expr import Const, Expr, floordiv
from isa.program import Box, Buf


@dataclass
class EpilogueSite:
    """Where the epilogue runs: the tile's coordinates and the kernel's parameters."""
    kb: object
    graph: object
    group: object
    epi: Epilogue
    views: dict
    inputs: dict          # epilogue input id -> param
    outputs: dict         # output node id -> param
    scales: dict          # quantised output id -> its scales' param
    head_param: str | None
    handoff: object              # the Workspace tiles cross to the vector core through
    promoted: bool
    g: Expr
    row0: Expr
    col0: Expr
    bm: int
    bn: int
    tensor_scales: tuple = ()   # per-tensor scales (NVFP4) to apply to the finished product
    acc: Buf = Buf("acc")       # the tile's accumulator (a slot of it, in a persistent kernel)
    out_scales: dict | None = None   # operand -> the param of the scales epi.scales applies
    persistent: bool = False    # the worker's next tile reuses the epilogue's buffers

    def tile_box(self, param: str) -> Box:
        """The product's bm x bn tile in a [G, M, N] view."""
        return Box(param, (self.g, self.row0, self.col0), (1, self.bm, self.bn))

    def box(self, param: str, view_shape, cols: int) -> Box:
        rows = view_shape[1]
        starts = (self.g if view_shape[0] > 1 else Const(0), self.row0 if rows > 1 else Const(0),
                  self.col0 if cols == 0 else Const(0))
        return Box(param, starts, (1, self.bm if rows > 1 else 1, self.bn if cols == 0 else cols))

    def operand_scale_box(self, operand: str) -> Box:
        """The row (A) or column (B) scales of this output tile, in the operand's [G, M, 1]
        or [G, 1, N] scale view."""
        block = self.epi.scales[operand].block
        param = self.out_scales[operand]
        if operand == "a":
            return Box(param, (self.g, floordiv(self.row0, block[0]), Const(0)),
                       (1, math.ceil(self.bm / block[0]), 1))
        return Box(param, (self.g, Const(0), floordiv(self.col0, block[1])),
                   (1, 1, math.ceil(self.bn / block[1])))

    def scale_ops(self, seq, unit: str, operands, tile: Buf, signal=()) -> None:
        """Multiply the product's tile by these operands' scales, in place, on `unit`."""
        for k, o in enumerate(operands):
            fix_op, vec_op, buf = OUTPUT_SCALE_OPS[o]
            block = self.epi.scales[o].block
            attrs = {"block_rows": block[0]} if o == "a" else {"block_cols": block[1]}
            seq.emit(f"{unit}.{fix_op if unit == 'fix' else vec_op}", tile, tile, Buf(buf),
                     signal=signal if k == len(operands) - 1 else (), n=self.bm * self.bn,
                     **attrs)

    def scale_box(self, node, param: str, cols: int) -> Box:
        block = node.type.format.scaling.block
        return Box(param, (self.g, floordiv(self.row0, block[0]),
                           floordiv(self.col0 if cols == 0 else Const(0), block[1])),
                   (1, math.ceil(self.bm / block[0]),
                    math.ceil((self.bn if cols == 0 else cols) / block[1])))


class _Sequence:
    """Instructions of one unit in order: the first takes the waits that open the epilogue."""

    def __init__(self, kb, opening: tuple):
        self.kb, self.opening = kb, opening

    def emit(self, op: str, *args, signal=(), **attrs) -> None:
        self.kb.emit(op, *args, wait=self.opening, signal=signal, **attrs)
        self.opening = ()


def emit_epilogue(s: EpilogueSite) -> None:
    """The tile's epilogue. In a persistent kernel the worker's next tile reuses its
    single-slot buffers and, two tiles on, its accumulator slot: the epilogue's first write
    waits for `epi_free`, and its last store, retiring after everything the epilogue read,
    gives back `epi_free` and `acc_free` (which the tile two on waits for before its first
    accumulation)."""
    epi, kb = s.epi, s.kb
    free = ("epi_free",) if s.persistent else ()
    cols = {spec[0]: spec[2] for spec in epi.buffers()}
    loads = _loads(s, cols)
    early = [(buf, box) for is_late, buf, box in loads if not is_late]
    for k, (buf, box) in enumerate(early):
        kb.emit("ld.tile", buf, box, wait=free if k == 0 else (),
                signal=("epi_loaded",) if k == len(early) - 1 else ())
    if not s.promoted:
        kb.emit("sync.mm", signal=("acc_ready",))
    elif epi.pipe:           # the pipe reads the sums the vector unit's promotions wrote
        kb.emit("sync.vec", signal=("acc_ready",))
    opening = (("acc_ready",) if not s.promoted or epi.pipe else ()) + \
        (("epi_loaded",) if early else free)
    opening = _scale_accumulator(s, opening)
    sources = {epi.head.id: s.acc}
    sources.update({v.id: Buf(epi.buf[v.id]) for v in epi.inputs})
    head_on_pipe = epi.head_on_pipe
    handed = epi.on_pipe[-1] if epi.on_pipe else epi.head
    # The pipe's part: drain, apply its ops, write what leaves and the hand-over tile.
    fix = _Sequence(kb, opening)
    s.scale_ops(fix, "fix", epi.pipe_scales, s.acc)
    writes = []
    if head_on_pipe:
        fix.emit("fix.cvt", Buf("out"), s.acc, n=s.bm * s.bn)
        writes.append((s.tile_box(s.head_param), Buf("out")))
    for node in epi.on_pipe:
        _emit(fix, s, node, sources, cols, unit="fix")
        if node in s.group.outputs:
            writes += _stores_of(s, node, cols)
    if epi.through_memory:
        kb.token("handed")
        kb.token("vec_loaded")
        handed_buf = sources[handed.id]
        if not epi.on_pipe and epi.pipe_converts:
            fix.emit("fix.cvt", Buf("h"), s.acc, n=s.bm * s.bn)
            handed_buf = Buf("h")
        writes.append((s.handoff.box(Const(0)), handed_buf))
    vector_steps = ([("head", None)] if epi.store_head and not head_on_pipe else []) + \
        [("node", n) for n in epi.on_vector]
    done = ("epi_free", "acc_free") if s.persistent else ()
    store = drain_store(kb.target)
    for k, (b, src) in enumerate(writes):
        last = k == len(writes) - 1
        fix.emit(store, b, src,
                 signal=(("handed",) if epi.through_memory and last else ())
                 + (done if last and not vector_steps else ()))
    if not vector_steps:
        assert writes or not s.persistent, "a persistent tile's epilogue stores nothing"
        return
    # The vector unit's part: on chip after the pipe, or loaded from the hand-over tile.
    if epi.through_memory:
        for buf, box in [(buf, box) for is_late, buf, box in loads if is_late]:
            kb.emit("vld.tile", buf, box)
        kb.emit("vld.tile", Buf("h"), s.handoff.box(Const(0)), wait=("handed",),
                signal=("vec_loaded",))
        sources[handed.id] = Buf("h")
        opening = ("vec_loaded",)
    elif epi.on_pipe or head_on_pipe or epi.pipe_scales:
        kb.token("piped")
        kb.emit("sync.fix", signal=("piped",))
        opening = ("piped",)
    vec = _Sequence(kb, opening)
    s.scale_ops(vec, "vec", epi.late_scales, sources[epi.head.id])
    stores = []
    for k, (kind, node) in enumerate(vector_steps):
        signal = ("out_ready",) if k == len(vector_steps) - 1 else ()
        if kind == "head":
            vec.emit("vec.cvt", Buf("out"), sources[epi.head.id], signal=signal,
                     n=s.bm * s.bn)
            stores.append((s.tile_box(s.head_param), Buf("out")))
            continue
        _emit(vec, s, node, sources, cols, unit="vec", signal=signal)
        if node in s.group.outputs:
            stores += _stores_of(s, node, cols)
    store = "vst.tile" if epi.through_memory else "st.tile"
    assert stores or not s.persistent, "a persistent tile's epilogue stores nothing"
    for k, (b, src) in enumerate(stores):
        kb.emit(store, b, src, wait=("out_ready",) if k == 0 else (),
                signal=done if k == len(stores) - 1 else ())


def _loads(s: EpilogueSite, cols) -> list[tuple[bool, Buf, Box]]:
    """(late, buffer, box): the epilogue's inputs and the product's scales, loaded once a
    tile; late ones by the split vector cores with the handed-over tile, the others first."""
    epi = s.epi
    late = {v.id for v in epi.late_inputs}
    loads = [(v.id in late, Buf(epi.buf[v.id]),
              s.box(s.inputs[v.id], s.views[v.id].shape, cols[epi.buf[v.id]]))
             for v in epi.inputs]
    return loads + [(o in epi.late_scales, Buf(OUTPUT_SCALE_OPS[o][2]), s.operand_scale_box(o))
                    for o in epi.scales]


def _scale_accumulator(s: EpilogueSite, opening: tuple) -> tuple:
    """(a * ta) @ (b * tb) = ta * tb * (a @ b): per-tensor scales, and where the vector unit
    reaches the accumulator the row and column scales it applies, once, on the accumulator.
    Returns what the rest of the epilogue waits for."""
    on_acc = [] if s.epi.through_memory else s.epi.vector_scales
    if not (s.tensor_scales or on_acc):
        return opening
    s.kb.token("acc_scaled")
    vec = _Sequence(s.kb, opening)
    for k, ts in enumerate(s.tensor_scales):
        last = k == len(s.tensor_scales) - 1 and not on_acc
        vec.emit("vec.tscale", s.acc, ts, n=s.bm * s.bn, signal=("acc_scaled",) if last else ())
    s.scale_ops(vec, "vec", on_acc, s.acc, signal=("acc_scaled",))
    return ("acc_scaled",)


def _emit(seq: _Sequence, s: EpilogueSite, node, sources, cols, unit: str, signal=()) -> None:
    name = s.epi.buf[node.id]
    dst = [Buf(name)] + ([Buf(name + "s")] if node in s.epi.quantised else [])
    width = cols[name] or s.bn
    if unit == "vec":
        emit_node(seq.kb, s.graph, node, dst, sources, s.bm, width, s.row0, wait=seq.opening,
                  signal=signal)
        seq.opening = ()
    else:
        srcs = [sources[i] for i in node.inputs if s.graph.node(i).op != "const"]
        imms = {f"imm{k}": float(s.graph.node(i).attr("value"))
                for k, i in enumerate(node.inputs) if s.graph.node(i).op == "const"}
        seq.emit(f"fix.{pipe_op(node, s.graph)}", *dst, *srcs, signal=signal, n=s.bm * width,
                 **imms)
    sources[node.id] = dst[0]


def _stores_of(s: EpilogueSite, node, cols) -> list[tuple[Box, Buf]]:
    name = s.epi.buf[node.id]
    out = [(s.box(s.outputs[node.id], s.views[node.id].shape, cols[name]), Buf(name))]
    if node.id in s.scales:
        out.append((s.scale_box(node, s.scales[node.id], cols[name]), Buf(name + "s")))
    return out
