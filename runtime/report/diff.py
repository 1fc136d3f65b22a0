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


@dataclass
class Comparison:
    """Two reports compared: what the text and the HTML form of `dsc diff` both show."""
    a: dict
    b: dict
    name_a: str
    name_b: str
    ga: dict[str, Group]
    gb: dict[str, Group]

    @property
    def headline(self) -> list[str]:
        a, b = self.a, self.b
        lines = [f"A: {self.name_a}: {_label(a)}: {_ms(a['time_s'])} per step",
                 f"B: {self.name_b}: {_label(b)}: {_ms(b['time_s'])} per step",
                 f"B - A: {_signed(b['time_s'] - a['time_s'])} "
                 f"({_percent(b['time_s'], a['time_s'])})"]
        da, db = a.get("deployment") or {}, b.get("deployment") or {}
        if da.get("tokens_per_s_per_device") and db.get("tokens_per_s_per_device"):
            lines.append(f"tokens/s per device: {da['tokens_per_s_per_device']:,.0f} -> "
                         f"{db['tokens_per_s_per_device']:,.0f} ("
                         f"{_percent(db['tokens_per_s_per_device'], da['tokens_per_s_per_device'])})"
                         f"; communication the cores waited for: "
                         f"{da.get('exposed_comm_us', 0):,.1f} -> "
                         f"{db.get('exposed_comm_us', 0):,.1f} us")
        return lines

    @property
    def causes(self) -> list[str]:
        return causes(self.a, self.b, self.ga, self.gb)

    @property
    def moved(self) -> list[tuple[str, str, str]]:
        """(kernel group, bound on A, bound on B) where the bound changed."""
        return [(k, self.ga[k].bound, self.gb[k].bound) for k in sorted(set(self.ga) & set(self.gb))
                if self.ga[k].bound != self.gb[k].bound]

    @property
    def blocks(self) -> list[tuple[str, float, float]]:
        """(block, seconds on A, seconds on B), blocks in order of first appearance."""
        ga, gb = self.ga, self.gb
        return [(block, sum(g.seconds for g in ga.values() if g.block == block),
                 sum(g.seconds for g in gb.values() if g.block == block))
                for block in dict.fromkeys(g.block for g in (*ga.values(), *gb.values()))]

    @property
    def layers(self) -> list[tuple[str, dict | None, dict | None]]:
        """(layers by index range, A's row, B's row) from the deployment sections."""
        la, lb = ({(r["first"], r["last"]): r for r in (rep.get("deployment") or {}).get("layers", [])}
                  for rep in (self.a, self.b))
        return [(f"{s[0]}" if s[0] == s[1] else f"{s[0]}-{s[1]}", la.get(s), lb.get(s))
                for s in sorted(set(la) | set(lb))]

    @property
    def kernels(self) -> list[tuple[str, Group, Group]]:
        """Every kernel group (A's, B's), the ones whose time moved most first."""
        ga, gb = self.ga, self.gb
        keys = sorted(set(ga) | set(gb),
                      key=lambda k: (-abs(gb.get(k, Group()).seconds - ga.get(k, Group()).seconds), k))
        return [(k, ga.get(k, Group(by_bound={})), gb.get(k, Group(by_bound={}))) for k in keys]


def compare(a: dict, b: dict, name_a: str, name_b: str) -> Comparison:
    return Comparison(a, b, name_a, name_b, groups(a), groups(b))


def diff_text(a: dict, b: dict, name_a: str, name_b: str) -> str:
    c = compare(a, b, name_a, name_b)
    lines = c.headline + ["", "top causes:"] + [f"{i}. {x}" for i, x in enumerate(c.causes, 1)]
    lines += ["", "bound moved:" if c.moved else "bound moved: in no kernel group"]
    lines += [f"  {k}: {x} -> {y}" for k, x, y in c.moved]
    lines += ["", f"{'block':<16}{'A':>14}{'B':>14}{'B - A':>15}"]
    lines += [f"{block:<16}{_ms(x):>14}{_ms(y):>14}{_signed(y - x):>15}" for block, x, y in c.blocks]
    if c.layers:
        lines += ["", f"{'layers':<16}{'A us/layer':>14}{'B us/layer':>14}{'B - A':>12}"
                      f"{'exposed comm A -> B us':>26}"]
    for name, x, y in c.layers:
        cell = lambda r, k: f"{r[k]:,.1f}" if r else "-"
        delta = f"{y['time_us'] - x['time_us']:+,.1f}" if x and y else "-"
        lines.append(f"{name:<16}{cell(x, 'time_us'):>14}{cell(y, 'time_us'):>14}{delta:>12}"
                     f"{cell(x, 'exposed_comm_us') + ' -> ' + cell(y, 'exposed_comm_us'):>26}")
    kernels = c.kernels
    lines += ["", f"kernels (the {min(KERNEL_ROWS, len(kernels))} that moved most of "
                  f"{len(kernels)}, time summed over launches):",
              f"  {'B - A':>12} {'A':>12} {'B':>12}  {'bound A -> B':<22} name"]
    lines += [f"  {_signed(y.seconds - x.seconds):>12} {_ms(x.seconds):>12} "
              f"{_ms(y.seconds):>12}  {x.bound + ' -> ' + y.bound:<22} {k}"
              for k, x, y in kernels[:KERNEL_ROWS]]
    return "\n".join(lines) + "\n"
