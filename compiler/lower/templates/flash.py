"""Attention as one streaming kernel: scores and probabilities never leave the chip.

The group is  S = sum_i Q_i K_i^T  [* scale]  [causal mask]  -> softmax -> O = P V. Viewed as
Q_i [G, M, D_i], K_i [G, T, D_i], V [G, T, Dv], O [G, M, Dv], one work item owns bm rows of
one G and streams the keys in blocks of bt, `stages` blocks in flight:

    ld   q tiles (once); per block: k (and v) tiles               wait(kv_free)  signal(kv_full)
    mm   S = q k^T (one MMA per score term, trans_b)              wait(kv_full)  signal(s_ready)
    vec  online softmax: scale, mask, running max/sum -> p, alpha wait(s_ready)  signal(p_ready)
    vec  o *= alpha                                               wait(pv_done)  signal(o_ready)
    mm   o += p v                                                 wait(p_ready, o_ready) signal(kv_free, pv_done)
    vec  out = o / l;  st out

When V is the leading columns of a K term's tensor (absorbed MLA: values are the first 512 of
the 576 cached latent columns) the V block is read from the K block already on chip. A
block-scaled cache (FP8 with its scales) is dequantised block by block on the way
(flash_keys.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.errors import DscError
from compiler.ir.graph import Graph, Node
from compiler.ir.ops import OPS
from compiler.ir.ops.contraction import contraction_of
from compiler.kernels import causal, split_kv
from compiler.kernels.groups import Group
from compiler.lower.kernel_builder import KernelBuilder
from compiler.kernels.operand_plan import dequantised_format, matrix_format
from compiler.kernels.score_scale import score_scale
from compiler.lower.tensors import TensorMap
from compiler.passes.plan import plan_kernel
from compiler.lower.templates.flash_combine import PartialOutputs
from compiler.lower.templates.flash_keys import STAGES, KeyBlocks, block_costs, scaled_bytes
from compiler.lower.templates.gemm import canonical_view
from isa.expr import Bin, Const, add, floordiv, mul
from isa.formats import DTYPES
from isa.program import Box, Buf, TensorDecl, ViewStep
from isa.target_schema import Matrix, Target


def _leading_columns_of(graph: Graph, v: Node, k: Node) -> bool:
    """True when v is k's value, or k's cut to its first columns (a slice of the last axis
    at 0)."""
    return v.id == k.id or (v.op == "slice" and v.inputs[0] == k.id and v.attr("start") == 0
                            and v.attr("axis") % v.type.rank == v.type.rank - 1)


@dataclass(frozen=True)
class Gathered:
    """Keys gathered by index from a cache: rows idx[g, j] of the table slab of g's sequence."""
    table: TensorDecl              # the cache seen as rows [B * T, D]
    scales: TensorDecl | None      # its scales seen alike
    idx: TensorDecl                # the indices seen as [G_k, K]
    slab: int                      # T: rows of one sequence's slab
    letter: str                    # the batch letter the table is indexed by


def _gathered(tmap: TensorMap, graph: Graph, gather: Node, k_idx: str, order: str,
              sizes: dict) -> tuple[TensorDecl, Gathered]:
    """The K view of gathered keys (for sizes and formats; nothing is stored) and where its
    rows come from."""
    table_node, idx_node = (graph.node(i) for i in gather.inputs)
    table = tmap.of(table_node)
    B, T, D = table.shape
    rows = tmap.view(table, (ViewStep("reshape", (B * T, D)),), "rows")
    scales = _scales(tmap, rows, table)
    letters = k_idx[:-1]                   # the gather's leading dims: sequence, row, selection
    perm = tuple(letters.index(x) for x in order)
    G = math.prod(sizes[x] for x in order[:-1])
    idx = tmap.view(tmap.of(idx_node), (ViewStep("transpose", perm),
                                        ViewStep("reshape", (G, sizes[order[-1]]))), "gk")
    view = TensorDecl(gather.name, table.dtype, (G, sizes[order[-1]], D), "view", table.scaling)
    return view, Gathered(rows, scales, idx, T, k_idx[0])


@dataclass
class Attention:
    """The operands of an attention group, viewed for streaming: Q_i [G, M, D_i],
    K_i [Gk, T, D_i], V [Gv, T, Dv] (None when read from a K block), O [G, M, Dv]; a
    block-scaled K or V with its scales, viewed alike."""
    qs: list[TensorDecl]
    ks: list[TensorDecl]
    k_batch: list[str]              # the batch letters each K holds (a subset of `batch`)
    k_scales: list[TensorDecl | None]
    k_gathers: list["Gathered | None"]   # keys gathered from a cache by index
    v: TensorDecl | None
    v_batch: str
    v_scales: TensorDecl | None
    v_in_k: int | None              # the K term whose leading columns are V
    out: TensorDecl
    fmt: str                        # matrix format of both products
    scale: float
    mask: Node | None
    G: int
    M: int
    T: int
    Dv: int
    batch: str
    sizes: dict
    matrix: Matrix | None = None    # the target's matrix unit: which dtypes `fmt` reads

    def widens(self, d: TensorDecl) -> bool:
        """Whether operand `d` is converted on the vector unit before the matrix unit reads
        it (an unscaled one; a block-scaled one is dequantised anyway)."""
        return not self.matrix.takes(self.fmt, d.dtype)

    def sub_g(self, g, letters: str):
        """An operand holding only some batch dims (a rope key shared by all heads) is
        indexed by that part of g."""
        return sub_index(g, self.batch, letters, self.sizes)

    def describe(self) -> str:
        return (f"attention: G={self.G} rows M={self.M} keys T={self.T} head dims "
                f"{[d.shape[-1] for d in self.qs]} -> {self.Dv}; scale {self.scale:.6g}"
                + (f", causal (offset {self.mask.attr('offset')})" if self.mask else "")
                + (", V read from the K block" if self.v is None else ""))


def attention_operands(group: Group, graph: Graph, tmap: TensorMap, target: Target) -> Attention:
    nodes = list(group.nodes)
    pv = nodes[-1]
    terms = [n for n in nodes[:-1] if OPS[n.op].category == "contraction"]
    scale_node = next((n for n in nodes if n.op in ("mul", "div")), None)
    mask = next((n for n in nodes if n.op == "causal_mask"), None)
    scale = 1.0 if scale_node is None else score_scale(graph, scale_node)
    cs = [contraction_of([graph.node(i).type for i in t.inputs], t.attr_dict) for t in terms]
    cp = contraction_of([graph.node(i).type for i in pv.inputs], pv.attr_dict)
    G, M, T, Dv = cp.size(cp.batch), cp.size(cp.m), cp.size(cp.k), cp.size(cp.n)
    batch, rows = cp.batch, cp.m          # every operand is seen against the P V product's
    qs, ks, k_batch, k_gathers = [], [], [], []
    for t, c in zip(terms, cs):
        q, k = (graph.node(j) for j in t.inputs)
        q_idx, k_idx = c.spec.split("->")[0].split(",")
        keys = c.n                        # the key index: scores' columns
        if sorted(q_idx) != sorted(batch + rows + c.k) or c.size(keys) != T:
            raise ValueError("a score term's queries do not cover the attention's rows")
        D = c.size(c.k)
        kb_letters = "".join(x for x in batch if x in k_idx)
        qs.append(canonical_view(tmap, tmap.of(q), q_idx, [batch, rows, c.k], (G, M, D), "gmk"))
        if k.op == "gather":
            view, gathered = _gathered(tmap, graph, k, k_idx, kb_letters + keys, c.sizes)
            ks.append(view)
            k_gathers.append(gathered)
        else:
            ks.append(canonical_view(tmap, tmap.of(k), k_idx, [kb_letters, keys, c.k],
                                     (c.size(kb_letters), T, D), "gnk"))
            k_gathers.append(None)
        k_batch.append(kb_letters)
    v_node = graph.node(pv.inputs[1])
    v_idx = cp.spec.split("->")[0].split(",")[1]
    v_in_k = next((i for i, t in enumerate(terms)
                   if _leading_columns_of(graph, v_node, graph.node(t.inputs[1]))), None)
    v_batch = "".join(x for x in batch if x in v_idx)
    v = None if v_in_k is not None else canonical_view(
        tmap, tmap.of(v_node), v_idx, [v_batch, cp.k, cp.n], (cp.size(v_batch), T, Dv), "gkn")
    out = canonical_view(tmap, tmap.of(pv), cp.spec.split("->")[1], [batch, rows, cp.n],
                         (G, M, Dv), "gmn")
    k_scales = [x.scales if x else _scales(tmap, d, tmap.of(graph.node(t.inputs[1])))
                for t, d, x in zip(terms, ks, k_gathers)]
    v_scales = _scales(tmap, v, tmap.of(v_node)) if v is not None else None
    streamed = ks + ([v] if v is not None else [])
    dtypes = [d.dtype for d in qs + streamed]
    fmt = matrix_format(target, dtypes) if not any(d.scaling for d in streamed) else \
        dequantised_format(target, [d.dtype for d in qs + streamed if d.scaling is None], dtypes)
    return Attention(qs, ks, k_batch, k_scales, k_gathers, v, v_batch, v_scales, v_in_k, out,
                     fmt, scale, mask, G, M, T, Dv, batch, dict(cp.sizes), target.matrix)


def _scales(tmap: TensorMap, view: TensorDecl, source: TensorDecl) -> TensorDecl | None:
    """The scales of a streamed K or V view (None when unscaled); an error when the view
    cuts the source's scale blocks, since its elements alone mean nothing."""
    if source.scaling is None:
        return None
    if view.scaling is None or tmap.scales_of(view) is None:
        raise ValueError(f"attention reads block-scaled {source.name} in a layout that cuts its "
                         f"{source.scaling.block[0]}x{source.scaling.block[1]} scale blocks")
    return tmap.scales_of(view)


def lower_flash_group(group: Group, graph: Graph, tmap: TensorMap, target: Target):
    att = attention_operands(group, graph, tmap, target)
    if target.matrix.results_to_vector == "memory":
        from compiler.lower.templates.flash_split import lower_split_attention
        return lower_split_attention(att, group, tmap, target)
    return _lower_on_chip(att, target, tmap)


def _on_chip_need(att: Attention, bm: int, bt: int, cores: int) -> dict[str, float]:
    byte = lambda d: DTYPES[d].bits / 8
    dims = sum(d.shape[-1] for d in att.qs)
    rows = 2 if causal_pairs(att, bm, bt, cores) else 1   # a causal pair keeps two row blocks
    raw, _, scales = scaled_bytes(att, bt)      # block-scaled tiles before dequantisation
    indices = STAGES * bt * 4 * sum(1 for x in att.k_gathers if x)
    return {
        "matrix_a": rows * bm * dims * byte(att.fmt) + bm * bt * byte(att.fmt)
                    + rows * bm * sum(d.shape[-1] * byte(d.dtype)     # raw queries beside
                                      for d in att.qs if att.widens(d)),   # converted ones
        "matrix_b": STAGES * bt * (dims + (0 if att.v is None else att.Dv)) * byte(att.fmt)
                    + raw,
        "accumulator": bm * bt * 4 + rows * bm * att.Dv * 4,
        "vector": rows * (bm * 3 * 4 + bm * att.Dv * byte(att.out.dtype))
                  + scales + indices,
    }


def causal_pairs(att: Attention, bm: int, bt: int, cores: int) -> causal.CausalPairs | None:
    """How a causal attention's row blocks pair up (None: not causal, or nothing skipped).
    Rows are segments of `seq` positions (several query heads of a group, one after the
    other), each cut into whole row blocks."""
    if att.mask is None:
        return None
    seq, offset = att.mask.type.shape[-2], att.mask.attr("offset")
    if att.M % seq or seq % bm or not isinstance(offset, int):
        return None
    pairs = causal.pairs(seq, bm, bt, offset, att.T)
    if pairs is None:
        return None
    # Pairs halve the work items: worth it only when fewer waves of them take fewer key
    # blocks than waves of single row blocks that run every block.
    segments = att.G * att.M // seq
    waves = lambda items: math.ceil(segments * items / cores)
    if waves(pairs.items) * pairs.per_item >= waves(pairs.row_blocks) * math.ceil(att.T / bt):
        return None
    return pairs


def key_split(att: Attention, bm: int, bt: int, target: Target) -> split_kv.KeySplit:
    """How many pieces the keys are cut into (compiler/kernels/split_kv.py)."""
    unit = target.matrix.formats[att.fmt]
    dims = [d.shape[-1] for d in att.qs]
    kv_block, dequant = block_costs(att, bt, target.vector.lanes)   # with any scales
    mma = sum(unit.mma_cycles(bm, bt, d) for d in dims) + unit.mma_cycles(bm, att.Dv, bt)
    softmax = bm * bt * 7 / target.vector.lanes      # vec.online_softmax's ALU work
    block = max(mma, softmax + dequant, kv_block / target.dma.load_bytes_per_cycle)
    kv_bytes = sum(k.nbytes for k in att.ks) + (att.v.nbytes if att.v is not None else 0) \
        + sum(s.nbytes for s in att.k_scales + [att.v_scales] if s is not None)
    costs = split_kv.SplitCosts(
        att.G * math.ceil(att.M / bm), math.ceil(att.T / bt), block, target.cores, kv_bytes,
        att.G * att.M * (att.Dv + 2) * 4, target.machine.reach().miss_bytes_per_cycle,
        target.launch_overhead_cycles)
    offset = att.mask.attr("offset") if att.mask is not None else None
    if att.mask is not None and not isinstance(offset, int):
        return split_kv.KeySplit(1, costs.blocks, 0.0, 0.0)
    return split_kv.choose(costs, offset, bt)


def _lower_on_chip(att: Attention, target: Target, tmap: TensorMap):
    bm, bt = tile(target, att, lambda *shape: _on_chip_need(*shape, target.cores))
    pairs = causal_pairs(att, bm, bt, target.cores)
    split = key_split(att, bm, bt, target) if not pairs else None
    built = _emit_on_chip(att, target, tmap, bm, bt, pairs, split)
    if split is None or split.splits == 1:
        return built
    try:             # a split item also keeps its fp32 output on chip: is there room?
        plan_kernel(built[0][0], target)
    except DscError:
        return _emit_on_chip(att, target, tmap, bm, bt, pairs, None)
    return built


def _emit_on_chip(att: Attention, target: Target, tmap: TensorMap, bm: int, bt: int, pairs,
                  split):
    qs, ks, v, Dv, T, fmt = att.qs, att.ks, att.v, att.Dv, att.T, att.fmt
    splits = split.splits if split else 1
    rows = 2 if pairs else 1
    kb = KernelBuilder("flash_attention" if splits == 1 else "flash_split_kv", target)
    kb.note(att.describe())
    kb.note(f"tile {bm} rows x {bt} keys, {STAGES} stages; mma {fmt}"
            + (f"; causal: key blocks above the diagonal skipped, row blocks paired "
               f"(p, {pairs.row_blocks - 1}-p): {pairs.per_item} key blocks per item"
               if pairs else "")
            + (f"; keys split {splits} ways ({split.per_split} blocks each, estimate "
               f"{split.estimate:,.0f} cycles with the combine against {split.unsplit:,.0f} "
               f"unsplit)" if splits > 1 else ""))
    pq = [kb.param(f"q{i}", d) for i, d in enumerate(qs)]
    keys = KeyBlocks(kb, att, tmap, att.out.name)
    keys.declare_scale_params()
    partials = PartialOutputs.declare(kb, att, splits, tmap) if splits > 1 else None
    po = kb.param("o", att.out, output=True) if splits == 1 else None
    g = kb.grid_dim("g", att.G)
    segment = kb.grid_dim("q", att.M // att.mask.type.shape[-2]) if pairs else Const(0)
    m = kb.grid_dim("m", pairs.items if pairs else math.ceil(att.M / bm))
    piece = kb.grid_dim("kv", splits)
    widened = [i for i, d in enumerate(qs) if att.widens(d)]
    for i, d in enumerate(qs):
        kb.buffer(f"sq{i}", d.dtype, (bm, d.shape[-1]), "matrix_a", rows)
        if i in widened:
            kb.buffer(f"cq{i}", fmt, (bm, d.shape[-1]), "matrix_a", rows)
    keys.declare_buffers(bt)
    kb.buffer("s", "fp32", (bm, bt), "accumulator")
    kb.buffer("o", "fp32", (bm, Dv), "accumulator", rows)
    kb.buffer("p", fmt, (bm, bt), "matrix_a")
    for name in ("alpha", "rmax", "rsum"):
        kb.buffer(name, "fp32", (bm, 1), "vector", rows)
    # A split item's fp32 partial leaves straight from the accumulator where the vector unit
    # reaches it (FlashMLA stores its o_accum from registers): no fp32 staging tile on chip.
    staged = splits == 1 or target.matrix.results_to_vector == "memory"
    if staged:
        kb.buffer("out", att.out.dtype if splits == 1 else "fp32", (bm, Dv), "vector", rows)
    for tok, initial in (("kv_free", STAGES), ("kv_full", 0), ("s_ready", 0), ("p_ready", 0),
                         ("pv_done", 1), ("o_ready", 0), ("o_final", 0), ("out_ready", 0)):
        kb.token(tok, initial)
    keys.declare_tokens()
    if widened:
        kb.token("q_raw", 0)
        kb.token("q_ready", 0)
    # A pair's buffers have a slot per row block; a lone row block's have one.
    row_buf = lambda name, h: Buf(name, Const(h) if isinstance(h, int) else h) if pairs \
        else Buf(name)
    if pairs:
        # Row block p, then row block n-1-p of the segment; `half` says which one iteration j
        # works on.
        base = mul(segment, Const(pairs.row_blocks))
        row_blocks = (add(base, m), add(base, Bin("-", Const(pairs.row_blocks - 1), m)))
        first_count = add(Const(pairs.first), mul(m, Const(pairs.step)))
        blocks = pairs.per_item
    else:
        row_blocks, blocks = (m,), math.ceil(T / bt) if splits == 1 else split.per_split
    loads = [(h, r, i, d) for h, r in enumerate(row_blocks) for i, d in enumerate(qs)]
    for k, (h, r, i, d) in enumerate(loads):
        kb.emit("ld.tile", row_buf(f"sq{i}", h), Box(pq[i], (g, mul(r, Const(bm)), Const(0)),
                                                     (1, bm, d.shape[-1])),
                signal=("q_raw",) if widened and k == len(loads) - 1 else ())
    if widened:                  # queries the format does not read, widened once per item
        conversions = [(h, i, d) for h, _, i, d in loads if i in widened]
        for k, (h, i, d) in enumerate(conversions):
            kb.emit("vec.cvt", row_buf(f"cq{i}", h), row_buf(f"sq{i}", h),
                    wait=("q_raw",) if k == 0 else (),
                    signal=("q_ready",) if k == len(conversions) - 1 else (),
                    n=bm * d.shape[-1])
        kb.emit("sync.mm", wait=("q_ready",))
    query = lambda i, h: row_buf(f"cq{i}" if i in widened else f"sq{i}", h)
    with kb.loop("j", blocks) as j:
        slot = Bin("%", j, Const(STAGES)) if blocks > 1 else Const(0)
        if pairs:
            # The first row block's key blocks 0, 1, ..; then the second's from its diagonal
            # block down to 0 (written so the verifier's interval bounds stay >= 0; the
            # remainder, which changes no value, bounds it by the key blocks).
            half = Bin("-", Const(1), Bin("==", Bin("//", j, first_count), Const(0)))
            key_block = Bin("%", add(Bin("*", Bin("-", Const(1), half), j),
                                     Bin("*", half, Bin("-", Const(blocks - 1), j))),
                            Const(math.ceil(T / bt)))
            spread = Bin("-", Const(pairs.row_blocks - 1), mul(m, Const(2)))
            row0 = mul(add(row_blocks[0], Bin("*", half, spread)), Const(bm))
            first = Bin("==", Bin("*", j, Bin("-", j, first_count)), Const(0))
        else:
            half, row0 = Const(0), mul(m, Const(bm))
            key_block = add(mul(piece, Const(blocks)), j)      # this split's blocks
            first = Bin("==", j, Const(0)) if blocks > 1 else Const(1)
        key0 = mul(key_block, Const(bt))
        keys.load(g, slot, key0)
        for i, d in enumerate(qs):
            kb.emit("mm.mma", Buf("s"), query(i, half), keys.operand(f"k{i}", slot),
                    wait=("kv_full",) if i == 0 else (),
                    signal=("s_ready",) if i == len(qs) - 1 else (),
                    shape=(bm, bt, d.shape[-1]), fmt=fmt, first=int(i == 0), trans_b=1)
        kb.emit("vec.online_softmax", Buf("p"), row_buf("alpha", half), row_buf("rmax", half),
                row_buf("rsum", half), Buf("s"), wait=("s_ready",), signal=("p_ready",),
                **softmax_attrs(att, bm, bt, row0, key0, first))
        kb.emit("vec.rescale", row_buf("o", half), row_buf("alpha", half), wait=("pv_done",),
                signal=("o_ready",), n=bm * Dv)
        kb.emit("mm.mma", row_buf("o", half), Buf("p"), keys.value(slot),
                wait=("p_ready", "o_ready"), signal=("kv_free", "pv_done"),
                shape=(bm, Dv, bt), fmt=fmt, first=first)
    kb.emit("sync.mm", signal=("o_final",))
    if partials is not None:
        partials.store(kb, g, piece, m, bm, "out" if staged else "o")
        return [(*kb.build(), True), partials.combine(att, bm, target)]
    for h, r in enumerate(row_blocks):
        kb.emit("vec.normalize", row_buf("out", h), row_buf("o", h), row_buf("rsum", h),
                wait=("o_final",) if h == 0 else (), signal=("out_ready",), n=bm * Dv)
        kb.emit("st.tile", Box(po, (g, mul(r, Const(bm)), Const(0)), (1, bm, Dv)),
                row_buf("out", h), wait=("out_ready",))
    return kb.build()


# -- pieces both forms share --

def load_queries(kb: KernelBuilder, att: Attention, pq: list[str], g, row0, bm: int) -> None:
    for i, d in enumerate(att.qs):
        kb.emit("ld.tile", Buf(f"sq{i}"), Box(pq[i], (g, row0, Const(0)), (1, bm, d.shape[-1])))


def softmax_attrs(att: Attention, bm: int, bt: int, row0, key0, first) -> dict:
    causal = {"offset": att.mask.attr("offset"), "row0": row0, "inner": 1,
              "seq": att.mask.type.shape[-2]} if att.mask is not None else {}
    return {"n": bm * bt, "scale": att.scale, "first": first, "col0": key0, "keys": att.T,
            **causal}


def sub_index(g, letters: str, keep: str, sizes: dict):
    """The flat index over `keep` (a subsequence of `letters`) of flat index g over `letters`."""
    if keep == letters:
        return g
    out = Const(0)
    for pos, x in enumerate(letters):
        if x not in keep:
            continue
        inner = math.prod(sizes[y] for y in letters[pos + 1:])
        digit = Bin("%", floordiv(g, inner), Const(sizes[x]))
        stride = math.prod(sizes[y] for y in keep[keep.index(x) + 1:])
        out = add(out, mul(digit, Const(stride)))
    return out


def tile(target: Target, att: Attention, need) -> tuple[int, int]:
    """The largest key block, then row block, whose buffers (`need(att, bm, bt)`: bytes by
    role) fit each on-chip space."""
    gran = target.matrix.formats[att.fmt].shape
    for bm in sorted({min(_round(att.M, gran[0]), 128), gran[0]}, reverse=True):
        for bt in (128, 64, 32, 16):
            bt = _round(min(bt, att.T), gran[1])
            used: dict[str, float] = {}
            for role, nbytes in need(att, bm, bt).items():
                space = target.buffer_for(role)[0]
                used[space] = used.get(space, 0) + nbytes
            if all(n <= target.buffers[s].bytes for s, n in used.items()):
                return bm, bt
    raise ValueError(f"no attention tile fits the on-chip buffers (head dims "
                     f"{[d.shape[-1] for d in att.qs]}, {att.Dv})")


def _round(x: int, m: int) -> int:
    return -(-x // m) * m
