"""Text of a program: every line from one formatter here, laid out by templates/listing.j2.

The formats are chosen so the assembler (assembler.py) reads any listing back into an equal
program: off-chip tensors are written `@param`, buffers by name with an optional `[slot]`,
attributes `key=value` (tuples as AxBxC, expressions without spaces), tokens in trailing
`wait(...)` and `signal(...)` clauses. Tensors and launches of identical layers are folded
with a `for i in A..B` clause / a `repeat i A..B` block, so listings stay readable.
"""
from __future__ import annotations

import re
from pathlib import Path

import jinja2

from isa.expr import Expr, to_text
from isa.program import (Attr, Box, Buf, Instr, Kernel, Launch, Loop, Program, Repeat,
                         TensorDecl, TensorRef, ViewStep)

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True, autoescape=False)


def fmt_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "x".join(str(x) for x in v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (int, str)):
        return str(v)
    return to_text(v)


def fmt_operand(op) -> str:
    if isinstance(op, Buf):
        return op.name if op.slot is None else f"{op.name}[{to_text(op.slot)}]"
    if isinstance(op, Box):
        dims = ", ".join(f"{to_text(s)}:+{n}" for s, n in zip(op.starts, op.sizes))
        return f"@{op.tensor}[{dims}]"
    if isinstance(op, TensorRef):
        return f"@{op.tensor}"
    assert isinstance(op, Attr)
    return f"{op.key}={fmt_value(op.value)}"


def fmt_instr(ins: Instr) -> str:
    operands = ", ".join(fmt_operand(a) for a in ins.args if not isinstance(a, Attr))
    attrs = " ".join(fmt_operand(a) for a in ins.args if isinstance(a, Attr))
    text = f"{ins.op:<18}{operands}"
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
        steps = ".".join(fmt_step(s) for s in t.steps)
        return f"view {t.name}: {fmt_type(t.dtype, t.shape)}{scaling} = {t.base}.{steps}"
    return f"tensor {t.name}: {fmt_type(t.dtype, t.shape)}{scaling} {t.kind}"


def body_lines(stmts, indent: int = 2) -> list[str]:
    lines = []
    for s in stmts:
        pad = " " * indent
        if isinstance(s, Loop):
            lines.append(f"{pad}loop {s.var} {s.count}")
            lines += body_lines(s.body, indent + 2)
            lines.append(f"{pad}end")
        else:
            lines.append(pad + fmt_instr(s))
    return lines


def kernel_view(k: Kernel) -> dict:
    params = ", ".join(f"{'out ' if p.output else ''}{p.name}: {fmt_type(p.dtype, p.shape)}"
                       for p in k.params)
    decls = [f"buffer {b.name}: {fmt_type(b.dtype, b.shape)}"
             + (f" x{b.slots}" if b.slots > 1 else "") + f" {b.space}" for b in k.buffers]
    if k.tokens:
        decls.append("token " + " ".join(f"{t}={n}" for t, n in k.tokens))
    return {"header": f"kernel {k.name}({params})", "notes": list(k.notes),
            "grid": "grid " + " ".join(f"{v}={n}" for v, n in k.grid) if k.grid else "",
            "decls": decls, "body": body_lines(k.body)}


def fmt_launch(l: Launch) -> str:
    args = ", ".join(f"{p}={t}" for p, t in l.args)
    note = f"  ; {l.note}" if l.note else ""
    return f"launch {l.kernel}({args}) flops={l.flops!r}{note}"


def schedule_lines(items, indent: int = 2) -> list[str]:
    lines = []
    for item in items:
        pad = " " * indent
        if isinstance(item, Repeat):
            lines.append(f"{pad}repeat {item.var} {item.start}..{item.start + item.count - 1}")
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


def render(program: Program) -> str:
    sizes = " ".join(f"{k}={v}" for k, v in program.sizes)
    return _ENV.get_template("listing.j2").render(
        program=program, sizes=sizes, tensor_lines=tensor_lines(program.tensors),
        kernels=[kernel_view(k) for k in program.kernels],
        schedule_lines=schedule_lines(program.schedule))
