"""Rewriting a graph with a table of rules.

A rule is a function `rule(node, rw) -> int | None`: given a node of the old graph, it either
declines (None) or emits replacement nodes into the new graph through `rw` and returns the id
of the new node that now carries the old node's value. `apply_rules` sweeps the graph in
topological order, tries the rules in table order on each node, copies nodes no rule took, and
repeats until a sweep changes nothing. Nodes left without users (other than sources and
outputs) are dropped at the end.
"""
from __future__ import annotations

from typing import Callable

from compiler.ir.graph import Graph, Node, TensorType, make_attrs

Rule = Callable[[Node, "Rewriter"], "int | None"]


class Rewriter:
    def __init__(self, old: Graph, ctx):
        self.old = old
        self.ctx = ctx
        self.new = old.empty_like()
        self.new_id: dict[int, int] = {}          # old node id -> new node id of its value
        self.names = {n.name for n in old.nodes()}
        self.changed = False
        self.memo: dict = {}                      # rules' shared results within one sweep
        self._cse: dict = {}

    def value(self, old_id: int) -> Node:
        """The new graph's node carrying an old node's value."""
        return self.new.node(self.new_id[old_id])

    def inputs(self, node: Node) -> list[int]:
        return [self.new_id[i] for i in node.inputs]

    def copy(self, node: Node, **changes) -> int:
        fields = {"inputs": self.inputs(node), "attrs": node.attrs, "loc": node.loc,
                  "sched": node.sched, "type": node.type, "name": node.name, **changes}
        twin = self._twin(node.op, fields["inputs"], fields["attrs"], fields["type"])
        if twin is not None:
            return twin
        new = self.new.add(node.op, fields["inputs"], fields["type"], fields["name"],
                           fields["attrs"], fields["loc"], fields["sched"]).id
        self._remember(node.op, fields["inputs"], fields["attrs"], fields["type"], new)
        return new

    def add(self, op: str, inputs: list[int], type: TensorType, name: str, attrs=None,
            loc=None) -> int:
        """A new node (or an equal one already made); its name made unique by a suffix."""
        self.changed = True
        attrs = attrs if isinstance(attrs, tuple) else make_attrs(attrs or {})
        twin = self._twin(op, inputs, attrs, type)
        if twin is not None:
            return twin
        unique, k = name, 1
        while unique in self.names:
            unique, k = f"{name}_{k}", k + 1
        self.names.add(unique)
        new = self.new.add(op, inputs, type, unique, attrs, loc).id
        self._remember(op, inputs, attrs, type, new)
        return new

    # Common subexpressions: an op applied to the same values with the same attributes and
    # result type is the same value (sources are distinct tensors even when they look alike).
    def _key(self, op, inputs, attrs, type):
        return None if op in ("input", "weight", "cache") else (op, tuple(inputs), attrs, type)

    def _twin(self, op, inputs, attrs, type) -> int | None:
        key = self._key(op, inputs, attrs, type)
        return self._cse.get(key) if key else None

    def _remember(self, op, inputs, attrs, type, new_id) -> None:
        key = self._key(op, inputs, attrs, type)
        if key:
            self._cse.setdefault(key, new_id)

    def finish(self) -> Graph:
        self.new.outputs = [self.new_id[o] for o in self.old.outputs]
        return _drop_dead(self.new)


def apply_rules(graph: Graph, rules: list[Rule], ctx, max_sweeps: int = 10) -> Graph:
    for _ in range(max_sweeps):
        rw = Rewriter(graph, ctx)
        for node in graph.nodes():
            for rule in rules:
                new = rule(node, rw)
                if new is not None:
                    rw.new_id[node.id] = new
                    rw.changed = True
                    break
            else:
                rw.new_id[node.id] = rw.copy(node)
        graph = rw.finish()
        if not rw.changed:
            return graph
    return graph


def _drop_dead(g: Graph) -> Graph:
    """A copy without the non-source nodes nothing uses (ids re-issued in order)."""
    keep = set(g.outputs)
    for node in reversed(list(g.nodes())):
        if node.id in keep or node.op in ("input", "weight", "cache"):
            keep.add(node.id)
            keep.update(node.inputs)
    if len(keep) == len(g):
        return g
    out = g.empty_like()
    ids = {}
    for node in g.nodes():
        if node.id in keep:
            ids[node.id] = out.add(node.op, [ids[i] for i in node.inputs], node.type, node.name,
                                   node.attrs, node.loc, node.sched).id
    out.outputs = [ids[o] for o in g.outputs]
    return out
