"""Contractions (matmul, einsum) as a tiled, software-pipelined GEMM kernel.

The operands are viewed as [G, M, K] and [G, K, N] and the result as [G, M, N] (views, not
copies). One work item computes one bm x bn output tile; its K loop double- (or more-) buffers
the tile loads so the load of step k+1 overlaps the MMA of step k:

    for k:  ld   a, b (and their scales)         wait(free)    signal(loaded)
            vec  cvt/dequant (mixed formats)      wait(loaded)  signal(ready)
            mm   mma                              wait(ready)   signal(free | part_full)
            vec  promote partial sums (scaled)    wait(part_full) signal(free, part_free)
    epilogue: vec cvt acc -> out; st out
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph, Node
from compiler.ir.ops.contraction import contraction_of
from compiler.lower import gemm_tiles
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.operand_plan import plan_operands
from compiler.lower.tensors import TensorMap
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


def lower_contraction(node: Node, graph: Graph, tmap: TensorMap, target: Target):
    ins = graph.inputs_of(node)
    c = contraction_of([n.type for n in ins], node.attr_dict)
    a_idx, b_idx = c.spec.split("->")[0].split(",")
    out_idx = c.spec.split("->")[1]
    G, M, N, K = c.size(c.batch), c.size(c.m), c.size(c.n), c.size(c.k)
    a = canonical_view(tmap, tmap.of(ins[0]), a_idx, [c.batch, c.m, c.k], (G, M, K), "gmk")
    b = canonical_view(tmap, tmap.of(ins[1]), b_idx, [c.batch, c.k, c.n], (G, K, N), "gkn")
    out = canonical_view(tmap, tmap.of(node), out_idx, [c.batch, c.m, c.n], (G, M, N), "gmn")
    plan = plan_operands(a, b, target)
    a_scales, b_scales = tmap.scales_of(a), tmap.scales_of(b)
    need_a_scales = plan.scaled or plan.a_conv == "dequant"
    need_b_scales = plan.scaled or plan.b_conv == "dequant"
    if (need_a_scales and a_scales is None) or (need_b_scales and b_scales is None):
        raise ValueError(f"{node.name}: a block-scaled operand is used in a layout whose scales "
                         "cannot be tiled (its last two dims are not [M, K] / [K, N])")
    problem = gemm_tiles.GemmProblem(
        G, M, N, K, a.dtype, b.dtype, out.dtype, plan.fmt, plan.k_step, plan.promote,
        plan.a_conv, plan.b_conv, a.scaling if need_a_scales else None,
        b.scaling if need_b_scales else None)
    tile, scored = gemm_tiles.choose(problem, target)
    kb = KernelBuilder(node.op, target)
    kb.note(f"{node.op} {c.spec}: G={G} M={M} N={N} K={K}, {c.flops:.4g} flops")
    kb.note(f"tile {tile}; chosen among {len(scored)} candidates by estimate; "
            f"mma {plan.fmt}" + (f", promote every {plan.k_step} of K" if plan.promote else ""))
    pa, pb, pc = kb.param("a", a), kb.param("b", b), kb.param("c", out, output=True)
    psa = kb.param("a_scale", a_scales) if need_a_scales else None
    psb = kb.param("b_scale", b_scales) if need_b_scales else None
    g = kb.grid_dim("g", G)
    m = kb.grid_dim("m", math.ceil(M / tile.bm))
    n = kb.grid_dim("n", math.ceil(N / tile.bn))
    S = tile.stages
    bm, bn, bk = tile.bm, tile.bn, tile.bk
    for spec in gemm_tiles.gemm_buffers(problem, tile):
        kb.buffer(spec.name, spec.dtype, spec.shape, spec.role, spec.slots)
    converts = bool(plan.a_conv or plan.b_conv)
    kb.token("free", S)
    kb.token("loaded")
    if converts:
        kb.token("ready")
    if plan.promote:
        kb.token("part_full")
        kb.token("part_free", 2)
    kb.token("out_ready")
    if not plan.promote:
        kb.token("acc_ready")
    k_steps = math.ceil(K / bk)
    row0, col0 = mul(m, Const(bm)), mul(n, Const(bn))
    with kb.loop("k", k_steps) as k:
        slot = Bin("%", k, Const(S)) if k_steps > 1 else Const(0)
        kk = mul(k, Const(bk))
        loads = [(Buf("sa", slot), _box(pa, [g, row0, kk], [1, bm, bk]), tile.cluster_n)]
        if need_a_scales:
            loads.append((Buf("ssa", slot), _scale_box(psa, g, row0, bm, kk, bk, a.scaling.block),
                          tile.cluster_n))
        loads.append((Buf("sb", slot), _box(pb, [g, kk, col0], [1, bk, bn]), tile.cluster_m))
        if need_b_scales:
            loads.append((Buf("ssb", slot), _scale_box(psb, g, kk, bk, col0, bn, b.scaling.block),
                          tile.cluster_m))
        for i, (buf, box, mcast) in enumerate(loads):
            extra = {"mcast": mcast} if mcast > 1 else {}
            kb.emit("ld.tile", buf, box, wait=("free",) if i == 0 else (),
                    signal=("loaded",) if i == len(loads) - 1 else (), **extra)
        mma_a, mma_b = Buf("sa", slot), Buf("sb", slot)
        conversions = []
        if plan.a_conv:
            conversions.append((Buf("ca", slot), Buf("sa", slot), Buf("ssa", slot), bm * bk,
                                a.scaling.block if a.scaling else None))
            mma_a = Buf("ca", slot)
        if plan.b_conv:
            conversions.append((Buf("cb", slot), Buf("sb", slot), Buf("ssb", slot), bk * bn,
                                b.scaling.block if b.scaling else None))
            mma_b = Buf("cb", slot)
        for i, (dst, src, scale, elems, block) in enumerate(conversions):
            wait = ("loaded",) if i == 0 else ()
            signal = ("ready",) if i == len(conversions) - 1 else ()
            if block is not None:
                kb.emit("vec.dequant", dst, src, scale, wait=wait, signal=signal, n=elems, block=block)
            else:
                kb.emit("vec.cvt", dst, src, wait=wait, signal=signal, n=elems)
        mma_wait = ("ready",) if converts else ("loaded",)
        first = Bin("==", k, Const(0)) if k_steps > 1 else Const(1)
        if plan.promote:
            pslot = Bin("%", k, Const(2)) if k_steps > 1 else Const(0)
            kb.emit("mm.mma", Buf("part", pslot), mma_a, mma_b, wait=mma_wait + ("part_free",),
                    signal=("part_full",), shape=(bm, bn, bk), fmt=plan.fmt, first=Const(1))
            if plan.scaled:
                kb.emit("vec.promote", Buf("acc"), Buf("part", pslot), Buf("ssa", slot),
                        Buf("ssb", slot), wait=("part_full",), signal=("free", "part_free"),
                        n=bm * bn, first=first, block_cols=min(bn, b.scaling.block[1]))
            else:
                kb.emit("vec.accumulate", Buf("acc"), Buf("part", pslot), wait=("part_full",),
                        signal=("free", "part_free"), n=bm * bn, first=first)
        else:
            kb.emit("mm.mma", Buf("acc"), mma_a, mma_b, wait=mma_wait, signal=("free",),
                    shape=(bm, bn, bk), fmt=plan.fmt, first=first)
    if plan.promote:
        kb.emit("vec.cvt", Buf("out"), Buf("acc"), signal=("out_ready",), n=bm * bn)
    else:
        kb.emit("sync.mm", signal=("acc_ready",))
        kb.emit("vec.cvt", Buf("out"), Buf("acc"), wait=("acc_ready",), signal=("out_ready",),
                n=bm * bn)
    kb.emit("st.tile", _box(pc, [g, row0, col0], [1, bm, bn]), Buf("out"), wait=("out_ready",))
    return kb.build()
