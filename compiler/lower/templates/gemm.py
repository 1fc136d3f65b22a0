"""A contraction (matmul, einsum) and its fused epilogue as a tiled, pipelined GEMM kernel.

The operands are viewed as [G, M, K] and [G, K, N] and the result as [G, M, N] (views, not
copies). One work item computes one bm x bn output tile; its K loop keeps `stages` tiles in
flight so loads overlap the MMAs:

    for k:  ld   a, b (and their scales)          wait(free)      signal(loaded)
            vec  cvt/dequant (mixed formats)       wait(loaded)    signal(ready)
            mm   mma                               wait(ready)     signal(free | part_full)
            vec  promote partial sums (scaled)     wait(part_full) signal(free, part_free)
    epilogue: ld its other inputs; vec each fused op on the tile; st the values used outside.

A promotion interval longer than the K tile (which divides it) is a loop of intervals around
the K steps: the interval's MMAs add into one partial sum and free their own slots, fences on
the matrix unit take the partial sum (`sync.mm wait(part_free)`) and hand it over when its
last MMA is done (`sync.mm signal(part_full)`), and the vector unit promotes it once:

    for p:  sync.mm                                wait(part_free)
            for j:  ld, cvt as above; mm mma part[p%2] (first=j==0)     signal(free)
            sync.mm                                                    signal(part_full)
            vec  accumulate partial sums           wait(part_full) signal(part_free)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.ir.graph import Graph, Node
from compiler.ir.ops.contraction import contraction_of
from compiler.kernels import gemm_tiles
from compiler.kernels.epilogue import Epilogue
from compiler.kernels.gemm_estimate import group_problem
from compiler.kernels.groups import Group
from compiler.kernels.operand_plan import OperandPlan
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from compiler.lower.templates.epilogue import EpilogueSite, emit_epilogue
from compiler.lower.templates.gemm_operands import (OperandTile, emit_operand_tiles,
                                                     operand_tokens)
from compiler.lower.templates.workspace import Workspace
from isa.expr import Bin, Const, Expr, add, floordiv, mul
from isa.instructions import vector_cycles
from isa.mma_operands import MmaOperands
from isa.program import Box, Buf, TensorDecl, ViewStep
from isa.target_schema import Target


def canonical_view(tmap: TensorMap, decl: TensorDecl, index: str, order: list[str],
                   shape3: tuple[int, int, int], suffix: str) -> TensorDecl:
    """`decl` (indexed by `index`) seen as a 3-D [G, rows, cols] tensor."""
    perm = tuple(index.index(c) for c in "".join(order))
    steps = (ViewStep("transpose", perm), ViewStep("reshape", shape3))
    return tmap.view(decl, steps, suffix)


def lower_gemm_group(group: Group, graph: Graph, tmap: TensorMap, target: Target,
                     tile: gemm_tiles.GemmTile | None = None):
    head = group.nodes[0]
    gemm = _Gemm.of(head, graph, tmap)
    problem, plan, epi = group_problem(group, graph, target)
    views = {v.id: tmap.view(tmap.of(v), (ViewStep("reshape", epi.view_shape(v)),), "gmn")
             for v in epi.inputs + epi.outputs}
    _check_scales_tile(head, tmap, gemm, problem, epi)
    tile, how = _tile_of(head, problem, target, tile)
    _check_scale_blocks_align(head, gemm, problem, tile, epi)
    kb = KernelBuilder("_".join([head.op] + [n.op for n in epi.nodes]), target)
    _describe(kb, head, gemm, epi, tile, how, plan)
    params = _Params.declare(kb, tmap, group, head, gemm, problem, epi, views)
    at = _TileOrigin.of(kb, gemm, tile)
    for spec in gemm_tiles.gemm_buffers(problem, tile):
        kb.buffer(spec.name, spec.dtype, spec.shape, spec.role, spec.slots)
    scratch = _conversion_scratch(kb, tmap, head, problem, plan, tile)
    _declare_tokens(kb, problem, plan, epi, tile)
    for o, param in params.tensor_scales.items():   # one number per operand, used at the end
        kb.emit("ld.tile", Buf(f"ts{o}"), Box(param, (Const(0),), (1,)))
    if tile.persistent:     # the accumulator slot's tile two before has drained it
        kb.emit("sync.vec" if plan.promote else "sync.mm", wait=("acc_free",))
    _emit_k_loop(kb, gemm, problem, plan, tile, params, at, scratch)
    handoff = None
    if epi.through_memory:
        handoff = Workspace(kb, tmap, f"{head.name}.handoff", epi.handoff_dtype, tile.bm,
                            tile.bn, 1, "h")
    emit_epilogue(EpilogueSite(kb, graph, group, epi, views, params.epilogue_inputs,
                               params.outputs, params.output_scales, params.c, handoff,
                               plan.promote, at.g, at.row0, at.col0, tile.bm, tile.bn,
                               tuple(Buf(f"ts{o}") for o in params.tensor_scales), at.acc,
                               {o: params.a_scale if o == "a" else params.b_scale
                                for o in epi.scales}, bool(tile.persistent)))
    return kb.build()


@dataclass(frozen=True)
class _Gemm:
    """The contraction as [G, M, K] x [G, K, N] -> [G, M, N] views of its tensors."""
    spec: str
    flops: float
    G: int
    M: int
    N: int
    K: int
    a: TensorDecl
    b: TensorDecl
    out: TensorDecl

    @classmethod
    def of(cls, head: Node, graph: Graph, tmap: TensorMap) -> _Gemm:
        ins = graph.inputs_of(head)
        c = contraction_of([n.type for n in ins], head.attr_dict)
        a_idx, b_idx = c.spec.split("->")[0].split(",")
        out_idx = c.spec.split("->")[1]
        G, M, N, K = c.size(c.batch), c.size(c.m), c.size(c.n), c.size(c.k)
        a = canonical_view(tmap, tmap.of(ins[0]), a_idx, [c.batch, c.m, c.k], (G, M, K), "gmk")
        b = canonical_view(tmap, tmap.of(ins[1]), b_idx, [c.batch, c.k, c.n], (G, K, N), "gkn")
        out = canonical_view(tmap, tmap.of(head), out_idx, [c.batch, c.m, c.n], (G, M, N),
                             "gmn")
        return cls(c.spec, c.flops, G, M, N, K, a, b, out)


def _check_scales_tile(head: Node, tmap: TensorMap, gemm: _Gemm, problem, epi) -> None:
    """A block-scaled operand's scales are tiled with it only through an [M, K] / [K, N] view."""
    a_scaled = problem.a_scaling is not None or "a" in epi.scales
    b_scaled = problem.b_scaling is not None or "b" in epi.scales
    if (a_scaled and tmap.scales_of(gemm.a) is None) or \
            (b_scaled and tmap.scales_of(gemm.b) is None):
        raise ValueError(f"{head.name}: a block-scaled operand is used in a layout whose scales "
                         "cannot be tiled (its last two dims are not [M, K] / [K, N])")


def _check_scale_blocks_align(head: Node, gemm: _Gemm, problem, tile, epi) -> None:
    """A tile's scale box is a fixed count of blocks from the block its first element is in:
    along each dim the tile is a multiple of the block, lies inside one block (the block a
    multiple of the tile), or is the whole dim. Otherwise a tile after the first straddles
    blocks unevenly and its box misses the last block it needs. (Scales the epilogue applies
    span K: only the output tile's side counts.)"""
    a_scaling = problem.a_scaling or epi.scales.get("a")
    b_scaling = problem.b_scaling or epi.scales.get("b")
    for name, scaling, dims in (("A", a_scaling, ((tile.bm, gemm.M), (tile.bk, gemm.K))),
                                ("B", b_scaling, ((tile.bk, gemm.K), (tile.bn, gemm.N)))):
        if scaling is None:
            continue
        for (size, extent), block in zip(dims, scaling.block):
            if size < extent and size % block and block % size:
                raise ValueError(
                    f"{head.name}: operand {name}'s {scaling.block[0]}x{scaling.block[1]} scale "
                    f"blocks do not align with its {size}-wide tiles over a dim of {extent}: "
                    "use blocks that divide the tile (powers of two, e.g. 1x128 or 128x128)")


def _tile_of(head: Node, problem, target: Target, tile) -> tuple[gemm_tiles.GemmTile, str]:
    """The tile asked for, else the one the tile pass pinned, else the estimate's choice; and
    how it was chosen, for the kernel's header."""
    how = head.sched_get("tile_choice", "estimate")
    if tile is None and head.sched_get("tile"):
        tile = gemm_tiles.GemmTile(*head.sched_get("tile"))
    if tile is None:
        tile, scored = gemm_tiles.choose(problem, target)
        how = f"chosen among {len(scored)} candidates by estimate"
    return tile, how


def _describe(kb, head: Node, gemm: _Gemm, epi: Epilogue, tile, how: str,
              plan: OperandPlan) -> None:
    kb.note(f"{head.op} {gemm.spec}: G={gemm.G} M={gemm.M} N={gemm.N} K={gemm.K}, "
            f"{gemm.flops:.4g} flops"
            + (f"; epilogue {' + '.join(n.op for n in epi.nodes)}" if epi.nodes else ""))
    kb.note(f"tile {tile}; {how}; "
            f"mma {plan.fmt} {gemm_tiles.instruction_text(tile, plan.fmt, kb.target)}"
            + _operands_text(gemm, plan)
            + _promotion_text(plan, tile, kb.target, gemm.K))


def _operands_text(gemm: _Gemm, plan: OperandPlan) -> str:
    """The operands' formats when they are not both the instruction's: read natively (a mixed
    instruction) or widened on the vector unit first."""
    m = MmaOperands(plan.fmt, gemm.a.dtype, gemm.b.dtype, plan.a_conv, plan.b_conv)
    return "" if m.same_format else f", operands {m.a} x {m.b} {m.how()}"


def _promotion_text(plan: OperandPlan, tile, target: Target, k: int) -> str:
    """The promotion interval and what it costs: one vector promotion of the tile's partial
    sums per interval, beside the MMAs of its K steps (a limited accumulator's interval is
    the target's `promotion_interval`; scaled operands promote once per scale block); or, for
    a limited accumulator never promoted, that it is not."""
    unit = target.matrix.formats[plan.fmt]
    if not plan.promote:
        if unit.accumulator_bits is None:
            return ""
        return (f", never promoted: {plan.fmt} sums kept in {unit.accumulator_bits} mantissa "
                f"bits over all {k} of K, converted once by the epilogue")
    op = "promote" if plan.scaled else "accumulate"
    promote = vector_cycles(op, tile.bm * tile.bn, {}, target)
    mma = unit.mma_cycles(tile.bm, tile.bn, tile.bk, bool(tile.swap))
    steps = _steps_per_promotion(plan, tile, k)
    if steps == 1:
        return (f", promote every {tile.bk} of K: vec.{op} {promote:,.0f} cycles a step "
                f"beside the mma's {mma:,.0f}")
    return (f", promote every {steps * tile.bk} of K ({steps} K steps of {tile.bk}): "
            f"vec.{op} {promote:,.0f} cycles every {steps} steps beside the mma's {mma:,.0f} "
            "a step")


def _steps_per_promotion(plan: OperandPlan, tile, k: int) -> int:
    """K steps summed into one partial sum (the interval over the K tile, at most all of K)."""
    return max(1, min(plan.promote_every // tile.bk, math.ceil(k / tile.bk)))


@dataclass(frozen=True)
class _Params:
    """The kernel's parameters: operands, their scales, the product, the epilogue's tensors."""
    a: str
    b: str
    c: str | None                   # the product, when it leaves the chip itself
    a_scale: str | None
    b_scale: str | None
    tensor_scales: dict             # operand ("a", "b") -> its per-tensor scale (NVFP4)
    epilogue_inputs: dict           # value id -> param
    outputs: dict                   # output node id -> param
    output_scales: dict             # quantised output id -> its scales' param

    @classmethod
    def declare(cls, kb, tmap: TensorMap, group: Group, head: Node, gemm: _Gemm, problem,
                epi: Epilogue, views: dict) -> _Params:
        a_scales, b_scales = tmap.scales_of(gemm.a), tmap.scales_of(gemm.b)
        pa, pb = kb.param("a", gemm.a), kb.param("b", gemm.b)
        pc = kb.param("c", gemm.out, output=True) if problem.store_acc else None
        scaled = lambda o, sc: sc is not None or o in epi.scales   # per K step, or once a tile
        psa = kb.param("a_scale", a_scales) if scaled("a", problem.a_scaling) else None
        psb = kb.param("b_scale", b_scales) if scaled("b", problem.b_scaling) else None
        tensor_scales = {o: kb.param(f"{o}_tscale", tmap.tensor_scale_of(d))
                         for o, d in (("a", gemm.a), ("b", gemm.b)) if o in problem.tensor_scales}
        inputs = {v.id: kb.param(f"e{k}", views[v.id]) for k, v in enumerate(epi.inputs)}
        outputs = {n.id: kb.param(f"y{k}", views[n.id], output=True)
                   for k, n in enumerate(group.outputs) if n.id != head.id}
        scales = {n.id: kb.param(f"y{k}_scale", tmap.scales_of(views[n.id]), output=True)
                  for k, n in enumerate(group.outputs) if n in epi.quantised}
        return cls(pa, pb, pc, psa, psb, tensor_scales, inputs, outputs, scales)


@dataclass(frozen=True)
class _TileOrigin:
    """A work item's output tile: its grid coordinates, first row and column, accumulator."""
    g: Expr
    row0: Expr
    col0: Expr
    acc: Buf

    @classmethod
    def of(cls, kb, gemm: _Gemm, tile) -> _TileOrigin:
        g = kb.grid_dim("g", gemm.G)
        m_tiles = math.ceil(gemm.M / tile.bm)
        if tile.raster > 1:     # groups of `raster` rows of tiles, walked column by column
            group = kb.grid_dim("mg", m_tiles // tile.raster)
            n = kb.grid_dim("n", math.ceil(gemm.N / tile.bn))
            m = add(mul(group, Const(tile.raster)), kb.grid_dim("mi", tile.raster))
        else:
            m = kb.grid_dim("m", m_tiles)
            n = kb.grid_dim("n", math.ceil(gemm.N / tile.bn))
        acc = Buf("acc")
        if tile.persistent:
            # Worker w walks tiles w, w + P, w + 2P, ... (P = one per core): consecutive tiles
            # of a worker alternate accumulators, so one drains while the next fills.
            kb.persistent = True
            tiles = math.prod(size for _, size in kb.grid)
            workers = min(kb.target.cores, tiles)
            acc = Buf("acc", Bin("%", floordiv(kb.item_index(), workers), Const(2)))
            kb.note(f"persistent: {workers} workers walk {tiles} tiles in grid order, two "
                    f"accumulators: a tile's epilogue overlaps the next tile's main loop")
        return cls(g, mul(m, Const(tile.bm)), mul(n, Const(tile.bn)), acc)


def _conversion_scratch(kb, tmap: TensorMap, head: Node, problem, plan: OperandPlan,
                        tile) -> dict:
    """On split cores, the workspace each converted operand's tiles cross to the cube in."""
    if not problem.split:
        return {}
    return {o: Workspace(kb, tmap, f"{head.name}.{o}_conv", plan.fmt, rows, cols, tile.stages,
                         f"{o}_conv")
            for o, conv, rows, cols in (("a", plan.a_conv, tile.bm, tile.bk),
                                        ("b", plan.b_conv, tile.bk, tile.bn)) if conv}


def _declare_tokens(kb, problem, plan: OperandPlan, epi: Epilogue, tile) -> None:
    operand_tokens(kb, bool(plan.a_conv or plan.b_conv), problem.split, tile.stages,
                   cube_loads=not (problem.split and plan.a_conv and plan.b_conv))
    if plan.promote:
        kb.token("part_full")
        kb.token("part_free", 2)
    if not plan.promote or epi.pipe:
        kb.token("acc_ready")
    if epi.loads_early:
        kb.token("epi_loaded")
    kb.token("out_ready")
    if tile.persistent:     # a worker's next tiles reuse the epilogue's and accumulator's slots
        kb.token("acc_free", 2)
        kb.token("epi_free", 1)


def _emit_k_loop(kb, gemm: _Gemm, problem, plan: OperandPlan, tile, params: _Params,
                 at: _TileOrigin, scratch: dict) -> None:
    """Each K step: the operand tiles (loaded, converted), then the MMA into the accumulator,
    or into a partial sum the vector unit promotes (FP8 on Hopper, scaled or not)."""
    k_steps = math.ceil(gemm.K / tile.bk)
    if plan.promote and _steps_per_promotion(plan, tile, gemm.K) > 1:
        _emit_intervals(kb, gemm, problem, plan, tile, params, at, scratch)
        return
    with kb.loop("k", k_steps) as k:
        slot = Bin("%", k, Const(tile.stages)) if k_steps > 1 else Const(0)
        tiles = _operand_tiles(gemm, problem, plan, tile, params, at, mul(k, Const(tile.bk)),
                               scratch, kb.target)
        mma_a, mma_b, mma_wait = emit_operand_tiles(kb, tiles, slot, problem.split)
        first = Bin("==", k, Const(0)) if k_steps > 1 else Const(1)
        operands = _MmaOperands(mma_a, mma_b, mma_wait, slot, first)
        if plan.promote:
            _emit_promoted_mma(kb, gemm, plan, tile, at, operands, k, k_steps)
        else:
            _emit_mma(kb, gemm, plan, tile, at, operands)


def _emit_intervals(kb, gemm: _Gemm, problem, plan: OperandPlan, tile, params: _Params,
                    at: _TileOrigin, scratch: dict) -> None:
    """The K loop as promotion intervals of `steps` K steps each (the last may be shorter when
    K is not a whole number of intervals): each interval's MMAs add into one partial sum,
    which the vector unit promotes once. Only unscaled promotions span several K steps (a
    scaled one applies its block's scales, and the K tile is then that block)."""
    assert not plan.scaled
    steps = _steps_per_promotion(plan, tile, gemm.K)
    k_steps = math.ceil(gemm.K / tile.bk)
    whole, rest = divmod(k_steps, steps)
    with kb.loop("p", whole) as p:
        _emit_interval(kb, gemm, problem, plan, tile, params, at, scratch, p, steps, steps)
    if rest:
        _emit_interval(kb, gemm, problem, plan, tile, params, at, scratch, Const(whole), steps,
                       rest)


def _emit_interval(kb, gemm: _Gemm, problem, plan: OperandPlan, tile, params: _Params,
                   at: _TileOrigin, scratch: dict, p: Expr, steps: int, count: int) -> None:
    """Interval `p`: `count` K steps (k = p*steps + j) into partial sum part[p%2], then its
    promotion into the FP32 accumulator."""
    part = Buf("part", Const(p.value % 2) if isinstance(p, Const) else Bin("%", p, Const(2)))
    kb.emit("sync.mm", wait=("part_free",))
    with kb.loop("j", count) as j:
        k = add(mul(p, Const(steps)), j)
        slot = Bin("%", k, Const(tile.stages))
        tiles = _operand_tiles(gemm, problem, plan, tile, params, at, mul(k, Const(tile.bk)),
                               scratch, kb.target)
        mma_a, mma_b, mma_wait = emit_operand_tiles(kb, tiles, slot, problem.split)
        first = Bin("==", j, Const(0)) if count > 1 else Const(1)
        kb.emit("mm.mma", part, mma_a, mma_b, wait=mma_wait, signal=("free",),
                shape=(tile.bm, tile.bn, tile.bk), fmt=plan.fmt, first=first, **_swapped(tile))
    kb.emit("sync.mm", signal=("part_full",))
    kb.emit("vec.accumulate", at.acc, part, wait=("part_full",), signal=("part_free",),
            n=tile.bm * tile.bn,
            first=Const(int(p.value == 0)) if isinstance(p, Const) else Bin("==", p, Const(0)))


def _operand_tiles(gemm: _Gemm, problem, plan: OperandPlan, tile, params: _Params,
                   at: _TileOrigin, kk: Expr, scratch: dict, target) -> list[OperandTile]:
    """The A tile [row0, kk] and B tile [kk, col0] of one K step, with their scales. A
    conversion touches only the rows of A and columns of B that hold data (a tile wider than
    the GEMM is padding, which meets only padding of the product)."""
    bm, bn, bk = tile.bm, tile.bn, tile.bk
    rows, cols = gemm_tiles.real_extent(tile, gemm.M, gemm.N)
    # A two-core instruction's pair splits B between its cores instead of multicasting it.
    pair = 2 if gemm_tiles.two_core(tile, plan.fmt, target) else 1
    a_scales = _scale_box(params.a_scale, at.g, at.row0, bm, kk, bk, gemm.a.scaling.block) \
        if problem.a_scaling is not None else None
    b_scales = _scale_box(params.b_scale, at.g, kk, bk, at.col0, bn, gemm.b.scaling.block) \
        if problem.b_scaling is not None else None
    return [
        OperandTile("a", _box(params.a, [at.g, at.row0, kk], [1, bm, bk]), tile.cluster_n,
                    a_scales, plan.a_conv,
                    gemm.a.scaling.block if plan.a_conv == "dequant" else None, rows * bk,
                    scratch.get("a")),
        OperandTile("b", _box(params.b, [at.g, kk, at.col0], [1, bk, bn]),
                    1 if pair > 1 else tile.cluster_m, b_scales, plan.b_conv,
                    gemm.b.scaling.block if plan.b_conv == "dequant" else None, bk * cols,
                    scratch.get("b"), pair)]


@dataclass(frozen=True)
class _MmaOperands:
    a: Buf
    b: Buf
    wait: tuple            # what the MMA waits for: its operands loaded or converted
    slot: Expr             # the K step's buffer slot
    first: Expr            # 1 on the first K step: the MMA overwrites the accumulator


def _emit_mma(kb, gemm: _Gemm, plan: OperandPlan, tile, at: _TileOrigin,
              ops: _MmaOperands) -> None:
    """The MMA accumulates into the tile's accumulator; with hardware block scaling the
    matrix unit applies the loaded scales itself."""
    scales, scaled = (), {}
    if plan.hw_scaled:
        scales = (Buf("ssa", ops.slot), Buf("ssb", ops.slot))
        scaled = {"block_a": gemm.a.scaling.block, "block_b": gemm.b.scaling.block}
    kb.emit("mm.mma", at.acc, ops.a, ops.b, *scales, wait=ops.wait, signal=("free",),
            shape=(tile.bm, tile.bn, tile.bk), fmt=plan.fmt, first=ops.first, **scaled,
            **_swapped(tile))


def _emit_promoted_mma(kb, gemm: _Gemm, plan: OperandPlan, tile, at: _TileOrigin,
                       ops: _MmaOperands, k: Expr, k_steps: int) -> None:
    """The MMA writes a fresh partial sum (two, alternating); the vector unit adds it to the
    FP32 accumulator, applying the K step's block scales when the operands are scaled."""
    pslot = Bin("%", k, Const(2)) if k_steps > 1 else Const(0)
    part = Buf("part", pslot)
    kb.emit("mm.mma", part, ops.a, ops.b, wait=ops.wait + ("part_free",),
            signal=("part_full",), shape=(tile.bm, tile.bn, tile.bk), fmt=plan.fmt,
            first=Const(1), **_swapped(tile))
    n = tile.bm * tile.bn
    if plan.scaled:
        kb.emit("vec.promote", at.acc, part, Buf("ssa", ops.slot), Buf("ssb", ops.slot),
                wait=("part_full",), signal=("free", "part_free"), n=n, first=ops.first,
                block_cols=min(tile.bn, gemm.b.scaling.block[1]))
    else:
        kb.emit("vec.accumulate", at.acc, part, wait=("part_full",),
                signal=("free", "part_free"), n=n, first=ops.first)


def _swapped(tile) -> dict:
    return {"swap": 1} if tile.swap else {}


def _box(tensor: str, starts: list[Expr], sizes: list[int]) -> Box:
    return Box(tensor, tuple(starts), tuple(sizes))


def _scale_box(tensor: str, g: Expr, row: Expr, rows: int, col: Expr, cols: int,
               block: tuple[int, int]) -> Box:
    """The scales covering a rows x cols tile whose top-left element is (row, col)."""
    return _box(tensor, [g, floordiv(row, block[0]), floordiv(col, block[1])],
                [1, math.ceil(rows / block[0]), math.ceil(cols / block[1])])
