"""The IR: a typed dataflow graph of immutable op nodes.

A `Node` is one frozen record (op, inputs, attributes, result type, name, source position).
The `Graph` keeps nodes by integer ids issued in creation order, with an index of each node's
users, so iterating in topological order with ids as the tie-break is deterministic and golden
files are stable. Passes build a new Graph rather than mutate one.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from compiler.errors import Loc
from isa.formats import Format


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    format: Format

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.format.nbytes(self.shape)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.format)

    def with_format(self, fmt: Format) -> "TensorType":
        return TensorType(self.shape, fmt)

    def __str__(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        scaling = f" {self.format.scaling}" if self.format.scaling else ""
        return f"{self.format.dtype}[{dims}]{scaling}"


Attrs = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Node:
    """One op application. `attrs` are the op's own attributes (validated by its OpDef);
    `sched` holds what passes decide about running it: its fused kernel, its tile."""
    id: int
    op: str
    inputs: tuple[int, ...]
    attrs: Attrs
    type: TensorType
    name: str
    loc: Loc | None = None
    sched: Attrs = ()

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    def sched_get(self, key: str, default: Any = None) -> Any:
        for k, v in self.sched:
            if k == key:
                return v
        return default

    def with_sched(self, **values) -> "Node":
        return replace(self, sched=make_attrs({**dict(self.sched), **values}))

    @property
    def attr_dict(self) -> dict[str, Any]:
        return dict(self.attrs)


def make_attrs(values: dict[str, Any]) -> Attrs:
    """Attributes are stored sorted by key, lists frozen to tuples, so equal nodes compare equal."""
    def freeze(v):
        return tuple(freeze(x) for x in v) if isinstance(v, (list, tuple)) else v
    return tuple(sorted((k, freeze(v)) for k, v in values.items()))


@dataclass(frozen=True)
class Steady:
    """One iteration of a model-level `repeat` that stands for `times` iterations of the model.

    A repeat whose iterations have become identical is built as a window: the iterations up
    to the first identical one, two identical ones, then the last. The second identical one,
    `NAME.INDEX` (`layer.5`), stands for itself and the `times - 1` iterations the window
    leaves out; iterations of NAME built after it are numbered `times - 1` higher in the model
    (`layer.6` of the window is `layer.60`). Passes see each iteration beside the neighbours
    it has in the model, so what they decide for the window holds for the whole repeat; the
    lowered program is stretched back to every iteration (compiler/lower/stretch.py). With a
    `period` p > 1, the p iterations from INDEX stand for `times` cycles, and later ones are
    numbered (times - 1) * p higher."""
    name: str            # the repeat's iteration name: `layer`
    first: int           # the repeat's first iteration (`layer.3`: three came before it)
    index: int           # the iteration that stands for many, numbered in the window
    times: int           # how many iterations of the model it stands for (at least 2)
    # A cycle of `period` different iterations (index .. index+period-1) that stands for
    # `times` cycles: layers alternating between kinds (DeepSeek-V4's compression ratios)
    period: int = 1

    @property
    def scope(self) -> str:
        return f"{self.name}.{self.index}"

    @property
    def left_out(self) -> int:
        """Iterations of the model the window does not build."""
        return (self.times - 1) * self.period

    def holds(self, index: int) -> bool:
        """Is iteration `index` (window numbering) one of the cycle that stands for many?"""
        return self.index <= index < self.index + self.period

    def __str__(self) -> str:
        cycle = f" period {self.period}" if self.period > 1 else ""
        return f"repeat {self.name} from {self.first}: {self.scope} times {self.times}{cycle}"


@dataclass
class Graph:
    """A model's dataflow graph.

    `outputs` are node ids in declaration order; `sizes` the model's top-level integers after
    `--set`; `policy` the precision policy by role (default, weights, activations, kv_cache);
    `deploy` the deployment the model declares (isa/deployment.py), empty if none; `steady`
    the iterations that stand for several (a graph built as a window of its model, above);
    `where` the position of each size (by name), deploy key (`deploy.KEY`) and block call
    (`call_key(scope)`) in the source, for errors found after the build (a plan the target
    cannot take, a kernel that does not fit). It is not part of the
    graph's value: equal graphs may come from differently laid out files.
    """
    model: str
    sizes: dict[str, int] = field(default_factory=dict)
    policy: dict[str, Format] = field(default_factory=dict)
    deploy: dict[str, int | str] = field(default_factory=dict)   # the model's deploy block
    steady: tuple[Steady, ...] = ()
    where: dict[str, Loc] = field(default_factory=dict)
    outputs: list[int] = field(default_factory=list)
    _nodes: dict[int, Node] = field(default_factory=dict)
    _users: dict[int, set[int]] = field(default_factory=dict)   # producer id -> user ids
    _next_id: int = 0
    _id_ordered: bool = True          # every node's inputs have smaller ids (see nodes())

    def empty_like(self) -> "Graph":
        """A graph with this one's header (model, sizes, policy, deploy, steady iterations)
        and no nodes."""
        return Graph(self.model, dict(self.sizes), dict(self.policy), dict(self.deploy),
                     self.steady, dict(self.where))

    @staticmethod
    def call_key(scope: str) -> str:
        """The `where` key of the block call that opened `scope` (`layer.3.moe`)."""
        return f"call {scope}"

    def calls_to(self, name: str) -> list[tuple[str, Loc]]:
        """The block calls that built the node called `name` (its scope and where the call is
        written), innermost first: a kernel that fails in a library block is traced to the
        user's line. A block's result, renamed in its caller's scope, keeps its own call."""
        parts = name.split(".")
        scopes = (".".join(parts[:n]) for n in range(len(parts), 0, -1))
        return [(scope, self.where[self.call_key(scope)]) for scope in scopes
                if self.call_key(scope) in self.where]

    def call_notes(self, name: str) -> tuple[str, ...]:
        """`calls_to` as notes for an error."""
        return tuple(f"in the block call at {loc} (building '{scope}')"
                     for scope, loc in self.calls_to(name))

    def copies(self, name: str) -> int:
        """How many nodes of the model the node called `name` stands for: `times` inside a
        steady iteration, else one. Totals over the model (weights, FLOPs) weigh by this."""
        prefix, _, rest = name.partition(".")
        index, dot, _ = rest.partition(".")
        if not (dot and index.isdigit()):
            return 1
        for s in self.steady:
            if s.name == prefix and s.holds(int(index)):
                return s.times
        return 1

    def model_names(self, name: str) -> list[str]:
        """The names in the model of the nodes the node called `name` stands for: its own,
        renumbered past the iterations the window leaves out (`layer.6.x` -> `layer.60.x`),
        one per iteration for a node of a steady iteration."""
        prefix, _, rest = name.partition(".")
        index, dot, tail = rest.partition(".")
        mine = [s for s in self.steady if s.name == prefix]
        if not (mine and dot and index.isdigit()):
            return [name]
        j = int(index)
        shift = sum(s.left_out for s in mine if s.index + s.period <= j)
        cycle = next((s for s in mine if s.holds(j)), None)
        times, period = (cycle.times, cycle.period) if cycle else (1, 1)
        return [f"{prefix}.{j + shift + c * period}.{tail}" for c in range(times)]

    def add(self, op: str, inputs, type: TensorType, name: str, attrs: dict | Attrs = (),
            loc: Loc | None = None, sched: dict | Attrs = ()) -> Node:
        attrs = make_attrs(attrs) if isinstance(attrs, dict) else attrs
        sched = make_attrs(sched) if isinstance(sched, dict) else sched
        node = Node(self._next_id, op, tuple(inputs), attrs, type, name, loc, sched)
        self._next_id += 1
        self._nodes[node.id] = node
        for src in node.inputs:
            self._users.setdefault(src, set()).add(node.id)
        return node

    def node(self, nid: int) -> Node:
        return self._nodes[nid]

    def ids(self) -> list[int]:
        """Every node id, ascending (creation order)."""
        return sorted(self._nodes)

    def __contains__(self, nid: int) -> bool:
        return nid in self._nodes

    def user_ids(self, nid: int) -> set[int]:
        """Ids of the nodes recorded as reading `nid` (the verifier checks they agree)."""
        return self._users.get(nid, set())

    def replace_node(self, node: Node, **changes) -> Node:
        """Swap a node's payload, keeping its id: for builders, before a graph is handed on."""
        new = replace(node, **changes)
        if any(i >= new.id for i in new.inputs):
            self._id_ordered = False
        for src in set(node.inputs) - set(new.inputs):
            self._users[src].discard(node.id)
        for src in new.inputs:
            self._users.setdefault(src, set()).add(new.id)
        self._nodes[new.id] = new
        return new

    def nodes(self) -> Iterator[Node]:
        """All nodes in topological order, ties broken by id (creation order).

        A node can only be added after its inputs, so id order is that order unless a node
        was rewired to read a later one; only then is a sort needed.
        """
        order = sorted(self._nodes) if self._id_ordered else self._topological_ids()
        for nid in order:
            yield self._nodes[nid]

    def _topological_ids(self) -> list[int]:
        """Kahn's algorithm taking the smallest ready id first; nodes on a cycle (which only a
        broken graph has: the verifier reports it) are left out."""
        waiting = {nid: sum(1 for i in set(n.inputs) if i in self._nodes)
                   for nid, n in self._nodes.items()}
        ready = [nid for nid, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            nid = heapq.heappop(ready)
            order.append(nid)
            for user in self._users.get(nid, ()):
                if user in waiting:
                    waiting[user] -= 1
                    if waiting[user] == 0:
                        heapq.heappush(ready, user)
        return order

    def users(self, nid: int) -> list[Node]:
        return [self._nodes[u] for u in sorted(self._users.get(nid, ()))]

    def inputs_of(self, node: Node) -> list[Node]:
        return [self.node(i) for i in node.inputs]

    def by_name(self, name: str) -> Node:
        for node in self._nodes.values():
            if node.name == name:
                return node
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self._nodes)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return (self.model == other.model and self.outputs == other.outputs
                and self.sizes == other.sizes and self.policy == other.policy
                and self.deploy == other.deploy and self.steady == other.steady
                and list(self.nodes()) == list(other.nodes()))
