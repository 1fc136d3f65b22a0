"""Top-k over rows longer than the vector buffer (DeepSeek Sparse Attention's token selection:
the 2048 best of up to 128K indexer scores per query), one chunk at a time.

A row does not fit on chip, so it is read once, chunk by chunk, keeping a running top-k:

    for each tile of br rows:          sync.vec wait(kept_free)
        for c: ld chunk c              wait(free)    signal(loaded)
               vec elementwise prefix (a causal mask, with the chunk's first key col0)
               vec.select vals, idx    wait(loaded)  signal(free)
        sync.vec signal(done);  st idx wait(done) signal(kept_free)

`vec.select` radix-selects the chunk's k best and merges them with the k kept (a second select
over 2k candidates); its cost per element follows from those passes and the vector unit's
lanes (isa/vector_ops.py, RADIX_SELECT_OPS), so a 128K-long row costs what its length and the
target's vector unit say. One work item owns each tile of rows: a single row's selection runs
on one core (production kernels may spread a very long row over several).
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph
from compiler.kernels.groups import Group
from compiler.kernels import rows
from compiler.kernels.rows import row_view_base
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from compiler.lower.templates.tile_ops import emit_node
from isa.expr import Bin, Const, add, mul
from isa.program import Box, Buf
from isa.target_schema import Target

STAGES = 2


def selectable(group: Group, graph: Graph) -> bool:
    return rows.selectable(list(group.nodes), graph)


def lower_select(group: Group, graph: Graph, tmap: TensorMap, target: Target, as_rows):
    *prefix, topk = group.nodes
    k = topk.attr("k")
    scores = graph.node(topk.inputs[0])
    R, width = topk.type.shape[0], scores.type.shape[-1]
    members = {n.id for n in group.nodes}
    kb = KernelBuilder("select_" + "_".join(dict.fromkeys(n.op for n in group.nodes)), target)
    ins = {}
    for j, v in enumerate(v for v in group.inputs
                          if v.op != "const" and row_view_base(graph, v) not in members):
        decl = as_rows(tmap, tmap.of(v), math.prod(v.type.shape[:-1]))
        if decl.shape != (R, width):
            raise ValueError(f"a {list(v.type.shape)} operand of a top-k over {R} rows x {width}")
        ins[v.id] = (kb.param(f"x{j}", decl), decl)
    out = as_rows(tmap, tmap.of(topk), R)
    po = kb.param("idx", out, output=True)
    br, bc = _chunking(R, width, k, len(ins) + len(prefix),
                       target.buffer_for("vector")[1].bytes)
    chunks = math.ceil(width / bc)
    row_tiles = math.ceil(R / br)
    per_item = math.ceil(row_tiles / target.cores)
    kb.note(f"top-{k} of {R} rows x {width}: chunks of {bc} columns read once, a running top-{k} "
            f"kept on chip (radix select per chunk, merged), tiles of {br} row(s), {per_item} per "
            "work item")
    w = kb.grid_dim("w", math.ceil(row_tiles / per_item))
    for tok, initial in (("free", STAGES), ("loaded", 0), ("done", 0), ("kept_free", 1)):
        kb.token(tok, initial)
    for param, decl in ins.values():
        kb.buffer(f"s_{param}", decl.dtype, (br, bc), "vector", STAGES)
    for j, n in enumerate(prefix):
        kb.buffer(f"v{j}", n.type.format.dtype, (br, bc), "vector", STAGES)
    kb.buffer("vals", "fp32", (br, k), "vector")
    kb.buffer("idx", "i32", (br, k), "vector")
    with kb.loop("t", per_item) as t:
        row0 = mul(add(mul(w, Const(per_item)), t), Const(br))
        kb.emit("sync.vec", wait=("kept_free",))
        with kb.loop("c", chunks) as c:
            slot = Bin("%", add(mul(t, Const(chunks)), c), Const(STAGES)) \
                if per_item * chunks > 1 else Const(0)
            col0 = mul(c, Const(bc))
            sources = {}
            for j, (vid, (param, decl)) in enumerate(ins.items()):
                kb.emit("ld.tile", Buf(f"s_{param}", slot), Box(param, (row0, col0), (br, bc)),
                        wait=("free",) if j == 0 else (),
                        signal=("loaded",) if j == len(ins) - 1 else ())
                sources[vid] = Buf(f"s_{param}", slot)
            for j, n in enumerate(prefix):
                dst = Buf(f"v{j}", slot)
                _emit_prefix(kb, graph, n, dst, sources, br, bc, row0, col0,
                             ("loaded",) if j == 0 else ())
                sources[n.id] = dst
            kb.emit("vec.select", Buf("vals"), Buf("idx"), _source(graph, scores, sources),
                    wait=() if prefix else ("loaded",), signal=("free",), n=br * bc, k=k,
                    col0=col0, first=Bin("==", c, Const(0)) if chunks > 1 else Const(1),
                    keys=width, width=bc)
        kb.emit("sync.vec", signal=("done",))
        kb.emit("st.tile", Box(po, (row0, Const(0)), (br, k)), Buf("idx"), wait=("done",),
                signal=("kept_free",))
    return kb.build()


def _source(graph: Graph, node, sources: dict) -> Buf:
    """The buffer holding a value or the member it is a row view of."""
    while node.id not in sources:
        node = graph.node(row_view_base(graph, node))
    return sources[node.id]


def _emit_prefix(kb, graph, n, dst, sources, br, bc, row0, col0, wait) -> None:
    if n.op == "causal_mask":       # positions of this chunk's keys start at col0
        from compiler.ir.ops.rowwise import rows_layout
        kb.emit("vec.causal_mask", dst, sources[n.inputs[0]], wait=wait, n=br * bc,
                offset=n.attr("offset"), row0=row0, col0=col0,
                **rows_layout(n.type.shape, len(n.type.shape) - 2))
        return
    emit_node(kb, graph, n, [dst], sources, br, bc, row0, wait=wait)


def _chunking(R: int, width: int, k: int, tiles: int, capacity: int) -> tuple[int, int]:
    """(rows, columns) of a chunk: the kept values and indices (8 bytes per kept entry) plus
    double-buffered fp32 chunks of every input and prefix op; the widest power-of-two chunk up
    to 16,384 columns with one row, then as many rows (at most 8) as still fit."""
    fits = lambda br, bc: br * (8 * k + STAGES * max(tiles, 1) * 4 * bc) <= capacity
    bc = 1 << min(14, max(0, (width - 1).bit_length()))
    while bc > 1 and not fits(1, bc):
        bc //= 2
    if not fits(1, bc):
        raise ValueError(f"a top-{k} does not fit the vector buffer ({capacity:,} bytes)")
    br = 8
    while br > 1 and not fits(br, bc):
        br //= 2
    return min(br, 1 << max(0, (R - 1).bit_length())), bc
