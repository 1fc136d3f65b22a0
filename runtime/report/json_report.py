"""The JSON report of `dsc run` (the contract keys, plus a few more)."""
from __future__ import annotations

import json

from runtime.interpreter import RunResult
from runtime.report.deployment import deployment_dict
from runtime.report.summary import summaries, unit_totals


def report_dict(run: RunResult) -> dict:
    target = run.target
    rows = summaries(run)
    total = run.cycles
    return {
        "model": run.program.model,
        "target": target.name,
        "total_cycles": int(round(total)),
        "time_s": total / target.clock_hz,
        "flops": float(sum(r.flops for r in rows)),
        "bytes_offchip": float(sum(r.bytes_offchip for r in rows)),
        "kernels": [
            {"name": r.name, "kernel": r.kernel, "start_cycle": int(round(r.start)),
             "end_cycle": int(round(r.end)), "flops": float(r.flops),
             "bytes": float(r.bytes_offchip), "bound": r.bound,
             "top_stall": r.top_stall}
            for r in rows],
        "units": {u: {"busy_cycles": int(round(v["busy_cycles"])),
                      "utilization": round(v["utilization"], 6)}
                  for u, v in unit_totals(run).items()},
        "sizes": dict(run.program.sizes),
        "simulated_kernels": run.simulated_kernels,
        # reads served by what earlier kernels left in a cache (runtime/residency.py)
        "bytes_kept_in_cache": float(sum(r.result.kept_hits for r in run.launches)),
        "deployment": deployment_dict(run),
    }


def report_json(run: RunResult) -> str:
    return json.dumps(report_dict(run), indent=1) + "\n"
