"""The HTML report of a run (`dsc run --html FILE`): one self-contained page.

Sections: the summary (model, target, time, FLOPs, off-chip bytes, achieved TFLOPS and GB/s,
unit utilisation), a Gantt timeline and a roofline chart (inline SVG, no script), the per-kernel
table (the same aggregation as the terminal table: a kernel over layers is one row), and the
top stall reasons of the run.

This module computes every number and coordinate; templates/report.html.j2 lays them out
(jinja2 with autoescaping, so kernel and token names are escaped). Numbers are formatted here
to fixed decimals, so the same run gives a byte-identical page: no timestamps, no random ids.

Timeline: one row for the launches, one per unit kind (ld, mm, fix, vec, st) and one for
off-chip memory. Each launch is a bar from its start to its end, coloured by its bound; in a
unit's row the bar's height is the unit's utilisation during the launch (busy core-cycles over
cores x cycles), so busy and idle show at a glance. Launches narrower than a pixel are merged
with their neighbours into bars at least a pixel wide (utilisation averaged over the merged
span, colour of the bound that took most of its time).

The roofline is runtime/report/html_roofline.py; numbers and colours, runtime/report/html_format.py.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from runtime.interpreter import RunResult
from runtime.report.summary import (LaunchSummary, critical_unit, layer_pattern, stall_reason,
                                    unit_totals)
from runtime.report.summary import summaries as all_summaries
from runtime.report import html_sections as sections
from runtime.report.deployment import exposure, step_share
from runtime.report.html_format import (BOUNDS, COLORS, ENV, fmt, num, percent, si, sig,
                                        time_text)
from runtime.report.html_roofline import matrix_roofs, roofline

UNIT_ORDER = ("ld", "mm", "fix", "vld", "vec", "vst", "st")
TOP_STALLS = 10

def html_report(run: RunResult, provenance: dict | None = None) -> str:
    """The self-contained HTML page of a run; `provenance` as in the JSON report."""
    summaries = all_summaries(run)
    rows = kernel_rows(run, summaries)
    used = {s.bound for s in summaries}
    return ENV.get_template("report.html.j2").render(
        model=run.program.model, target=run.target.name,
        summary=_summary(run, summaries) + [sections.launch_overhead(run)],
        deployment=sections.deployment(run), blocks=sections.blocks(run),
        collectives=sections.collectives(run), provenance=sections.provenance(provenance),
        units=_units(run),
        legend=[{"bound": b, "color": COLORS[b]} for b in BOUNDS if b in used]
        or [{"bound": "latency", "color": COLORS["latency"]}],
        timeline=_timeline(run, summaries),
        roofline=roofline(run, rows),
        rows=[_row_text(r) for r in rows],
        stalls=_stalls(run, rows, summaries))


# -- aggregation --

@dataclass
class KernelRow:
    index: int
    name: str              # layer pattern, e.g. layer.*.mla.q
    kernel: str
    count: int
    cycles: float
    flops: float
    bytes: float
    bound: str
    top_stall: str
    share: float
    seconds: float
    members: list[int]     # launch indices

    @property
    def tflops(self) -> float:
        return self.flops / self.seconds / 1e12 if self.seconds else 0.0

    @property
    def gbs(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds else 0.0


def kernel_rows(run: RunResult, summaries: list[LaunchSummary] | None = None) -> list[KernelRow]:
    """Launches aggregated as in the terminal table: by (layer pattern of the name, kernel), in
    order of first appearance; the bound is the one that took most of the row's cycles (ties in
    BOUNDS order) and the top stall that of the row's first launch."""
    summaries = summaries or all_summaries(run)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(summaries):
        groups.setdefault((layer_pattern(s.name), s.kernel), []).append(i)
    hz, total = run.target.clock_hz, max(run.cycles, 1e-9)
    exposed = exposure(run)
    rows = []
    for k, ((name, kernel), members) in enumerate(groups.items()):
        group = [summaries[i] for i in members]
        cycles = sum(s.cycles for s in group)
        by_bound: dict[str, float] = {}
        for s in group:
            by_bound[s.bound] = by_bound.get(s.bound, 0.0) + s.cycles
        label = _dominant(by_bound)
        rows.append(KernelRow(k + 1, name, kernel, len(group), cycles,
                              sum(s.flops for s in group), sum(s.bytes_offchip for s in group),
                              label, group[0].top_stall,
                              step_share(members, run, cycles, exposed) / total, cycles / hz,
                              members))
    return rows


def _bound_rank(bound: str) -> int:
    return BOUNDS.index(bound) if bound in BOUNDS else len(BOUNDS)


def _dominant(cycles_by_bound: dict[str, float]) -> str:
    """The bound that took most cycles; ties go to the first in BOUNDS (deterministic)."""
    return min(cycles_by_bound, key=lambda b: (-cycles_by_bound[b], _bound_rank(b), b))


# -- formatting --

def _summary(run: RunResult, summaries) -> list[tuple[str, str]]:
    t = run.target
    seconds = run.cycles / t.clock_hz
    flops = sum(s.flops for s in summaries)
    nbytes = sum(s.bytes_offchip for s in summaries)
    peaks = matrix_roofs(t)
    peak_text = "; ".join(f"{fmt(p / 1e12, 0)} in {', '.join(names)}" for p, names in peaks)
    return [
        ("model", run.program.model),
        ("target", f"{t.name}: {t.description}"),
        ("chip", f"{t.cores} cores on {t.chip.dies} die{'s' if t.chip.dies > 1 else ''} at "
                 f"{t.running_clock_ghz} GHz"
                 + (f" (sustained; {t.clock_ghz} GHz peak)" if t.running_clock_ghz != t.clock_ghz
                    else "")),
        ("total time", f"{time_text(seconds)} ({fmt(run.cycles, 0)} cycles)"),
        ("kernel launches", f"{len(run.launches):,} ({run.simulated_kernels:,} simulated, the "
                            "rest reuse an identical simulation)"),
        ("FLOPs", si(flops, "FLOP")),
        ("off-chip bytes", si(nbytes, "B")),
        ("achieved compute", f"{sig(flops / seconds / 1e12 if seconds else 0.0)} TFLOPS "
                             f"(roof: {peak_text} TFLOPS)"),
        ("achieved bandwidth", f"{sig(nbytes / seconds / 1e9 if seconds else 0.0)} GB/s "
                               f"(roof {fmt(t.memory_bandwidth / 1e9, 0)} GB/s)"),
    ]


def _units(run: RunResult) -> list[dict]:
    names = {"ld": "ld (loads)", "st": "st (stores)", "mm": "mm (matrix)", "vec": "vec (vector)",
             "fix": "fix (fixed pipe)", "vld": "vld (vector loads)", "vst": "vst (vector stores)",
             "memory": "off-chip memory", "l2": "L2", "link": "die-to-die links"}
    out = []
    for unit, v in unit_totals(run).items():
        if "@" in unit:                                 # "ld@d1": one die's share
            continue
        u = v["utilization"]
        resources = run.target.machine.resources
        name = names.get(unit) or (resources[unit].label if unit in resources else unit)
        out.append({"name": name, "percent": percent(u),
                    "width": num(min(100.0, 100 * u)),
                    "busy": fmt(v["busy_cycles"], 0)})
    return out


def _row_text(r: KernelRow) -> dict:
    return {"index": r.index, "name": r.name, "kernel": r.kernel, "count": r.count,
            "time": fmt(r.seconds * 1e6, 1), "share": fmt(100 * r.share, 1),
            "share_width": num(min(100.0, 100 * r.share)),
            "tflops": sig(r.tflops), "gbs": sig(r.gbs),
            "intensity": fmt(r.flops / r.bytes, 1) if r.bytes and r.flops else "\u2013",
            "bound": r.bound, "color": COLORS.get(r.bound, COLORS["latency"]),
            "top_stall": r.top_stall}


# -- timeline --

TL_LEFT, TL_WIDTH, TL_ROW, TL_BAR, TL_TOP = 118, 1040, 30, 24, 10


@dataclass
class _Bin:
    start: float
    end: float
    members: list[int]


def _merge(run: RunResult, scale: float, stream: str = "compute") -> list[_Bin]:
    """Consecutive launches of a stream grouped so that each bar is at least one pixel wide."""
    bins: list[_Bin] = []
    current: _Bin | None = None
    for i, rec in enumerate(run.launches):
        if rec.stream != stream:
            continue
        if current is None:
            current = _Bin(rec.start, rec.end, [i])
        else:
            current.end = rec.end
            current.members.append(i)
        if (current.end - current.start) * scale >= 1.0:
            bins.append(current)
            current = None
    if current is not None:
        bins.append(current)
    return bins


def _nice_step(span: float, ticks: int) -> float:
    raw = span / max(ticks, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def _time_ticks(seconds: float) -> tuple[list[float], str, float]:
    """Tick positions (seconds), the unit label and its factor."""
    if seconds <= 0:
        return [0.0], "\u00b5s", 1e6
    unit, factor = ("ms", 1e3) if seconds >= 2e-3 else ("\u00b5s", 1e6)
    step = _nice_step(seconds * factor, 8) / factor
    count = int(math.floor(seconds / step + 1e-9))
    return [k * step for k in range(count + 1)], unit, factor


def _timeline(run: RunResult, summaries) -> dict:
    t = run.target
    total = max(run.cycles, 1e-9)
    scale = TL_WIDTH / total
    present = {u for u in set(t.units).union(*(rec.result.unit_busy for rec in run.launches))
               if "@" not in u}                        # "ld@d1": one die's share
    units = [u for u in UNIT_ORDER if u in present] + sorted(present - set(UNIT_ORDER))
    memory_per_cycle = t.memory_bandwidth / t.clock_hz            # all dies
    links = [link.id for link in t.machine.device_links       # a deployment's collectives
             if any(rec.stream == link.id for rec in run.launches)]
    row_names = ["kernels"] + links + units + ["memory"]
    labels = {"kernels": "launches", "memory": "off-chip mem", "nvlink": "nvlink sends",
              "network": "network sends"}
    rows = [{"label": labels.get(name, name), "y": num(TL_TOP + k * TL_ROW),
             "text_y": num(TL_TOP + k * TL_ROW + TL_BAR / 2 + 4), "height": num(TL_BAR)}
            for k, name in enumerate(row_names)]
    bars = []
    paths: dict[tuple[int, str], list[str]] = {}
    for b in _merge(run, scale):
        group = [summaries[i] for i in b.members]
        span = max(b.end - b.start, 1e-9)
        by_bound: dict[str, float] = {}
        for s in group:
            by_bound[s.bound] = by_bound.get(s.bound, 0.0) + s.cycles
        bound = _dominant(by_bound)
        x = TL_LEFT + b.start * scale
        w = max((b.end - b.start) * scale, 0.5)
        seconds = (b.end - b.start) / t.clock_hz
        util = {}
        for name in row_names[1 + len(links):]:
            if name == "memory":
                used = sum(run.launches[i].result.resource_bytes.get(t.machine.default_memory,
                                                                      0.0)
                           for i in b.members) / memory_per_cycle
            else:
                used = sum(s.utilization.get(name, 0.0) * s.cycles for s in group)
            util[name] = min(1.0, used / span)
        if len(group) == 1:
            s = group[0]
            title = (f"{s.name} ({s.kernel}): {time_text(seconds)}, {s.bound}-bound; "
                     + ", ".join(f"{u} {100 * util[u]:.0f}%" for u in util))
        else:
            title = (f"{len(group)} launches, {group[0].name} \u2026 {group[-1].name}: "
                     f"{time_text(seconds)}, mostly {bound}-bound")
        bars.append({"x": num(x), "y": num(TL_TOP), "w": num(w), "h": num(TL_BAR),
                     "color": COLORS.get(bound, COLORS["latency"]), "title": title})
        for k, name in enumerate(row_names[1:], start=1):
            if util.get(name, 0.0) <= 0:
                continue
            h = max(util[name] * TL_BAR, 0.5)
            y = TL_TOP + k * TL_ROW + TL_BAR - h
            paths.setdefault((k, bound), []).append(f"M{num(x)} {num(y)}h{num(w)}v{num(h)}h{num(-w)}z")
    for k, stream in enumerate(links, start=1):       # a collective's sends: one bar each
        for b in _merge(run, scale, stream):
            group = [summaries[i] for i in b.members]
            title = (f"{len(group)} launch{'es' if len(group) > 1 else ''}, {group[0].name}"
                     + (f" \u2026 {group[-1].name}" if len(group) > 1 else "")
                     + f": {time_text((b.end - b.start) / t.clock_hz)} on {stream}")
            bars.append({"x": num(TL_LEFT + b.start * scale), "y": num(TL_TOP + k * TL_ROW),
                         "w": num(max((b.end - b.start) * scale, 0.5)), "h": num(TL_BAR),
                         "color": COLORS.get(stream, COLORS["latency"]), "title": title})
    seconds = run.cycles / t.clock_hz
    ticks, unit, factor = _time_ticks(seconds)
    axis_y = TL_TOP + len(row_names) * TL_ROW
    tick_list = []
    for s in ticks:
        x = TL_LEFT + s * t.clock_hz * scale
        value = s * factor
        text = f"{value:,.{_decimals(ticks, factor)}f}"
        tick_list.append({"x": num(x), "label": text})
    return {
        "width": TL_LEFT + TL_WIDTH + 30, "height": axis_y + 44, "left": TL_LEFT,
        "right": num(TL_LEFT + TL_WIDTH), "plot_width": TL_WIDTH, "rows": rows, "bars": bars,
        "paths": [{"d": "".join(d), "color": COLORS.get(bound, COLORS["latency"])}
                  for (k, bound), d in sorted(paths.items(),
                                              key=lambda p: (p[0][0], _bound_rank(p[0][1])))],
        "axis_y": num(axis_y), "tick_y": num(axis_y + 16), "ticks": tick_list,
        "axis_label": f"time ({unit})", "label_x": num(TL_LEFT + TL_WIDTH / 2),
        "label_y": num(axis_y + 36), "merged": len(run.launches) - len(bars),
        "launches": len(run.launches), "bar_count": len(bars),
    }


def _decimals(ticks: list[float], factor: float) -> int:
    if len(ticks) < 2:
        return 0
    step = (ticks[1] - ticks[0]) * factor
    for digits in (0, 1):
        if abs(step * 10 ** digits - round(step * 10 ** digits)) < 1e-9:
            return digits
    return 2


def _stalls(run: RunResult, rows: list[KernelRow], summaries) -> list[dict]:
    """The costliest wait reasons over the run: the waits of the unit behind each launch's
    bound (a store unit waiting for its next tile in a load-bound kernel costs nothing), by
    (unit, token) and (unit, resource), summed over launches in core-cycles; each with the
    kernel row where it cost most."""
    t = run.target
    row_of = {}
    for r in rows:
        for i in r.members:
            row_of[i] = r
    total: dict[tuple[str, str, str], float] = {}
    where: dict[tuple[str, str, str], dict[int, float]] = {}
    producers: dict[str, set[str]] = {}
    slots: set[str] = set()
    for i, rec in enumerate(run.launches):
        r = rec.result
        unit = critical_unit(rec, summaries[i].bound)
        items = [(("token", u, tok), c) for (u, tok), c in r.token_wait.items() if u == unit]
        items += [(("bandwidth", u, res), c) for (u, res), c in r.bandwidth_wait.items()
                  if u == unit]
        for key, c in items:
            if c <= 0:
                continue
            total[key] = total.get(key, 0.0) + c
            per_row = where.setdefault(key, {})
            per_row[row_of[i].index] = per_row.get(row_of[i].index, 0.0) + c
        for tok, units in r.token_sources.items():
            producers.setdefault(tok, set()).update(units)
        slots.update(r.slot_tokens)
    by_index = {r.index: r for r in rows}
    run_cycles = max(run.cycles, 1e-9)
    out = []
    for key in sorted(total, key=lambda k: (-total[k], k))[:TOP_STALLS]:
        kind, unit, what = key
        reason = stall_reason(kind, unit, what, sorted(producers.get(what, ())), slots,
                              t.machine)
        per_core = total[key] / t.cores
        best = min(where[key], key=lambda k: (-where[key][k], k))
        row = by_index[best]
        out.append({"reason": reason, "core_cycles": fmt(total[key], 0),
                    "per_core": fmt(per_core, 0),
                    "time": time_text(per_core / t.clock_hz),
                    "share": percent(per_core / run_cycles),
                    "where": f"#{row.index} {row.name}",
                    "where_share": fmt(100 * where[key][best] / total[key], 0)})
    return out
