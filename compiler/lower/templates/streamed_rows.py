"""A row-wise op over rows wider than the vector buffer, streamed in column chunks.

Production kernels for long rows (softmax over a 32k vocabulary or context, norms over a 12k
model dim) do not hold a whole row: they read it twice. The first pass folds each chunk into
per-row statistics (online max and sum of exponentials for softmax, sum of squares for
RMSNorm, mean and squared deviations merged pairwise for LayerNorm); the second pass reads the
chunks again and applies the op with the row's statistics:

    for each tile of br rows:
        for c: ld chunk c            vec  elementwise prefix, vec.KIND_stats   (sync.st frees)
        for c: ld chunk c            vec  elementwise prefix, vec.KIND_apply, suffix   st chunk

The group may hold elementwise ops before and after its one row-wise op; they are computed
per chunk (the prefix in both passes). Off-chip, the inputs are read twice and the outputs
written once: the cost of not holding the row.
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph, Node
from compiler.ir.ops import OPS
from compiler.kernels.groups import Group
from compiler.kernels.rows import STREAMED, row_count, row_view_base, tile_cols
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from compiler.lower.templates.tile_ops import emit_node
from isa.expr import Bin, Const, add, mul
from isa.program import Box, Buf
from isa.target_schema import Target

STAGES = 2


def lower_streamed_rows(group: Group, graph: Graph, tmap: TensorMap, target: Target, as_rows):
    nodes = list(group.nodes)
    local = {n.id: k for k, n in enumerate(nodes)}
    (row_op,) = [n for n in nodes if n.op in STREAMED]
    stats_op, apply_op, apply_attrs = STREAMED[row_op.op]
    split = nodes.index(row_op)
    prefix, suffix = nodes[:split], nodes[split + 1:]
    R, width = row_count(row_op, graph), tile_cols(row_op, graph)
    members = {n.id for n in nodes}
    kb = KernelBuilder("streamed_" + "_".join(dict.fromkeys(n.op for n in nodes)), target)
    ins = {}
    for k, v in enumerate(v for v in group.inputs
                          if v.op != "const" and row_view_base(graph, v) not in members):
        decl = as_rows(tmap, tmap.of(v), math.prod(v.type.shape[:-1]))
        if decl.shape[-1] not in (width, 1) or decl.shape[0] not in (R, 1):
            raise ValueError(f"a {list(v.type.shape)} operand of a streamed row op over "
                             f"{R} rows x {width}")
        ins[v.id] = (kb.param(f"x{k}", decl), decl)
    stores = [(n, kb.param(f"y{k}", decl, output=True), decl)
              for k, (n, decl) in enumerate((n, as_rows(tmap, tmap.of(n), R))
                                            for n in group.outputs)]

    br, bc = _chunking(R, width, ins, nodes, target.buffer_for("vector")[1].bytes)
    chunks = width // bc
    row_tiles = math.ceil(R / br)
    per_item = math.ceil(row_tiles / target.cores)
    kb.note(f"{' + '.join(n.op for n in nodes)}: {R} rows x {width}, streamed in {chunks} "
            f"chunks of {bc} columns, {br} rows per tile, {per_item} tiles per work item")
    w = kb.grid_dim("w", math.ceil(row_tiles / per_item))
    kb.token("free", STAGES)
    kb.token("loaded")
    kb.token("done")
    chunk_cols = lambda cols: bc if cols == width else cols
    for param, decl in ins.values():
        kb.buffer(f"s_{param}", decl.dtype, (min(br, decl.shape[0]), chunk_cols(decl.shape[-1])),
                  "vector", STAGES)
    for n in nodes:
        kb.buffer(f"v{local[n.id]}", n.type.format.dtype, (br, bc), "vector", STAGES)
    kb.buffer("stats", "fp32", (br, 2), "vector")

    with kb.loop("t", per_item) as t:
        row0 = mul(add(mul(w, Const(per_item)), t), Const(br))
        for pass_ in (0, 1):
            with kb.loop(f"c{pass_}", chunks) as c:
                sequence = add(mul(t, Const(2 * chunks)), add(Const(pass_ * chunks), c))
                slot = Bin("%", sequence, Const(STAGES))
                col0 = mul(c, Const(bc))
                sources = _load(kb, ins, slot, row0, col0, width, br, bc)
                computed = prefix if pass_ == 0 else nodes
                for k, n in enumerate(computed):
                    wait = ("loaded",) if k == 0 else ()
                    signal = ("done",) if pass_ == 1 and k == len(computed) - 1 else ()
                    dst = [Buf(f"v{local[n.id]}", slot)]
                    if n is row_op and pass_ == 1:
                        srcs = [sources[i] for i in n.inputs]
                        attrs = {a: n.attr(a) for a in apply_attrs}
                        if apply_attrs:
                            attrs["width"] = width
                        kb.emit(f"vec.{apply_op}", dst[0], srcs[0], Buf("stats"), *srcs[1:],
                                wait=wait, signal=signal, n=br * bc, **attrs)
                    else:
                        emit_node(kb, graph, n, dst, sources, br, bc, row0, wait=wait,
                                  signal=signal)
                    sources[n.id] = dst[0]
                if pass_ == 0:
                    first = Bin("==", c, Const(0))
                    extra = {"col0": col0} if stats_op == "moments_stats" else {}
                    kb.emit(f"vec.{stats_op}", Buf("stats"), sources[row_op.inputs[0]],
                            wait=() if prefix else ("loaded",), signal=("done",), n=br * bc,
                            first=first, **extra)
                    kb.emit("sync.st", wait=("done",), signal=("free",))
                    continue
                for k, (n, param, decl) in enumerate(stores):
                    kb.emit("st.tile", Box(param, (row0, col0), (br, bc)), sources[n.id],
                            wait=("done",) if k == 0 else (),
                            signal=("free",) if k == len(stores) - 1 else ())
    return kb.build()


def _load(kb, ins, slot, row0, col0, width, br, bc) -> dict:
    """Load one chunk of every input (broadcast rows at row 0, per-row columns whole)."""
    loads = list(ins.items())
    sources = {}
    for k, (vid, (param, decl)) in enumerate(loads):
        r = row0 if decl.shape[0] > 1 else Const(0)
        c = col0 if decl.shape[-1] == width else Const(0)
        box = Box(param, (r, c), (min(br, decl.shape[0]), bc if decl.shape[-1] == width else 1))
        kb.emit("ld.tile", Buf(f"s_{param}", slot), box, wait=("free",) if k == 0 else (),
                signal=("loaded",) if k == len(loads) - 1 else ())
        sources[vid] = Buf(f"s_{param}", slot)
    return sources


def _chunking(R: int, width: int, ins: dict, nodes: list[Node], capacity: int):
    """(rows, columns) of a chunk: the widest divisor of the row (at most half of it) whose
    double-buffered tiles fit with one row, then as many rows (a power of two, at most 256) as
    still fit. Sizes count bits, so the fit is exact integer arithmetic."""
    per_col = (sum(d.bits for _, d in ins.values() if d.shape[-1] == width)
               + sum(n.type.format.bits for n in nodes))
    fixed = 2 * 32 + sum(d.bits for _, d in ins.values() if d.shape[-1] == 1)
    fits = lambda br, bc: STAGES * br * (per_col * bc + fixed) <= 8 * capacity
    widest_fit = (8 * capacity // STAGES - fixed) // per_col
    bc = _widest_divisor(width, min(width // 2, widest_fit))
    if bc is None:
        raise ValueError(f"not even one column of a {width}-wide row fits the vector buffer "
                         f"({capacity:,} bytes)")
    br = 256
    while br > 1 and not fits(br, bc):
        br //= 2
    return min(br, 1 << max(0, (R - 1).bit_length())), bc


def _widest_divisor(n: int, most: int) -> int | None:
    """The widest divisor of n that is at most `most` (None when most < 1). Divisors pair up
    as (d, n // d) around the square root, so the search scans the shorter side: at most
    min(most, sqrt(n)) steps, where counting down from n / 2 never ends on a 10^12-wide row."""
    if most < 1:
        return None
    root = math.isqrt(n)
    if most > root:
        partner = next((s for s in range(-(-n // most), root + 1) if n % s == 0), None)
        if partner is not None:
            return n // partner
        most = root
    return next(d for d in range(most, 0, -1) if n % d == 0)
