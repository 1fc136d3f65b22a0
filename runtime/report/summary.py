"""Numbers derived from a run, in one place: per-launch utilisation and bound, unit totals.

A kernel's *bound* is the resource it kept busiest, as a fraction of that resource's capacity
over the kernel's duration: the matrix unit ("compute"), the vector unit ("vector"), or a
memory or link family of the target's machine by its name ("memory", "l2", "link" between
dies, "nvlink", "network", or what a target file declares, such as "host"), scored as the
busiest instance (one die's memory, one direction of a link) or the whole family. When even the
busiest is under half used, the kernel is "latency"-bound: its time goes to dependency
chains, pipeline fill and drain, not throughput.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from isa.target_schema import Target
from runtime.interpreter import LaunchRecord, RunResult

UNIT_BOUNDS = {"mm": "compute", "vec": "vector", "fix": "fixed_pipe"}
LATENCY_BELOW = 0.5


@dataclass(frozen=True)
class LaunchSummary:
    name: str
    kernel: str
    start: float
    end: float
    flops: float
    bytes_offchip: float
    utilization: dict[str, float]
    bound: str
    top_stall: str

    @property
    def cycles(self) -> float:
        return self.end - self.start


def offchip_bytes(result, machine) -> float:
    """Bytes a kernel moved to and from the memories tensors live in (every memory that is
    not a cache: HBM, and a CPU's memory or a pool where tensors are placed)."""
    return sum(result.resource_bytes.get(family, 0.0) for family in machine.placeable)


def capacity_per_cycle(target: Target) -> dict[str, float]:
    """What each report resource can carry per cycle: each instance, and each family of
    several instances (every die's memory together) under the family's name."""
    per = target.machine.capacity
    out = dict(per)
    for family, ids in target.machine.family_totals.items():
        out[family] = sum(per[r] for r in ids) or 1e-30
    return out


def _unit_capacity(unit: str, target: Target) -> int:
    """Cores a unit key stands for: every core, or one die's ("mm@d1")."""
    return target.chip.cores_per_die if "@d" in unit else target.cores


def utilization(rec: LaunchRecord, target: Target) -> dict[str, float]:
    cycles = max(rec.end - rec.start, 1e-9)
    r = rec.result
    util = {unit: busy / (_unit_capacity(unit, target) * cycles)
            for unit, busy in r.unit_busy.items()}
    capacity = capacity_per_cycle(target)
    for resource, nbytes in r.resource_bytes.items():
        if resource in capacity:
            util[resource] = nbytes / (capacity[resource] * cycles)
    return util


def bound(util: dict[str, float], machine) -> str:
    """The compute unit, or the family of the memory or link, that was busiest; "latency"
    when even that was under half used. A memory or link counts as a whole family and as
    each instance: work that saturates one die's memory, or the die-to-die link one way,
    while the other die's stays idle is bound by that instance."""
    def label(name: str) -> str | None:
        if name in UNIT_BOUNDS:
            return UNIT_BOUNDS[name]
        resource = machine.resources.get(name)
        return resource.family if resource is not None else (
            name if name in machine.families else None)
    scored = [(u, label(name)) for name, u in util.items() if label(name) is not None]
    best, label = max(scored, key=lambda s: s[0]) if scored else (0.0, "latency")
    return label if best >= LATENCY_BELOW else "latency"


_UNIT_OF_BOUND = {"compute": "mm", "vector": "vec", "fixed_pipe": "fix"}


def critical_unit(rec: LaunchRecord, bound_label: str) -> str | None:
    """The unit behind a launch's bound: the compute unit of a compute-, vector- or
    fixed-pipe-bound launch, else the busier of ld and st."""
    r = rec.result
    movers = [u for u in ("ld", "st") if u in r.unit_busy]
    unit = _UNIT_OF_BOUND.get(bound_label) or (
        max(movers, key=lambda u: r.unit_busy[u]) if movers else None)
    return unit if unit in r.unit_busy else None


def stall_reason(kind: str, unit: str, what: str, sources, slot_tokens, machine) -> str:
    """A wait in words: on a token from the units that signal it, on a free buffer slot
    (a token that starts above zero counts free slots), or on a resource's bandwidth."""
    if kind == "bandwidth":            # a resource, or the unit's own "port"
        resource = machine.resources.get(what)
        return f"{unit} waits for {resource.label if resource else what} bandwidth"
    units = ", ".join(sources)
    if what in slot_tokens:
        return f"{unit} waits for a free buffer ('{what}'" + (f", released by {units})" if units else ")")
    return f"{unit} waits for '{what}'" + (f" from {units}" if units else "")


def top_stall(rec: LaunchRecord, bound_label: str, machine) -> str:
    """The largest wait of the unit behind the bound (summed over the launch's cores).

    Compute- and vector-bound kernels report their compute unit; memory-, L2- and
    latency-bound ones the busiest data-movement unit.
    """
    r = rec.result
    unit = critical_unit(rec, bound_label)
    if unit is None:
        return ""
    stalls = [(t, ("token", tok)) for (u, tok), t in sorted(r.token_wait.items()) if u == unit]
    stalls += [(t, ("bandwidth", res)) for (u, res), t in sorted(r.bandwidth_wait.items())
               if u == unit]
    if not stalls:
        return f"{unit} never waits"
    _, (kind, what) = max(stalls)
    return stall_reason(kind, unit, what, r.token_sources.get(what, ()), r.slot_tokens, machine)


def summarize(rec: LaunchRecord, target: Target) -> LaunchSummary:
    util = utilization(rec, target)
    label = bound(util, target.machine)
    return LaunchSummary(rec.name, rec.kernel, rec.start, rec.end, rec.flops,
                         offchip_bytes(rec.result, target.machine), util, label,
                         top_stall(rec, label, target.machine))


def summaries(run: RunResult) -> list[LaunchSummary]:
    """`summarize` of every launch. Launches that reused one simulated result and took as
    long (a layer's kernels in every layer) share the derived figures: computed once."""
    target, derived = run.target, {}
    out = []
    for rec in run.launches:
        key = (id(rec.result), rec.end - rec.start)
        if key not in derived:
            derived[key] = summarize(rec, target)
        s = derived[key]
        out.append(LaunchSummary(rec.name, rec.kernel, rec.start, rec.end, rec.flops,
                                 s.bytes_offchip, s.utilization, s.bound, s.top_stall))
    return out


def unit_totals(run: RunResult) -> dict[str, dict[str, float]]:
    """Per unit (and per die's unit, "mm@d1"): busy cycles averaged over the cores it stands
    for; per resource (memory, l2, link, and each die's): the cycles its bytes occupy it at
    full bandwidth. Utilisation is either over the whole run."""
    target, total = run.target, max(run.cycles, 1e-9)
    busy: dict[str, float] = {u: 0.0 for u in target.units}
    moved: dict[str, float] = {}
    for rec in run.launches:
        for unit, b in rec.result.unit_busy.items():
            busy[unit] = busy.get(unit, 0.0) + b / _unit_capacity(unit, target)
        for resource, nbytes in rec.result.resource_bytes.items():
            moved[resource] = moved.get(resource, 0.0) + nbytes
    capacity = capacity_per_cycle(target)
    machine = target.machine
    totals = machine.family_totals
    for family in machine.families:
        if family in totals:          # every die's memory, L2, die links, summed
            busy[family] = moved.get(family, 0.0) / capacity[family]
        elif family in moved:         # one instance: a link to other devices, a host memory
            busy[family] = moved[family] / capacity[family]
    if target.chip.dies > 1:
        for resource in sorted(moved):
            if resource in capacity and resource not in machine.families:
                busy[resource] = moved[resource] / capacity[resource]
    return {u: {"busy_cycles": b, "utilization": b / total} for u, b in busy.items()}


_LAYER = re.compile(r"(?<![A-Za-z0-9_.])([A-Za-z_][A-Za-z0-9_]*)\.\d+\.")
_MICRO_BATCH = re.compile(r"(?<![A-Za-z0-9_])mb\d+\.")


def layer_pattern(name: str) -> str:
    """`layer.7.mla.q` -> `layer.*.mla.q` and `layer.7.mb1.mla.q` -> `layer.*.mb*.mla.q`, to
    aggregate the same kernel over layers and micro-batches."""
    return _MICRO_BATCH.sub("mb*.", _LAYER.sub(lambda m: f"{m.group(1)}.*.", name))
