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
the 576 cached latent columns) the V block is read from the K block already on chip.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.ir.graph import Graph, Node
from compiler.ir.ops import OPS
from compiler.ir.ops.contraction import contraction_of
from compiler.kernels.groups import Group
from compiler.lower.kernel_builder import KernelBuilder
from compiler.kernels.operand_plan import matrix_format
from compiler.lower.tensors import TensorMap
from compiler.lower.templates.gemm import canonical_view
from isa.expr import Bin, Const, add, floordiv, mul
from isa.formats import DTYPES
from isa.program import Box, Buf, TensorDecl
from isa.target_schema import Target

STAGES = 2


def _leading_columns_of(graph: Graph, v: Node, k: Node) -> bool:
    """True when v is k's value cut to its first columns (a slice of the last axis at 0)."""
    return (v.op == "slice" and v.inputs[0] == k.id and v.attr("start") == 0
            and v.attr("axis") % v.type.rank == v.type.rank - 1)


@dataclass
class Attention:
    """The operands of an attention group, viewed for streaming: Q_i [G, M, D_i],
    K_i [Gk, T, D_i], V [Gv, T, Dv] (None when read from a K block), O [G, M, Dv]."""
    qs: list[TensorDecl]
    ks: list[TensorDecl]
    k_batch: list[str]              # the batch letters each K holds (a subset of `batch`)
    v: TensorDecl | None
    v_batch: str
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

    def sub_g(self, g, letters: str):
        """An operand holding only some batch dims (a rope key shared by all heads) is
        indexed by that part of g."""
        return _sub_index(g, self.batch, letters, self.sizes)

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
    scale = 1.0
    if scale_node is not None:
        value = next(graph.node(i).attr("value") for i in scale_node.inputs
                     if graph.node(i).op == "const")
        scale = value if scale_node.op == "mul" else 1.0 / value
    cs = [contraction_of([graph.node(i).type for i in t.inputs], t.attr_dict) for t in terms]
    cp = contraction_of([graph.node(i).type for i in pv.inputs], pv.attr_dict)
    G, M, T, Dv = cp.size(cp.batch), cp.size(cp.m), cp.size(cp.k), cp.size(cp.n)
    batch, rows = cp.batch, cp.m          # every operand is seen against the P V product's
    qs, ks, k_batch = [], [], []
    for t, c in zip(terms, cs):
        q, k = (graph.node(j) for j in t.inputs)
        q_idx, k_idx = c.spec.split("->")[0].split(",")
        keys = c.n                        # the key index: scores' columns
        if sorted(q_idx) != sorted(batch + rows + c.k) or c.size(keys) != T:
            raise ValueError("a score term's queries do not cover the attention's rows")
        D = c.size(c.k)
        kb_letters = "".join(x for x in batch if x in k_idx)
        qs.append(canonical_view(tmap, tmap.of(q), q_idx, [batch, rows, c.k], (G, M, D), "gmk"))
        ks.append(canonical_view(tmap, tmap.of(k), k_idx, [kb_letters, keys, c.k],
                                 (c.size(kb_letters), T, D), "gnk"))
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
    fmt = matrix_format(target, [d.dtype for d in qs + ks] + ([v.dtype] if v else []))
    return Attention(qs, ks, k_batch, v, v_batch, v_in_k, out, fmt, scale, mask, G, M, T, Dv,
                     batch, dict(cp.sizes))


def lower_flash_group(group: Group, graph: Graph, tmap: TensorMap, target: Target):
    att = attention_operands(group, graph, tmap, target)
    if target.matrix.results_to_vector == "memory":
        from compiler.lower.templates.flash_split import lower_split_attention
        return lower_split_attention(att, group, tmap, target)
    return _lower_on_chip(att, target)


def _on_chip_need(att: Attention, bm: int, bt: int) -> dict[str, float]:
    byte = lambda d: DTYPES[d].bits / 8
    dims = sum(d.shape[-1] for d in att.qs)
    return {
        "matrix_a": bm * dims * byte(att.fmt) + bm * bt * byte(att.fmt),
        "matrix_b": STAGES * bt * (dims + (0 if att.v is None else att.Dv)) * byte(att.fmt),
        "accumulator": bm * (bt + att.Dv) * 4,
        "vector": bm * 3 * 4 + bm * att.Dv * byte(att.out.dtype),
    }


def _lower_on_chip(att: Attention, target: Target):
    qs, ks, v, Dv, T, fmt = att.qs, att.ks, att.v, att.Dv, att.T, att.fmt
    bm, bt = tile(target, att, _on_chip_need)
    kb = KernelBuilder("flash_attention", target)
    kb.note(att.describe())
    kb.note(f"tile {bm} rows x {bt} keys, {STAGES} stages; mma {fmt}")
    pq = [kb.param(f"q{i}", d) for i, d in enumerate(qs)]
    pk = [kb.param(f"k{i}", d) for i, d in enumerate(ks)]
    pv_param = kb.param("v", v) if v is not None else None
    po = kb.param("o", att.out, output=True)
    g = kb.grid_dim("g", att.G)
    m = kb.grid_dim("m", math.ceil(att.M / bm))
    for i, d in enumerate(qs):
        kb.buffer(f"sq{i}", d.dtype, (bm, d.shape[-1]), "matrix_a")
    for i, d in enumerate(ks):
        kb.buffer(f"sk{i}", d.dtype, (bt, d.shape[-1]), "matrix_b", STAGES)
    if v is not None:
        kb.buffer("sv", v.dtype, (bt, Dv), "matrix_b", STAGES)
    kb.buffer("s", "fp32", (bm, bt), "accumulator")
    kb.buffer("o", "fp32", (bm, Dv), "accumulator")
    kb.buffer("p", fmt, (bm, bt), "matrix_a")
    for name in ("alpha", "rmax", "rsum"):
        kb.buffer(name, "fp32", (bm, 1), "vector")
    kb.buffer("out", att.out.dtype, (bm, Dv), "vector")
    for tok, initial in (("kv_free", STAGES), ("kv_full", 0), ("s_ready", 0), ("p_ready", 0),
                         ("pv_done", 1), ("o_ready", 0), ("o_final", 0), ("out_ready", 0)):
        kb.token(tok, initial)
    row0 = mul(m, Const(bm))
    load_queries(kb, att, pq, g, row0, bm)
    blocks = math.ceil(T / bt)
    with kb.loop("j", blocks) as j:
        slot = Bin("%", j, Const(STAGES)) if blocks > 1 else Const(0)
        key0 = mul(j, Const(bt))
        load_key_block(kb, att, pk, pv_param, g, slot, key0, bt)
        for i, d in enumerate(qs):
            kb.emit("mm.mma", Buf("s"), Buf(f"sq{i}"), Buf(f"sk{i}", slot),
                    wait=("kv_full",) if i == 0 else (),
                    signal=("s_ready",) if i == len(qs) - 1 else (),
                    shape=(bm, bt, d.shape[-1]), fmt=fmt, first=int(i == 0), trans_b=1)
        first = Bin("==", j, Const(0)) if blocks > 1 else Const(1)
        kb.emit("vec.online_softmax", Buf("p"), Buf("alpha"), Buf("rmax"), Buf("rsum"), Buf("s"),
                wait=("s_ready",), signal=("p_ready",), **softmax_attrs(att, bm, bt, row0, key0,
                                                                       first))
        kb.emit("vec.rescale", Buf("o"), Buf("alpha"), wait=("pv_done",), signal=("o_ready",),
                n=bm * Dv)
        kb.emit("mm.mma", Buf("o"), Buf("p"), value_block(att, slot),
                wait=("p_ready", "o_ready"), signal=("kv_free", "pv_done"),
                shape=(bm, Dv, bt), fmt=fmt, first=first)
    kb.emit("sync.mm", signal=("o_final",))
    kb.emit("vec.normalize", Buf("out"), Buf("o"), Buf("rsum"), wait=("o_final",),
            signal=("out_ready",), n=bm * Dv)
    kb.emit("st.tile", Box(po, (g, row0, Const(0)), (1, bm, Dv)), Buf("out"),
            wait=("out_ready",))
    return kb.build()


# -- pieces both forms share --

def load_queries(kb: KernelBuilder, att: Attention, pq: list[str], g, row0, bm: int) -> None:
    for i, d in enumerate(att.qs):
        kb.emit("ld.tile", Buf(f"sq{i}"), Box(pq[i], (g, row0, Const(0)), (1, bm, d.shape[-1])))


def load_key_block(kb: KernelBuilder, att: Attention, pk: list[str], pv_param, g, slot, key0,
                   bt: int) -> None:
    """K (and V) tiles of one key block:  wait(kv_free) ... signal(kv_full)."""
    loads = [(Buf(f"sk{i}", slot), Box(pk[i], (att.sub_g(g, att.k_batch[i]), key0, Const(0)),
                                        (1, bt, d.shape[-1]))) for i, d in enumerate(att.ks)]
    if att.v is not None:
        loads.append((Buf("sv", slot), Box(pv_param, (att.sub_g(g, att.v_batch), key0, Const(0)),
                                           (1, bt, att.Dv))))
    for i, (buf, box) in enumerate(loads):
        kb.emit("ld.tile", buf, box, wait=("kv_free",) if i == 0 else (),
                signal=("kv_full",) if i == len(loads) - 1 else ())


def value_block(att: Attention, slot) -> Buf:
    return Buf(f"sk{att.v_in_k}", slot) if att.v is None else Buf("sv", slot)


def softmax_attrs(att: Attention, bm: int, bt: int, row0, key0, first) -> dict:
    causal = {"offset": att.mask.attr("offset"), "row0": row0, "inner": 1,
              "seq": att.mask.type.shape[-2]} if att.mask is not None else {}
    return {"n": bm * bt, "scale": att.scale, "first": first, "col0": key0, "keys": att.T,
            **causal}


def _sub_index(g, letters: str, keep: str, sizes: dict):
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
