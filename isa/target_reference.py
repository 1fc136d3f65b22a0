"""Human-readable views of targets, generated from the schema and the loaded data.

`render_reference()` walks the dataclasses of `isa/target_schema.py` (tables, keys, types, units,
ranges, choices, defaults, docs, and the derived quantities of `Target`) into the Markdown
reference that `dsc targets schema` prints and `docs/targets.md` checks in, so the page cannot
drift from the code. `derived_lines(target)` and `summary_row(target)` describe one loaded
target for `dsc targets show` and `dsc targets`.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing

from isa.formats import SCALE_DTYPES
from isa.target_schema import SUPPORTED_MATRIX_DTYPES, UNIT_MAXIMA, Target

# The marker between the hand-written intro of docs/targets.md and the generated reference.
MARKER = "<!-- Generated from isa/target_schema.py by isa/target_reference.py: edit those, " \
         "not the text below. -->\n"

# Names of the placeholder keys of tables of tables, and their allowed values if restricted.
_KEY_NAMES = {("matrix", "formats"): ("DTYPE", SUPPORTED_MATRIX_DTYPES)}

_RULES = [
    "Every `DTYPE` of `[matrix.formats.DTYPE]` is one of: "
    + ", ".join(f"`{d}`" for d in SUPPORTED_MATRIX_DTYPES) + "; at least one format is given.",
    "Each entry of `block_scales` is `SCALE_DTYPE:ROWSxCOLS`, `SCALE_DTYPE` one of: "
    + ", ".join(f"`{d}`" for d in SCALE_DTYPES) + "; the block is written as for the A "
    "operand (`[tokens, K]`), so `1x32` is one scale per 32 elements of K.",
    "A format's `m_sizes` and `pair_m` are multiples of its `shape`'s M, its `n_max` a "
    "multiple of its `shape`'s N.",
    "A format's `native_operands` are element dtypes other than the format itself, each "
    "listed once; one that is also a format of the target runs there at least as fast "
    "(mixing it in cannot make an instruction faster than it is alone). A GEMM whose "
    "operands a format takes natively runs in it without widening them (docs/numerics.md).",
    "Every role (`matrix_a`, `matrix_b`, `accumulator`, `vector`) is held by some buffer; the "
    "first buffer in file order that holds a role is the one used for it.",
    "Every integer is at most 2^53, exact in the floating-point arithmetic of the derived "
    "figures; figures in a unit without a maximum of their own stay below the unit's: "
    + ", ".join(f"{v:g} {u}" for u, v in UNIT_MAXIMA.items()) + ".",
    "The memory graph: `[memory]` is shorthand for `[memories.memory]` (one per die), `[l2]` "
    "for `[memories.l2]` (one per die, `caches = [\"memory\"]`), `[die_link]` for "
    "`[links.link]` (`between = [\"die\", \"die\"]`), `[system.intra_node]` and "
    "`[system.inter_node]` for `[links.nvlink]` and `[links.network]` (`between = "
    "[\"device\", \"node\"]` and `[\"device\", \"network\"]`); a `[memories.NAME]` or "
    "`[links.NAME]` may not reuse those names when the shorthand is given.",
    "Each memory gives exactly one of `bandwidth_gbs` and `bytes_per_cycle` and one of "
    "`latency_ns` and `latency_cycles`; each link one of `latency_ns` and `latency_us`.",
    "A place (`at`, `between`) is a name of your choosing such as `cpu` or `pool`; `d0`, `d1` "
    "... name single dies and `die` each die. Every die must reach every memory through links: "
    "with per-die memories, `chip.dies` > 1 requires links between dies (`[die_link]`).",
    "`caches` names memories of the file. On its way to a memory a transfer meets the cache "
    "nearest that memory among the places it crosses: a die's L2 in front of its own HBM, the "
    "requesting die's L2 in front of a CPU's memory across a link. Only misses go past it.",
    "Tensors live in the first memory that is not a cache (the shorthand `[memory]` first) "
    "unless the model's deploy block or `--place ROLE=MEMORY` puts a role elsewhere.",
    "A device link needs `[system]` (`devices_per_node`); a target has at most one link to its "
    "node and one to the network. `achievable` below 1 needs `achievable_source`.",
    "Unknown keys are errors (with a did-you-mean); every error names the file, the line and "
    "the dotted key.",
]


# -- the reference page --------------------------------------------------------------------


def render_reference() -> str:
    """The Markdown reference of the target file format."""
    out = ["## Target file reference", "",
           "Every key of a target file, table by table. *required* keys have no default; "
           "an optional table that is absent is not modelled. Units and ranges are checked "
           "when the file is loaded.", ""]
    for title, cls, optional, note in _tables(Target, (), False):
        out += _table_section(title, cls, optional, note)
    out += ["### Rules that relate several keys", ""]
    out += [f"- {rule}" for rule in _RULES] + [""]
    out += _derived_section()
    return "\n".join(out).rstrip("\n") + "\n"


def _tables(cls, path: tuple[str, ...], optional: bool, note: str = ""):
    """(title, dataclass, optional, note) for `cls` and every table below it, depth first."""
    title = "Top level" if not path else f"`[{'.'.join(path)}]`"
    yield title, cls, optional, note
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner, is_optional = _unwrap(hints[f.name])
        about = _sentence(f.metadata["doc"])
        if dataclasses.is_dataclass(inner):
            yield from _tables(inner, path + (f.name,), is_optional, about)
        elif typing.get_origin(inner) is dict:
            name, allowed = _KEY_NAMES.get(path + (f.name,), ("NAME", None))
            which = ("one of " + ", ".join(f"`{d}`" for d in allowed) + "." if allowed
                     else "any name you choose.")
            about += f" One table per `{name}`: {which}"
            yield from _tables(typing.get_args(inner)[1], path + (f.name, name), False, about)


def _sentence(doc: str) -> str:
    return doc[:1].upper() + doc[1:] + "."


def _table_section(title: str, cls, optional: bool, note: str) -> list[str]:
    lines = [f"### {title}" + (" (optional)" if optional else ""), ""]
    if note:
        lines += [note, ""]
    lines += ["| key | type | unit | valid values | default | meaning |",
              "|---|---|---|---|---|---|"]
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        each = "each " if typing.get_origin(_unwrap(hints[f.name])[0]) is tuple else ""
        valid = _valid(meta)
        cells = [f"`{f.name}`", _type_name(hints[f.name]), meta.get("unit") or "",
                 each + valid if valid else "", _default(f), meta.get("doc", "")]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines + [""]


def _unwrap(hint):
    """(inner type, optional) for `X | None`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner[0], True
    return hint, False


_SCALARS = {int: "integer", float: "number", str: "string"}


def _type_name(hint) -> str:
    inner, _ = _unwrap(hint)
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if dataclasses.is_dataclass(inner):
        return "table"
    if origin is dict:
        return "tables by name"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"list of {_SCALARS[args[0]]}s"
    if origin is tuple:
        return "[" + ", ".join(_SCALARS[a] for a in args) + "]"
    return _SCALARS[inner]


def _valid(meta) -> str:
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if choices:
        return "one of " + ", ".join(f"`{c}`" for c in choices)
    if lo is not None and hi is not None:
        return f"{_num(lo)} to {_num(hi)}"
    if lo is not None:
        return f"≥ {_num(lo)}"
    if hi is not None:
        return f"≤ {_num(hi)}"
    return ""


def _default(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING:
        return "*required*"
    if f.default is None:
        return "absent"
    if isinstance(f.default, tuple):
        return "`[" + ", ".join(repr(v) for v in f.default) + "]`"
    if isinstance(f.default, str):
        return f'`"{f.default}"`'
    return f"`{f.default}`"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _derived_section() -> list[str]:
    from isa.machine import Route
    lines = ["### Derived quantities", "",
             "Computed by `Target` and by the machine graph it builds (`isa/machine.py`: "
             "memories and links as instances with bytes per cycle and latencies in cycles, "
             "and a `Route` from a die's cores to each memory); the compiler and the "
             "interpreter use these and never convert units themselves.", "",
             "| name | meaning | formula |", "|---|---|---|"]
    lines += _derived_rows(Target, "")
    lines += _derived_rows(Route, "route.")
    return lines + [""]


def _derived_rows(cls, prefix: str) -> list[str]:
    lines = []
    for name, member in vars(cls).items():
        if name.startswith("_") or not isinstance(member, (property, types.FunctionType)):
            continue
        func = member.fget if isinstance(member, property) else member
        signature = name if isinstance(member, property) else _call_signature(func)
        doc = (inspect.getdoc(func) or "").split("\n\n")[0].replace("\n", " ")
        formula = _formula(func)
        lines.append(f"| `{prefix}{signature}` | {doc} | {f'`{formula}`' if formula else ''} |")
    return lines


def _call_signature(func) -> str:
    params = list(inspect.signature(func).parameters)[1:]
    return f"{func.__name__}({', '.join(params)})"


def _formula(func) -> str:
    """The returned expression when the body is one `return` (after an optional docstring)."""
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except OSError:                 # no source shipped: the table still has name and meaning
        return ""
    body = ast.parse(source).body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], ast.Return) or body[0].value is None:
        return ""
    return " ".join(ast.get_source_segment(source, body[0].value).split()).replace("self.", "")


# -- one loaded target ---------------------------------------------------------------------


def derived_lines(target: Target) -> list[str]:
    """The loader's derived figures for one target, one line each (for `dsc targets show`)."""
    t = target
    lines = [f"cores: {t.cores} ({t.chip.dies} x {t.chip.cores_per_die} per die)",
             f"clock: {t.clock_hz / 1e6:,.0f} MHz"
             + (f" sustained, of {t.clock_ghz * 1e3:,.0f} peak" if t.clock_hz != t.clock_ghz * 1e9
                else "")]
    for dtype, fmt in t.matrix.formats.items():
        lines.append(f"peak {dtype}: {t.peak_flops(dtype) / 1e12:,.1f} TFLOP/s "
                     f"({fmt.flops_per_cycle} FLOP/cycle/core)")
    lines += memory_lines(t)
    lines += [
        "launch gap: " + ", ".join(f"{mode} {t.launch_us(mode):g} us "
                                   f"({t.launch_cycles(mode):,.0f} cycles)"
                                   for mode in ("stream", "graph", "dependent")),
        f"units per core: {' '.join(t.units)}",
    ]
    for role in ("matrix_a", "matrix_b", "accumulator", "vector"):
        name, buf = t.buffer_for(role)
        lines.append(f"{role} in: {name} ({buf.bytes / 1024:,.0f} KiB per core)")
    lines.append(f"matrix results reach the vector unit: {t.matrix.results_to_vector}")
    if t.fixed_pipe:
        lines.append(f"fixed pipe: {', '.join(t.fixed_pipe.ops)} at "
                     f"{t.fixed_pipe.elements_per_cycle} elements/cycle/core")
    return lines


def memory_lines(t: Target) -> list[str]:
    from isa.machine import MemoryUnit, RequestUnit
    """The memory graph: each memory and link family with its instances' figures, and how
    die 0's cores reach each memory."""
    m, hz = t.machine, t.clock_hz
    lines = [f"memories (tensors live in '{m.default_memory}' unless placed elsewhere):"]
    for name, units in m.families.items():
        first = units[0]
        count = f"{len(units)} x " if len(units) > 1 else ""
        gbs = first.bytes_per_cycle * hz / 1e9
        if isinstance(first, MemoryUnit):
            what = f"cache of {', '.join(first.caches)}; " if first.caches else ""
            keeps = ("keeps data between kernels" if first.keeps else "empty at each kernel") \
                if first.caches else ""
            lines.append(f"  {name}: {what}{count}{_bytes(first.bytes)} at {gbs:,.0f} GB/s"
                         f"{_of_peak(first)} "
                         f"({first.bytes_per_cycle:,.1f} B/cycle) each, latency "
                         f"{first.latency_cycles:,.0f} cycles, at "
                         f"{'each die' if first.die is not None else first.place}"
                         + (f"; {keeps}" if keeps else ""))
        elif isinstance(first, RequestUnit):
            lines.append(f"  {name}: {first.bytes_per_cycle:g} accesses per cycle each")
        elif first.src == "device":
            scope = dict((v, k) for k, v in m.scopes)[name]
            whom = "the devices of its node" if scope == "node" else "devices of other nodes"
            lines.append(f"  {name}: to {whom}, {gbs:,.0f} GB/s{_of_peak(first)} each way, latency "
                         f"{first.latency_cycles:,.0f} cycles")
        else:
            lines.append(f"  {name}: {', '.join(u.label for u in units)}: {gbs:,.0f} GB/s each, "
                         f"latency {first.latency_cycles:,.0f} cycles")
    for unit in m.memories:
        if unit.is_cache:
            continue
        r = m.route(0, unit)
        hops = [link.id for link in r.near] + ([r.cache.id] if r.cache else []) + \
            [link.id for link in r.far] + [unit.id]
        lines.append(f"route die 0 -> {unit.id}: {' > '.join(hops)}; latency "
                     f"{r.hit_latency:,.0f} + {r.miss_latency:,.0f} on a miss")
    return lines


def _of_peak(unit) -> str:
    """", achievable 0.887 of peak" for a resource run below its datasheet bandwidth."""
    return f" (achievable {unit.achievable:g} of peak)" if unit.achievable < 1 else ""


def _bytes(n: int) -> str:
    return f"{n / 1e9:.4g} GB" if n >= 1e9 else f"{n / 1e6:.4g} MB"


SUMMARY_HEADER = ("target", "dies x cores", "FP8 TFLOPS", "BF16 TFLOPS", "memory", "description")


def summary_row(target: Target) -> tuple[str, ...]:
    """One row of `dsc targets`: name, dies x cores, peak FP8/BF16, memory, description."""
    t = target
    tflops = lambda dtype: f"{t.peak_flops(dtype) / 1e12:,.0f}" if t.peak_flops(dtype) else "-"
    memory = (f"{t.machine.bytes_of() / 1e9:.3g} GB "
              f"{t.peak_memory_bandwidth / 1e12:.3g} TB/s")
    return (t.name, f"{t.chip.dies} x {t.chip.cores_per_die}", tflops("fp8_e4m3"),
            tflops("bf16"), memory, t.description)
