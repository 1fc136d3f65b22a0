"""A head-weighted sum of ReLU scores as one kernel: DeepSeek Sparse Attention's lightning
indexer, I[g, t] = sum_h w[g, h] * ReLU(q[g, h] . k[t]).

The group is  L = Q K^T  (heads on the rows, keys on the columns) -> relu -> contraction of the
heads with w. Apart, L ([heads, keys] per query: 64 x 128K x 4 bytes = 32 MB at 128K context)
would be written and read back; here each key block's [heads, bt] scores stay on chip and only
the [1, bt] sums leave, as DeepGEMM's fp8_mqa_logits computes them. One work item owns a chunk
of key blocks of one query (g), loading the queries, their scales and weights once:

    ld   q (+ scales), w                                           signal(q_ready)
    per block:  ld k (+ scales)                   wait(free)       signal(loaded)
                [vec dequant q once, k]           (formats the matrix unit lacks)
                mm part = q k^T                   wait(loaded)     signal(part_full)
                vec promote (x q, k scales) / copy, relu, head_sum -> out   signal(free, done)
                st out                            wait(done)       signal(out_free)

Block scales are applied when the FP32 partial sums are promoted (one scale per query head
and one per key, the 1x128 blocks of DeepSeek's FP8 indexer; with finer blocks, such as
MXFP8's 1x32, the head dim is multiplied in chunks of one block, each promoted with its own
scales), or the operands are dequantised
first when the matrix unit cannot take them (operand_plan.py). Split cube/vector cores, whose
vector unit never sees the accumulator, run the three ops as separate kernels (fuse.py).
"""
from __future__ import annotations

import math
from dataclasses import replace

from compiler.ir.graph import Graph
from compiler.ir.ops.contraction import contraction_of
from compiler.kernels.groups import Group
from compiler.kernels.operand_plan import plan_operands
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from compiler.lower.templates.flash import sub_index
from compiler.lower.templates.gemm import canonical_view
from isa.expr import Bin, Const, add, mul
from isa.formats import DTYPES, Scaling
from isa.program import Box, Buf, ViewStep
from isa.target_schema import Target

STAGES = 2


def lower_index_logits(group: Group, graph: Graph, tmap: TensorMap, target: Target):
    scores, relu, weigh = group.nodes
    q_node, k_node = (graph.node(i) for i in scores.inputs)
    w_node = graph.node(weigh.inputs[1])
    c = contraction_of([q_node.type, k_node.type], scores.attr_dict)
    cw = contraction_of([relu.type, w_node.type], weigh.attr_dict)
    q_idx, k_idx = c.spec.split("->")[0].split(",")
    w_idx = cw.spec.split("->")[0].split(",")[1]
    heads = cw.k                                    # summed over; the other rows are queries
    queries = c.batch + "".join(x for x in c.m if x not in heads)
    G, H, T, D = c.size(queries), c.size(heads), c.size(c.n), c.size(c.k)
    kb_letters = "".join(x for x in queries if x in k_idx)
    q = canonical_view(tmap, tmap.of(q_node), q_idx, [queries, heads, c.k], (G, H, D), "gmk")
    k = canonical_view(tmap, tmap.of(k_node), k_idx, [kb_letters, c.n, c.k],
                       (c.size(kb_letters), T, D), "gnk")
    w = canonical_view(tmap, tmap.of(w_node), w_idx, [queries, heads, ""], (G, H, 1), "gm1")
    out = tmap.view(tmap.of(weigh), (ViewStep("reshape", (G, 1, T)),), "g1t")
    # K is the B operand of q k^T: its blocks run along K, the transpose of its own.
    k_as_b = replace(k, scaling=Scaling(k.scaling.dtype, k.scaling.block[::-1]) if k.scaling
                     else None)
    plan = plan_operands(q, k_as_b, target, epilogue=False)
    scales = {o: tmap.scales_of(d) for o, d in (("q", q), ("k", k)) if d.scaling}
    if len(scales) != sum(d.scaling is not None for d in (q, k)) or None in scales.values():
        raise ValueError("block-scaled indexer operands in a layout whose scales cannot be tiled")
    if plan.hw_scaled:               # one scale per head and per key: promote them instead
        plan = replace(plan, promote=True, scaled=True, hw_scaled=False,
                       promote_every=plan.k_step)
    promote = plan.promote and plan.scaled
    # A head dim longer than the promotion interval is multiplied in steps of it, each
    # step's partial sums promoted with its own scales (MXFP8: 4 steps of 32 of a 128 dim).
    every = plan.promote_every if plan.promote else 0
    steps = D // every if every and D > every else 1
    if D % steps or (steps > 1 and D % every):
        raise ValueError(f"an indexer head dim of {D} is not a whole number of promotion "
                         f"intervals of {every}")
    if steps > 1 and (plan.a_conv or plan.b_conv):
        raise ValueError(f"an indexer whose operands are converted cannot also be promoted "
                         f"every {every} of its head dim of {D}")
    width = D // steps
    bt = _key_block(target, H, D, plan.fmt)
    blocks = math.ceil(T / bt)
    chunks = min(blocks, max(1, math.ceil(target.cores / G)))
    per_chunk = math.ceil(blocks / chunks)
    kb = KernelBuilder("index_logits", target)
    kb.note(f"head-weighted ReLU logits: G={G} queries x {H} heads x {T} keys, head dim {D}; "
            f"blocks of {bt} keys, {per_chunk} per work item; mma {plan.fmt}"
            + ("; block scales applied at promotion" if promote else "")
            + ("; operands dequantised" if "dequant" in (plan.a_conv, plan.b_conv) else ""))
    pq, pk, pw = kb.param("q", q), kb.param("k", k), kb.param("w", w)
    psq = kb.param("q_scale", scales["q"]) if "q" in scales else None
    psk = kb.param("k_scale", scales["k"]) if "k" in scales else None
    po = kb.param("out", out, output=True)
    g = kb.grid_dim("g", G)
    chunk = kb.grid_dim("c", chunks)
    _buffers(kb, q, k, H, width, steps, bt, plan, psq, psk)
    for tok, initial in (("q_ready", 0), ("q_conv", 0), ("free", STAGES), ("loaded", 0),
                         ("ready", 0), ("part_free", 1), ("part_full", 0), ("done", 0),
                         ("out_free", 1)):
        if (tok != "q_conv" or plan.a_conv) and (tok != "ready" or plan.b_conv):
            kb.token(tok, initial)
    gk = sub_index(g, queries, kb_letters, c.sizes)
    part = lambda stem, i: f"{stem}{i}" if steps > 1 else stem      # step i's buffer
    col = lambda i, decl: Const(i * width // decl.scaling.block[1])   # its scale column
    loads = [(Buf(part("sq", i)), Box(pq, (g, Const(0), Const(i * width)), (1, H, width)))
             for i in range(steps)]
    loads.append((Buf("sw"), Box(pw, (g, Const(0), Const(0)), (1, H, 1))))
    if psq:
        loads += [(Buf(part("ssq", i)), Box(psq, (g, Const(0), col(i, q)), (1, H, 1)))
                  for i in range(steps)]
    _chain(kb, loads, (), ("q_ready",))
    a = [Buf(part("sq", i)) for i in range(steps)]
    if plan.a_conv:
        dequant = plan.a_conv == "dequant"
        kb.emit("vec.dequant" if dequant else "vec.cvt", Buf("cq"), Buf("sq"),
                *([Buf("ssq")] if dequant else []), wait=("q_ready",), signal=("q_conv",),
                n=H * D, **({"block": q.scaling.block} if dequant else {}))
        a = [Buf("cq")]
    kb.emit("sync.mm", wait=("q_conv",) if plan.a_conv else ("q_ready",))
    with kb.loop("j", per_chunk) as j:
        slot = Bin("%", j, Const(STAGES)) if per_chunk > 1 else Const(0)
        key0 = mul(add(mul(chunk, Const(per_chunk)), j), Const(bt))
        kloads = [(Buf(part("sk", i), slot), Box(pk, (gk, key0, Const(i * width)),
                                                 (1, bt, width))) for i in range(steps)]
        if psk:
            kloads += [(Buf(part("ssk", i), slot), Box(psk, (gk, key0, col(i, k)), (1, bt, 1)))
                       for i in range(steps)]
        _chain(kb, kloads, ("free",), ("loaded",))
        b, waits = [Buf(part("sk", i), slot) for i in range(steps)], ("loaded",)
        if plan.b_conv:
            dequant = plan.b_conv == "dequant"
            kb.emit("vec.dequant" if dequant else "vec.cvt", Buf("ck", slot), Buf("sk", slot),
                    *([Buf("ssk", slot)] if dequant else []), wait=("loaded",),
                    signal=("ready",), n=bt * D,
                    **({"block": k.scaling.block} if dequant else {}))
            b, waits = [Buf("ck", slot)], ("ready",)
        for i in range(steps):
            kb.emit("mm.mma", Buf("part"), a[i], b[i],
                    wait=(waits if i == 0 else ()) + ("part_free",), signal=("part_full",),
                    shape=(H, bt, width), fmt=plan.fmt, first=1, trans_b=1)
            if promote:
                kb.emit("vec.promote", Buf("acc"), Buf("part"), Buf(part("ssq", i)),
                        Buf(part("ssk", i), slot), wait=("part_full",), signal=("part_free",),
                        n=H * bt, first=int(i == 0), block_cols=1)
            else:
                kb.emit("vec.accumulate", Buf("acc"), Buf("part"), wait=("part_full",),
                        signal=("part_free",), n=H * bt, first=int(i == 0))
        kb.emit("vec.relu", Buf("acc"), Buf("acc"), n=H * bt)
        kb.emit("vec.head_sum", Buf("out"), Buf("acc"), Buf("sw"), wait=("out_free",),
                signal=("free", "done"), n=H * bt)
        kb.emit("st.tile", Box(po, (g, Const(0), key0), (1, 1, bt)), Buf("out"),
                wait=("done",), signal=("out_free",))
    return kb.build()


def _buffers(kb, q, k, H: int, width: int, steps: int, bt: int, plan, psq, psk) -> None:
    """The queries and keys, and their scales, in `steps` column chunks of `width` (one
    buffer per chunk, suffixed by its number when there are several)."""
    part = lambda stem, i: f"{stem}{i}" if steps > 1 else stem
    D = width * steps
    for i in range(steps):
        kb.buffer(part("sq", i), q.dtype, (H, width), "matrix_a")
        if psq:
            kb.buffer(part("ssq", i), q.scaling.dtype, (H, 1), "vector")
    kb.buffer("sw", "fp32", (H, 1), "vector")
    if plan.a_conv:
        kb.buffer("cq", plan.fmt, (H, D), "matrix_a")
    for i in range(steps):
        kb.buffer(part("sk", i), k.dtype, (bt, width), "matrix_b", STAGES)
        if psk:
            kb.buffer(part("ssk", i), k.scaling.dtype, (bt, 1), "vector", STAGES)
    if plan.b_conv:
        kb.buffer("ck", plan.fmt, (bt, D), "matrix_b", STAGES)
    kb.buffer("part", "fp32", (H, bt), "accumulator")
    kb.buffer("acc", "fp32", (H, bt), "vector")
    kb.buffer("out", "fp32", (1, bt), "vector")


def _key_block(target: Target, H: int, D: int, fmt: str) -> int:
    """The widest key block (128 down to 16) whose tiles fit each on-chip space."""
    byte = DTYPES[fmt].bits / 8
    for bt in (128, 64, 32, 16):
        need = {"matrix_a": 2 * H * D * byte, "matrix_b": 2 * STAGES * bt * D * byte,
                "accumulator": H * bt * 4, "vector": 2 * H * bt * 4 + bt * 4 + STAGES * bt * 4}
        used: dict[str, float] = {}
        for role, nbytes in need.items():
            space = target.buffer_for(role)[0]
            used[space] = used.get(space, 0) + nbytes
        if all(n <= target.buffers[s].bytes for s, n in used.items()):
            return bt
    raise ValueError(f"no key block of the indexer ({H} heads x {D}) fits the on-chip buffers")


def _chain(kb, moves: list, opening: tuple, closing: tuple) -> None:
    for i, (buf, box) in enumerate(moves):
        kb.emit("ld.tile", buf, box, wait=opening if i == 0 else (),
                signal=closing if i == len(moves) - 1 else ())
