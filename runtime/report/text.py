"""The terminal summary of `dsc run`: one row per kernel (same kernel over layers aggregated)."""
from __future__ import annotations

from isa.machine import LinkUnit
from isa.mma_operands import mma_operands
from runtime.interpreter import RunResult
from runtime.report.deployment import deployment_text, exposure, step_share
from runtime.report.figures import figures_text
from runtime.report.operand_hint import activation_hints
from runtime.report.summary import layer_pattern, offchip_bytes, summaries, unit_totals


def summary_text(run: RunResult) -> str:
    target = run.target
    hz = target.clock_hz
    rows: dict[tuple[str, str], list] = {}
    patterns: dict[str, str] = {}
    indices: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(summaries(run)):
        if s.name not in patterns:
            patterns[s.name] = layer_pattern(s.name)
        rows.setdefault((patterns[s.name], s.kernel), []).append(s)
        indices.setdefault((patterns[s.name], s.kernel), []).append(i)
    total = run.cycles
    exposed = exposure(run)
    lines = [f"model {run.program.model} on {target.name}: {total / hz * 1e6:,.1f} us "
             f"({total:,.0f} cycles at {target.running_clock_ghz} GHz), {len(run.launches)} "
             f"kernel launches, {run.simulated_kernels} simulated",
             figures_text(target), "",
             f"{'kernel':<34} {'n':>4} {'time us':>10} {'%':>5} {'TFLOPS':>8} {'GB/s':>8} "
             f"{'bound':<9} top stall"]
    for (name, kernel), group in rows.items():
        cycles = sum(r.cycles for r in group)
        seconds = cycles / hz
        flops = sum(r.flops for r in group)
        nbytes = sum(r.bytes_offchip for r in group)
        bounds = max(sorted({r.bound for r in group}),
                     key=lambda b: sum(r.cycles for r in group if r.bound == b))
        share = step_share(indices[(name, kernel)], run, cycles, exposed)
        lines.append(f"{_clip(name, 34):<34} {len(group):>4} {seconds * 1e6:>10.1f} "
                     f"{100 * share / max(total, 1e-9):>5.1f} {flops / seconds / 1e12 if seconds else 0:>8.1f} "
                     f"{nbytes / seconds / 1e9 if seconds else 0:>8.0f} {bounds:<9} {group[0].top_stall}")
    if any(r.stream != "compute" for r in run.launches):
        lines.append("(% of the run: a collective's is the time the cores waited for it, the "
                     "rest of its time hidden under compute)")
    flops = sum(r.flops for r in run.launches)
    nbytes = sum(offchip_bytes(r.result, target.machine) for r in run.launches)
    seconds = total / hz
    lines += ["", f"total: {flops / 1e9:,.1f} GFLOP, {nbytes / 1e9:,.2f} GB off-chip; "
              f"{flops / seconds / 1e12 if seconds else 0:,.1f} TFLOPS, "
              f"{nbytes / seconds / 1e9 if seconds else 0:,.0f} GB/s achieved"]
    compute = [r for r in run.launches if r.stream == "compute"]
    if compute:
        mode = run.program.deployment.launch
        waiting = sum(r.launching for r in compute)
        lines.append(f"launch overhead: {len(compute)} {mode} launches (one per "
                     f"{target.launch_us(mode):g} us at most) = {waiting / hz * 1e6:,.1f} us "
                     f"({100 * waiting / max(total, 1e-9):.1f}% of the run, the cores idle)")
    kept = sum(r.result.kept_hits for r in run.launches)
    if kept:
        lines.append(f"kept in cache between kernels: {kept / 1e9:,.3f} GB of reads hit what "
                     f"earlier kernels left ({100 * kept / max(kept + nbytes, 1e-9):.1f}% of "
                     "what would otherwise be off-chip traffic)")
    lines += _matrix_operands(run)
    lines += _placement(run)
    lines += _utilisation(unit_totals(run), target)
    if run.program.deployment.devices > 1:
        lines += [""] + deployment_text(run)
    return "\n".join(lines) + "\n"


def _matrix_operands(run: RunResult) -> list[str]:
    """The GEMMs whose operands are not both in their instruction's format: mixed formats
    read natively, or operands widened (dequantised) on the vector unit first."""
    kernels = run.program.kernel_table()
    counts: dict[str, int] = {}
    for name in dict.fromkeys(rec.kernel for rec in run.launches if rec.kernel in kernels):
        for m in mma_operands(kernels[name]):
            if not m.same_format:
                counts[m.text()] = counts.get(m.text(), 0) + 1
    lines = [f"matrix operands: {text} ({n} kernel{'s' if n > 1 else ''})"
             for text, n in counts.items()]
    launched = [kernels[name] for name in dict.fromkeys(r.kernel for r in run.launches)
                if name in kernels]
    return lines + activation_hints(run.program, run.target, launched)


def _placement(run: RunResult) -> list[str]:
    """Where tensors live when some are placed outside the default memory."""
    placed: dict[str, list] = {}
    for t in run.program.tensors:
        if t.memory:
            placed.setdefault(t.memory, []).append(t)
    return [f"placed in {memory}: {len(ts)} tensors, {sum(t.nbytes for t in ts) / 1e9:,.2f} GB "
            f"({', '.join(sorted({t.kind for t in ts}))})" for memory, ts in placed.items()]


def _utilisation(units: dict, target) -> list[str]:
    """Whole-chip figures on one line; on a multi-die chip, one more line per die: its units
    (keys "mm@d1"), the memories it owns and the links leaving it."""
    pct = lambda v: f"{v['utilization'] * 100:.1f}%"
    resources = target.machine.resources
    per_die = {u: r for u, r in resources.items() if u in units and r.die is not None
               and u not in target.machine.families}
    chip = {u: v for u, v in units.items() if "@" not in u and u not in per_die}
    lines = ["utilisation: " + ", ".join(f"{u} {pct(v)}" for u, v in chip.items())]
    for d in range(target.chip.dies if target.chip.dies > 1 else 0):
        mine = [(u.split("@")[0], v) for u, v in units.items() if u.endswith(f"@d{d}")]
        mine += [(f"link to {r.dst}" if isinstance(r, LinkUnit) else r.family, units[u])
                 for u, r in per_die.items() if r.die == d]
        lines.append(f"  die {d}: " + ", ".join(f"{u} {pct(v)}" for u, v in sorted(
            mine, key=lambda uv: list(chip).index(uv[0]) if uv[0] in chip else len(chip))))
    return lines


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]
