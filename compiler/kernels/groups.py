"""Kernel groups: the ops that run as one kernel, in an order that respects their data.

The fuse pass tags each node with `sched {kernel="KIND.N"}`; nodes without a tag (sources,
constants and views need none) form a group of their own, of the kind their category implies.
Values crossing a group boundary live off-chip; values inside a group never leave the chip.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

from compiler.ir.graph import Graph, Node
from compiler.ir.ops import OPS

NO_KERNEL = ("source", "view")
# A gather has no kernel of its own: it is lowered as the keys of an attention (fuse.py).
_KIND_OF_OP = {"dispatch": "dispatch", "combine": "combine", "embedding": "embedding",
               "gather": "gather"}


def default_kind(node: Node) -> str:
    """The kernel kind a node forms on its own."""
    if node.op in _KIND_OF_OP:
        return _KIND_OF_OP[node.op]
    category = OPS[node.op].category
    return {"contraction": "gemm", "collective": "collective"}.get(category, "vector")


def needs_kernel(node: Node) -> bool:
    return OPS[node.op].category not in NO_KERNEL


@dataclass(frozen=True)
class Group:
    name: str                    # e.g. "gemm.3"
    kind: str                    # gemm | vector | flash_attention | dispatch | combine | embedding
    nodes: tuple[Node, ...]      # in topological order
    outputs: tuple[Node, ...]    # members whose value is used outside the group (or returned)
    inputs: tuple[Node, ...]     # values from outside, in first-use order

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(n.id for n in self.nodes)


def kernel_groups(graph: Graph) -> list[Group]:
    """The groups of a graph in launch order (a topological order of the groups)."""
    members: dict[str, list[Node]] = {}
    group_of: dict[int, str] = {}
    for node in graph.nodes():
        if not needs_kernel(node):
            continue
        key = node.sched_get("kernel") or f"{default_kind(node)}.n{node.id}"
        members.setdefault(key, []).append(node)
        group_of[node.id] = key
    order = _group_order(graph, members, group_of)
    returned = set(graph.outputs)
    groups = []
    for key in order:
        nodes = members[key]
        ids = {n.id for n in nodes}
        outputs = tuple(n for n in nodes if n.id in returned or any(
            u.id not in ids for u in graph.users(n.id)))
        inputs, seen = [], set()
        for n in nodes:
            for i in n.inputs:
                if i not in ids and i not in seen:
                    seen.add(i)
                    inputs.append(graph.node(i))
        groups.append(Group(key, key.split(".")[0], tuple(nodes), outputs, tuple(inputs)))
    return groups


def _group_order(graph: Graph, members, group_of) -> list[str]:
    """Topological order of the condensed graph; ties go to the group with the lowest node id."""
    first = {key: min(n.id for n in nodes) for key, nodes in members.items()}
    after: dict[str, set[str]] = {key: set() for key in members}     # producer -> consumers
    waiting = dict.fromkeys(members, 0)
    for key, nodes in members.items():
        producers = set()
        for n in nodes:
            producers |= _kernel_producers(graph, n, group_of)
        producers.discard(key)
        for producer in producers:
            after[producer].add(key)
        waiting[key] = len(producers)
    ready = [(first[k], k) for k, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, key = heapq.heappop(ready)
        order.append(key)
        for user in after[key]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, (first[user], user))
    if len(order) < len(members):
        raise ValueError("kernel groups depend on each other in a cycle: "
                         + " -> ".join(_group_cycle(after, set(members) - set(order))))
    return order


def _group_cycle(after: dict[str, set[str]], stuck: set[str]) -> list[str]:
    """One cycle among the groups the order could not place, in data order: every such group
    waits for another one, so walking back through producers must come round."""
    before = {k: sorted(p for p in stuck if k in after[p]) for k in stuck}
    key, path = min(stuck), []
    while key not in path:
        path.append(key)
        key = before[key][0]
    return path[path.index(key):][::-1]


def _kernel_producers(graph: Graph, node: Node, group_of) -> set[str]:
    """Groups whose kernels produce `node`'s inputs (looking through views)."""
    out, stack = set(), list(node.inputs)
    while stack:
        i = stack.pop()
        if i in group_of:
            out.add(group_of[i])
        else:
            stack.extend(graph.node(i).inputs)
    return out
