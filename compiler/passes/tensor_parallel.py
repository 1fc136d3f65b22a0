"""Tensor parallelism: the graph one device of a group of N runs, found by propagating splits.

Every value is replicated (R), split evenly along one axis (an int), or a partial sum that the
group's devices must add up (P). Walking the graph in order, each op's rule says which states
it accepts and what it produces; a value in another state is converted first:

    S(a) -> R    all_gather along a                        (communication)
    P -> S(a)    reduce-scatter: all_to_all along a, the received blocks added up
    P -> R       reduce-scatter, then all_gather           (all-reduce)
    R -> S(a)    this device's slice                       (free: it holds the whole value)

A weight the plan splits takes the state its first contraction asks for, which gives the
Megatron pairing: fed a replicated activation it is split by output columns (the result is
split too), fed an activation split along the contracted dim it is split by rows (the result
is a partial sum, reduced where it is used). A column split whose result must be gathered
whole again right away (MLA's low-rank down-projections feed a norm) is a poor trade; the
shard pass then runs this again with such weights left whole (`regret`). Through reshapes a column split becomes a split
of heads, which the attention einsums keep. Ops that need whole rows (a norm over the split
dim, a cache write, routing) get R. So for a SwiGLU FFN:

    x:R @ w1[:, cols] -> S(-1) -> silu, * (x @ w3[:, cols]) -> @ w2[rows, :] -> P -> all-reduce
"""
from __future__ import annotations

import math

from compiler.errors import DscError
from compiler.ir.graph import Graph, Node, TensorType, make_attrs
from compiler.ir.ops import OPS
from compiler.ir.ops.contraction import matmul_spec
from compiler.passes.rewrite import Rewriter

R, P = None, "partial"
OUTPUT = "output"          # wanted whole, as a model output (gathering it is no regret)


class TensorParallel:
    def __init__(self, graph: Graph, ctx, devices: int, split_weights: set[int]):
        self.old, self.n = graph, devices
        self.rw = Rewriter(graph, ctx)
        self.state: dict[int, object] = {}
        self.pending = set(split_weights)        # weights not yet placed: their split is open
        self.columns: dict[int, int] = {}        # contraction -> the weight it split by columns
        self.regret: set[int] = set()            # weights whose column split was gathered back

    # -- values in a wanted state --

    def value(self, old_id: int, want) -> int:
        if old_id in self.pending:
            self._place_weight(old_id, want)
        have = self.state[old_id]
        new = self.rw.new_id[old_id]
        gather_for_output = want is OUTPUT
        want = R if want is OUTPUT else want
        if have == want:
            return new
        node = self.rw.new.node(new)
        if have == P:
            new, have = self._reduce_scatter(node, want if isinstance(want, int) else None)
            node = self.rw.new.node(new)
        if isinstance(have, int) and have != want:
            if not gather_for_output:
                self._regret(old_id)
            new = self._gather(node, have)
            node, have = self.rw.new.node(new), R
        if isinstance(want, int) and have is R:
            new = self._slice(node, want)
        return new

    def _regret(self, old_id: int) -> None:
        """A split result gathered whole again: if a column split made it (through
        elementwise ops), that weight is better left whole."""
        node = self.old.node(old_id)
        while OPS[node.op].category == "elementwise":
            inputs = [i for i in node.inputs if self.old.node(i).op != "const"]
            if len(inputs) != 1:
                return
            node = self.old.node(inputs[0])
        if node.id in self.columns:
            self.regret.add(self.columns[node.id])

    def _place_weight(self, old_id: int, want) -> None:
        self.pending.discard(old_id)
        node = self.old.node(old_id)
        axis = want if isinstance(want, int) and node.type.shape[want] % self.n == 0 else R
        shape = list(node.type.shape)
        if axis is not R:
            shape[axis] //= self.n
        self.rw.new_id[old_id] = self.rw.copy(node, type=node.type.with_shape(shape))
        self.state[old_id] = axis

    def _slice(self, node: Node, axis: int) -> int:
        size = node.type.shape[axis] // self.n
        return self.rw.add("slice", [node.id], node.type.with_shape(
            [size if i == axis else d for i, d in enumerate(node.type.shape)]),
            f"{node.name}.part", {"axis": axis, "start": 0, "stop": size}, node.loc)

    def _gather(self, node: Node, axis: int) -> int:
        shape = [d * self.n if i == axis else d for i, d in enumerate(node.type.shape)]
        return self.rw.add("all_gather", [node.id], node.type.with_shape(shape),
                           f"{node.name}.gather", {"devices": self.n, "axis": axis}, node.loc)

    def _reduce_scatter(self, node: Node, axis: int | None) -> tuple[int, int]:
        """Sum the group's partials, each device keeping one slice along `axis` (an axis that
        divides, the last such when any will do)."""
        shape = node.type.shape
        if axis is None or shape[axis] % self.n:
            axis = next((a for a in reversed(range(len(shape))) if shape[a] % self.n == 0), None)
        if axis is None:
            raise DscError(f"tensor parallelism: cannot reduce '{node.name}' {list(shape)} over "
                           f"{self.n} devices, no dim divides", node.loc)
        ex = self.rw.add("all_to_all", [node.id], node.type, f"{node.name}.a2a",
                         {"devices": self.n, "split": axis, "concat": axis}, node.loc)
        size = shape[axis] // self.n
        part = node.type.with_shape([size if i == axis else d for i, d in enumerate(shape)])
        out = None
        for j in range(self.n):          # block j came from device j: add them up
            block = self.rw.add("slice", [ex], part, f"{node.name}.block{j}",
                                {"axis": axis, "start": j * size, "stop": (j + 1) * size},
                                node.loc)
            out = block if out is None else self.rw.add(
                "add", [out, block], part,
                f"{node.name}.reduced" if j == self.n - 1 else f"{node.name}.sum{j}", None,
                node.loc)
        return out, axis

    # -- the walk --

    def run(self) -> Graph:
        for node in self.old.nodes():
            if node.id in self.pending:
                continue
            if OPS[node.op].category == "source":
                self.rw.new_id[node.id], self.state[node.id] = self.rw.copy(node), R
                continue
            rule = RULES.get(node.op) or RULES.get(OPS[node.op].category, _replicated)
            wants, out_state, attrs = rule(self, node)
            inputs = [self.value(i, w) for i, w in zip(node.inputs, wants)]
            types = [self.rw.new.node(i).type for i in inputs]
            attrs = {**node.attr_dict, **(attrs or {})}
            shape = OPS[node.op].infer(types, OPS[node.op].full_attrs(attrs))
            self.rw.new_id[node.id] = self.rw.copy(
                node, inputs=inputs, attrs=make_attrs(attrs),
                type=TensorType(tuple(shape), node.type.format))
            self.state[node.id] = out_state
            if OPS[node.op].category == "contraction" and isinstance(out_state, int):
                self.columns.update((node.id, i) for i in node.inputs
                                    if self.old.node(i).op == "weight" and
                                    isinstance(self.state.get(i), int))
        for o in self.old.outputs:
            self.rw.new_id[o] = self.value(o, OUTPUT)
        return self.rw.finish()

    def split_of(self, old_id: int):
        """The state an input has, or None for a weight whose split is still open."""
        return "open" if old_id in self.pending else self.state[old_id]

    def divides(self, size: int) -> bool:
        return size % self.n == 0


# -- rules: (state wanted of each input, state of the result, changed attributes) --

def _replicated(tp: TensorParallel, node: Node):
    return [R] * len(node.inputs), R, None


def _along(tp: TensorParallel, node: Node, allowed) -> tuple:
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
    for idx, s in zip(letters, states):
        if isinstance(s, int) and tp.divides(sizes[idx[s]]):
            split = idx[s]
            break
    if split is None:
        for k, (idx, s) in enumerate(zip(letters, states)):
            other = letters[1 - k]
            if s == "open" and not isinstance(states[1 - k], int):
                split = next((c for c in reversed(idx) if c in out and c not in other
                              and tp.divides(sizes[c])), None)
                if split:
                    break
    if split is None:
        return [R, R], R, None
    wants = [idx.index(split) if split in idx else R for idx in letters]
    return wants, (out.index(split) if split in out else P), None


RULES = {
    "elementwise": _elementwise, "rowwise": _rowwise,
    "reduction": _reduction, "contraction": _contraction, "concat": _concat,
    "slice": _slice, "transpose": _transpose, "reshape": _linear(_reshape),
    "add": _linear(_elementwise), "combine": _linear(_replicated),
}
