"""The Chrome trace-event JSON of a recorded run (`dsc run --trace FILE`).

Open the file in Perfetto (ui.perfetto.dev, "Open trace file") or chrome://tracing. Times are
microseconds converted from cycles at the target clock, quantised to whole nanoseconds (the
resolution Perfetto keeps), so slices that touch in cycles touch exactly in the trace.

Tracks: one process per die, named "<target> die <d>". Die 0 also carries the whole chip's
tracks:

- thread "kernels": one complete event per launch (name = what it computes, args: kernel,
  cycles, FLOPs, off-chip bytes, bound, top stall, utilisation);
- thread "waves": one slice per wave of every launch (which classes of work item it ran on
  how many cores of which die). A wave starts as cores free up, before the previous wave's
  last core ends, so waves overlap in time: an overlapping one goes on the next free lane,
  thread "waves 2" (3, ...), because a viewer drops slices that partly overlap on one thread;
- in a deployment, threads "nvlink launches" and "network launches": the collectives' sends,
  which run on the links' own streams, concurrently with the kernels.

Each die has:

- one thread per (core group, unit), e.g. "class0 / mm": the instructions of one
  representative core of the group, mnemonic as name; args give start and end cycles, the
  wave, and how many identical cores the core stands for (a group is a class of work items and
  stands for a different number of cores in different kernels, so the count is per slice);
- flow arrows (token dependencies) from the slice that signalled a token to the slice that
  consumed it;
- counters "<resource> bandwidth": GB/s in use on the die's memory and L2 (all its cores), and
  on the die-to-die links leaving it; in a deployment also on the device's NVLink and network
  links (set by the collectives; the memory and L2 counters follow the kernels).

Level of detail (the DeepSeek-V3 decode step has about 1,600 launches and up to hundreds of
waves each): every launch gets its kernel slice and its wave slices. Instruction slices, flows
and exact bandwidth counters are given for the first wave of the first launch of each distinct
simulated kernel (a kernel on given shapes: later launches reuse that simulation exactly, so
they would repeat it); `detail_launches=N` keeps only the first N of those launches (0: none).
Elsewhere the bandwidth counters show each wave's average. The rules are repeated in the
trace's "metadata".

Token flows: the engine records a dependency as (token, producing unit, signal time,
consuming unit, consume time). The consumer is the slice of that unit starting at the consume
time; the producer is the last slice of its unit that ended by the signal time (a transfer
signals when its latency has passed, at least the L2 latency after its slice ends). A flow whose
end is a fence (no slice) is left out.

The output is deterministic: the same run gives byte-identical text.
"""
from __future__ import annotations

import bisect
import json
import math
import re

from isa.machine import LinkUnit
from runtime.interpreter import LaunchRecord, RunResult
from runtime.report.summary import summarize

UNIT_ORDER = ("ld", "mm", "fix", "vld", "vec", "vst", "st")
TRANSFER_UNITS = ("ld", "st", "vld", "vst")
KERNELS_TID, WAVES_TID, FIRST_UNIT_TID = 1, 2, 10
LINK_TIDS = (3, 4)        # launches on a link's stream (deployments), in the machine's order
WAVE_LANE_TIDS = 1000     # waves 2, 3, ...: tid 1001, 1002, ... (sorted beside "waves")
EPS = 1e-6          # cycles
_ON_DIE = re.compile(r"^(.*)\.d(\d+)$")

LEVEL_OF_DETAIL = (
    "Every launch has a slice on the 'kernels' thread and one slice per wave on the 'waves' "
    "thread (die 0). Instruction slices (threads 'classN / unit' of each die, one "
    "representative core standing for 'cores' identical cores), token flows and exact "
    "bandwidth counters are given for the first wave of the first launch of each distinct "
    "simulated kernel (later launches of the same kernel on the same shapes reuse that "
    "simulation exactly){limit}. Elsewhere the bandwidth counters are per-wave averages.")


def trace_json(run: RunResult, detail_launches: int | None = None) -> str:
    """The run as Chrome trace-event JSON (see the module doc for tracks and detail rules).
    A run simulated without `record=True` kept no waves: its trace has the kernel slices only."""
    return _Trace(run, detail_launches).text()


def detailed_launches(run: RunResult, detail_launches: int | None = None) -> list[int]:
    """Indices of the launches that get instruction detail: the first launch of each distinct
    simulated kernel (the first to use a KernelResult), at most `detail_launches` of them."""
    seen: set[int] = set()
    out = []
    for i, rec in enumerate(run.launches):
        r = rec.result
        if id(r) in seen:
            continue
        seen.add(id(r))
        if r.timeline and r.wave_traces:
            out.append(i)
    return out if detail_launches is None else out[:max(0, detail_launches)]


def split_die(name: str) -> tuple[str, int]:
    """An engine group's name: 'class0.d1' -> ('class0', 1); no suffix: die 0."""
    m = _ON_DIE.match(name)
    return (m.group(1), int(m.group(2))) if m else (name, 0)


def resource_track(resource) -> tuple[int, str]:
    """(die, counter name) of a shared resource: a die's memory or L2, a link leaving it, or
    (die 0) a resource of the whole device."""
    die = resource.die or 0
    if isinstance(resource, LinkUnit) and resource.src != "device":
        return die, f"link to {resource.towards} bandwidth"
    return die, f"{resource.family} bandwidth"


def composition_groups(comp) -> list[tuple[str, int, int]]:
    """(group name as the engine calls it, die, cores) of a wave composition, whose entries
    are ((class, die), cores) or, on a chip without per-die data, (class, cores)."""
    out = []
    for who, cores in comp:
        if isinstance(who, tuple):
            cls, die = who
            out.append((f"class{cls}.d{die}", die, cores))
        else:
            out.append((f"class{who}", 0, cores))
    return out


class _Trace:
    def __init__(self, run: RunResult, detail_launches: int | None):
        self.run = run
        self.target = target = run.target
        self.ns_per_cycle = 1e9 / target.clock_hz
        self.gbs_per_bpc = target.clock_hz / 1e9
        self.detail = detailed_launches(run, detail_launches)
        self.limit = detail_launches
        self.flow_id = 0
        self.flows_skipped = 0
        self.device_links = {link.id for link in target.machine.device_links}
        self.stream_tids = {link.id: tid for link, tid in zip(target.machine.device_links,
                                                              LINK_TIDS)}
        self.resources = self._resources()
        self.counter_state: dict[str, float] = {r: 0.0 for r in self.resources}
        self.counter_last: dict[str, dict] = {}
        self.averages: dict[tuple[int, int], dict[str, float]] = {}
        self.tids = self._unit_threads()
        self.wave_lane_ends: list[int] = []     # the last end (ns) on each lane of waves
        self.events: list[dict] = []

    # -- time --

    def ns(self, cycles: float) -> int:
        return int(round(cycles * self.ns_per_cycle))

    @staticmethod
    def us(ns: int) -> float:
        """Microseconds that any reader turns back into exactly `ns` nanoseconds, whether it
        truncates or rounds `us * 1000`."""
        x = ns / 1000
        while x * 1000 < ns:
            x = math.nextafter(x, math.inf)
        return x

    @staticmethod
    def ns_of(us: float) -> int:
        return int(round(us * 1000))

    def slice(self, pid: int, tid: int, name: str, cat: str, start: float, end: float,
              args: dict) -> dict:
        a, b = self.ns(start), self.ns(end)
        event = {"ph": "X", "pid": pid, "tid": tid, "name": name, "cat": cat,
                 "ts": self.us(a), "dur": self.us(b - a), "args": args}
        self.events.append(event)
        return event

    # -- tracks --

    def _resources(self) -> list[str]:
        names: set[str] = set()
        seen: set[int] = set()
        for rec in self.run.launches:
            if id(rec.result) not in seen:
                seen.add(id(rec.result))
                for trace in rec.result.wave_traces:
                    for _, use in trace.counters:
                        names.update(use)
        resources = self.target.machine.resources
        return sorted(names, key=lambda r: (resource_track(resources[r]), r))

    def _unit_threads(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(engine group, unit) -> (pid, tid)."""
        keys = set()
        for i in self.detail:
            r = self.run.launches[i].result
            trace = r.wave_traces[r.timeline[0][2]]
            keys.update((g, u) for g, u, *_ in trace.slices)
        order = {u: k for k, u in enumerate(UNIT_ORDER)}

        def rank(key):
            group, unit = key
            base, die = split_die(group)
            digits = "".join(ch for ch in base if ch.isdigit())
            return (die, int(digits) if digits else -1, base, order.get(unit, len(order)), unit)
        out, per_die = {}, {}
        for key in sorted(keys, key=rank):
            die = split_die(key[0])[1]
            out[key] = (die + 1, FIRST_UNIT_TID + per_die.get(die, 0))
            per_die[die] = per_die.get(die, 0) + 1
        return out

    def metadata_events(self) -> list[dict]:
        t = self.target
        out = []
        for die in range(t.chip.dies):
            pid = die + 1
            out.append({"ph": "M", "pid": pid, "name": "process_name",
                        "args": {"name": f"{t.name} die {die}"}})
            out.append({"ph": "M", "pid": pid, "name": "process_sort_index",
                        "args": {"sort_index": pid}})
            if t.chip.dies > 1:
                label = (f"{t.chip.cores_per_die} cores" + ("; launches and waves of the whole "
                                                             "chip" if die == 0 else ""))
                out.append({"ph": "M", "pid": pid, "name": "process_labels",
                            "args": {"labels": label}})
        threads = [(1, KERNELS_TID, "kernels"), (1, WAVES_TID, "waves")]
        threads += [(1, self.wave_tid(k), f"waves {k + 1}")
                    for k in range(1, len(self.wave_lane_ends))]
        streams = {rec.stream for rec in self.run.launches}
        threads += [(1, tid, f"{s} launches") for s, tid in self.stream_tids.items()
                    if s in streams]
        threads += [(pid, tid, f"{split_die(g)[0]} / {u}")
                    for (g, u), (pid, tid) in self.tids.items()]
        for pid, tid, name in threads:
            out.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name",
                        "args": {"name": name}})
            out.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_sort_index",
                        "args": {"sort_index": WAVES_TID if tid > WAVE_LANE_TIDS else tid}})
        return out

    @staticmethod
    def wave_tid(lane: int) -> int:
        return WAVES_TID if lane == 0 else WAVE_LANE_TIDS + lane

    def wave_lane(self, start: float, end: float) -> int:
        """The first lane whose slices all end by `start` (in whole ns, as written)."""
        a, b = self.ns(start), self.ns(end)
        lane = next((k for k, last in enumerate(self.wave_lane_ends) if last <= a),
                    len(self.wave_lane_ends))
        if lane == len(self.wave_lane_ends):
            self.wave_lane_ends.append(b)
        self.wave_lane_ends[lane] = max(self.wave_lane_ends[lane], b)
        return lane

    # -- counters --

    def counter(self, cycles: float, values: dict[str, float], link: bool = False) -> None:
        """Set the counters a launch drives: its link's (a collective) or the others."""
        ts = self.us(self.ns(cycles))
        for res in self.resources:
            if (res in self.device_links) != link:
                continue
            v = round(values.get(res, 0.0) * self.gbs_per_bpc, 3)
            last = self.counter_last.get(res)
            if last is not None and last["ts"] == ts:      # same nanosecond: the later value
                last["args"]["GB/s"] = self.counter_state[res] = v
                continue
            if v != self.counter_state[res]:
                self.counter_state[res] = v
                die, name = resource_track(self.target.machine.resource(res))
                self.counter_last[res] = event = {
                    "ph": "C", "pid": die + 1, "name": name, "ts": ts, "args": {"GB/s": v}}
                self.events.append(event)

    @staticmethod
    def _steps(counters) -> list[tuple[float, dict[str, float]]]:
        """The counter samples with one value per time (the last one recorded at it)."""
        steps: list[tuple[float, dict[str, float]]] = []
        for t, use in counters:
            if steps and abs(steps[-1][0] - t) <= EPS:
                steps[-1] = (steps[-1][0], use)
            else:
                steps.append((t, use))
        return steps

    def _averages(self, trace, cycles: float) -> dict[str, float]:
        """Bytes per cycle in use on each resource, averaged over a wave."""
        total = {r: 0.0 for r in self.resources}
        steps = self._steps(trace.counters)
        for k, (t, use) in enumerate(steps):
            t_next = steps[k + 1][0] if k + 1 < len(steps) else cycles
            for r, v in use.items():
                total[r] += v * max(0.0, min(t_next, cycles) - t)
        return {r: v / cycles if cycles > 0 else 0.0 for r, v in total.items()}

    # -- launches --

    def launch(self, index: int, rec: LaunchRecord, detailed: bool) -> None:
        s = summarize(rec, self.target)
        r = rec.result
        on_link = rec.stream != "compute"
        self.slice(1, self.stream_tids.get(rec.stream, KERNELS_TID), rec.name, "kernel", rec.start,
                   rec.end, {
            "launch": index, "kernel": rec.kernel, "cycles": round(rec.end - rec.start, 4),
            "start_cycle": round(rec.start, 4), "end_cycle": round(rec.end, 4),
            "flops": float(rec.flops), "bytes": float(s.bytes_offchip),
            "l2_bytes": float(r.resource_bytes.get("l2", 0.0)), "bound": s.bound,
            "top_stall": s.top_stall, "waves": r.waves, "items": r.items,
            "instruction_detail": detailed,
            "utilization": {u: round(v, 4) for u, v in sorted(s.utilization.items())}})
        n = len(r.timeline)
        dies = self.target.chip.dies
        for w, (ws, we, comp) in enumerate(r.timeline):
            groups = composition_groups(r.compositions[comp])
            cores = ", ".join(f"{split_die(g)[0]} x{k}" + (f" on die {d}" if dies > 1 else "")
                              for g, d, k in groups)
            if not on_link:             # a collective's one engine: its launch slice says all
                tid = self.wave_tid(self.wave_lane(rec.start + ws, rec.start + we))
                self.slice(1, tid, f"wave {w + 1}/{n}", "wave", rec.start + ws,
                           rec.start + we, {"launch": rec.name, "kernel": rec.kernel, "wave": w,
                                            "cycles": round(we - ws, 4), "cores": cores})
            if detailed and w == 0:
                self.wave_detail(rec, w, ws, r.wave_traces[comp],
                                 {g: k for g, _, k in groups}, on_link)
            else:
                key = (id(r), comp)         # launches of one simulation share its waves
                if key not in self.averages:
                    self.averages[key] = self._averages(r.wave_traces[comp], we - ws)
                self.counter(rec.start + ws, self.averages[key], on_link)
        self.counter(rec.end if not r.timeline else rec.start + r.timeline[-1][1], {}, on_link)

    def wave_detail(self, rec: LaunchRecord, wave: int, offset: float, trace, cores,
                    link: bool = False) -> None:
        base = rec.start + offset
        per_unit: dict[tuple[str, str], list[tuple[float, float, dict]]] = {}
        for group, unit, mnemonic, start, end in sorted(
                trace.slices, key=lambda s: (self.tids[(s[0], s[1])], s[3], s[4])):
            pid, tid = self.tids[(group, unit)]
            event = self.slice(pid, tid, mnemonic, "instruction", base + start, base + end, {
                "start_cycle": round(base + start, 4), "end_cycle": round(base + end, 4),
                "launch": rec.name, "wave": wave, "cores": cores.get(group, 1)})
            per_unit.setdefault((group, unit), []).append((start, end, event))
        ends = {key: [e for _, e, _ in v] for key, v in per_unit.items()}
        starts = {key: [s for s, _, _ in v] for key, v in per_unit.items()}
        l2_latency = self.target.machine.reach().hit_latency
        for group, token, src, signalled, dst, consumed in trace.flows:
            slices, done = per_unit.get((group, src), []), ends.get((group, src), [])
            producer = self._producer(
                slices, done, signalled - (l2_latency if src in TRANSFER_UNITS else 0))
            if producer is None:
                producer = self._producer(slices, done, signalled)
            consumer = self._consumer(per_unit.get((group, dst), []),
                                      starts.get((group, dst), []), consumed)
            if producer is None or consumer is None:
                self.flows_skipped += 1
                continue
            self.flow_id += 1
            for ph, event in (("s", producer), ("f", consumer)):
                mid = self.ns_of(event["ts"]) + self.ns_of(event["dur"]) // 2
                flow = {"ph": ph, "pid": event["pid"], "tid": event["tid"], "id": self.flow_id,
                        "name": token, "cat": "token", "ts": self.us(mid)}
                if ph == "f":
                    flow["bp"] = "e"
                self.events.append(flow)
        for t, use in self._steps(trace.counters):
            self.counter(base + t, use, link)

    @staticmethod
    def _producer(slices, ends, by: float):
        k = bisect.bisect_right(ends, by + EPS)
        return slices[k - 1][2] if k else None

    @staticmethod
    def _consumer(slices, starts, at: float):
        k = bisect.bisect_left(starts, at - EPS)
        if k < len(slices) and abs(starts[k] - at) <= EPS:
            return slices[k][2]
        return None

    # -- output --

    def text(self) -> str:
        detail = set(self.detail)
        for i, rec in enumerate(self.run.launches):
            self.launch(i, rec, i in detail)
        t = self.target
        limit = "" if self.limit is None else f", limited to the first {self.limit} such launches"
        metadata = {
            "generator": "dsc run --trace",
            "model": self.run.program.model,
            "target": t.name,
            "clock_ghz": t.clock_ghz,
            "cores": t.cores,
            "dies": t.chip.dies,
            "time_unit": "ts and dur in microseconds, from cycles at the target clock, "
                         "quantised to 1 ns",
            "total_cycles": round(self.run.cycles, 4),
            "launches": len(self.run.launches),
            "simulated_kernels": self.run.simulated_kernels,
            "launches_with_instruction_detail": len(self.detail),
            "detail_launches_limit": self.limit,
            "level_of_detail": LEVEL_OF_DETAIL.format(limit=limit),
            "counters": "bandwidth in use in GB/s on each die's memory and L2 and on the "
                        "die-to-die links, all cores; store write-back to memory drains in the "
                        "background and is not in the memory counters",
            "flows": f"token dependencies, producer slice -> consumer slice; "
                     f"{self.flows_skipped} with a fence (no slice) at one end left out",
        }
        lines = [json.dumps(e, sort_keys=True, separators=(",", ":"))
                 for e in self.metadata_events() + self.events]
        return ('{"displayTimeUnit":"ns",\n"metadata":'
                + json.dumps(metadata, sort_keys=True, separators=(",", ":"))
                + ',\n"traceEvents":[\n' + ",\n".join(lines) + "\n]}\n")
