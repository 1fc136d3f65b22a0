"""fuse: group ops into kernels, so values inside a kernel never touch off-chip memory.

Before:  %s = matmul(%x, %w_gate) : ...          (three kernels, scores stored and reloaded)
         %p = sigmoid(%s) ...
         %i = topk(%p, %bias) ...
After:   the same nodes, each with sched {kernel="gemm.12"}     (one kernel)

Rules, tried in order at each ungrouped node in topological order; the first that matches
forms a group (a node joins only when all its other inputs are ready: sources, constants, or
values of groups formed before, so every group is a convex piece of the graph):
- flash_attention: scores = sum of contractions (Q K^T) -> [scale] -> [causal mask] -> softmax
  -> contraction with V, each value used only by the next: scores stay on chip. Keys gathered
  by index (sparse attention over selected cache rows) join it: the kernel loads the selected
  rows, so the gathered keys never exist off-chip.
- index_logits: scores Q K^T (heads on the rows) -> relu -> contraction of the heads with a
  weight per head (DeepSeek's lightning indexer): the [heads, keys] scores never leave the
  chip (not on split cube/vector cores, whose vector unit cannot read the accumulator).
- gemm: a contraction and its epilogue: elementwise ops (dequantise/scale, bias, activation,
  residual add, requantise) on its output tile, then, when a whole row of the output fits on
  chip, whole-row ops such as gate top-k (gate + sigmoid + top-k is one kernel).
- vector: elementwise and row-wise ops, casts, concat and cache appends on the same rows
  (norm + quantise prologues, the MLA latent path into the KV cache).
Anything else runs as a kernel of its own.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from compiler.ir.graph import Graph, Node
from compiler.ir.ops import OPS, written_target
from compiler.ir.ops.contraction import contraction_of
from compiler.kernels.gemm_estimate import gemm_cycles, gemm_problem
from compiler.kernels.groups import default_kind, kernel_groups, needs_kernel
from compiler.kernels.rows import (row_count, row_view_base, selectable, streamable,
                                   whole_rows_fit)
from compiler.kernels.score_scale import score_scale
from compiler.passes import PassContext

VECTOR_CATEGORIES = ("elementwise", "rowwise", "reduction")
VECTOR_OPS = ("concat", "cache_write", "topk", "topk_weights")


def is_vector(node: Node) -> bool:
    if node.op == "concat":
        return node.attr("axis") % node.type.rank == node.type.rank - 1
    return OPS[node.op].category in VECTOR_CATEGORIES or node.op in VECTOR_OPS


class _State:
    def __init__(self, graph: Graph, ctx: PassContext):
        self.graph, self.ctx = graph, ctx
        self.group_of: dict[int, str] = {}
        self.count = 0

    def ready(self, node_id: int, members: set[int]) -> bool:
        """Available to a group being formed: grouped earlier, a source, a view of such, or a
        member seen through reshapes that keep rows whole."""
        node = self.graph.node(node_id)
        if node_id in members or row_view_base(self.graph, node) in members:
            return True
        if not needs_kernel(node):
            return all(self.ready(i, members) and i not in members for i in node.inputs) \
                if OPS[node.op].category == "view" else True
        return node_id in self.group_of

    def only_user(self, node: Node) -> Node | None:
        users = self.graph.users(node.id)
        return users[0] if len(users) == 1 and node.id not in self.graph.outputs else None

    def claim(self, kind: str, members: list[int]) -> None:
        name = f"{kind}.{self.count}"
        self.count += 1
        for m in members:
            self.group_of[m] = name


def sparse_attention(node: Node, st: _State) -> tuple[str, list[int]] | None:
    """Gathers of cache rows whose every use is one attention's keys (and values)."""
    g = st.graph
    if not _gatherable(g, node, st):
        return None
    for user in g.users(node.id):
        if OPS[user.op].category != "contraction" or user.inputs[1] != node.id:
            continue
        found = flash_attention(user, st, gathers=True)
        if found is None:
            continue
        members = set(found[1])
        gathers = [i for i in members if g.node(i).op == "gather"]
        if node.id in gathers and all(_used_only_by(g, i, members) for i in gathers):
            return found
    return None


def _gatherable(g: Graph, node: Node, st: _State) -> bool:
    return node.op == "gather" and all(st.ready(i, set()) for i in node.inputs)


def _used_only_by(g: Graph, node_id: int, members: set[int]) -> bool:
    """Every use of the value is a member, directly or through views."""
    return node_id not in g.outputs and all(
        u.id in members or (OPS[u.op].category == "view" and _used_only_by(g, u.id, members))
        for u in g.users(node_id))


def flash_attention(node: Node, st: _State, gathers: bool = False
                    ) -> tuple[str, list[int]] | None:
    """`gathers`: keys (and values) may be gathers of ready cache rows, which join."""
    g = st.graph
    if OPS[node.op].category != "contraction":
        return None
    members, tail = [node.id], node
    members += _keys_gathered(g, node, st, gathers)
    while True:
        user = st.only_user(tail)
        if user is None:
            return None
        terms = [g.node(i) for i in user.inputs if i != tail.id]
        if user.op == "add" and all(_is_score_term(g, t, st, members, gathers) for t in terms):
            for t in terms:
                members += [t.id] + _keys_gathered(g, t, st, gathers)
            members.append(user.id)
        elif score_scale(g, user) is not None:
            members.append(user.id)
        elif user.op in ("causal_mask", "softmax"):
            members.append(user.id)
        else:
            return None
        tail = user
        if user.op == "softmax":
            break
    pv = st.only_user(tail)
    if pv is None or OPS[pv.op].category != "contraction" or pv.inputs[0] != tail.id:
        return None
    values = g.node(pv.inputs[1])
    source = values.inputs[0] if OPS[values.op].category == "view" else values.id
    if not (source in members and g.node(source).op == "gather"
            or st.ready(values.id, set(members))):
        return None
    return "flash_attention", sorted(members + [pv.id])


def _keys_gathered(g: Graph, term: Node, st: _State, gathers: bool) -> list[int]:
    keys = g.node(term.inputs[1])
    return [keys.id] if gathers and _gatherable(g, keys, st) else []


def _is_score_term(g: Graph, node: Node, st: _State, members, gathers: bool = False) -> bool:
    """Another Q K^T contraction summed into the scores, with ready operands (its keys may be
    a gather that joins)."""
    return (OPS[node.op].category == "contraction" and st.only_user(node) is not None
            and st.ready(node.inputs[0], set(members))
            and (st.ready(node.inputs[1], set(members))
                 or bool(_keys_gathered(g, node, st, gathers))))


def index_logits(node: Node, st: _State) -> tuple[str, list[int]] | None:
    g = st.graph
    if OPS[node.op].category != "contraction" or st.ctx.target is None \
            or st.ctx.target.matrix.results_to_vector == "memory":
        return None
    relu = st.only_user(node)
    weigh = st.only_user(relu) if relu is not None and relu.op == "relu" else None
    if weigh is None or OPS[weigh.op].category != "contraction" \
            or weigh.inputs[0] != relu.id or not st.ready(weigh.inputs[1], {node.id}):
        return None
    c = contraction_of([g.node(i).type for i in node.inputs], node.attr_dict)
    cw = contraction_of([relu.type, g.node(weigh.inputs[1]).type], weigh.attr_dict)
    queries = c.batch + "".join(x for x in c.m if x not in cw.k)   # the rest are heads
    heads_summed = cw.k and set(cw.k) <= set(c.m) and cw.spec.split("->")[1] == queries + c.n
    if c.spec.split("->")[1] != c.batch + c.m + c.n or not heads_summed \
            or g.node(weigh.inputs[1]).type.numel != c.size(queries + cw.k):
        return None
    return "index_logits", [node.id, relu.id, weigh.id]


def gemm(node: Node, st: _State) -> tuple[str, list[int]] | None:
    g = st.graph
    if OPS[node.op].category != "contraction":
        return None
    c = contraction_of([g.node(i).type for i in node.inputs], node.attr_dict)
    if c.spec.split("->")[1] != c.batch + c.m + c.n:
        return "gemm", [node.id]               # output needs a transposed store: no epilogue
    members, tail = [node.id], node
    while (user := st.only_user(tail)) is not None and _epilogue_op(g, user, node, st, members):
        members.append(user.id)
        tail = user
    users = g.users(tail.id)
    if users and tail.id not in g.outputs and all(u.op in ("topk", "topk_weights") for u in users) \
            and all(st.ready(i, set(members) | {u.id for u in users}) for u in users
                    for i in u.inputs) \
            and _whole_rows_pay(g, node, tail, users, st.ctx):
        members += [u.id for u in sorted(users, key=lambda u: u.id)]
    return "gemm", members


def _epilogue_op(g: Graph, user: Node, head: Node, st: _State, members) -> bool:
    if OPS[user.op].category != "elementwise" or user.type.shape != head.type.shape:
        return False
    if user.op == "cast" and not _blocks_survive_the_view(g, head, user):
        return False
    for i in user.inputs:
        v = g.node(i)
        if i in members:
            if _scaled(v):                      # a quantised value is read from memory
                return False
            continue
        lead = math.prod(v.type.shape[:-1])
        if not st.ready(i, set(members)) or lead not in (1, math.prod(head.type.shape[:-1])):
            return False
    return True


def _blocks_survive_the_view(g: Graph, head: Node, cast: Node) -> bool:
    """The epilogue sees values as [G, M, C]; a quantising cast whose scale blocks span several
    rows keeps them only when M is the value's own second-to-last dim (merging a batch dim
    into the rows would make blocks straddle it). Otherwise the cast is a kernel of its own."""
    scaling = cast.type.format.scaling
    if scaling is None or scaling.block[0] == 1 or len(cast.type.shape) < 3:
        return True
    c = contraction_of([g.node(i).type for i in head.inputs], head.attr_dict)
    return c.size(c.m) == cast.type.shape[-2]


def _whole_rows_pay(g: Graph, head: Node, tail: Node, users: list[Node],
                    ctx: PassContext) -> bool:
    """Fuse row-wise ops (gate top-k) into the GEMM only when the estimate says so: one tile
    must then span all of N, which can leave cores idle; apart, the GEMM tiles freely but its
    output makes a round trip through memory and the row-wise ops pay a launch."""
    target = ctx.target
    widths = tuple((f"w{k}", u.type.format.dtype, u.type.shape[-1], False, "vector")
                   for k, u in enumerate(users))
    try:
        fused = gemm_cycles(gemm_problem(g, head, target, store_acc=False, whole_rows=True,
                                         epilogue=widths)[0], target)
        alone = gemm_cycles(gemm_problem(g, head, target)[0], target)
    except ValueError:            # the GEMM cannot run on this target: the tile pass says why
        return False
    round_trip = 2 * tail.type.nbytes / target.machine.reach().miss_bytes_per_cycle
    launch = target.launch_cycles(ctx.deployment.launch if ctx.deployment else "stream")
    fuse = fused <= alone + round_trip + launch
    for name in g.model_names(head.name):               # once per layer it decides for
        ctx.notes.append(f"{name}: {' + '.join(u.op for u in users)} "
                         f"{'fused into' if fuse else 'kept apart from'} the GEMM (estimate "
                         f"{fused:,.0f} cycles fused vs "
                         f"{alone + round_trip + launch:,.0f} apart)")
    return fuse


def _lowers(g: Graph, members: list[int], capacity: int) -> bool:
    """Can the vector templates lower this group: its whole rows fit the buffer, or its one
    row-wise op streams them in column chunks (a 12,288-wide LayerNorm with the residual add
    before it), or it is a top-k the selection template streams (a mask, then the top-2048)?"""
    nodes = [g.node(i) for i in members]
    return whole_rows_fit(g, members, capacity) or streamable(nodes, g) or selectable(nodes, g)


def vector(node: Node, st: _State) -> tuple[str, list[int]] | None:
    g = st.graph
    if not is_vector(node):
        return None
    R = row_count(node, g)
    capacity = st.ctx.target.buffer_for("vector")[1].bytes
    members = [node.id]
    grew = True
    while grew:
        grew = False
        for m in list(members):
            if _scaled(g.node(m)):            # its users read it, with its scales, from memory
                continue
            for u in _users_through_row_views(g, m):
                if u.id in members or u.id in st.group_of or not is_vector(u) \
                        or row_count(u, g) != R:
                    continue
                extra = _absorbable_inputs(u, st, set(members), R)
                if extra is None or not _lowers(g, members + extra + [u.id], capacity):
                    continue
                members += extra + [u.id]
                grew = True
    return "vector", sorted(set(members))


def _scaled(node: Node) -> bool:
    """A block-scaled value: within a kernel its elements mean nothing without their scales,
    which only a load (or a GEMM operand's dequantisation) pairs with them, so a kernel that
    makes one stores it and its users are another kernel."""
    return node.type.format.scaling is not None


def _users_through_row_views(g: Graph, node_id: int) -> list[Node]:
    out = []
    for u in g.users(node_id):
        out.extend(_users_through_row_views(g, u.id) if row_view_base(g, u) == node_id else [u])
    return out


def _absorbable_inputs(u: Node, st: _State, members: set[int], R: int) -> list[int] | None:
    """u's inputs not yet available that can join with it (vector ops on the same rows whose
    own inputs are ready); None when some input can be neither."""
    g, extra = st.graph, []
    for i in u.inputs:
        v = g.node(i)
        if st.ready(i, members):
            if i not in members and math.prod(v.type.shape[:-1]) not in (R, 1) \
                    and v.op != "const" and i != written_target(u):
                return None
            continue
        if i in st.group_of or not is_vector(v) or row_count(v, g) != R or _scaled(v) \
                or not all(st.ready(j, members) for j in v.inputs):
            return None
        extra.append(i)
    return extra


RULES = [sparse_attention, flash_attention, index_logits, gemm, vector]


@dataclass(frozen=True)
class Fuse:
    name: str = "fuse"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        st = _State(graph, ctx)
        first_note = len(ctx.notes)
        for node in graph.nodes():
            if node.id in st.group_of or not needs_kernel(node):
                continue
            for rule in RULES:
                found = rule(node, st)
                if found:
                    st.claim(*found)
                    break
            else:
                st.claim(default_kind(node), [node.id])
        if any(s.period > 1 for s in graph.steady):
            ctx.notes[first_note:] = in_layer_order(ctx.notes[first_note:])
        out = graph.empty_like()
        for node in graph.nodes():
            sched = dict(node.sched)
            if node.id in st.group_of:
                sched["kernel"] = st.group_of[node.id]
            out.add(node.op, node.inputs, node.type, node.name, node.attrs, node.loc, sched)
        out.outputs = list(graph.outputs)
        return out


_NOTE_LAYER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.(\d+)\.")


def in_layer_order(notes: list[str]) -> list[str]:
    """Notes ordered by the model layer they name, as building every layer gives them: a
    window's cycle of p layers notes each of its layers for every cycle it stands for (layer 7
    for 7, 9, 11, ..., then layer 8), where the model's layers come in turn. A note naming no
    layer keeps its place after the layer noted before it."""
    keyed, layer = [], -1
    for note in notes:
        m = _NOTE_LAYER.match(note)
        layer = int(m[1]) if m else layer
        keyed.append((layer, note))
    return [note for _, note in sorted(keyed, key=lambda kn: kn[0])]


def kernel_stats(graph: Graph) -> tuple[int, int]:
    """(kernels, off-chip bytes) of a graph as grouped: per kernel, the bytes of the values
    it reads from memory and of those it writes back (a lone op's own byte counts)."""
    groups = kernel_groups(graph)
    copies = [graph.copies(grp.nodes[0].name) for grp in groups]
    return sum(copies), sum(_group_bytes(graph, grp) * n for grp, n in zip(groups, copies))


def _group_bytes(graph: Graph, group) -> int:
    def counts(n: Node):
        ins = [graph.node(i).type for i in n.inputs]
        return OPS[n.op].read_bytes(ins, n.type, n.attr_dict), \
            OPS[n.op].written_bytes(ins, n.type, n.attr_dict)
    if len(group.nodes) == 1:
        return sum(counts(group.nodes[0]))
    written = {written_target(n) for n in group.nodes}       # a cache appended to: not read
    read = sum(v.type.nbytes for v in group.inputs if v.op != "const" and v.id not in written)
    return read + sum(counts(n)[1] for n in group.outputs)
