"""What a deployment's run means per layer and per device: time per layer, the communication a
layer carries and how much of it the cores waited for, tokens per second.

Every device runs the same program (SPMD), so one device's schedule is every device's. A
layer's time is the time between the ends of its last launch and of the previous layer's
(with two micro-batches the layers overlap, and this is the pace at which they complete).
Its communication is the time some link was busy with its all-to-alls; exposed is the time
its compute launches waited for a link's launch beyond their own stream's order (the
interpreter's LaunchRecord.exposed; it includes the collectives' launch overhead, during which
the cores wait too). Link contention is the time the compute launches beside link launches
took longer for the memory bandwidth the links' traffic took (runtime/contention.py; summed
over launches, hidden or not). Tokens per step are the elements of the model's integer inputs (its token
ids), for each micro-batch, shared by the devices of a tensor-parallel group.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from isa.formats import DTYPES
from runtime.interpreter import RunResult
from runtime.report.summary import layer_pattern

_LAYER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\.(\d+)\.")


@dataclass(frozen=True)
class LayerRun:
    first: int
    last: int
    time: float           # cycles per layer, mean over first..last
    comm: float           # cycles a link was busy, per layer
    exposed: float        # cycles the cores waited for a link, per layer
    name: str = "layer"   # the repeat's iteration name (`layer`, `mtp`)

    @property
    def count(self) -> int:
        return self.last - self.first + 1


def exposure(run: RunResult) -> dict[int, float]:
    """Per launch on a link's stream (by index): the cycles the cores waited for it, its
    exposed time (the compute launches' waits, each given to the launch it waited for)."""
    out: dict[int, float] = {}
    for r in run.launches:
        if r.exposed and r.waited_on >= 0:
            out[r.waited_on] = out.get(r.waited_on, 0.0) + r.exposed
    return out


def step_share(indices, run: RunResult, cycles: float, exposed: dict[int, float]) -> float:
    """Cycles a group of launches (by index) adds to the step: their time on the compute
    stream; a collective's, the time the cores waited for it (the rest is hidden under
    compute), so the shares of a run never add up past it."""
    if all(run.launches[i].stream == "compute" for i in indices):
        return cycles
    return sum(exposed.get(i, 0.0) for i in indices)


def tokens_per_step(run: RunResult) -> int:
    return sum(math.prod(t.shape) for t in run.program.tensors
               if t.kind == "input" and DTYPES[t.dtype].kind == "int")


def layer_runs(run: RunResult) -> list[LayerRun]:
    """Consecutive layers made of the same kernels, averaged together; layers of each repeat
    (`layer.3`, `mtp.0`) in the order the step reaches them."""
    by_layer: dict[tuple[str, int], list] = {}
    for rec in run.launches:
        m = _LAYER.match(rec.name)
        if m:
            by_layer.setdefault((m.group(1), int(m.group(2))), []).append(rec)
    if not by_layer:
        return []
    previous_end = min(r.start for r in run.launches) - run.launches[0].launching
    rows = []
    for key in sorted(by_layer, key=lambda k: (min(r.start for r in by_layer[k]), k)):
        recs = by_layer[key]
        end = max(r.end for r in recs)
        shape = frozenset((layer_pattern(r.name), r.kernel) for r in recs)
        comm = _union([(r.start, r.end) for r in recs if r.stream != "compute"])
        rows.append((key, shape, end - previous_end, comm, sum(r.exposed for r in recs)))
        previous_end = end
    out: list[LayerRun] = []
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i][1] != rows[start][1] or \
                rows[i][0] != (rows[i - 1][0][0], rows[i - 1][0][1] + 1):
            group = rows[start:i]
            n = len(group)
            out.append(LayerRun(group[0][0][1], group[-1][0][1], sum(g[2] for g in group) / n,
                                sum(g[3] for g in group) / n, sum(g[4] for g in group) / n,
                                group[0][0][0]))
            start = i
    return out


def _union(intervals: list[tuple[float, float]]) -> float:
    total, reach = 0.0, -math.inf
    for a, b in sorted(intervals):
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


def deployment_dict(run: RunResult) -> dict:
    dep, hz = run.program.deployment, run.target.clock_hz
    seconds = run.cycles / hz
    total = tokens_per_step(run) * dep.replicas       # a tensor-parallel group shares its batch
    us = lambda cycles: round(cycles / hz * 1e6, 3)
    layers = layer_runs(run)
    outside = run.cycles - sum(r.time * r.count for r in layers)
    load = dict(run.program.expert_load)
    return {
        "description": f"{dep} of {run.target.name}",
        "devices": dep.devices, "per_node": dep.per_node, "nodes": dep.nodes,
        "plan": dep.plan_text, "micro_batches": dep.micro_batches, "overlap": dep.overlap,
        "tokens_per_device": total / dep.devices,
        "tokens_per_s_per_device": total / dep.devices / seconds if seconds else 0.0,
        "tokens_per_s": total / seconds if seconds else 0.0,
        "exposed_comm_us": us(sum(r.exposed for r in run.launches)),
        "link_contention_us": us(sum(r.slowed for r in run.launches)),
        "layers": [{"name": r.name, "first": r.first, "last": r.last, "time_us": us(r.time),
                    "comm_us": us(r.comm), "exposed_comm_us": us(r.exposed)}
                   for r in layers],
        "outside_layers_us": us(outside) if layers else us(run.cycles),
        **({"expert_load": {**load, "load": dep.load, "redundant": dep.redundant}}
           if load else {}),
    }


def deployment_text(run: RunResult) -> list[str]:
    return deployment_lines(deployment_dict(run))


def deployment_lines(d: dict) -> list[str]:
    """The deployment's lines of a report, from its dict."""
    tokens = d["tokens_per_device"]
    lines = [f"deployment: {d['description']}; "
             f"{tokens:,.{0 if tokens == int(tokens) else 2}f} tokens per device per step",
             f"  {d['tokens_per_s_per_device']:,.0f} tokens/s per device, "
             f"{d['tokens_per_s']:,.0f} tokens/s in all; the cores waited "
             f"{d['exposed_comm_us']:,.1f} us per step for communication"
             + (f"; the links' memory traffic made the kernels beside them "
                f"{d['link_contention_us']:,.1f} us longer" if d.get("link_contention_us")
                else "")]
    if "expert_load" in d:
        e = d["expert_load"]
        placed = (f"after placing {e['redundant']} redundant experts, "
                  if e["redundant"] else "")
        lines.append(f"  expert load {e['load']}: {e['slots']} expert slots per device, "
                     f"{e['rows_per_slot']:,} rows each on the hottest; {placed}the hottest "
                     f"device {e['hottest']:.2f}x the mean, the coldest {e['coldest']:.2f}x "
                     f"(experts in order: {e['hottest_in_order']:.2f}x and "
                     f"{e['coldest_in_order']:.2f}x)")
    for r in d["layers"]:
        span = f"{r['name']} {r['first']}" if r["first"] == r["last"] else \
            f"{r['name']}s {r['first']}-{r['last']}"
        lines.append(f"  {span:<14} {r['time_us']:>9,.1f} us per layer; links busy "
                     f"{r['comm_us']:,.1f} us, cores waiting for them {r['exposed_comm_us']:,.1f} us")
    if d["layers"]:
        lines.append(f"  {'outside layers':<14} {d['outside_layers_us']:>9,.1f} us "
                     "(embedding, final norm, head)")
    return lines
