"""Text of a program: every line from one formatter here, laid out by templates/listing.j2.

The formats are chosen so the assembler (assembler.py) reads any listing back into an equal
program: off-chip tensors are written `@param`, buffers by name with an optional `[slot]`,
attributes `key=value`, tokens in trailing `wait(...)` and `signal(...)` clauses. Tensors and
launches of identical layers are folded with a `for i in A..B` clause / a `repeat i A..B`
block, so listings stay readable.

An attribute value is written so that its text alone says its type: an integer, a float
(repr, always with `.`, `e`, `inf` or `nan`), `true`/`false`, a tuple `AxBxC`, an expression
over the grid and loop variables in scope, or a string, bare when it is a plain name that is
none of the above and quoted otherwise. `fmt_value` writes a value and `parse_value` reads it
back, side by side so the two rules cannot drift apart.
"""
from __future__ import annotations

import json
import numbers
import re
from functools import cache
from pathlib import Path

from isa.deployment import Deployment
from isa.expr import Bin, Const, Var, parse_expr, to_text
from isa.program import (Attr, Box, Buf, Instr, Kernel, Launch, Loop, Program, Repeat,
                         TensorDecl, TensorRef, ViewStep)


@cache
def _environment():
    """The template engine, loaded on the first render (reading a listing does not need it)."""
    import jinja2
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, autoescape=False)


# Bare words that are values, not names: a string or variable spelled so is written otherwise.
RESERVED_WORDS = frozenset({"true", "false", "inf", "nan"})
BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def fmt_value(v, scope=frozenset()) -> str:
    """An attribute value; `scope` holds the grid and loop variables visible where it is used.

    A variable in scope is written bare (`expert=e`), a string bare when it is a plain name
    that is not a variable in scope (`fmt=fp8_e4m3`) and quoted otherwise; an expression that
    would read as something else (a constant, a variable out of scope) is parenthesised.
    """
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        return repr(float(v))
    if isinstance(v, str):
        bare = BARE_WORD.fullmatch(v) and v not in RESERVED_WORDS and v not in scope
        return v if bare else json.dumps(v)
    if isinstance(v, tuple):
        return _fmt_tuple(v, scope)
    if isinstance(v, Var) and v.name in scope and v.name not in RESERVED_WORDS:
        return v.name
    if isinstance(v, (Const, Var)):
        return f"({to_text(v)})"
    if isinstance(v, Bin):
        return to_text(v)
    raise TypeError(f"cannot write attribute value {v!r} of type {type(v).__name__}")


def _fmt_tuple(v: tuple, scope) -> str:
    """Two or more integers as `AxB`; any other tuple as `(a,b)`, `(a,)` or `()`."""
    if len(v) >= 2 and all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in v):
        return "x".join(str(int(x)) for x in v)
    items = ",".join(fmt_value(x, scope) for x in v)
    return f"({items},)" if len(v) == 1 else f"({items})"


_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?(?:[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+|inf)|nan")
_INT_TUPLE = re.compile(r"-?[0-9]+(?:x-?[0-9]+)+")


def parse_value(text: str, scope=frozenset()):
    """An attribute value from its text, the inverse of `fmt_value`.

    `"..."` is a string; `12`, `-3` ints; `1e-06`, `10000.0`, `inf` floats; `true`/`false`
    bools; `128x128` and `(a,b)`, `(a,)`, `()` tuples; a bare name is the variable when it is
    a grid or loop variable in `scope`, else a string (`fmt=fp8_e4m3`); anything else an
    expression (`k==0`, `(w*32+t)*4`). Raises ValueError when the text is none of these.
    """
    if text.startswith('"'):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, str):
            raise ValueError(f"cannot read the string {text}")
        return value
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if text in ("true", "false"):
        return text == "true"
    if _INT_TUPLE.fullmatch(text):
        return tuple(int(x) for x in text.split("x"))
    items = _tuple_items(text)
    if items is not None:
        return tuple(parse_value(item, scope) for item in items)
    if BARE_WORD.fullmatch(text):
        return Var(text) if text in scope else text
    return parse_expr(text)


def _tuple_items(text: str) -> list[str] | None:
    """The items of `(a,b)`, `(a,)` or `()`; None for other text (a parenthesised expression
    has no comma at its top level)."""
    if not (text.startswith("(") and text.endswith(")")):
        return None
    inner = text[1:-1]
    items, depth, start, i = [], 0, 0, 0
    while i < len(inner):
        ch = inner[i]
        if ch == '"':                                    # skip a quoted string, escapes and all
            i += 1
            while i < len(inner) and inner[i] != '"':
                i += 2 if inner[i] == "\\" else 1
        elif ch in "()":
            depth += 1 if ch == "(" else -1
            if depth < 0:
                return None          # `(a)*(b)`: the first `(` closes before the end
        elif ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
        i += 1
    if not items:
        return [] if inner == "" else None
    tail = inner[start:]
    return items + [tail] if tail else items


def fmt_operand(op, scope=frozenset()) -> str:
    if isinstance(op, Buf):
        return op.name if op.slot is None else f"{op.name}[{to_text(op.slot)}]"
    if isinstance(op, Box):
        dims = ", ".join(f"{to_text(s)}:+{n}" for s, n in zip(op.starts, op.sizes))
        return f"@{op.tensor}[{dims}]"
    if isinstance(op, TensorRef):
        return f"@{op.tensor}"
    assert isinstance(op, Attr)
    return f"{op.key}={fmt_value(op.value, scope)}"


def fmt_instr(ins: Instr, scope=frozenset()) -> str:
    operands = ", ".join(fmt_operand(a) for a in ins.args if not isinstance(a, Attr))
    attrs = " ".join(fmt_operand(a, scope) for a in ins.args if isinstance(a, Attr))
    text = f"{ins.op:<17} {operands}"
    if attrs:
        text += f"  {attrs}"
    if ins.wait:
        text += f"  wait({','.join(ins.wait)})"
    if ins.signal:
        text += f"  signal({','.join(ins.signal)})"
    return text


def fmt_type(dtype: str, shape) -> str:
    return f"{dtype}[{','.join(str(d) for d in shape)}]"


def fmt_step(step: ViewStep) -> str:
    return f"{step.op}({','.join(str(a) for a in step.arg)})"


def fmt_tensor(t: TensorDecl) -> str:
    scaling = f" {t.scaling}" if t.scaling else ""
    if t.kind == "view":
        steps = "".join("." + fmt_step(s) for s in t.steps)
        return f"view {t.name}: {fmt_type(t.dtype, t.shape)}{scaling} = {t.base}{steps}"
    home = f" home={t.home}" if t.home else ""
    memory = f" in={t.memory}" if t.memory else ""
    return f"tensor {t.name}: {fmt_type(t.dtype, t.shape)}{scaling} {t.kind}{home}{memory}"


def body_lines(stmts, indent: int = 2, scope=frozenset()) -> list[str]:
    """Instruction lines; `scope` holds the grid and enclosing loop variables."""
    lines = []
    for s in stmts:
        pad = " " * indent
        if isinstance(s, Loop):
            lines.append(f"{pad}loop {s.var} {s.count}")
            lines += body_lines(s.body, indent + 2, scope | {s.var})
            lines.append(f"{pad}end")
        else:
            lines.append(pad + fmt_instr(s, scope))
    return lines


def kernel_view(k: Kernel) -> dict:
    params = ", ".join(f"{'out ' if p.output else ''}{p.name}: {fmt_type(p.dtype, p.shape)}"
                       for p in k.params)
    decls = [f"buffer {b.name}: {fmt_type(b.dtype, b.shape)}"
             + (f" x{b.slots}" if b.slots != 1 else "") + f" {b.space}"
             + (f" @{b.offset}" if b.offset is not None else "") for b in k.buffers]
    if k.tokens:
        decls.append("token " + " ".join(f"{t}={n}" for t, n in k.tokens))
    if k.persistent:
        decls.insert(0, "persistent")
    if k.die_var:
        decls.insert(0, f"dies {k.die_var}")
    return {"header": f"kernel {k.name}({params})", "notes": list(k.notes),
            "grid": "grid " + " ".join(f"{v}={n}" for v, n in k.grid) if k.grid else "",
            "decls": decls, "body": body_lines(k.body, scope=frozenset(v for v, _ in k.grid))}


def fmt_launch(l: Launch) -> str:
    args = ", ".join(f"{p}={t}" for p, t in l.args)
    note = f"  ; {l.note}" if l.note else ""
    stream = f" stream={l.stream}" if l.stream != "compute" else ""
    return f"launch {l.kernel}({args}) flops={l.flops!r}{stream}{note}"


def schedule_lines(items, indent: int = 2) -> list[str]:
    lines = []
    for item in items:
        pad = " " * indent
        if isinstance(item, Repeat):
            step = f" step {item.step}" if item.step > 1 else ""
            lines.append(f"{pad}repeat {item.var} {item.start}..{item.last}{step}")
            lines += schedule_lines(item.body, indent + 2)
            lines.append(f"{pad}end")
        else:
            lines.append(pad + fmt_launch(item))
    return lines


_LAYER = re.compile(r"(?<![A-Za-z0-9_])([A-Za-z_][A-Za-z0-9_]*)\.(\d+)\.")


def abstract_layer(text: str) -> tuple[str, int | None]:
    """Write the first `prefix.N.` as `prefix.{i}.`, other `prefix.M.` relative to it.

    Only the first numbered scope's prefix is abstracted (the layer); deeper numbered scopes
    (an expert `shared.0` inside a layer) stay literal.
    """
    first = _LAYER.search(text)
    if not first:
        return text, None
    prefix, index = first.group(1), int(first.group(2))

    def sub(m):
        if m.group(1) != prefix:
            return m.group(0)
        delta = int(m.group(2)) - index
        var = "i" if delta == 0 else (f"i+{delta}" if delta > 0 else f"i{delta}")
        return f"{prefix}.{{{var}}}."
    return _LAYER.sub(sub, text), index


def tensor_lines(tensors) -> list[str]:
    """Declarations, consecutive ones equal but for their layer number folded into one line."""
    lines, run = [], []

    def flush():
        if len(run) >= 2:
            lines.append(f"{run[0][0]}  for i in {run[0][1]}..{run[-1][1]}")
        else:
            lines.extend(raw for _, _, raw in run)
        run.clear()

    for t in tensors:
        raw = fmt_tensor(t)
        template, index = abstract_layer(raw)
        if run and index is not None and template == run[-1][0] and index == run[-1][1] + 1:
            run.append((template, index, raw))
            continue
        flush()
        if index is not None:
            run.append((template, index, raw))
        else:
            lines.append(raw)
    flush()
    return lines


def fmt_deployment(d: Deployment) -> str:
    return (f"deploy devices={d.devices} per_node={d.per_node} attn={d.attn} ffn={d.ffn} "
            f"moe={d.moe} mb={d.micro_batches}"
            + (f" overlap={d.overlap}" if d.overlap != "alternate" else "")
            + (f" a2a={d.a2a}" if d.a2a != "direct" else "")
            + (f' load="{d.load}"' if d.load != "uniform" else "")
            + (f" redundant={d.redundant}" if d.redundant else "")
            + (f" comm_cores={d.comm_cores}" if d.comm_cores else "")
            + (f" launch={d.launch}" if d.launch != "stream" else ""))


def render(program: Program) -> str:
    sizes = " ".join(f"{k}={v}" for k, v in program.sizes)
    d = program.deployment
    deploy = fmt_deployment(d) if d.devices > 1 or d.launch != "stream" or d.comm_cores else ""
    return _environment().get_template("listing.j2").render(
        program=program, sizes=sizes, deploy=deploy, tensor_lines=tensor_lines(program.tensors),
        kernels=[kernel_view(k) for k in program.kernels],
        schedule_lines=schedule_lines(program.schedule))
