"""MoE routing and embedding: data-dependent movement of rows. Semantics: isa/routing.py."""
import math

from compiler.ir.ops import REQUIRED, OpDef, check, dims, numel, register
from isa import routing
from isa.vector_ops import RADIX_SELECT_OPS


def _topk_shape(ins, a):
    s = ins[0]
    check(len(ins) <= 2, f"topk takes scores and an optional bias, got {len(ins)} operands")
    check(s.rank == 2, f"topk needs scores [tokens, experts], got {dims(s.shape)}")
    experts = s.shape[1]
    check(0 < a["k"] <= experts, f"k = {a['k']} must be between 1 and the {experts} experts")
    check(experts % a["groups"] == 0, f"{experts} experts do not split into {a['groups']} groups")
    check(1 <= a["topk_groups"] <= a["groups"],
          f"topk_groups = {a['topk_groups']} must be between 1 and groups = {a['groups']}")
    check(a["k"] <= a["topk_groups"] * experts // a["groups"],
          f"k = {a['k']} exceeds the experts of the {a['topk_groups']} kept groups")
    check(1 <= a["group_best"] <= experts // a["groups"],
          f"group_best = {a['group_best']} must be between 1 and the {experts // a['groups']} "
          "experts of a group")
    if len(ins) > 1:
        check(ins[1].shape == (experts,), f"topk bias must be [{experts}], got {dims(ins[1].shape)}")
    return (s.shape[0], a["k"])


def _weights_shape(ins, a):
    s, idx = ins
    check(idx.rank == 2 and idx.shape[0] == s.shape[0],
          f"routing indices {dims(idx.shape)} do not match scores {dims(s.shape)}")
    return idx.shape


def _dispatch_shape(ins, a):
    x, idx = ins
    check(x.rank == 2 and idx.rank == 2 and x.shape[0] == idx.shape[0],
          f"dispatch needs x [tokens, d] and indices [tokens, k], got {dims(x.shape)} and "
          f"{dims(idx.shape)}")
    check(a["experts"] > 0 and a["capacity"] > 0, "experts and capacity must be positive")
    return (a["experts"], a["capacity"], x.shape[1])


def _combine_shape(ins, a):
    y, idx, w = ins
    check(y.rank == 3 and idx.rank == 2 and w.shape == idx.shape,
          f"combine needs y [experts, capacity, d], indices and weights [tokens, k], got "
          f"{dims(y.shape)}, {dims(idx.shape)}, {dims(w.shape)}")
    return (idx.shape[0], y.shape[2])


def _embedding_shape(ins, a):
    ids, table = ins
    check(table.rank == 2, f"embedding table must be [vocab, d], got {dims(table.shape)}")
    return (*ids.shape, table.shape[1])


def _gather_shape(ins, a):
    table, idx = ins
    check(table.rank == 3 and idx.rank == 3 and table.shape[0] == idx.shape[0],
          f"gather needs a table [B, T, d] and indices [B, S, k] of the same B, got "
          f"{dims(table.shape)} and {dims(idx.shape)}")
    return (*idx.shape, table.shape[2])


def balanced_capacity(tokens: int, k: int, experts: int) -> int:
    """Slots per expert when routing is perfectly balanced: the layout for performance models."""
    return max(1, math.ceil(tokens * k / experts))


register(OpDef("topk", "routing", None, infer=_topk_shape, result="i32",
               reference=lambda ins, a: routing.topk_select(
                   ins[0], a["k"], ins[1] if len(ins) > 1 else None, a["groups"], a["topk_groups"],
                   a["group_best"]),
               flops=lambda ins, out, a: min(a["k"] + 2, RADIX_SELECT_OPS) * numel(ins[0].shape),
               doc="indices of the k best experts per token (optional bias, group-limited), or "
                   "of the k best positions of a row of scores",
               attrs={"k": REQUIRED, "groups": 1, "topk_groups": 1, "group_best": 2}))
register(OpDef("topk_weights", "routing", 2, infer=_weights_shape, result="fp32",
               reference=lambda ins, a: routing.topk_weights(ins[0], ins[1], a["norm"], a["scale"]),
               flops=lambda ins, out, a: 3 * numel(out.shape),
               doc="routing weights: chosen scores, normalised if `norm`, times `scale`",
               attrs={"norm": True, "scale": 1.0}))
register(OpDef("dispatch", "routing", 2, infer=_dispatch_shape, result="input",
               reference=lambda ins, a: routing.dispatch(ins[0], ins[1], a["experts"], a["capacity"]),
               bytes_read=lambda ins, out, a: ins[0].format.nbytes(
                   (min(ins[0].shape[0] * ins[1].shape[1], out.shape[0] * out.shape[1]),
                    ins[0].shape[1])) + ins[1].nbytes,
               doc="tokens to an [experts, capacity, d] layout",
               attrs={"experts": REQUIRED, "capacity": REQUIRED}))
register(OpDef("combine", "routing", 3, infer=_combine_shape,
               reference=lambda ins, a: routing.combine(*ins),
               flops=lambda ins, out, a: 2 * ins[1].shape[1] * numel(out.shape),
               bytes_read=lambda ins, out, a: ins[0].format.nbytes(
                   (ins[1].shape[0] * ins[1].shape[1], ins[0].shape[2])) + ins[1].nbytes
                   + ins[2].nbytes,
               doc="weighted sum of each token's expert outputs"))
register(OpDef("embedding", "routing", 2, infer=_embedding_shape,
               reference=lambda ins, a: routing.embedding(*ins),
               bytes_read=lambda ins, out, a: ins[1].format.nbytes((numel(ins[0].shape),
                                                                    ins[1].shape[1])) + ins[0].nbytes,
               doc="rows of a table by index"))
register(OpDef("gather", "routing", 2, infer=_gather_shape, result="input",
               reference=lambda ins, a: routing.gather_rows(*ins),
               bytes_read=lambda ins, out, a: out.nbytes + ins[1].nbytes,
               doc="rows of each batch's table by index: out[b, s, j] = table[b, idx[b, s, j]] "
                   "(index -1: a row of zeros)"))
