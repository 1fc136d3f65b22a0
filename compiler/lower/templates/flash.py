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

from compiler.ir.graph import Graph, Node
from compiler.ir.ops import OPS
from compiler.ir.ops.contraction import contraction_of
from compiler.lower.groups import Group
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from compiler.lower.templates.gemm import canonical_view
from isa.expr import Bin, Const, add, floordiv, mul
from isa.formats import DTYPES
from isa.program import Box, Buf
from isa.target_schema import Target

STAGES = 2


def _leading_columns_of(graph: Graph, v: Node, k: Node) -> bool:
    """True when v is k's value cut to its first columns (a slice of the last axis at 0)."""
    return (v.op == "slice" and v.inputs[0] == k.id and v.attr("start") == 0
            and v.attr("axis") % v.type.rank == v.type.rank - 1)


def lower_flash_group(group: Group, graph: Graph, tmap: TensorMap, target: Target):
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
    qs, ks, k_g = [], [], []
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
        k_g.append(kb_letters)
    v_node = graph.node(pv.inputs[1])
    v_idx = cp.spec.split("->")[0].split(",")[1]
    reuse = next((i for i, t in enumerate(terms)
                  if _leading_columns_of(graph, v_node, graph.node(t.inputs[1]))), None)
    v_letters = "".join(x for x in batch if x in v_idx)
    v = None if reuse is not None else canonical_view(
        tmap, tmap.of(v_node), v_idx, [v_letters, cp.k, cp.n], (cp.size(v_letters), T, Dv), "gkn")
    out = canonical_view(tmap, tmap.of(pv), cp.spec.split("->")[1], [batch, rows, cp.n],
                         (G, M, Dv), "gmn")
    fmt = _matrix_format(target, [d.dtype for d in qs + ks] + ([v.dtype] if v else []))
    bm, bt = _tile(target, M, T, [d.shape[-1] for d in qs], Dv, fmt, out.dtype, v is None)
    kb = KernelBuilder("flash_attention", target)
    kb.note(f"attention: G={G} rows M={M} keys T={T} head dims {[d.shape[-1] for d in qs]}"
            f" -> {Dv}; scale {scale:.6g}" + (f", causal (offset {mask.attr('offset')})" if mask
                                              else "") + (", V read from the K block"
                                                          if v is None else ""))
    kb.note(f"tile {bm} rows x {bt} keys, {STAGES} stages; mma {fmt}")
    pq = [kb.param(f"q{i}", d) for i, d in enumerate(qs)]
    pk = [kb.param(f"k{i}", d) for i, d in enumerate(ks)]
    pv_param = kb.param("v", v) if v is not None else None
    po = kb.param("o", out, output=True)
    g = kb.grid_dim("g", G)
    m = kb.grid_dim("m", math.ceil(M / bm))
    # An operand holding only some batch dims (a rope key shared by all heads) is indexed by
    # that part of g.
    sub_g = lambda letters: _sub_index(g, batch, letters, cp.sizes)
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
    kb.buffer("out", out.dtype, (bm, Dv), "vector")
    for tok, initial in (("kv_free", STAGES), ("kv_full", 0), ("s_ready", 0), ("p_ready", 0),
                         ("pv_done", 1), ("o_ready", 0), ("o_final", 0), ("out_ready", 0)):
        kb.token(tok, initial)
    row0 = mul(m, Const(bm))
    for i, d in enumerate(qs):
        kb.emit("ld.tile", Buf(f"sq{i}"), Box(pq[i], (g, row0, Const(0)), (1, bm, d.shape[-1])))
    blocks = math.ceil(T / bt)
    with kb.loop("j", blocks) as j:
        slot = Bin("%", j, Const(STAGES)) if blocks > 1 else Const(0)
        key0 = mul(j, Const(bt))
        loads = [(Buf(f"sk{i}", slot), Box(pk[i], (sub_g(k_g[i]), key0, Const(0)),
                                             (1, bt, d.shape[-1]))) for i, d in enumerate(ks)]
        if v is not None:
            loads.append((Buf("sv", slot), Box(pv_param, (sub_g(v_letters), key0, Const(0)),
                                               (1, bt, Dv))))
        for i, (buf, box) in enumerate(loads):
            kb.emit("ld.tile", buf, box, wait=("kv_free",) if i == 0 else (),
                    signal=("kv_full",) if i == len(loads) - 1 else ())
        for i, d in enumerate(qs):
            kb.emit("mm.mma", Buf("s"), Buf(f"sq{i}"), Buf(f"sk{i}", slot),
                    wait=("kv_full",) if i == 0 else (),
                    signal=("s_ready",) if i == len(qs) - 1 else (),
                    shape=(bm, bt, d.shape[-1]), fmt=fmt, first=int(i == 0), trans_b=1)
        first = Bin("==", j, Const(0)) if blocks > 1 else Const(1)
        causal = {"offset": mask.attr("offset"), "row0": row0, "inner": 1,
                  "seq": mask.type.shape[-2]} if mask is not None else {}
        kb.emit("vec.online_softmax", Buf("p"), Buf("alpha"), Buf("rmax"), Buf("rsum"), Buf("s"),
                wait=("s_ready",), signal=("p_ready",), n=bm * bt, scale=scale, first=first,
                col0=key0, keys=T, **causal)
        kb.emit("vec.rescale", Buf("o"), Buf("alpha"), wait=("pv_done",), signal=("o_ready",),
                n=bm * Dv)
        v_buf = Buf(f"sk{reuse}", slot) if v is None else Buf("sv", slot)
        kb.emit("mm.mma", Buf("o"), Buf("p"), v_buf, wait=("p_ready", "o_ready"),
                signal=("kv_free", "pv_done"), shape=(bm, Dv, bt), fmt=fmt, first=first)
    kb.emit("sync.mm", signal=("o_final",))
    kb.emit("vec.normalize", Buf("out"), Buf("o"), Buf("rsum"), wait=("o_final",),
            signal=("out_ready",), n=bm * Dv)
    kb.emit("st.tile", Box(po, (g, row0, Const(0)), (1, bm, Dv)), Buf("out"),
            wait=("out_ready",))
    return kb.build()


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


def _matrix_format(target: Target, dtypes: list[str]) -> str:
    """The operands' common format if the matrix unit takes it, else bf16 (or the widest)."""
    formats = target.matrix.formats
    if len(set(dtypes)) == 1 and dtypes[0] in formats:
        return dtypes[0]
    if "bf16" in formats:
        return "bf16"
    return max(formats, key=lambda d: (DTYPES[d].bits, d))


def _tile(target: Target, M: int, T: int, dims: list[int], Dv: int, fmt: str, out_dtype: str,
          v_in_k: bool) -> tuple[int, int]:
    """The largest key block, then row block, whose buffers fit each on-chip space."""
    gran = target.matrix.formats[fmt].shape
    byte = lambda d: DTYPES[d].bits / 8
    for bm in sorted({min(_round(M, gran[0]), 128), gran[0]}, reverse=True):
        for bt in (128, 64, 32, 16):
            bt = _round(min(bt, T), gran[1])
            need = {
                "matrix_a": bm * sum(dims) * byte(fmt) + bm * bt * byte(fmt),
                "matrix_b": STAGES * bt * (sum(dims) + (0 if v_in_k else Dv)) * byte(fmt),
                "accumulator": bm * (bt + Dv) * 4,
                "vector": bm * 3 * 4 + bm * Dv * byte(out_dtype),
            }
            used: dict[str, float] = {}
            for role, nbytes in need.items():
                space = target.buffer_for(role)[0]
                used[space] = used.get(space, 0) + nbytes
            if all(n <= target.buffers[s].bytes for s, n in used.items()):
                return bm, bt
    raise ValueError(f"no attention tile fits the on-chip buffers (head dims {dims}, {Dv})")


def _round(x: int, m: int) -> int:
    return -(-x // m) * m
