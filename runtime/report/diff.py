"""`dsc diff A.json B.json`: what changed between two runs and why, from their JSON reports.

Kernels are matched by what they compute across layers and micro-batches (`layer.*.moe.silu`,
runtime/report/summary.layer_pattern) and their time summed over launches; layers are matched
by their index ranges (the deployment section). The causes are the three kernel groups whose
time moved most, each in words: how much, which bound held it on each side, and the target
figure behind that bound on each side (from the reports' `target_figures`). Time in kernels
can add up past the step's time where streams overlap; the step's own delta comes first.
"""
from __future__ import annotations

from dataclasses import dataclass

from runtime.report.blocks import block_of
from runtime.report.summary import layer_pattern

KERNEL_ROWS = 15


@dataclass
class Group:
    """The launches of one kernel pattern in one run."""
    launches: int = 0
    seconds: float = 0.0
    by_bound: dict | None = None
    block: str = "other"

    @property
    def bound(self) -> str:
        return max(sorted(self.by_bound), key=self.by_bound.get) if self.by_bound else "-"


def groups(report: dict) -> dict[str, Group]:
    hz = report["total_cycles"] / report["time_s"] if report["time_s"] else 1.0
    out: dict[str, Group] = {}
    for k in report["kernels"]:
        key = layer_pattern(k["name"])
        g = out.setdefault(key, Group(by_bound={}))
        seconds = (k["end_cycle"] - k["start_cycle"]) / hz
        g.launches += 1
        g.seconds += seconds
        g.by_bound[k["bound"]] = g.by_bound.get(k["bound"], 0.0) + seconds
        g.block = k.get("block") or block_of(k["name"], k.get("stream", "compute"),
                                            k.get("kernel", ""))
    return out


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.3f} ms" if abs(seconds) >= 1e-3 else f"{seconds * 1e6:,.1f} us"


def _signed(seconds: float) -> str:
    return ("+" if seconds >= 0 else "-") + _ms(abs(seconds))


def _percent(new: float, old: float) -> str:
    return f"{(new - old) / old * 100:+.0f}%" if old else "new"


def _label(report: dict) -> str:
    dep = report.get("deployment") or {}
    devices = dep.get("devices", 1)
    where = f" on {devices} devices ({dep.get('plan')})" if devices > 1 else ""
    return f"{report['model']} on {report['target']}{where}"


def _figure(bound: str, a: dict, b: dict) -> str | None:
    """The target figure that sets a bound's pace, on each side, in words (None when a report
    lacks its target's figures or the bound has no single figure)."""
    fa, fb = a.get("target_figures"), b.get("target_figures")
    if not fa or not fb:
        return None
    side = lambda text_a, text_b, unit: (f"{text_a} {unit} on {a['target']} against "
                                         f"{text_b} on {b['target']}")
    if bound == "compute":
        common = [d for d in ("fp8_e4m3", "bf16") if d in fa["peak_tflops"] and d in fb["peak_tflops"]]
        return "matrix peak " + "; ".join(
            f"{d} " + side(f"{fa['peak_tflops'][d]:,.0f}", f"{fb['peak_tflops'][d]:,.0f}", "TFLOP/s")
            for d in common) if common else None
    if bound == "vector":
        return "vector units " + side(f"{fa['vector_gflops']:,.0f}", f"{fb['vector_gflops']:,.0f}",
                                      "GFLOP/s")
    if bound == "memory":
        return "memory bandwidth " + side(f"{fa['memory_bandwidth_gbs']:,.0f}",
                                          f"{fb['memory_bandwidth_gbs']:,.0f}", "GB/s")
    if bound in fa.get("links_gbs", {}) and bound in fb.get("links_gbs", {}):
        return f"{bound} bandwidth " + side(f"{fa['links_gbs'][bound]:,.0f}",
                                            f"{fb['links_gbs'][bound]:,.0f}", "GB/s per device")
    if bound == "latency":
        return "launch overhead " + side(f"{fa['launch_overhead_us']:.1f}",
                                         f"{fb['launch_overhead_us']:.1f}", "us") + \
            ", clock " + side(f"{fa['clock_ghz']:.2f}", f"{fb['clock_ghz']:.2f}", "GHz")
    return None


def causes(a: dict, b: dict, ga: dict[str, Group], gb: dict[str, Group]) -> list[str]:
    """The three kernel groups whose time moved most, in words."""
    keys = sorted(set(ga) | set(gb),
                  key=lambda k: (-abs(gb.get(k, Group()).seconds - ga.get(k, Group()).seconds), k))
    out = []
    for key in keys[:3]:
        old, new = ga.get(key, Group(by_bound={})), gb.get(key, Group(by_bound={}))
        delta = new.seconds - old.seconds
        if old.launches == 0 or new.launches == 0:
            side, g = ("B", new) if old.launches == 0 else ("A", old)
            out.append(f"{key} ({g.block}) runs only in {side}: {g.launches} launches, "
                       f"{_ms(g.seconds)}")
            continue
        words = (f"{key} ({new.block}, {new.launches} launches) takes {_signed(delta)} "
                 f"({_percent(new.seconds, old.seconds)}): {_ms(old.seconds)} on A, "
                 f"{_ms(new.seconds)} on B")
        if old.bound == new.bound:
            words += f"; {new.bound}-bound on both"
        else:
            words += f"; {old.bound}-bound on A, {new.bound}-bound on B"
        bounds = dict.fromkeys((new.bound, old.bound))       # B's bound first: its cause
        figures = [x for x in (_figure(bound, a, b) for bound in bounds) if x]
        if figures:
            words += " (" + "; ".join(figures) + ")"
        out.append(words)
    return out


def diff_text(a: dict, b: dict, name_a: str, name_b: str) -> str:
    ga, gb = groups(a), groups(b)
    lines = [f"A: {name_a}: {_label(a)}: {_ms(a['time_s'])} per step",
             f"B: {name_b}: {_label(b)}: {_ms(b['time_s'])} per step",
             f"B - A: {_signed(b['time_s'] - a['time_s'])} ({_percent(b['time_s'], a['time_s'])})"]
    da, db = a.get("deployment") or {}, b.get("deployment") or {}
    if da.get("tokens_per_s_per_device") and db.get("tokens_per_s_per_device"):
        lines.append(f"tokens/s per device: {da['tokens_per_s_per_device']:,.0f} -> "
                     f"{db['tokens_per_s_per_device']:,.0f} ("
                     f"{_percent(db['tokens_per_s_per_device'], da['tokens_per_s_per_device'])})"
                     f"; communication the cores waited for: {da.get('exposed_comm_us', 0):,.1f}"
                     f" -> {db.get('exposed_comm_us', 0):,.1f} us")
    lines += ["", "top causes:"] + [f"{i}. {c}" for i, c in enumerate(causes(a, b, ga, gb), 1)]
    moved = [(k, ga[k].bound, gb[k].bound) for k in sorted(set(ga) & set(gb))
             if ga[k].bound != gb[k].bound]
    lines += ["", "bound moved:" if moved else "bound moved: in no kernel group"]
    lines += [f"  {k}: {x} -> {y}" for k, x, y in moved]
    lines += _blocks(ga, gb) + _layers(da, db) + _kernels(ga, gb)
    return "\n".join(lines) + "\n"


def _blocks(ga, gb) -> list[str]:
    lines = ["", f"{'block':<16}{'A':>14}{'B':>14}{'B - A':>15}"]
    for block in dict.fromkeys(g.block for g in (*ga.values(), *gb.values())):
        x = sum(g.seconds for g in ga.values() if g.block == block)
        y = sum(g.seconds for g in gb.values() if g.block == block)
        lines.append(f"{block:<16}{_ms(x):>14}{_ms(y):>14}{_signed(y - x):>15}")
    return lines


def _layers(da: dict, db: dict) -> list[str]:
    la = {(r["first"], r["last"]): r for r in da.get("layers", [])}
    lb = {(r["first"], r["last"]): r for r in db.get("layers", [])}
    if not la and not lb:
        return []
    lines = ["", f"{'layers':<16}{'A us/layer':>14}{'B us/layer':>14}{'B - A':>12}"
                 f"{'exposed comm A -> B us':>26}"]
    for span in sorted(set(la) | set(lb)):
        x, y = la.get(span), lb.get(span)
        name = f"{span[0]}" if span[0] == span[1] else f"{span[0]}-{span[1]}"
        cell = lambda r, k: f"{r[k]:,.1f}" if r else "-"
        delta = f"{y['time_us'] - x['time_us']:+,.1f}" if x and y else "-"
        lines.append(f"{name:<16}{cell(x, 'time_us'):>14}{cell(y, 'time_us'):>14}{delta:>12}"
                     f"{cell(x, 'exposed_comm_us') + ' -> ' + cell(y, 'exposed_comm_us'):>26}")
    return lines


def _kernels(ga, gb) -> list[str]:
    keys = sorted(set(ga) | set(gb),
                  key=lambda k: (-abs(gb.get(k, Group()).seconds - ga.get(k, Group()).seconds), k))
    lines = ["", f"kernels (the {min(KERNEL_ROWS, len(keys))} that moved most of {len(keys)}, "
                 "time summed over launches):",
             f"  {'B - A':>12} {'A':>12} {'B':>12}  {'bound A -> B':<22} name"]
    for k in keys[:KERNEL_ROWS]:
        x, y = ga.get(k, Group(by_bound={})), gb.get(k, Group(by_bound={}))
        lines.append(f"  {_signed(y.seconds - x.seconds):>12} {_ms(x.seconds):>12} "
                     f"{_ms(y.seconds):>12}  {x.bound + ' -> ' + y.bound:<22} {k}")
    return lines
