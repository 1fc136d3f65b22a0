"""Which figures a run used: the sustained ones a target file gives (the clock under sustained
matrix load, achievable bandwidths), each with the measurement it comes from, or the
datasheet peaks (`dsc run --peak`, or a file that gives no sustained figure)."""
from __future__ import annotations

from isa.target_schema import Target


def figures_dict(target: Target) -> dict:
    """{"mode", "clock_ghz", "peak_clock_ghz", "clock_source", "bandwidths": {memory or link:
    {"gbs", "peak_gbs", "source"}}} (per instance): what the JSON report says."""
    hz = target.clock_hz
    bandwidths = {}
    for unit in _sustainable(target):
        if unit.family in bandwidths:         # one entry per declared memory or link
            continue
        bandwidths[unit.family] = {"gbs": unit.bytes_per_cycle * hz / 1e9,
                               "peak_gbs": unit.bytes_per_cycle / unit.achievable * hz / 1e9,
                               "source": unit.source}
    sustained_clock = target.running_clock_ghz != target.clock_ghz
    return {"mode": "sustained" if target.sustained else "peak",
            "clock_ghz": target.running_clock_ghz, "peak_clock_ghz": target.clock_ghz,
            "clock_source": target.sustained_clock_source if sustained_clock else "",
            "bandwidths": bandwidths}


def figures_text(target: Target) -> str:
    """One line: the sustained figures used with their sources, or that peaks were."""
    if not target.sustained:
        return "figures: datasheet peaks (--peak)"
    d = figures_dict(target)
    used = []
    if d["clock_source"]:
        used.append(f"  clock {d['clock_ghz']:g} of {d['peak_clock_ghz']:g} GHz: "
                    f"{d['clock_source']}")
    for name, b in d["bandwidths"].items():
        if b["source"]:
            used.append(f"  {name} {b['gbs']:,.0f} of {b['peak_gbs']:,.0f} GB/s: "
                        f"{b['source']}")
    if not used:
        return "figures: datasheet peaks (the target gives no sustained figure)"
    return "\n".join(["figures: sustained (--peak runs on datasheet peaks)"] + used)


def _sustainable(target: Target):
    """Memories and links (not caches' request rates) in declaration order."""
    m = target.machine
    return [*m.memories, *m.links, *m.device_links]
