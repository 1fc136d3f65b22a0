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

Roofline: log-log, x = FLOPs per byte of off-chip traffic, y = achieved TFLOPS, one point per
kernel row sized by its share of the run's time; the memory roof (the off-chip bandwidth the run
used: achievable, or the peak with --peak) and one compute roof per distinct matrix rate at the
run's clock (formats with equal rates share one).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from runtime.interpreter import RunResult
from runtime.report.summary import (LaunchSummary, critical_unit, layer_pattern, stall_reason,
                                    unit_totals)
from runtime.report.summary import summaries as all_summaries
from runtime.report import html_sections as sections
from runtime.report.deployment import exposure, step_share

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=jinja2.StrictUndefined, autoescape=True, trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True)

BOUNDS = ("compute", "vector", "fixed_pipe", "memory", "l2", "nvlink", "network", "latency")
COLORS = {"compute": "#0072b2", "vector": "#009e73", "fixed_pipe": "#56b4e9",
          "memory": "#d55e00", "l2": "#e69f00", "latency": "#8c8c8c",
          "nvlink": "#cc79a7", "network": "#7a4f9a"}
UNIT_ORDER = ("ld", "mm", "fix", "vld", "vec", "vst", "st")
TOP_STALLS = 10


def html_report(run: RunResult, provenance: dict | None = None) -> str:
    """The self-contained HTML page of a run; `provenance` as in the JSON report."""
    summaries = all_summaries(run)
    rows = kernel_rows(run, summaries)
    used = {s.bound for s in summaries}
    return _ENV.get_template("report.html.j2").render(
        model=run.program.model, target=run.target.name,
        summary=_summary(run, summaries) + [sections.launch_overhead(run)],
        deployment=sections.deployment(run), blocks=sections.blocks(run),
        collectives=sections.collectives(run), provenance=sections.provenance(provenance),
        units=_units(run),
        legend=[{"bound": b, "color": COLORS[b]} for b in BOUNDS if b in used]
        or [{"bound": "latency", "color": COLORS["latency"]}],
        timeline=_timeline(run, summaries),
        roofline=_roofline(run, rows),
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

def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _sig(value: float) -> str:
    """A rate with about three significant digits: 1,504 / 61.2 / 2.42 / 0.0123."""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _si(value: float, unit: str) -> str:
    """`value` with a decimal prefix: 1.42 TFLOP, 18.4 GB, 2.15 MB."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{_sig(value / factor)} {prefix}{unit}"
    return f"{_sig(value)} {unit}"


def _percent(fraction: float) -> str:
    p = 100 * fraction
    return f"{p:.1f}" if p >= 10 or p == 0 else f"{p:.2f}"


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:,.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:,.3f} ms"
    return f"{seconds * 1e6:,.1f} \u00b5s"


def _n(x: float) -> str:
    """An SVG coordinate: two decimals, no trailing zeros."""
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _summary(run: RunResult, summaries) -> list[tuple[str, str]]:
    t = run.target
    seconds = run.cycles / t.clock_hz
    flops = sum(s.flops for s in summaries)
    nbytes = sum(s.bytes_offchip for s in summaries)
    peaks = _peaks(t)
    peak_text = "; ".join(f"{_fmt(p / 1e12, 0)} in {', '.join(names)}" for p, names in peaks)
    return [
        ("model", run.program.model),
        ("target", f"{t.name}: {t.description}"),
        ("chip", f"{t.cores} cores on {t.chip.dies} die{'s' if t.chip.dies > 1 else ''} at "
                 f"{t.running_clock_ghz} GHz"
                 + (f" (sustained; {t.clock_ghz} GHz peak)" if t.running_clock_ghz != t.clock_ghz
                    else "")),
        ("total time", f"{_time(seconds)} ({_fmt(run.cycles, 0)} cycles)"),
        ("kernel launches", f"{len(run.launches):,} ({run.simulated_kernels:,} simulated, the "
                            "rest reuse an identical simulation)"),
        ("FLOPs", _si(flops, "FLOP")),
        ("off-chip bytes", _si(nbytes, "B")),
        ("achieved compute", f"{_sig(flops / seconds / 1e12 if seconds else 0.0)} TFLOPS "
                             f"(roof: {peak_text} TFLOPS)"),
        ("achieved bandwidth", f"{_sig(nbytes / seconds / 1e9 if seconds else 0.0)} GB/s "
                               f"(roof {_fmt(t.memory_bandwidth / 1e9, 0)} GB/s)"),
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
        out.append({"name": name, "percent": _percent(u),
                    "width": _n(min(100.0, 100 * u)),
                    "busy": _fmt(v["busy_cycles"], 0)})
    return out


def _peaks(target) -> list[tuple[float, list[str]]]:
    """Distinct matrix roofs (FLOP/s at the clock the run used), highest first, with the
    formats that reach each."""
    by_peak: dict[float, list[str]] = {}
    for dtype in target.matrix.formats:
        p = target.flops_rate(dtype)
        if p > 0:
            by_peak.setdefault(p, []).append(dtype)
    return sorted(((p, sorted(names)) for p, names in by_peak.items()), key=lambda x: -x[0])


def _row_text(r: KernelRow) -> dict:
    return {"index": r.index, "name": r.name, "kernel": r.kernel, "count": r.count,
            "time": _fmt(r.seconds * 1e6, 1), "share": _fmt(100 * r.share, 1),
            "share_width": _n(min(100.0, 100 * r.share)),
            "tflops": _sig(r.tflops), "gbs": _sig(r.gbs),
            "intensity": _fmt(r.flops / r.bytes, 1) if r.bytes and r.flops else "\u2013",
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
    rows = [{"label": labels.get(name, name), "y": _n(TL_TOP + k * TL_ROW),
             "text_y": _n(TL_TOP + k * TL_ROW + TL_BAR / 2 + 4), "height": _n(TL_BAR)}
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
            title = (f"{s.name} ({s.kernel}): {_time(seconds)}, {s.bound}-bound; "
                     + ", ".join(f"{u} {100 * util[u]:.0f}%" for u in util))
        else:
            title = (f"{len(group)} launches, {group[0].name} \u2026 {group[-1].name}: "
                     f"{_time(seconds)}, mostly {bound}-bound")
        bars.append({"x": _n(x), "y": _n(TL_TOP), "w": _n(w), "h": _n(TL_BAR),
                     "color": COLORS.get(bound, COLORS["latency"]), "title": title})
        for k, name in enumerate(row_names[1:], start=1):
            if util.get(name, 0.0) <= 0:
                continue
            h = max(util[name] * TL_BAR, 0.5)
            y = TL_TOP + k * TL_ROW + TL_BAR - h
            paths.setdefault((k, bound), []).append(f"M{_n(x)} {_n(y)}h{_n(w)}v{_n(h)}h{_n(-w)}z")
    for k, stream in enumerate(links, start=1):       # a collective's sends: one bar each
        for b in _merge(run, scale, stream):
            group = [summaries[i] for i in b.members]
            title = (f"{len(group)} launch{'es' if len(group) > 1 else ''}, {group[0].name}"
                     + (f" \u2026 {group[-1].name}" if len(group) > 1 else "")
                     + f": {_time((b.end - b.start) / t.clock_hz)} on {stream}")
            bars.append({"x": _n(TL_LEFT + b.start * scale), "y": _n(TL_TOP + k * TL_ROW),
                         "w": _n(max((b.end - b.start) * scale, 0.5)), "h": _n(TL_BAR),
                         "color": COLORS.get(stream, COLORS["latency"]), "title": title})
    seconds = run.cycles / t.clock_hz
    ticks, unit, factor = _time_ticks(seconds)
    axis_y = TL_TOP + len(row_names) * TL_ROW
    tick_list = []
    for s in ticks:
        x = TL_LEFT + s * t.clock_hz * scale
        value = s * factor
        text = f"{value:,.{_decimals(ticks, factor)}f}"
        tick_list.append({"x": _n(x), "label": text})
    return {
        "width": TL_LEFT + TL_WIDTH + 30, "height": axis_y + 44, "left": TL_LEFT,
        "right": _n(TL_LEFT + TL_WIDTH), "plot_width": TL_WIDTH, "rows": rows, "bars": bars,
        "paths": [{"d": "".join(d), "color": COLORS.get(bound, COLORS["latency"])}
                  for (k, bound), d in sorted(paths.items(),
                                              key=lambda p: (p[0][0], _bound_rank(p[0][1])))],
        "axis_y": _n(axis_y), "tick_y": _n(axis_y + 16), "ticks": tick_list,
        "axis_label": f"time ({unit})", "label_x": _n(TL_LEFT + TL_WIDTH / 2),
        "label_y": _n(axis_y + 36), "merged": len(run.launches) - len(bars),
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


# -- roofline --

RF_LEFT, RF_TOP, RF_WIDTH, RF_HEIGHT = 78, 16, 640, 400


_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075"
                                           "\u2076\u2077\u2078\u2079")


def _decade_label(k: int) -> str:
    """0.01 ... 10000 written out, other decades as 10 with a superscript exponent."""
    return f"{10.0 ** k:g}" if -2 <= k <= 4 else "10" + str(k).translate(_SUPERSCRIPT)


def _roofline(run: RunResult, rows: list[KernelRow]) -> dict:
    t = run.target
    bw = t.memory_bandwidth                       # the run's roofs: sustained, or --peak
    peaks = _peaks(t)
    top_peak = peaks[0][0] if peaks else 1e12
    plotted = [r for r in rows if r.flops > 0 and r.bytes > 0 and r.seconds > 0]
    missing = [r for r in rows if r not in plotted]
    xs = [r.flops / r.bytes for r in plotted]
    ys = [r.tflops for r in plotted]
    ridge = top_peak / bw
    x_lo = min(xs + [ridge / 100]) / 2
    x_hi = max(xs + [ridge * 10]) * 2
    y_hi = top_peak / 1e12 * 2
    y_lo = min(ys + [y_hi / 1e4]) / 2
    kx0, kx1 = math.floor(math.log10(x_lo)), math.ceil(math.log10(x_hi))
    ky0, ky1 = math.floor(math.log10(y_lo)), math.ceil(math.log10(y_hi))

    def px(x: float) -> float:
        return RF_LEFT + (math.log10(x) - kx0) / (kx1 - kx0) * RF_WIDTH

    def py(y: float) -> float:
        return RF_TOP + RF_HEIGHT - (math.log10(y) - ky0) / (ky1 - ky0) * RF_HEIGHT

    x_min, x_max, y_min = 10.0 ** kx0, 10.0 ** kx1, 10.0 ** ky0
    grid = []
    for k in range(kx0, kx1 + 1):
        grid.append({"x1": _n(px(10.0 ** k)), "y1": _n(RF_TOP), "x2": _n(px(10.0 ** k)),
                     "y2": _n(RF_TOP + RF_HEIGHT), "major": True})
        if k < kx1:
            for m in range(2, 10):
                x = px(m * 10.0 ** k)
                grid.append({"x1": _n(x), "y1": _n(RF_TOP), "x2": _n(x),
                             "y2": _n(RF_TOP + RF_HEIGHT), "major": False})
    for k in range(ky0, ky1 + 1):
        grid.append({"x1": _n(RF_LEFT), "y1": _n(py(10.0 ** k)), "x2": _n(RF_LEFT + RF_WIDTH),
                     "y2": _n(py(10.0 ** k)), "major": True})
        if k < ky1:
            for m in range(2, 10):
                y = py(m * 10.0 ** k)
                grid.append({"x1": _n(RF_LEFT), "y1": _n(y), "x2": _n(RF_LEFT + RF_WIDTH),
                             "y2": _n(y), "major": False})
    xticks = [{"x": _n(px(10.0 ** k)), "label": _decade_label(k)} for k in range(kx0, kx1 + 1)]
    yticks = [{"y": _n(py(10.0 ** k) + 4), "label": _decade_label(k)} for k in range(ky0, ky1 + 1)]

    # Memory roof: y = x * bw from the left edge (or the bottom) up to the highest ridge.
    x_start = max(x_min, y_min * 1e12 / bw)
    mem = {"x1": _n(px(x_start)), "y1": _n(py(x_start * bw / 1e12)),
           "x2": _n(px(ridge)), "y2": _n(py(top_peak / 1e12))}
    # Label along the slope, a third of the way up.
    roofs = []
    for p, names in peaks:
        xr = p / bw
        roofs.append({"x1": _n(px(xr)), "y1": _n(py(p / 1e12)), "x2": _n(px(x_max)),
                      "y2": _n(py(p / 1e12)), "label_x": _n(px(x_max) - 4),
                      "label_y": _n(py(p / 1e12) - 5),
                      "text": f"{', '.join(names)}: {_fmt(p / 1e12, 0)} TFLOPS"})
    max_share = max((r.share for r in plotted), default=1.0) or 1.0
    points = []
    for r, x, y in sorted(zip(plotted, xs, ys), key=lambda p: (-p[0].seconds, p[0].index)):
        radius = 3 + 11 * math.sqrt(r.share / max_share)
        points.append({"x": px(x), "y": py(y), "radius": radius, "index": r.index,
                       "cx": _n(px(x)), "cy": _n(py(y)), "r": _n(radius),
                       "color": COLORS.get(r.bound, COLORS["latency"]),
                       "title": f"#{r.index} {r.name} ({r.kernel}, x{r.count}): "
                                f"{x:,.1f} FLOP/B, {y:,.2f} TFLOPS, {_fmt(100 * r.share, 1)}% "
                                f"of the time, {r.bound}-bound"})
    mem_label = _slope_label(f"memory {_fmt(bw / 1e9, 0)} GB/s", points,
                             (px(x_start), py(x_start * bw / 1e12)),
                             (px(ridge), py(top_peak / 1e12)))
    labels = _place_labels(points, mem_label.pop("boxes"))
    return {
        "width": RF_LEFT + RF_WIDTH + 20, "height": RF_TOP + RF_HEIGHT + 56,
        "left": RF_LEFT, "top": RF_TOP, "plot_width": RF_WIDTH, "plot_height": RF_HEIGHT,
        "bottom": _n(RF_TOP + RF_HEIGHT), "right": _n(RF_LEFT + RF_WIDTH),
        "grid": grid, "xticks": xticks, "yticks": yticks,
        "xtick_y": _n(RF_TOP + RF_HEIGHT + 16), "ytick_x": _n(RF_LEFT - 6),
        "xlabel_x": _n(RF_LEFT + RF_WIDTH / 2), "xlabel_y": _n(RF_TOP + RF_HEIGHT + 40),
        "ylabel_x": _n(18), "ylabel_y": _n(RF_TOP + RF_HEIGHT / 2),
        "memory": mem, "memory_label": mem_label, "roofs": roofs, "points": points,
        "labels": labels,
        "key": [{"index": r.index, "name": r.name, "share": _fmt(100 * r.share, 1),
                 "color": COLORS.get(r.bound, COLORS["latency"])}
                for r in plotted if any(r.index in l["rows"] for l in labels)],
        "missing": [f"{r.name} ({r.kernel})" for r in missing],
    }


LABELLED_POINTS = 12


def _place_labels(points: list[dict], avoid: list[tuple]) -> list[dict]:
    """Number labels for the largest points: points within a few pixels share one label
    ("26, 28"); each label goes right, left, above or below its point, wherever it overlaps
    no label placed before it and no point; a point with no free place stays unlabelled."""
    clusters: list[list[dict]] = []
    for p in points:                                   # largest first
        for c in clusters:
            if abs(c[0]["x"] - p["x"]) <= 3 and abs(c[0]["y"] - p["y"]) <= 3:
                c.append(p)
                break
        else:
            clusters.append([p])
    def disc(p):
        return (p["x"] - p["radius"], p["y"] - p["radius"], p["x"] + p["radius"],
                p["y"] + p["radius"])
    taken = [disc(p) for p in points] + list(avoid)
    out = []
    for c in clusters[:LABELLED_POINTS]:
        text = ", ".join(str(i) for i in sorted(p["index"] for p in c))
        w, h = 6.2 * len(text), 11.0
        x, y, r = c[0]["x"], c[0]["y"], max(p["radius"] for p in c)
        for lx, ly in ((x + r + 2, y + 4), (x - r - 2 - w, y + 4), (x - w / 2, y - r - 3),
                       (x - w / 2, y + r + 12)):
            box = (lx, ly - h + 2, lx + w, ly + 2)
            own = {disc(p) for p in c}
            if all(not _overlap(box, t) for t in taken if t not in own) and \
                    RF_LEFT <= box[0] and box[2] <= RF_LEFT + RF_WIDTH and \
                    RF_TOP <= box[1] and box[3] <= RF_TOP + RF_HEIGHT:
                taken.append(box)
                out.append({"x": _n(lx), "y": _n(ly), "text": text,
                            "rows": sorted(p["index"] for p in c)})
                break
    return out


def _slope_label(text: str, points: list[dict], a: tuple[float, float],
                 b: tuple[float, float]) -> dict:
    """A label written along the segment a-b, just above it, where it clears the points:
    the first of a few places along the segment whose text keeps away from every point.
    Also returns small boxes covering the text, for the point labels to avoid."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length                  # along the line
    nx, ny = uy, -ux                                   # normal, pointing up on screen
    width = 6.0 * len(text)
    best = None
    for f in (0.12, 0.3, 0.5, 0.05, 0.7, 0.2, 0.4, 0.6):
        start = (a[0] + dx * f + nx * 6, a[1] + dy * f + ny * 6)
        if f * length + width > length:
            continue
        samples = [(start[0] + ux * t + nx * 4, start[1] + uy * t + ny * 4)
                   for t in range(0, int(width) + 1, 4)]
        clear = min((math.hypot(x - p["x"], y - p["y"]) - p["radius"]
                     for x, y in samples for p in points), default=math.inf)
        if clear >= 7:
            best = start
            break
        if best is None:
            best = start
    best = best or a
    boxes = [(best[0] + ux * t + nx * 4 - 5, best[1] + uy * t + ny * 4 - 5,
              best[0] + ux * t + nx * 4 + 5, best[1] + uy * t + ny * 4 + 5)
             for t in range(0, int(width) + 1, 4)]
    return {"x": _n(best[0]), "y": _n(best[1]), "text": text,
            "angle": _n(math.degrees(math.atan2(dy, dx))), "boxes": boxes}


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# -- stalls --

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
        out.append({"reason": reason, "core_cycles": _fmt(total[key], 0),
                    "per_core": _fmt(per_core, 0),
                    "time": _time(per_core / t.clock_hz),
                    "share": _percent(per_core / run_cycles),
                    "where": f"#{row.index} {row.name}",
                    "where_share": _fmt(100 * where[key][best] / total[key], 0)})
    return out
