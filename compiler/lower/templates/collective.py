"""A collective as the sends one device makes, one kernel per link.

The input splits into `devices` chunks along `split`; chunk j goes to device j, into block j
(along `concat`) of its output. Numbering devices from this one, chunk 0 stays here, chunks
1 .. per_node-1 go to the other devices of the node over NVLink, the rest over the network:

    kernel all_to_all_nvlink(x, out y)            launch ... stream=nvlink
      loop p 7                                    (the node's other devices)
        net.send  @y[block p+1], @x[chunk p+1]  link=nvlink
      net.send    @y[block 0], @x[chunk 0]      link=local
    kernel all_to_all_network(x, out y)           launch ... stream=network
      loop p 24
        net.send  @y[block p+8], @x[chunk p+8]  link=network

Each kernel runs on its link's stream, so the two links work at once and the cores are free
for other kernels. When the devices do not fill whole nodes, the sends are those of a device
in the partly filled last node (fewest node-mates, most network peers): the slowest sets the
pace. One engine sends one chunk after another: every send has the whole link's
bandwidth and the link's latency overlaps the next send. Block scales travel with their
elements, chunk for chunk.

An expert all-to-all (one with `wire_*` rows) sends routed rows instead of chunks: each link
carries the rows the shard pass worked out for the hottest device (compiler/expert_load.py),
as one message per peer, or one row per message when there are fewer rows than peers, taken
from the rows of the input and landing in rows of the output (both viewed as [rows, width]).
A send costs the bytes of the larger of its two boxes: in an exchange every device sends one
and receives the other, and the busier direction sets the time. A dispatch whose senders must
first learn how many rows each peer will send them (`counts`: DeepEP's normal kernels; its
low-latency kernels write into fixed buffers instead) exchanges its counts before any row: a
round trip on each link (the counts out, the receivers' offsets back).
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph
from compiler.ir.ops.collective import chunk
from compiler.kernels.groups import Group
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from isa.expr import Const, Expr, add, mul
from isa.program import Box, TensorDecl, ViewStep
from isa.target_schema import Target

def lower_collective(group: Group, graph: Graph, tmap: TensorMap, target: Target):
    """An all-to-all sends chunk p of its input to peer p; an all-gather (tensor parallelism)
    sends its whole input to every peer. Either way what peer p sends lands in block p of
    the output."""
    node = group.nodes[0]
    if node.op not in ("all_to_all", "all_gather"):
        raise ValueError(f"no lowering for collective '{node.op}'")
    if target.system is None:
        raise ValueError(f"target {target.name} has no [system] table: it cannot reach other "
                         "devices")
    if node.op == "all_to_all" and any(node.attr(f"wire_{s}") for s in ("node", "network")):
        return _routed(node, graph, tmap, target)
    if node.op == "all_to_all":
        devices, split, concat = node.attr("devices"), node.attr("split"), node.attr("concat")
    else:
        devices, split, concat = node.attr("devices"), None, node.attr("axis")
    x, y = tmap.of(graph.node(node.inputs[0])), tmap.of(node)
    concat %= len(x.shape)
    split = None if split is None else split % len(x.shape)
    pairs = _with_scales([(x, y)], tmap)
    per_node = node_mates(devices, target.system.devices_per_node)
    what = (f"all-to-all: split dim {split}, join dim {concat}" if split is not None else
            f"all-gather along dim {concat}")
    kernels = []
    for scope, first, count in (("node", 1, per_node - 1), ("network", per_node,
                                                            devices - per_node)):
        if count <= 0:
            continue
        link = _link(target, scope, count)
        kb = KernelBuilder(f"{node.op}_{link}", target)
        kb.note(f"{what} over {devices} devices, {per_node} in this node; "
                f"peers {first}..{first + count - 1} over {link}")
        params = _params(kb, pairs)
        send = lambda peer, over: [
            kb.emit("net.send", _block(py, dst, concat, _block_size(src, split, concat, devices),
                                       peer), _source(px, src, split, devices, peer), link=over)
            for px, py, src, dst in params]
        with kb.loop("p", count) as p:
            send(add(p, Const(first)), link)
        if not kernels:                         # this device's own chunk: a local copy
            send(Const(0), "local")
        kernels.append(kb.build())
    return kernels


def _routed(node, graph: Graph, tmap: TensorMap, target: Target):
    """An expert all-to-all: the rows of each link, as messages to its peers."""
    devices = node.attr("devices")
    x, y = tmap.of(graph.node(node.inputs[0])), tmap.of(node)
    pairs = _with_scales([(_rows(tmap, x), _rows(tmap, y))], tmap)
    per_node = node_mates(devices, target.system.devices_per_node)
    what = "dispatch" if node.attr("split") % len(x.shape) == 0 else "combine"
    kernels = []
    for scope, peers in (("node", per_node - 1), ("network", devices - per_node)):
        wire = node.attr(f"wire_{scope}")
        if peers <= 0 or wire <= 0:
            continue
        link = _link(target, scope, peers)
        kb = KernelBuilder(f"all_to_all_{link}", target)
        rows = math.ceil(wire / min(peers, math.ceil(wire)))
        sends = math.ceil(wire / rows)
        kb.note(f"expert {what} over {devices} devices, {per_node} in this node: "
                f"{wire:,.1f} rows over {link}, the busier direction of the hottest device, "
                f"as {sends} messages of {rows} row{'s' if rows > 1 else ''}")
        params = _params(kb, pairs)
        if node.attr("counts"):
            _exchange_counts(kb, tmap, node, peers, link)
        send = lambda start, n, over: [
            kb.emit("net.send", _slab(py, dst, 0, start, n), _slab(px, src, 0, start, n),
                    link=over) for px, py, src, dst in params]
        with kb.loop("p", sends) as p:
            send(mul(p, Const(rows)), rows, link)
        if not kernels and node.attr("wire_local") > 0:     # its own tokens, copied here
            send(Const(0), math.ceil(node.attr("wire_local")), "local")
        kernels.append(kb.build())
    return kernels


def _exchange_counts(kb: KernelBuilder, tmap: TensorMap, node, peers: int, link: str) -> None:
    """Before any row moves, each device sends every peer how many rows it will send to each
    of the peer's expert slots, and each peer answers with where they go: a round trip."""
    slots = max(1, node.type.shape[0])
    devices = node.attr("devices")
    counts = tmap.scratch(f"{node.name}.counts", "i32", (devices, slots))
    offsets = tmap.scratch(f"{node.name}.offsets", "i32", (devices, slots))
    kb.note(f"first the counts: {slots} per peer out, the offsets back")
    c = kb.param("counts", counts)
    o = kb.param("offsets", offsets, output=True)
    for _ in range(2):
        with kb.loop("c", peers) as p:
            kb.emit("net.send", _slab(o, offsets, 0, p, 1), _slab(c, counts, 0, p, 1),
                    link=link)
        kb.emit("sync.net")


def _rows(tmap: TensorMap, t: TensorDecl) -> TensorDecl:
    """`t` viewed as [rows, width] (its last dim)."""
    return tmap.view(t, (ViewStep("reshape", (math.prod(t.shape[:-1]), t.shape[-1])),), "rows")


def _with_scales(pairs, tmap: TensorMap):
    """Block scales travel with their elements."""
    x, y = pairs[0]
    if tmap.scales_of(x) is not None and tmap.scales_of(y) is not None:
        pairs.append((tmap.scales_of(x), tmap.scales_of(y)))
    return pairs


def _params(kb: KernelBuilder, pairs):
    return [(kb.param(f"x{i}", src), kb.param(f"y{i}", dst, output=True), src, dst)
            for i, (src, dst) in enumerate(pairs)]


def _link(target: Target, scope: str, count: int) -> str:
    link = target.machine.link_for(scope)
    if link is None:
        raise ValueError(f"target {target.name} has no link to "
                         f"{'the other devices of its node' if scope == 'node' else 'other nodes'}"
                         f", and this collective reaches {count} devices there")
    return link.id


def node_mates(devices: int, per_node: int) -> int:
    """Devices in the node of the device that sends the most over the network: a partly
    filled last node's, when the devices do not fill whole nodes (the slowest sets the pace)."""
    last = devices % per_node
    return last if devices > per_node and last else min(per_node, devices)


def _source(param: str, t: TensorDecl, split: int | None, devices: int, j: Expr) -> Box:
    """What goes to peer j: chunk j along `split`, or the whole input (no split)."""
    if split is None:
        return Box(param, tuple(Const(0) for _ in t.shape), tuple(t.shape))
    return _chunk(param, t, split, devices, j)


def _block_size(t: TensorDecl, split: int | None, concat: int, devices: int) -> int:
    """The extent along `concat` of what one peer sends."""
    return chunk(t.shape[split], devices) if split == concat else t.shape[concat]


def _chunk(param: str, t: TensorDecl, axis: int, devices: int, j: Expr) -> Box:
    size = chunk(t.shape[axis], devices)
    return _slab(param, t, axis, mul(j, Const(size)), size)


def _block(param: str, t: TensorDecl, axis: int, size: int, j: Expr) -> Box:
    return _slab(param, t, axis, mul(j, Const(size)), size)


def _slab(param: str, t: TensorDecl, axis: int, start: Expr, size: int) -> Box:
    """The whole tensor but `size` entries of `axis` from `start` (clipped at its end)."""
    starts = tuple(start if d == axis else Const(0) for d in range(len(t.shape)))
    sizes = tuple(size if d == axis else n for d, n in enumerate(t.shape))
    return Box(param, starts, sizes)
