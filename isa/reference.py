"""The ISA reference of a target (`dsc isa T`), generated from the instruction table.

Every instruction available on the target is listed once, from its `InstrDef` (unit, operand
kinds, attributes, semantics, cost formula), followed by the formula's constants for this
target: the matrix unit's granularity and FLOPs per cycle per format, the vector unit's lanes,
the fixed pipe's rate, the data-movement ports, L2 and memory figures in cycles. Nothing here
restates a number: each is read from the loaded `Target` or the definitions.
"""
from __future__ import annotations

import math
import textwrap

from isa.instructions import INSTRUCTIONS, InstrDef, available
from isa.target_schema import Target
from isa.vector_ops import VECTOR_OPS

WIDTH = 96
_FAMILIES = [
    ("ld", "Data movement: off-chip memory (through L2) to on-chip buffers"),
    ("st", "Data movement: on-chip buffers to off-chip memory"),
    ("mm", "Matrix unit"),
    ("vec", "Vector unit"),
    ("fix", "Fixed pipe"),
    ("vld", "Data movement: a vector core's own loads (split cube/vector designs)"),
    ("vst", "Data movement: a vector core's own stores (split cube/vector designs)"),
    ("sync", "Synchronisation"),
]


def isa_reference(target: Target) -> str:
    lines = _preamble(target)
    groups: dict[str, list[InstrDef]] = {}
    for d in available(target):
        groups.setdefault(_family(d), []).append(d)
    titles = dict(_FAMILIES)
    for key in [k for k, _ in _FAMILIES] + sorted(set(groups) - set(titles)):
        if key == "fix" and target.fixed_pipe is None:
            missing = sorted(d.mnemonic for d in INSTRUCTIONS.values() if d.unit == "fix")
            lines += ["", "## Fixed pipe", ""]
            lines += _wrap(f"Target {target.name} has no fixed pipe: fix.OP and "
                           f"{', '.join(missing)} are not available (epilogues run on the "
                           "vector unit).", "")
            continue
        if key not in groups:
            continue
        lines += ["", f"## {titles.get(key, key)}"]
        figures = _family_figures(key, target)
        lines += [""] + figures if figures else []
        for d in groups[key]:
            lines += [""] + _entry(d, target)
    return "\n".join(lines) + "\n"


def _family(d: InstrDef) -> str:
    return "sync" if d.kind == "fence" else d.unit


def _preamble(target: Target) -> list[str]:
    units = " ".join(target.units)
    text = [f"# ISA reference for target {target.name}", "", target.description]
    text += _wrap(f"clock {target.clock_ghz:g} GHz; {target.cores} cores ({target.chip.dies} x "
                  f"{target.chip.cores_per_die} per die); units per core: {units}; buffers per "
                  "core: " + ", ".join(f"{name} {b.bytes:,} B" for name, b in
                                       target.buffers.items()), "")
    text.append("")
    text += _wrap("Operands: `buf` is an on-chip buffer, NAME or NAME[slot]; `box` is a window "
                  "@PARAM[start:+size, ...] of an off-chip tensor parameter (starts are index "
                  "expressions over the grid and loop variables, sizes integers); `tensor` is "
                  "a whole parameter @PARAM. `[buf]` is an optional operand, `buf...` one or "
                  "more. Attributes are KEY=VALUE, `[key]` optional. Any instruction may end "
                  "with wait(TOKEN,...) and signal(TOKEN,...): it starts when each waited "
                  "token has a credit and adds one to each signalled token when it completes. "
                  "Cycles are core cycles.", "")
    return text


def _entry(d: InstrDef, target: Target) -> list[str]:
    head = f"{d.mnemonic:<18} {_operands(d.operands)}"
    attrs = " ".join(list(d.attrs) + [f"[{a}]" for a in d.optional_attrs])
    if attrs:
        head += f"   {attrs}"
    lines = [f"{head}   (unit {d.unit})"]
    lines += _wrap(d.doc, "    ")
    lines += _wrap(f"cost: {d.formula}", "    ")
    figures = _figures(d, target)
    if figures:
        lines += _wrap(f"on {target.name}: {figures}", "    ")
    return lines


def _operands(kinds) -> str:
    out = []
    for kind in kinds:
        if kind.endswith("?"):
            out.append(f"[{kind[:-1]}]")
        elif kind.endswith("*"):
            out.append(f"{kind[:-1]}...")
        else:
            out.append(kind)
    return ", ".join(out) or "(no operands)"


def _figures(d: InstrDef, target: Target) -> str:
    """The formula's constants for this instruction on the target, when it has any."""
    if d.unit == "vec" and d.computes_as:
        return _vector_figures(d.computes_as, target)
    if d.unit == "fix" and target.fixed_pipe and d.kind != "fence":
        return f"n / {target.fixed_pipe.elements_per_cycle} cycles"
    return ""


def _vector_figures(name: str, target: Target) -> str:
    vop = VECTOR_OPS.get(name)
    lanes, special = target.vector.lanes, target.vector.special_lanes
    if vop is None:
        return ""
    if callable(vop.alu) or callable(vop.special):
        return (f"max(n * alu / {lanes}, n * special / {special}) cycles, the operations per "
                "element depending on the attributes")
    per_element = max(vop.alu / lanes, vop.special / special)
    if per_element == 0:
        return "no cycles"
    rate = 1 / per_element
    cycles = f"n / {rate:g}" if math.isclose(rate, round(rate)) else f"n * {per_element:g}"
    bound = "special lanes" if vop.special / special > vop.alu / lanes else "lanes"
    return f"{cycles} cycles (bound by the {bound})"


def _behind(reach, target: Target) -> str:
    """The cache and memory a default load reaches, with their rates."""
    memory = reach.memory
    text = (f"{memory.label} gives {memory.bytes_per_cycle:,.1f} B/cycle "
            f"({memory.bytes_per_cycle * target.clock_hz / 1e9:,.0f} GB/s at {target.clock_ghz:g} GHz)")
    if reach.cache:
        text = (f"{reach.cache.label} gives {reach.cache.bytes_per_cycle:g} B/cycle, shared by "
                f"the cores that reach it; behind it " + text)
    return text + ", shared likewise."


def _family_figures(key: str, target: Target) -> list[str]:
    """Figures shared by a whole family, printed once under its title."""
    if key == "ld":
        dma, reach = target.dma, target.machine.reach()
        return _wrap(
            f"On {target.name}: each core's load port moves {dma.load_bytes_per_cycle:g} "
            f"B/cycle; {_behind(reach, target)} A load completes {reach.hit_latency:.0f} cycles after "
            "its last byte when it hits the cache, "
            f"{reach.miss_latency:.0f} cycles more when it misses. Tensors placed in another "
            "memory take that memory's route (`dsc targets show`). " + (
                f"mcast=C delivers one load to a cluster of up to {dma.multicast} cores, read "
                "from L2 once." if dma.multicast > 1 else "This target has no multicast "
                "(mcast must be 1)."), "")
    if key == "st":
        reach = target.machine.reach()
        cache = reach.cache or reach.memory
        return _wrap(
            f"On {target.name}: each core's store port moves "
            f"{target.dma.store_bytes_per_cycle:g} B/cycle into {cache.label} "
            f"({cache.bytes_per_cycle:g} B/cycle, shared)" + (
                "; the cache writes back to memory in the background"
                if reach.cache and not reach.cache.write_through else "") +
            f"; a store completes {reach.hit_latency:.0f} cycles after its last byte.", "")
    if key == "mm":
        return _matrix_table(target)
    if key == "vec":
        return [f"On {target.name}: {target.vector.lanes} lanes (simple FP32 operations per "
                f"cycle), {target.vector.special_lanes} special lanes (exp, rsqrt, reciprocal)."]
    if key == "fix" and target.fixed_pipe:
        pipe = target.fixed_pipe
        return [f"On {target.name}: {pipe.elements_per_cycle} elements per cycle; ops: "
                f"{', '.join(pipe.ops)}."]
    return []


def _matrix_table(target: Target) -> list[str]:
    rows = [("fmt", "granularity MxNxK", "flops/cycle", "cycles/granule", "accumulator",
             "scales applied")]
    for dtype, fmt in target.matrix.formats.items():
        m, n, k = fmt.shape
        rows.append((dtype, f"{m}x{n}x{k}", str(fmt.flops_per_cycle),
                     f"{2 * m * n * k / fmt.flops_per_cycle:g}",
                     f"{fmt.accumulator_bits} mantissa bits" if fmt.accumulator_bits else "fp32",
                     ", ".join(fmt.block_scales) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    every = target.matrix.promotion_interval
    promotion = ("Partial sums of formats with a limited accumulator are promoted to FP32 "
                 + (f"every {every} elements of K." if every else
                    "once, after all of K (never during it)."))
    return [f"On {target.name} (per core; results reach the vector unit "
            f"{'directly' if target.matrix.results_to_vector == 'direct' else 'through memory'}):",
            *table, *_wrap(promotion, "")]


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  "
                         if indent else "") or [indent]
