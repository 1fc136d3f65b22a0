"""Does a deployment fit its devices' memory, and if not, which is the smallest that does?

A device holds its weights, its KV caches and the activations alive at once. Weights and
caches are the per-device graph's sources. Activations are the values that cross kernel
boundaries (values inside a fused kernel never reach memory), each alive from the kernel that
writes it to the last kernel that reads it; the peak of their sum over the launch order.

The suggestion is screened from the single-replica graph (under expert parallelism over D
devices a device holds ceil(E / D) of every routed expert weight, everything else replicated,
its caches those of its own requests), then confirmed on the candidate's own sharded and fused
graph; tensor-parallel candidates are checked that way directly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.errors import DscError
from compiler.ir.graph import Graph
from compiler.kernels.groups import kernel_groups
from compiler.passes.shard import expert_values
from isa.deployment import Deployment, make_deployment
from isa.target_schema import Target

GB = 1e9


@dataclass(frozen=True)
class Need:
    weights: int
    caches: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.caches + self.activations

    def __str__(self) -> str:
        return (f"weights {size(self.weights)}, KV cache {size(self.caches)}, "
                f"activations {size(self.activations)}")

    def in_memory(self, memory: str, policy: dict[str, str], default: str) -> int:
        """Bytes of the roles the placement policy puts in `memory`."""
        parts = {"weights": self.weights, "kv_cache": self.caches,
                 "activations": self.activations}
        return sum(n for role, n in parts.items() if policy.get(role, default) == memory)


def size(nbytes: float) -> str:
    return f"{nbytes / GB:,.1f} GB" if nbytes >= 0.1 * GB else f"{nbytes / 1e6:,.1f} MB"


def device_need(graph: Graph, micro_batches: int = 1) -> Need:
    """`graph` is one micro-batch's: each has its own caches and activations (counted as if
    both peaked at once), the weights serve them all."""
    return Need(source_bytes(graph, "weight"), source_bytes(graph, "cache") * micro_batches,
                activation_peak(graph) * micro_batches)


def source_bytes(graph: Graph, op: str, only=None) -> int:
    """Bytes of the model's sources of one kind (of those in `only`, if given), counting each
    node of a steady iteration for every iteration it stands for."""
    return sum(n.type.nbytes * graph.copies(n.name) for n in graph.nodes()
               if n.op == op and (only is None or n.id in only))


def activation_peak(graph: Graph) -> int:
    groups = kernel_groups(graph)
    last_use: dict[int, int] = {}
    for k, group in enumerate(groups):
        for v in group.inputs:
            last_use[v.id] = k
    for o in graph.outputs:
        last_use[o] = len(groups)
    live, peak = 0, 0
    ending: dict[int, int] = {}
    for k, group in enumerate(groups):
        for n in group.outputs:
            if n.op != "cache_write":
                live += n.type.nbytes
                end = last_use.get(n.id, k)
                ending[end] = ending.get(end, 0) + n.type.nbytes
        peak = max(peak, live)
        live -= ending.pop(k, 0)
    return peak


def check_fit(graph: Graph, replica: Graph, target: Target, dep: Deployment,
              policy: dict[str, str] | None = None) -> None:
    """`graph`: what one device runs; `replica`: the model before sharding (for suggestions);
    `policy`: the memory each role is placed in (isa/placement.py), the default one else.
    Every memory must hold what is placed in it; suggestions are for the default one."""
    policy = policy or {}
    machine = target.machine
    default = machine.default_memory
    need = device_need(graph, dep.micro_batches)
    for memory in dict.fromkeys(policy.values()):
        placed, room = need.in_memory(memory, policy, default), machine.bytes_of(memory)
        if memory != default and placed > room:
            which = " and ".join(r for r, m in policy.items() if m == memory)
            raise DscError(f"{graph.model} does not fit {target.name}'s {memory}: the {which} "
                           f"placed there need {size(placed)} per device and it holds "
                           f"{size(room)}", expected="another placement (--place), or more "
                           "devices (--devices, --plan)")
    have = machine.bytes_of()
    if need.in_memory(default, policy, default) <= have:
        return
    where = f"one {target.name}" if dep.devices == 1 else \
        f"a device of {dep.devices} x {target.name} ({dep.plan_text})"
    best = smallest_plan(replica, target, need.activations, dep.micro_batches, policy)
    largest = max((need.weights, "weights"), (need.caches, "KV cache"),
                  (need.activations, "activations"))
    hint = (f"the smallest plan that fits: --devices {best[0].devices} --plan "
            f"{_plan_arg(best[0], replica)} (per device: {best[1]})" if best else
            "no plan fits: neither expert parallelism nor tensor parallelism over up to 64 "
            f"devices brings a device under {size(have)} (the largest part here: "
            f"{largest[1]}, {size(largest[0])})")
    elsewhere = ", ".join(f"{role} in {m}" for role, m in policy.items() if m != default)
    raise DscError(f"{graph.model} does not fit {where}: it needs "
                   f"{size(need.in_memory(default, policy, default))} per device ({need}"
                   + (f"; {elsewhere} not counted" if elsewhere else "")
                   + f") and a device has {size(have)}", expected=hint)


def smallest_plan(replica: Graph, target: Target, activations: int, micro_batches: int = 1,
                  policy: dict[str, str] | None = None):
    """(deployment, need) of the fewest devices that fit with data-parallel attention and
    expert parallelism, else with the whole model tensor parallel; None when neither does.

    Candidates are screened from the replica's tensor sizes, and only one that passes is
    compiled (sharded, fused) to check it: expert parallelism with this device's activations
    (compiling adds the all-to-all buffers and rounds expert rows up to whole experts per
    device); tensor parallelism over n devices with every weight and cache split n ways and no
    activations, a bound no split can beat, so a plan that cannot fit is never compiled."""
    if target.system is None:
        return None
    _, expert_weights = expert_values(replica)
    experts = max((replica.node(w).type.shape[0] for w in expert_weights), default=1)
    routed = source_bytes(replica, "weight", expert_weights)
    other = source_bytes(replica, "weight") - routed
    caches = source_bytes(replica, "cache") * micro_batches
    per_node = target.system.devices_per_node
    have = target.machine.bytes_of()
    policy, default = policy or {}, target.machine.default_memory
    for devices in _candidates(per_node, experts):
        need = Need(other + routed * math.ceil(experts / devices) // experts, caches, activations)
        if need.in_memory(default, policy, default) > have:
            continue
        plan = {"attn": "dp", "moe": "ep", "micro_batches": micro_batches}
        found = _fits(replica, target, make_deployment(devices, per_node, plan), have, policy)
        if found:
            return found
    for n in (2, 4, 8, 16, 32, 64):      # then the whole model tensor parallel
        bound = Need(-(-(other + routed) // n), -(-caches // n), 0)
        if bound.in_memory(default, policy, default) > have:
            continue
        plan = {"attn": f"tp{n}", "moe": f"tp{n}", "micro_batches": micro_batches}
        found = _fits(replica, target, make_deployment(n, per_node, plan), have, policy)
        if found:
            return found
    return None


def _fits(replica: Graph, target: Target, dep: Deployment, have: float, policy: dict):
    try:
        need = _sharded_need(replica, target, dep)
    except DscError:                     # a plan this model cannot take (sizes, experts)
        return None
    default = target.machine.default_memory
    return (dep, need) if need.in_memory(default, policy, default) <= have else None


def _plan_arg(dep: Deployment, replica: Graph) -> str:
    """The --plan text of a suggestion, without the routed-expert item for a dense model."""
    if any(n.op == "dispatch" for n in replica.nodes()):
        return dep.plan_text
    return ",".join(item for item in dep.plan_text.split(",") if not item.startswith("moe="))


def _sharded_need(replica: Graph, target: Target, dep: Deployment) -> Need:
    from compiler.passes import PassContext, run_pipeline
    from compiler.passes.fuse import Fuse
    from compiler.passes.precision import Precision
    from compiler.passes.shard import Shard
    graph = run_pipeline(replica, PassContext(target, deployment=dep),
                         [Shard(), Precision(), Fuse()])
    return device_need(graph, dep.micro_batches)


def _candidates(per_node: int, experts: int):
    """1, 2, 4 ... up to a node, then whole nodes, until every expert has its own device."""
    d = 1
    while d < per_node:
        yield d
        d *= 2
    nodes = 1
    while (nodes - 1) * per_node < max(experts, per_node):
        yield nodes * per_node
        nodes += 1
