"""The HTML page's sections beyond the kernels: the deployment (tokens/s, time per layer,
communication exposed), the roll-up by block, each collective's exposed and hidden time, the
launch overhead, and the report's provenance.

A collective runs on its link's stream while the cores go on with other work; the part of its
time the cores waited for it is *exposed* (LaunchRecord.exposed), the rest *hidden* under
compute. Blocks are runtime/report/blocks.py's.
"""
from __future__ import annotations

from runtime.interpreter import RunResult
from runtime.report.blocks import BLOCKS, block_of
from runtime.report.deployment import deployment_dict, exposure
from runtime.report.summary import layer_pattern


def _us(cycles: float, hz: float) -> str:
    return f"{cycles / hz * 1e6:,.1f}"


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}" if whole > 0 else "0.0"


def launch_overhead(run: RunResult) -> tuple[str, str]:
    """The summary line: the cores idle between one kernel's end and the next one's start."""
    t, mode = run.target, run.program.deployment.launch
    compute = [r for r in run.launches if r.stream == "compute"]
    idle = sum(r.launching for r in compute)      # each launch's cost in the chosen mode
    return ("launch overhead", f"{len(compute):,} {mode} launches x {t.launch_us(mode):g} us "
                               f"at most = {_us(idle, t.clock_hz)} us, "
                               f"{_pct(idle, run.cycles)}% of the run (the cores idle)")


def deployment(run: RunResult) -> dict | None:
    dep = run.program.deployment
    if dep.devices <= 1:
        return None
    d = deployment_dict(run)
    return {"headline": f"{dep} of {run.target.name}: {d['tokens_per_s_per_device']:,.0f} "
                        f"tokens/s per device, {d['tokens_per_s']:,.0f} in all; "
                        f"{d['tokens_per_device']:,.4g} tokens per device per step; the cores "
                        f"waited {d['exposed_comm_us']:,.1f} us per step for communication",
            "layers": [{"span": str(r["first"]) if r["first"] == r["last"]
                        else f"{r['first']}-{r['last']}", "time": f"{r['time_us']:,.1f}",
                        "comm": f"{r['comm_us']:,.1f}", "exposed": f"{r['exposed_comm_us']:,.1f}"}
                       for r in d["layers"]],
            "outside": f"{d['outside_layers_us']:,.1f}"}


def blocks(run: RunResult) -> list[dict]:
    """Time by block, and what each adds to the run: a block's time on the cores, for
    communication the time the cores waited for it (exposure), and the launch overhead; the
    added times are disjoint stretches of the compute stream, so their shares add up to at
    most 100 %."""
    hz, total = run.target.clock_hz, max(run.cycles, 1e-9)
    waited = exposure(run)
    busy = {b: 0.0 for b in BLOCKS}
    added = {b: 0.0 for b in BLOCKS}
    for i, r in enumerate(run.launches):
        block = block_of(r.name, r.stream, r.kernel)
        busy[block] += r.end - r.start
        added[block] += r.end - r.start if r.stream == "compute" else waited.get(i, 0.0)
    # each launch's own cost, by the launch mode the deployment chose
    overhead = sum(r.launching for r in run.launches if r.stream == "compute")
    rows = [{"block": b, "time": _us(busy[b], hz), "step": _us(added[b], hz),
             "share": _pct(added[b], total)} for b in BLOCKS if busy[b]]
    rows.append({"block": "launch overhead", "time": _us(overhead, hz),
                 "step": _us(overhead, hz), "share": _pct(overhead, total)})
    return rows


def collectives(run: RunResult) -> list[dict]:
    """Each collective (over layers and micro-batches): its time on the link, how much of it
    the cores waited for (exposed) and how much was hidden under compute, and the launch
    whose output it waited for before it could start."""
    hz = run.target.clock_hz
    waited = exposure(run)
    rows: dict[str, dict] = {}
    for i, r in enumerate(run.launches):
        if r.stream == "compute":
            continue
        row = rows.setdefault(layer_pattern(r.name), {"count": 0, "busy": 0.0, "exposed": 0.0,
                                                      "streams": set(), "after": {}})
        row["streams"].add(r.stream)
        row["count"] += 1
        row["busy"] += r.end - r.start
        row["exposed"] += waited.get(i, 0.0)
        if r.waited_on >= 0:
            after = layer_pattern(run.launches[r.waited_on].name)
            row["after"][after] = row["after"].get(after, 0) + 1
    return [{"name": name, "stream": ", ".join(sorted(v["streams"])), "count": v["count"],
             "busy": _us(v["busy"], hz), "exposed": _us(v["exposed"], hz),
             "hidden": _us(max(v["busy"] - v["exposed"], 0.0), hz),
             "after": max(sorted(v["after"]), key=v["after"].get) if v["after"] else "\u2013"}
            for name, v in rows.items()]


def provenance(given: dict | None) -> list[tuple[str, str]]:
    if not given:
        return []
    overrides = ", ".join(f"{k}={v}" for k, v in given.get("target_overrides", {}).items())
    return [("dsc", given.get("dsc_version", "")), ("command", given.get("command", "")),
            ("target file", given.get("target_file", "")),
            ("target sha256", given.get("target_sha256", "")),
            ("target overrides", overrides or "none")]
