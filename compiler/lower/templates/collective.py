"""An all-to-all as the sends one device makes, one kernel per link.

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
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph
from compiler.ir.ops.collective import chunk
from compiler.kernels.groups import Group
from compiler.lower.kernel_builder import KernelBuilder
from compiler.lower.tensors import TensorMap
from isa.expr import Const, Expr, add, mul
from isa.program import Box, TensorDecl
from isa.target_schema import Target


def lower_collective(group: Group, graph: Graph, tmap: TensorMap, target: Target):
    """An all-to-all sends chunk p of its input to peer p; an all-gather (tensor parallelism)
    sends its whole input to every peer. Either way what peer p sends lands in block p of
    the output."""
    node = group.nodes[0]
    if node.op == "all_to_all":
        devices, split, concat = node.attr("devices"), node.attr("split"), node.attr("concat")
    elif node.op == "all_gather":
        devices, split, concat = node.attr("devices"), None, node.attr("axis")
    else:
        raise ValueError(f"no lowering for collective '{node.op}'")
    machine = target.machine
    if target.system is None:
        raise ValueError(f"target {target.name} has no [system] table: it cannot reach other "
                         "devices")
    x, y = tmap.of(graph.node(node.inputs[0])), tmap.of(node)
    concat %= len(x.shape)
    split = None if split is None else split % len(x.shape)
    pairs = [(x, y)]
    if tmap.scales_of(x) is not None:
        pairs.append((tmap.scales_of(x), tmap.scales_of(y)))
    per_node = node_mates(devices, target.system.devices_per_node)
    remote = devices - per_node
    route_k = node.attr_dict.get("route_k", 0) if node.op == "all_to_all" else 0
    crossing = once_per_node(max(x.shape[0], y.shape[0]), devices, per_node, route_k) \
        if route_k and remote else 1.0
    kernels = []
    # Sending each token once per node moves `crossing` of the rows bound for remote peers:
    # as many whole chunks (a chunk can be a handful of rows, too few to cut).
    crossed = max(1, math.ceil(remote * crossing)) if remote else 0
    for scope, first, count in (("node", 1, per_node - 1), ("network", per_node, crossed)):
        if count <= 0:
            continue
        if machine.link_for(scope) is None:
            raise ValueError(f"target {target.name} has no link to "
                             f"{'the other devices of its node' if scope == 'node' else 'other nodes'}"
                             f", and this collective reaches {count} devices there")
        link = machine.link_for(scope).id
        kb = KernelBuilder(f"{node.op}_{link}", target)
        what = (f"all-to-all: split dim {split}, join dim {concat}" if split is not None else
                f"all-gather along dim {concat}")
        kb.note(f"{what} over {devices} devices, {per_node} in this node; "
                f"peers {first}..{first + count - 1} over {link}")
        if scope == "network" and crossing < 1:
            kb.note(f"each token crosses once per node: {crossing:.4f} of the rows of the "
                    f"{remote} remote peers (top-{route_k} of {max(x.shape[0], y.shape[0])} "
                    "experts)")
        params = [(kb.param(f"x{i}", src), kb.param(f"y{i}", dst, output=True), src, dst)
                  for i, (src, dst) in enumerate(pairs)]
        send = lambda peer, over: [
            kb.emit("net.send", _block(py, dst, concat, _block_size(src, split, concat, devices),
                                       peer), _source(px, src, split, devices, peer), link=over)
            for px, py, src, dst in params]
        with kb.loop("p", count) as p:
            send(add(p, Const(first)), link)
        if scope == "node" and route_k and remote:
            # the node-mates' share of what crosses to or from the remote peers: forwarded
            # here on arrival (dispatch), gathered here before it leaves (combine)
            forwarded = math.ceil(remote * (per_node - 1) / per_node)
            kb.note(f"and {forwarded} chunks of remote peers' rows, forwarded within the node")
            with kb.loop("r", forwarded) as r:
                send(add(r, Const(per_node)), link)
        if not kernels:                         # this device's own chunk: a local copy
            send(Const(0), "local")
        kernels.append(kb.build())
    return kernels


def once_per_node(experts: int, devices: int, per_node: int, k: int) -> float:
    """The share of the rows bound for a remote node that must cross to it when each token
    crosses once per node and routing is uniform: a token's k experts (k routed copies) hit a
    node holding n of the E experts with probability 1 - C(E-n, k) / C(E, k), and it then
    crosses once instead of k n / E times on average."""
    n = min(experts, per_node * math.ceil(experts / devices))
    hit = 1 - math.comb(experts - n, k) / math.comb(experts, k)
    return min(1.0, hit * experts / (k * n))


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
