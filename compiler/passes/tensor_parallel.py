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

Mixed plans. Parts of the model the plan keeps data parallel inside a group (`attn=dp` with
`ffn=tp8`: the graph holds the group's requests) start split along the batch (`presplit`: each
device's inputs and caches its own requests), and their weights stay whole, so the split passes through them; a
weight the plan splits, meeting an activation split along a dim of its own (the batch),
gathers it and is split by columns as usual, and the partial sum it makes is reduce-scattered
back along the batch where it meets the residual stream. Expert-parallel MoE blocks
(`local`: their names' scopes) run on this device's share of the group's tokens: their token
input is taken split along its first dim (a free slice of a whole value) and everything inside
keeps its own shape; the shard pass then makes them expert parallel.
"""
from __future__ import annotations

from compiler.errors import DscError
from compiler.ir.graph import Graph, Node, TensorType, make_attrs
from compiler.ir.ops import OPS
from compiler.passes.rewrite import Rewriter
from compiler.passes.split_rules import P, R, RULES, replicated

OUTPUT = "output"          # wanted whole, as a model output (gathering it is no regret)


class TensorParallel:
    def __init__(self, graph: Graph, ctx, devices: int, split_weights: set[int],
                 presplit: dict[int, int] | None = None, local: tuple[str, ...] = ()):
        self.old, self.n = graph, devices
        self.rw = Rewriter(graph, ctx)
        self.state: dict[int, object] = {}
        self.pending = set(split_weights)        # weights not yet placed: their split is open
        self.presplit = presplit or {}           # sources already this device's part: axis
        self.local = local                       # scopes run on this device's tokens
        self.columns: dict[int, int] = {}        # contraction -> the weight it split by columns
        self.regret: set[int] = set()            # weights whose column split was gathered back

    # -- values in a wanted state --

    def value(self, old_id: int, want) -> int:
        if old_id in self.pending:
            self._place_weight(old_id, want)
        have = self.state[old_id]
        new = self.rw.new_id[old_id]
        gather_for_output = want is OUTPUT
        if gather_for_output and have == 0 and self.presplit:    # each device's own requests
            return new
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
        divides, the first such when any will do: whole rows, contiguous blocks)."""
        shape = node.type.shape
        if axis is None or shape[axis] % self.n:
            axis = next((a for a in range(len(shape)) if shape[a] % self.n == 0), None)
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
                axis = self.presplit.get(node.id, R)
                shape = [d // self.n if i == axis else d for i, d in enumerate(node.type.shape)]
                self.rw.new_id[node.id] = self.rw.copy(node, type=node.type.with_shape(shape))
                self.state[node.id] = axis
                continue
            if self.is_local(node):
                wants, out_state, attrs = self._local_rule(node)
            else:
                rule = RULES.get(node.op) or RULES.get(OPS[node.op].category, replicated)
                wants, out_state, attrs = rule(self, node)
            inputs = [self.value(i, w) for i, w in zip(node.inputs, wants)]
            types = [self.rw.new.node(i).type for i in inputs]
            attrs = {**node.attr_dict, **(attrs or {})}
            if self.is_local(node) and node.op == "dispatch":
                attrs["capacity"] = _local_capacity(node, self.old, types)
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

    def is_local(self, node: Node) -> bool:
        return any(node.name.startswith(scope) for scope in self.local)

    def _local_rule(self, node: Node):
        """Inside an expert-parallel MoE block: sources whole, everything else this device's
        share of the tokens (state 0: split along the first dim, which inside the block is
        only a label; the values keep their own shapes)."""
        wants = [R if OPS[self.old.node(i).op].category == "source" else 0
                 for i in node.inputs]
        return wants, 0, None

    def split_of(self, old_id: int):
        """The state an input has, or None for a weight whose split is still open."""
        return "open" if old_id in self.pending else self.state[old_id]

    def divides(self, size: int) -> bool:
        return size % self.n == 0


def _local_capacity(node: Node, old: Graph, types) -> int:
    """A dispatch on fewer tokens keeps a balanced capacity balanced (an explicit one stays)."""
    from compiler.ir.ops.routing import balanced_capacity
    x, idx = old.node(node.inputs[0]).type, old.node(node.inputs[1]).type
    experts, capacity = node.attr("experts"), node.attr("capacity")
    if capacity != balanced_capacity(x.shape[0], idx.shape[-1], experts):
        return capacity
    return balanced_capacity(types[0].shape[0], types[1].shape[-1], experts)
