"""The JSON report of `dsc run` (the contract keys, plus a few more)."""
from __future__ import annotations

import json

from isa.mma_operands import mma_operands
from runtime.interpreter import RunResult
from runtime.report.blocks import block_of
from runtime.report.deployment import deployment_dict
from runtime.report.figures import figures_dict
from runtime.report.summary import summaries, unit_totals


def target_figures(target) -> dict:
    """The target's headline figures, so that a report read alone (dsc diff) can say what set
    a bound's pace: matrix peaks per format, vector throughput, memory and link bandwidths."""
    links = {}
    if target.system is not None:
        for name, link in (("nvlink", target.system.intra_node),
                           ("network", target.system.inter_node)):
            if link is not None:
                links[name] = link.bandwidth_gbs
    links.update({name: spec.bandwidth_gbs for name, spec in target.links.items()})
    return {"clock_ghz": target.clock_ghz, "launch_overhead_us": target.launch_overhead_us,
            "peak_tflops": {d: target.peak_flops(d) / 1e12 for d in target.matrix.formats},
            "vector_gflops": target.vector.lanes * target.cores * target.clock_hz / 1e9,
            "memory_bandwidth_gbs": target.peak_memory_bandwidth / 1e9,
            "links_gbs": links}


def report_dict(run: RunResult, provenance: dict | None = None) -> dict:
    """`provenance`: what produced the run (dsc version, command line, target file and its
    hash), added as given."""
    target = run.target
    rows = summaries(run)
    total = run.cycles
    hz = target.clock_hz
    operands = {k.name: [m.as_dict() for m in mma_operands(k)] for k in run.program.kernels}
    out = {
        "model": run.program.model,
        "target": target.name,
        "total_cycles": _whole(0.0, total)[1],
        "time_s": total / target.clock_hz,
        "flops": float(sum(r.flops for r in rows)),
        "bytes_offchip": float(sum(r.bytes_offchip for r in rows)),
        "kernels": [
            {"name": r.name, "kernel": r.kernel, "start_cycle": _whole(r.start, r.end)[0],
             "end_cycle": _whole(r.start, r.end)[1], "flops": float(r.flops),
             "bytes": float(r.bytes_offchip), "bound": r.bound,
             "top_stall": r.top_stall, "stream": rec.stream,
             "exposed_us": round(rec.exposed / hz * 1e6, 6),
             "block": block_of(r.name, rec.stream, r.kernel),
             "utilization": {u: round(v, 6) for u, v in sorted(r.utilization.items())},
             # each matrix instruction's operand formats, native or widened (isa/mma_operands.py)
             "matrix_operands": operands.get(r.kernel, [])}
            for r, rec in zip(rows, run.launches)],
        "units": {u: {"busy_cycles": int(round(v["busy_cycles"])),
                      "utilization": round(v["utilization"], 6)}
                  for u, v in unit_totals(run).items()},
        "sizes": dict(run.program.sizes),
        "simulated_kernels": run.simulated_kernels,
        # reads served by what earlier kernels left in a cache (runtime/residency.py)
        "bytes_kept_in_cache": float(sum(r.result.kept_hits for r in run.launches)),
        "deployment": deployment_dict(run),
        "target_figures": target_figures(target),
        # the figures the run used: sustained (with their sources) or datasheet peaks
        "figures": figures_dict(target),
        "launch": {"mode": run.program.deployment.launch,
                   "us": target.launch_us(run.program.deployment.launch)},
    }
    if provenance:
        out["provenance"] = provenance
    return out


def report_json(run: RunResult) -> str:
    return json.dumps(report_dict(run), indent=1) + "\n"


def _whole(start: float, end: float) -> tuple[int, int]:
    """A span in whole cycles: rounded, but one that lasts at all lasts at least a cycle.
    The engine gives every instruction an issue slot, so a kernel lasts a cycle or more; the
    guard keeps rounding from undoing that (round half to even takes 1.5 .. 2.5 to 2 .. 2)."""
    first, last = int(round(start)), int(round(end))
    return first, max(last, first + 1) if end > start else last
