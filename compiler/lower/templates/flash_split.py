"""Attention on split cube/vector cores: the scores go through L2, the cube runs a block ahead.

On a target whose matrix results reach the vector unit only through memory (Ascend-style AI
cores: the cube writes L0C out with its FixPipe — or, without a pipe, its store engine — and
the vector cores read global memory), each
key block crosses between the cores twice, through per-core workspaces that stay in L2
(workspace.py):

    cube    ld k, v;  mm s = q k^T;  fix.st s -> scores        (block j+1)
    vector  vld s;  online softmax -> p, alpha;  vst p -> probs (block j+1)
    cube    ld p;  mm pv = p v;  fix.st pv -> partial           (block j)
    vector  vld pv;  o = o * alpha + pv                          (block j)

Every unit's queue is skewed by one block (the scores of block j+1 are made while block j's
values are finished), so the cube's Q K^T overlaps the vector cores' softmax as on the real
chip; `STAGES` slots of every buffer and scratch region, counted by tokens, keep the two
sides apart. After the last block: out = o / l, stored by the vector core.
"""
from __future__ import annotations

import math

from compiler.kernels.epilogue import drain_store
from compiler.kernels.groups import Group
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from compiler.lower.templates.workspace import Workspace
from compiler.lower.templates.flash import STAGES, Attention, load_queries, softmax_attrs, tile
from compiler.lower.templates.flash_keys import KeyBlocks, chain, scaled_bytes
from isa.expr import Bin, Const, Expr, add, mul
from isa.formats import DTYPES
from isa.program import Box, Buf
from isa.target_schema import Target

TOKENS = (("kv_free", STAGES), ("kv_full", 0), ("s_acc_free", STAGES), ("s_ready", 0),
          ("scores_free", STAGES), ("s_handed", 0), ("ss_free", 1), ("s_loaded", 0),
          ("p_free", STAGES), ("alpha_free", STAGES), ("p_made", 0), ("probs_free", STAGES),
          ("p_handed", 0), ("p_loaded", 0), ("pv_free", 1), ("pv_ready", 0),
          ("partial_free", STAGES), ("pv_handed", 0), ("pvv_free", 1), ("pv_loaded", 0),
          ("out_ready", 0))


def _need(att: Attention, bm: int, bt: int) -> dict[str, float]:
    byte = lambda d: DTYPES[d].bits / 8
    dims = sum(d.shape[-1] for d in att.qs)
    raw, dequantised, scales = scaled_bytes(att, bt)   # dequantised on the vector core
    return {
        "matrix_a": bm * dims * byte(att.fmt) + STAGES * bm * bt * byte(att.fmt),
        "matrix_b": STAGES * bt * (dims + (0 if att.v is None else att.Dv)) * byte(att.fmt),
        "accumulator": STAGES * bm * bt * 4 + bm * att.Dv * 4,
        "vector": (bm * bt * 4 + STAGES * bm * bt * byte(att.fmt) + 2 * bm * att.Dv * 4
                   + bm * (STAGES + 2) * 4 + bm * att.Dv * byte(att.out.dtype)
                   + raw + dequantised + scales
                   + sum(bm * d.shape[-1] * (byte(d.dtype) + byte(att.fmt))   # converted
                         for d in att.qs if att.widens(d))),                  # queries
    }


def _slot(j: Expr) -> Expr:
    return Const(j.value % STAGES) if isinstance(j, Const) else Bin("%", j, Const(STAGES))


def lower_split_attention(att: Attention, group: Group, tmap: TensorMap, target: Target):
    bm, bt = tile(target, att, _need)
    Dv, fmt = att.Dv, att.fmt
    drain = drain_store(target)            # the cube's results out: the pipe, or its stores
    name = group.nodes[-1].name
    kb = KernelBuilder("flash_attention", target)
    kb.note(att.describe())
    kb.note(f"tile {bm} rows x {bt} keys, {STAGES} stages; mma {fmt}; scores, probabilities "
            "and partial outputs cross between cube and vector cores through L2")
    pq = [kb.param(f"q{i}", d) for i, d in enumerate(att.qs)]
    keys = KeyBlocks(kb, att, tmap, name)
    keys.declare_scale_params()
    po = kb.param("o", att.out, output=True)
    g = kb.grid_dim("g", att.G)
    m = kb.grid_dim("m", math.ceil(att.M / bm))
    scores = Workspace(kb, tmap, f"{name}.scores", "fp32", bm, bt, STAGES, "scores")
    probs = Workspace(kb, tmap, f"{name}.probs", fmt, bm, bt, STAGES, "probs")
    partial = Workspace(kb, tmap, f"{name}.partial", "fp32", bm, Dv, STAGES, "partial")
    converted = [i for i, d in enumerate(att.qs) if att.widens(d)]
    for i, d in enumerate(att.qs):
        kb.buffer(f"sq{i}", fmt if i in converted else d.dtype, (bm, d.shape[-1]), "matrix_a")
        if i in converted:
            kb.buffer(f"vq{i}", d.dtype, (bm, d.shape[-1]), "vector")
            kb.buffer(f"vqc{i}", fmt, (bm, d.shape[-1]), "vector")
    keys.declare_buffers(bt, split=True)
    kb.buffer("pc", fmt, (bm, bt), "matrix_a", STAGES)
    kb.buffer("s", "fp32", (bm, bt), "accumulator", STAGES)
    kb.buffer("pv", "fp32", (bm, Dv), "accumulator")
    kb.buffer("ss", "fp32", (bm, bt), "vector")
    kb.buffer("pp", fmt, (bm, bt), "vector", STAGES)
    kb.buffer("pvv", "fp32", (bm, Dv), "vector")
    kb.buffer("o", "fp32", (bm, Dv), "vector")
    kb.buffer("alpha", "fp32", (bm, 1), "vector", STAGES)
    for stat in ("rmax", "rsum"):
        kb.buffer(stat, "fp32", (bm, 1), "vector")
    kb.buffer("out", att.out.dtype, (bm, Dv), "vector")
    for tok, initial in TOKENS:
        kb.token(tok, initial)
    keys.declare_tokens()
    row0 = mul(m, Const(bm))
    if converted:
        for tok in ("q_raw", "q_conv", "q_handed", "q_ready"):
            kb.token(tok, 0)

    def scores_of(j: Expr) -> None:                 # cube: S_j = Q K_j^T, out to L2
        slot = _slot(j)
        keys.load(g, slot, mul(j, Const(bt)))
        for i, d in enumerate(att.qs):
            kb.emit("mm.mma", Buf("s", slot), Buf(f"sq{i}"), keys.operand(f"k{i}", slot),
                    wait=("kv_full", "s_acc_free") if i == 0 else (),
                    signal=("s_ready",) if i == len(att.qs) - 1 else (),
                    shape=(bm, bt, d.shape[-1]), fmt=fmt, first=int(i == 0), trans_b=1)
        kb.emit(drain, scores.box(_slot(j)), Buf("s", slot),
                wait=("s_ready", "scores_free"), signal=("s_handed", "s_acc_free"))

    def softmax_of(j: Expr, first: Expr) -> None:   # vector: P_j, alpha_j, back to L2
        slot = _slot(j)
        kb.emit("vld.tile", Buf("ss"), scores.box(_slot(j)), wait=("s_handed", "ss_free"),
                signal=("s_loaded", "scores_free"))
        kb.emit("vec.online_softmax", Buf("pp", slot), Buf("alpha", slot), Buf("rmax"),
                Buf("rsum"), Buf("ss"), wait=("s_loaded", "p_free", "alpha_free"),
                signal=("p_made", "ss_free"),
                **softmax_attrs(att, bm, bt, row0, mul(j, Const(bt)), first))
        kb.emit("vst.tile", probs.box(_slot(j)), Buf("pp", slot),
                wait=("p_made", "probs_free"), signal=("p_handed", "p_free"))

    def values_of(j: Expr) -> None:                 # cube: PV_j = P_j V_j, out to L2
        slot = _slot(j)
        kb.emit("ld.tile", Buf("pc", slot), probs.box(_slot(j)), wait=("p_handed",),
                signal=("p_loaded", "probs_free"))
        kb.emit("mm.mma", Buf("pv"), Buf("pc", slot), keys.value(slot),
                wait=("p_loaded", "pv_free"), signal=("pv_ready", "kv_free"),
                shape=(bm, Dv, bt), fmt=fmt, first=1)
        kb.emit(drain, partial.box(_slot(j)), Buf("pv"), wait=("pv_ready", "partial_free"),
                signal=("pv_handed", "pv_free"))

    def accumulate(j: Expr, first: Expr) -> None:   # vector: o = o * alpha_j + PV_j
        kb.emit("vld.tile", Buf("pvv"), partial.box(_slot(j)), wait=("pv_handed", "pvv_free"),
                signal=("pv_loaded", "partial_free"))
        kb.emit("vec.rescale", Buf("o"), Buf("alpha", _slot(j)), wait=("pv_loaded",), n=bm * Dv)
        kb.emit("vec.accumulate", Buf("o"), Buf("pvv"), signal=("pvv_free", "alpha_free"),
                n=bm * Dv, first=first)

    blocks = math.ceil(att.T / bt)
    if converted:
        _convert_queries(kb, tmap, att, name, pq, converted, g, row0, bm)
    else:
        load_queries(kb, att, pq, g, row0, bm)
    scores_of(Const(0))
    softmax_of(Const(0), Const(1))
    if blocks > 1:
        with kb.loop("j", blocks - 1) as j:
            scores_of(add(j, Const(1)))
            softmax_of(add(j, Const(1)), Const(0))
            values_of(j)
            accumulate(j, Bin("==", j, Const(0)) if blocks > 2 else Const(1))
    last = Const(blocks - 1)
    values_of(last)
    accumulate(last, Const(int(blocks == 1)))
    kb.emit("vec.normalize", Buf("out"), Buf("o"), Buf("rsum"), signal=("out_ready",),
            n=bm * Dv)
    kb.emit("vst.tile", Box(po, (g, row0, Const(0)), (1, bm, Dv)), Buf("out"),
            wait=("out_ready",))
    return kb.build()


def _convert_queries(kb, tmap, att: Attention, name: str, pq: list[str], converted: list[int],
                     g, row0, bm: int) -> None:
    """Queries in a dtype the cube's format does not read (FP32 queries against a cache
    dequantised to BF16): the vector core loads and converts them, once per work item, and
    hands them to the cube through the workspace, as it hands the converted key tiles."""
    spaces = {i: Workspace(kb, tmap, f"{name}.q{i}_cvt", att.fmt, bm, att.qs[i].shape[-1], 1,
                           f"q{i}_cvt") for i in converted}
    box = lambda i: Box(pq[i], (g, row0, Const(0)), (1, bm, att.qs[i].shape[-1]))
    chain(kb, "vld.tile", [(Buf(f"vq{i}"), box(i)) for i in converted], (), ("q_raw",))
    for k, i in enumerate(converted):
        kb.emit("vec.cvt", Buf(f"vqc{i}"), Buf(f"vq{i}"), wait=("q_raw",) if k == 0 else (),
                signal=("q_conv",) if k == len(converted) - 1 else (),
                n=bm * att.qs[i].shape[-1])
    chain(kb, "vst.tile", [(spaces[i].box(Const(0)), Buf(f"vqc{i}")) for i in converted],
           ("q_conv",), ("q_handed",))
    chain(kb, "ld.tile", [(Buf(f"sq{i}"), spaces[i].box(Const(0)) if i in converted else box(i))
                           for i in range(len(att.qs))], ("q_handed",), ("q_ready",))
    kb.emit("sync.mm", wait=("q_ready",))
