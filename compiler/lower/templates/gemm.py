"""A contraction (matmul, einsum) and its fused epilogue as a tiled, pipelined GEMM kernel.

The operands are viewed as [G, M, K] and [G, K, N] and the result as [G, M, N] (views, not
copies). One work item computes one bm x bn output tile; its K loop keeps `stages` tiles in
flight so loads overlap the MMAs:

    for k:  ld   a, b (and their scales)          wait(free)      signal(loaded)
            vec  cvt/dequant (mixed formats)       wait(loaded)    signal(ready)
            mm   mma                               wait(ready)     signal(free | part_full)
            vec  promote partial sums (scaled)     wait(part_full) signal(free, part_free)
    epilogue: ld its other inputs; vec each fused op on the tile; st the values used outside.
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph, Node
from compiler.ir.ops.contraction import contraction_of
from compiler.kernels import gemm_tiles
from compiler.kernels.groups import Group
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from compiler.kernels.gemm_estimate import group_problem
from compiler.lower.templates.epilogue import EpilogueSite, emit_epilogue
from compiler.lower.templates.workspace import Workspace
from compiler.lower.templates.gemm_operands import (OperandTile, emit_operand_tiles,
                                                     operand_tokens)
from isa.expr import Bin, Const, Expr, floordiv, mul
from isa.program import Box, Buf, TensorDecl, ViewStep
from isa.target_schema import Target


def canonical_view(tmap: TensorMap, decl: TensorDecl, index: str, order: list[str],
                   shape3: tuple[int, int, int], suffix: str) -> TensorDecl:
    """`decl` (indexed by `index`) seen as a 3-D [G, rows, cols] tensor."""
    perm = tuple(index.index(c) for c in "".join(order))
    steps = (ViewStep("transpose", perm), ViewStep("reshape", shape3))
    return tmap.view(decl, steps, suffix)


def _box(tensor: str, starts: list[Expr], sizes: list[int]) -> Box:
    return Box(tensor, tuple(starts), tuple(sizes))


def _scale_box(tensor: str, g: Expr, row: Expr, rows: int, col: Expr, cols: int,
               block: tuple[int, int]) -> Box:
    """The scales covering a rows x cols tile whose top-left element is (row, col)."""
    return _box(tensor, [g, floordiv(row, block[0]), floordiv(col, block[1])],
                [1, math.ceil(rows / block[0]), math.ceil(cols / block[1])])


def lower_gemm_group(group: Group, graph: Graph, tmap: TensorMap, target: Target,
                     tile: gemm_tiles.GemmTile | None = None):
    head = group.nodes[0]
    ins = graph.inputs_of(head)
    c = contraction_of([n.type for n in ins], head.attr_dict)
    a_idx, b_idx = c.spec.split("->")[0].split(",")
    out_idx = c.spec.split("->")[1]
    G, M, N, K = c.size(c.batch), c.size(c.m), c.size(c.n), c.size(c.k)
    a = canonical_view(tmap, tmap.of(ins[0]), a_idx, [c.batch, c.m, c.k], (G, M, K), "gmk")
    b = canonical_view(tmap, tmap.of(ins[1]), b_idx, [c.batch, c.k, c.n], (G, K, N), "gkn")
    out = canonical_view(tmap, tmap.of(head), out_idx, [c.batch, c.m, c.n], (G, M, N), "gmn")
    problem, plan, epi = group_problem(group, graph, target)
    views = {v.id: tmap.view(tmap.of(v), (ViewStep("reshape", epi.view_shape(v)),), "gmn")
             for v in epi.inputs + epi.outputs}
    a_scales, b_scales = tmap.scales_of(a), tmap.scales_of(b)
    need_a_scales, need_b_scales = problem.a_scaling is not None, problem.b_scaling is not None
    if (need_a_scales and a_scales is None) or (need_b_scales and b_scales is None):
        raise ValueError(f"{head.name}: a block-scaled operand is used in a layout whose scales "
                         "cannot be tiled (its last two dims are not [M, K] / [K, N])")
    how = head.sched_get("tile_choice", "estimate")
    if tile is None and head.sched_get("tile"):
        tile = gemm_tiles.GemmTile(*head.sched_get("tile"))
    if tile is None:
        tile, scored = gemm_tiles.choose(problem, target)
        how = f"chosen among {len(scored)} candidates by estimate"
    name = head.op if not epi.nodes else "_".join([head.op] + [n.op for n in epi.nodes])
    kb = KernelBuilder(name, target)
    kb.note(f"{head.op} {c.spec}: G={G} M={M} N={N} K={K}, {c.flops:.4g} flops"
            + (f"; epilogue {' + '.join(n.op for n in epi.nodes)}" if epi.nodes else ""))
    kb.note(f"tile {tile}; {how}; "
            f"mma {plan.fmt} {gemm_tiles.instruction_text(tile, plan.fmt, target)}"
            + (f", promote every {plan.k_step} of K" if plan.promote else ""))
    swapped = {"swap": 1} if tile.swap else {}
    pa, pb = kb.param("a", a), kb.param("b", b)
    pc = kb.param("c", out, output=True) if problem.store_acc else None
    psa = kb.param("a_scale", a_scales) if need_a_scales else None
    psb = kb.param("b_scale", b_scales) if need_b_scales else None
    tensor_scales = {o: kb.param(f"{o}_tscale", tmap.tensor_scale_of(d))
                     for o, d in (("a", a), ("b", b)) if o in problem.tensor_scales}
    epi_params = {v.id: kb.param(f"e{k}", views[v.id]) for k, v in enumerate(epi.inputs)}
    out_params = {n.id: kb.param(f"y{k}", views[n.id], output=True)
                  for k, n in enumerate(group.outputs) if n.id != head.id}
    scale_params = {n.id: kb.param(f"y{k}_scale", tmap.scales_of(views[n.id]), output=True)
                    for k, n in enumerate(group.outputs) if n in epi.quantised}
    g = kb.grid_dim("g", G)
    m = kb.grid_dim("m", math.ceil(M / tile.bm))
    n = kb.grid_dim("n", math.ceil(N / tile.bn))
    acc = Buf("acc")
    if tile.persistent:
        # Worker w walks tiles w, w + P, w + 2P, ... (P = one per core): consecutive tiles
        # of a worker alternate accumulators, so one drains while the next fills.
        kb.persistent = True
        tiles = math.prod(size for _, size in kb.grid)
        workers = min(target.cores, tiles)
        acc = Buf("acc", Bin("%", floordiv(kb.item_index(), workers), Const(2)))
        kb.note(f"persistent: {workers} workers walk {tiles} tiles in grid order, two "
                f"accumulators: a tile's epilogue overlaps the next tile's main loop")
    S = tile.stages
    bm, bn, bk = tile.bm, tile.bn, tile.bk
    for spec in gemm_tiles.gemm_buffers(problem, tile):
        kb.buffer(spec.name, spec.dtype, spec.shape, spec.role, spec.slots)
    converts = bool(plan.a_conv or plan.b_conv)
    scratch = {o: Workspace(kb, tmap, f"{head.name}.{o}_conv", plan.fmt, rows, cols, S,
                            f"{o}_conv")
               for o, conv, rows, cols in (("a", plan.a_conv, bm, bk), ("b", plan.b_conv, bk, bn))
               if conv and problem.split}
    operand_tokens(kb, converts, problem.split, tile.stages,
                   cube_loads=not (problem.split and plan.a_conv and plan.b_conv))
    if plan.promote:
        kb.token("part_full")
        kb.token("part_free", 2)
    if not plan.promote or epi.pipe:
        kb.token("acc_ready")
    if epi.inputs:
        kb.token("epi_loaded")
    kb.token("out_ready")
    k_steps = math.ceil(K / bk)
    row0, col0 = mul(m, Const(bm)), mul(n, Const(bn))
    for o, param in tensor_scales.items():          # one number per operand, used at the end
        kb.emit("ld.tile", Buf(f"ts{o}"), Box(param, (Const(0),), (1,)))
    with kb.loop("k", k_steps) as k:
        slot = Bin("%", k, Const(S)) if k_steps > 1 else Const(0)
        kk = mul(k, Const(bk))
        tiles = [
            OperandTile("a", _box(pa, [g, row0, kk], [1, bm, bk]), tile.cluster_n,
                        _scale_box(psa, g, row0, bm, kk, bk, a.scaling.block)
                        if need_a_scales else None, plan.a_conv,
                        a.scaling.block if plan.a_conv == "dequant" else None, bm * bk,
                        scratch.get("a")),
            OperandTile("b", _box(pb, [g, kk, col0], [1, bk, bn]), tile.cluster_m,
                        _scale_box(psb, g, kk, bk, col0, bn, b.scaling.block)
                        if need_b_scales else None, plan.b_conv,
                        b.scaling.block if plan.b_conv == "dequant" else None, bk * bn,
                        scratch.get("b"))]
        mma_a, mma_b, mma_wait = emit_operand_tiles(kb, tiles, slot, problem.split)
        first = Bin("==", k, Const(0)) if k_steps > 1 else Const(1)
        if plan.promote:
            pslot = Bin("%", k, Const(2)) if k_steps > 1 else Const(0)
            kb.emit("mm.mma", Buf("part", pslot), mma_a, mma_b, wait=mma_wait + ("part_free",),
                    signal=("part_full",), shape=(bm, bn, bk), fmt=plan.fmt, first=Const(1),
                    **swapped)
            if plan.scaled:
                kb.emit("vec.promote", acc, Buf("part", pslot), Buf("ssa", slot),
                        Buf("ssb", slot), wait=("part_full",), signal=("free", "part_free"),
                        n=bm * bn, first=first, block_cols=min(bn, b.scaling.block[1]))
            else:
                kb.emit("vec.accumulate", acc, Buf("part", pslot), wait=("part_full",),
                        signal=("free", "part_free"), n=bm * bn, first=first)
        else:
            scaled = {}
            if plan.hw_scaled:             # the matrix unit applies the block scales itself
                mma_scales = (Buf("ssa", slot), Buf("ssb", slot))
                scaled = {"block_a": a.scaling.block, "block_b": b.scaling.block}
            else:
                mma_scales = ()
            kb.emit("mm.mma", acc, mma_a, mma_b, *mma_scales, wait=mma_wait,
                    signal=("free",), shape=(bm, bn, bk), fmt=plan.fmt, first=first, **scaled,
                    **swapped)
    handoff = None
    if epi.through_memory:
        handoff = Workspace(kb, tmap, f"{head.name}.handoff", epi.handoff_dtype, bm, bn, 1, "h")
    emit_epilogue(EpilogueSite(kb, graph, group, epi, views, epi_params, out_params, scale_params,
                               pc, handoff, plan.promote, g, row0, col0, bm, bn,
                               tuple(Buf(f"ts{o}") for o in tensor_scales), acc))
    return kb.build()
