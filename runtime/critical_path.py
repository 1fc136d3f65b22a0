"""The critical path of a run: the chain of launches that sets the step's time, and where it
spends it (which block of the model, on which resource).

Walked back from the launch that ends last. Each launch on the chain started when the later of
two things allowed it (runtime/interpreter.py): its stream coming free (the launch before it on
that stream) or a launch on another stream it waited for (its `waited_on`); the chain goes on
through whichever that was. A launch's time on the chain is its run, charged to its block
(runtime/report/blocks.py) and the resource that bounds it (runtime/report/summary.py: the
compute units, the vector unit, memory, L2, a link, or latency); the cycles between being
ready and starting are its launch, charged to "launch overhead". The entries add up to the
step when every wait on the chain is for a launch's end (a launch that waits only to overwrite
what another still reads leaves a gap: their `share`s then add up to less than one).
"""
from __future__ import annotations

from runtime.interpreter import RunResult
from runtime.report.blocks import block_of
from runtime.report.summary import summaries


LAUNCH = ("launch overhead", "")          # (block, resource) of the cycles spent launching


def critical_path(run: RunResult) -> list[dict]:
    """[{block, resource, cycles, share}], largest first: the step's time along its critical
    path by the block and resource that took it."""
    launches = run.launches
    if not launches:
        return []
    bound = [s.bound for s in summaries(run)]
    before: dict[int, int] = {}                  # launch -> the one before it on its stream
    last: dict[str, int] = {}
    for i, r in enumerate(launches):
        if r.stream in last:
            before[i] = last[r.stream]
        last[r.stream] = i
    totals: dict[tuple[str, str], float] = {}
    i = max(range(len(launches)), key=lambda k: (launches[k].end, -k))
    while i is not None and i >= 0:
        r = launches[i]
        resource = bound[i] if r.stream == "compute" else r.stream
        key = (block_of(r.name, r.stream, r.kernel), resource)
        totals[key] = totals.get(key, 0.0) + r.end - r.start
        if r.launching > 0:
            totals[LAUNCH] = totals.get(LAUNCH, 0.0) + r.launching
        i = r.waited_on if r.waited_on >= 0 else before.get(i)
    step = run.cycles or 1.0
    hz = run.target.clock_hz
    rows = [{"block": block, "resource": resource, "us": cycles / hz * 1e6,
             "share": cycles / step} for (block, resource), cycles in totals.items()]
    return sorted(rows, key=lambda row: (-row["us"], row["block"], row["resource"]))
