"""How each op treats split values under tensor parallelism: the rule table of
compiler/passes/tensor_parallel.py.

A rule gets the pass (for the inputs' states, `split_of`, and the group size, `divides`) and
the node, and returns the state it wants of each input, the state of its result, and the
attributes that change (a reshape's target shape). States: R (whole), an int (split along that
axis), P (a partial sum), "open" (a weight whose split is not decided yet).
"""
from __future__ import annotations

import math

from compiler.ir.graph import Node
from compiler.ir.ops.contraction import matmul_spec

R, P = None, "partial"


def replicated(tp, node: Node):
    return [R] * len(node.inputs), R, None


def _along(tp, node: Node, allowed) -> tuple:
    """Elementwise-like ops: one split axis of the result, inputs aligned to it by
    broadcasting (a broadcast dim of size 1 stays whole). `allowed(axis)` says which result
    axes may be split; partial sums are reduced first."""
    rank = node.type.rank
    axis = None
    for i in node.inputs:
        s = tp.split_of(i)
        if isinstance(s, int):
            out_axis = s + rank - tp.old.node(i).type.rank
            if allowed(out_axis) and tp.divides(node.type.shape[out_axis]):
                axis = out_axis
                break
    if axis is None:
        return [R] * len(node.inputs), R, None
    wants = []
    for i in node.inputs:
        t = tp.old.node(i).type
        in_axis = axis - (rank - t.rank)
        wants.append(in_axis if in_axis >= 0 and t.shape[in_axis] == node.type.shape[axis]
                     else R)
    return wants, axis, None


def _elementwise(tp, node):
    if node.op == "causal_mask":
        return _along(tp, node, lambda a: a < node.type.rank - 2)
    return _along(tp, node, lambda a: True)


def _rowwise(tp, node):
    """Norms and softmax need whole rows (the last dim, or softmax's axis); rope needs whole
    rows and whole positions (its `axis`)."""
    rank = node.type.rank
    keep = {rank - 1, node.attr_dict.get("axis", -1) % rank} if node.op != "rmsnorm" else {rank - 1}
    wants, out, _ = _along(tp, node, lambda a: a not in keep)
    return ([wants[0]] + [R] * (len(wants) - 1)), out, None


def _reduction(tp, node):
    x = tp.old.node(node.inputs[0]).type
    axis = node.attr("axis") % x.rank
    s = tp.split_of(node.inputs[0])
    if not isinstance(s, int) or s == axis:
        return [R], R, None
    keep = node.attr_dict.get("keepdims", False)
    return [s], (s if keep or s < axis else s - 1), None


def _slice(tp, node):
    x = tp.old.node(node.inputs[0]).type
    s = tp.split_of(node.inputs[0])
    if not isinstance(s, int) or s == node.attr("axis") % x.rank:
        return [R], R, None
    return [s], s, None


def _transpose(tp, node):
    x = tp.old.node(node.inputs[0]).type
    s = tp.split_of(node.inputs[0])
    if not isinstance(s, int):
        return [R], R, None
    perm = node.attr("perm") or list(range(x.rank - 2)) + [x.rank - 1, x.rank - 2]
    return [s], list(perm).index(s), None


def _linear(rule):
    """Ops linear in their first input pass a partial sum on (add: when both are partial), so
    the reduction happens once, on the smaller value: after the combine, after adding the
    shared expert's partial."""
    def apply(tp, node):
        states = [tp.split_of(i) for i in node.inputs]
        if states[0] == P and (node.op != "add" or states[1] == P):
            return [P] + ([P] if node.op == "add" else [R] * (len(states) - 1)), P, None
        return rule(tp, node)
    return apply


def _concat(tp, node):
    axis = node.attr_dict.get("axis", -1) % node.type.rank
    return _along(tp, node, lambda a: a != axis)


def _reshape(tp, node):
    """A split survives a reshape when the split dim starts a dim of the result (same number
    of elements before it) that the devices divide: [B, S, H*D] split on H*D -> [B, S, H, D]
    split on H."""
    x = tp.old.node(node.inputs[0]).type
    s = tp.split_of(node.inputs[0])
    if not isinstance(s, int):
        return [R], R, None
    before = math.prod(x.shape[:s])
    out = list(node.type.shape)
    for axis in range(len(out)):
        if math.prod(out[:axis]) == before and tp.divides(out[axis]) and (
                out[axis] <= x.shape[s] and x.shape[s] % out[axis] == 0
                or out[axis] % x.shape[s] == 0):
            out[axis] //= tp.n
            return [s], axis, {"shape": out}
    return [R], R, None


def _contraction(tp, node):
    """Einsum letters carry the split: a split letter of the result keeps it, a split letter
    summed over makes a partial sum. An open weight is split on the letter its activation is
    split on, or (activation whole) on an output letter of its own: columns."""
    a, b = (tp.old.node(i) for i in node.inputs)
    spec = node.attr("spec") if node.op == "einsum" else matmul_spec(
        a.type.rank, b.type.rank, a.type.shape, b.type.shape)
    lhs, out = spec.split("->")
    letters = lhs.split(",")
    states = [tp.split_of(i) for i in node.inputs]
    sizes = {c: d for idx, n in zip(letters, (a, b)) for c, d in zip(idx, n.type.shape)}
    split = None
    opened = [idx for idx, s in zip(letters, states) if s == "open"]
    for idx, s in zip(letters, states):
        # a batch split meeting a weight the plan splits is gathered, the weight split
        if isinstance(s, int) and tp.divides(sizes[idx[s]]) and not (
                opened and idx[s] not in opened[0]):
            split = idx[s]
            break
    if split is None:
        for k, (idx, s) in enumerate(zip(letters, states)):
            other = letters[1 - k]
            if s == "open" and not (isinstance(states[1 - k], int) and
                                    other[states[1 - k]] in idx):
                split = next((c for c in reversed(idx) if c in out and c not in other
                              and tp.divides(sizes[c])), None)
                if split:
                    break
    if split is None:
        return [R, R], R, None
    wants = [idx.index(split) if split in idx else R for idx in letters]
    return wants, (out.index(split) if split in out else P), None


def _cache_write(tp, node):
    """New keys and values split by heads go into a cache split the same way, so each device
    keeps its heads' cache (GQA); an entry every head shares (MLA's latent) keeps it whole.
    Batch (0) stays whole unless attention is data parallel (the cache already each device's
    requests'); position (1) stays whole."""
    s = tp.split_of(node.inputs[1])
    if isinstance(s, int) and s >= 2 and tp.split_of(node.inputs[0]) in ("open", s):
        return [s, s], s, None
    if s == 0 and tp.split_of(node.inputs[0]) == 0:          # each device's own requests
        return [0, 0], 0, None
    return [R, R], R, None


def _embedding(tp, node):
    """Rows of a whole table for split ids: split the same way."""
    s = tp.split_of(node.inputs[0])
    if isinstance(s, int):
        return [s, R], s, None
    return replicated(tp, node)


RULES = {
    "elementwise": _elementwise, "rowwise": _rowwise,
    "reduction": _reduction, "contraction": _contraction, "concat": _concat,
    "slice": _slice, "transpose": _transpose, "reshape": _linear(_reshape),
    "add": _linear(_elementwise), "combine": _linear(replicated),
    "cache_write": _cache_write, "embedding": _embedding,
}
