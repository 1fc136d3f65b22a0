"""Reading a listing's lines into records (the first step of isa/assembler.py).

The LALR parser of listing.lark applies `_Reader` as it goes, so each line becomes a record that
keeps its line number; a line the grammar rejects becomes a ListingError that says what kind of
line it is and what was expected there.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import lark
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from isa.errors import ListingError
from isa.deployment import Deployment, DeploymentError
from isa.formats import DTYPES, FormatError, Scaling
from isa.program import BufferDecl, Launch, Param, ViewStep
from isa.grammar_terms import describe_terminal

VIEW_STEPS = {"transpose": None, "reshape": None, "slice": 3}     # op -> number of args, if fixed


# ------------------------------------------------------------------------ lines to records

class LineError(Exception):
    """An error at a listing line; parse_listing adds the file name."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line, self.message = line, message


@dataclass(frozen=True)
class Note:
    line: int
    text: str


@dataclass(frozen=True)
class Fold:
    var: str
    first: int
    last: int


@dataclass(frozen=True)
class Decl:
    """A `tensor` or `view` line: name, type, kind, view base and steps, `for` clause."""
    line: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scaling: Scaling | None
    kind: str
    base: str | None
    steps: tuple[ViewStep, ...]
    fold: Fold | None
    home: str | None = None
    memory: str | None = None


@dataclass(frozen=True)
class Dies:
    """A kernel's `dies VAR` line."""
    line: int
    var: str


@dataclass(frozen=True)
class Persistent:
    """A kernel's `persistent` line."""
    line: int


@dataclass(frozen=True)
class KernelRec:
    line: int
    name: str
    params: tuple[Param, ...]
    items: tuple


@dataclass(frozen=True)
class Pairs:
    """A `grid`, `token` or `sizes` line: name=INT pairs."""
    kind: str
    line: int
    pairs: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class BufferRec:
    line: int
    decl: BufferDecl


@dataclass(frozen=True)
class InstrRec:
    line: int
    op: str
    operands: tuple          # ("box", name, ((expr text, size), ...)) | ("tensor", name)
                             # | ("buf", name, slot text or None)
    attrs: tuple[tuple[str, str], ...]
    wait: tuple[str, ...] | None
    signal: tuple[str, ...] | None


@dataclass(frozen=True)
class LoopRec:
    line: int
    var: str
    count: int
    body: tuple


@dataclass(frozen=True)
class RepeatRec:
    line: int
    var: str
    first: int
    last: int
    body: tuple
    step: int = 1


@dataclass(frozen=True)
class LaunchRec:
    line: int
    launch: Launch


class _Reader(lark.Transformer):
    """Grammar rules to records; run inside the LALR parser, so bottom-up and in line order."""

    def start(self, children):
        return children

    def header(self, children):
        return ("header", str(children[0]), str(children[1]))

    def sizes(self, children):
        return self._pairs("sizes", children)

    def pair(self, children):
        key, value = children
        return key, int(value)

    def deploy(self, children):
        keyword, *settings = children
        values = {str(k): (int(v) if v.type == "INT" else
                           str(v)[1:-1] if v.type == "QUOTED" else str(v)) for k, v in settings}
        try:
            return ("deploy", Deployment(
                values.pop("devices"), values.pop("per_node"), values.pop("attn"),
                values.pop("ffn"), values.pop("moe"), values.pop("mb"),
                values.pop("a2a", "direct"), values.pop("load", "uniform"),
                values.pop("redundant", 0), values.pop("launch", "stream"),
                values.pop("overlap", "alternate"), values.pop("comm_cores", 0)),
                keyword.line, values)
        except KeyError as missing:
            raise LineError(keyword.line, f"deploy line without {missing.args[0]}= (expected "
                                       "devices, per_node, attn, ffn, moe and mb)") from None
        except (DeploymentError, TypeError) as err:
            raise LineError(keyword.line, f"bad deploy line: {err}") from None

    def setting(self, children):
        return children[0], children[1]

    def stream(self, children):
        return ("stream", str(children[0]), children[0].line)

    def note(self, children):
        text = str(children[0])[1:].rstrip("\r")
        return Note(children[0].line, text[1:] if text.startswith(" ") else text)

    def tensor(self, children):
        name, (dtype, shape), *rest = children
        fold = rest.pop() if rest and isinstance(rest[-1], Fold) else None
        memory = str(rest.pop())[3:] if getattr(rest[-1], "type", None) == "MEMORY" else None
        home = str(rest.pop())[5:] if getattr(rest[-1], "type", None) == "HOME" else None
        kind = rest.pop()
        if kind == "view":
            raise LineError(name.line, "a view is declared as 'view NAME: TYPE = BASE.STEP(...)'")
        scaling = rest[0] if rest else None
        return Decl(name.line, str(name), dtype, shape, scaling, str(kind), None, (), fold, home,
                    memory)

    def dies(self, children):
        return Dies(children[0].line, str(children[0]))

    def persistent(self, children):
        return Persistent(children[0].line)

    def view(self, children):
        name, (dtype, shape), *rest = children
        fold = rest.pop() if rest and isinstance(rest[-1], Fold) else None
        scaling = rest.pop(0) if isinstance(rest[0], Scaling) else None
        base, *steps = rest
        return Decl(name.line, str(name), dtype, shape, scaling, "view", str(base),
                     tuple(steps), fold)

    def step(self, children):
        op, *args = children
        name = str(op)[1:]
        if name not in VIEW_STEPS:
            raise LineError(op.line, f"unknown view step '{name}' (expected "
                                  f"{', '.join(VIEW_STEPS)}){did_you_mean(name, VIEW_STEPS)}")
        if VIEW_STEPS[name] is not None and len(args) != VIEW_STEPS[name]:
            raise LineError(op.line, f"{name} takes {VIEW_STEPS[name]} integers, got {len(args)}")
        return ViewStep(name, tuple(int(a) for a in args))

    def fold(self, children):
        var, first, last = children
        if int(last) < int(first):
            raise LineError(var.line, f"empty range {first}..{last}")
        return Fold(str(var), int(first), int(last))

    def type(self, children):
        dtype, *dims = children
        if dtype not in DTYPES:
            raise LineError(dtype.line, f"unknown dtype '{dtype}'{did_you_mean(dtype, DTYPES)}")
        for d in dims:
            if int(d) < 1:                  # as in a .ds type: nothing has a dim of no elements
                raise LineError(d.line, f"{dtype}[{', '.join(dims)}]: dim {d} is not a "
                                        "positive integer")
        return str(dtype), tuple(int(d) for d in dims)

    def scaling(self, children):
        dtype, block, *tensor_dtype = children
        rows, cols = (int(n) for n in block.split("x"))
        try:
            return Scaling(str(dtype), (rows, cols), *(str(t) for t in tensor_dtype))
        except FormatError as err:
            raise LineError(dtype.line, str(err)) from None

    def kernel(self, children):
        name, *rest = children
        params = tuple(c for c in rest if isinstance(c, Param))
        items = tuple(c for c in rest if not isinstance(c, Param))
        return KernelRec(name.line, str(name), params, items)

    def param(self, children):
        *names, (dtype, shape) = children
        if len(names) == 2 and names[0] != "out":
            raise LineError(names[0].line, f"unexpected '{names[0]}' before parameter "
                                        f"'{names[1]}' (only 'out' may come there)")
        return Param(str(names[-1]), dtype, shape, len(names) == 2)

    def grid(self, children):
        return self._pairs("grid", children)

    def tokens(self, children):
        return self._pairs("token", children)

    @staticmethod
    def _pairs(kind, children):
        keyword, *pairs = children
        return Pairs(kind, keyword.line, tuple((str(k), v) for k, v in pairs))

    def buffer(self, children):
        name, (dtype, shape), *rest = children
        offset = int(rest.pop()[1:]) if rest[-1].type == "OFFSET" else None
        slots = int(rest.pop(0)[1:]) if len(rest) == 2 else 1
        return BufferRec(name.line,
                          BufferDecl(str(name), dtype, shape, slots, str(rest[0]), offset))

    def loop(self, children):
        var, count, *body = children
        return LoopRec(var.line, str(var), int(count), tuple(body))

    def instr(self, children):
        op, *rest = children
        operands = tuple(c for c in rest if isinstance(c, tuple) and c[0] in ("box", "tensor", "buf"))
        attrs = tuple((str(c[1]), str(c[2])) for c in rest if isinstance(c, tuple) and c[0] == "attr")
        clauses = [c for c in rest if isinstance(c, tuple) and c[0] in ("wait", "signal")]
        found = {}
        for kind, names in clauses:
            if kind in found:
                raise LineError(op.line, f"'{kind}(...)' is given twice")
            found[kind] = names
        return InstrRec(op.line, str(op), operands, attrs, found.get("wait"),
                         found.get("signal"))

    def box(self, children):
        name, *dims = children
        return ("box", str(name), tuple(dims))

    def tensor_ref(self, children):
        return ("tensor", str(children[0]))

    def slot_buf(self, children):
        name, slot = children
        return ("buf", str(name), str(slot).strip())

    def buf(self, children):
        return ("buf", str(children[0]), None)

    def dim(self, children):
        start, size = children
        if int(size) < 1:                   # a box covers at least one element of each dim
            raise LineError(size.line, f"box dimension {str(start).strip()}:+{size}: the size "
                                       "is not a positive integer")
        return str(start).strip(), int(size)

    def attr(self, children):
        key, value = children
        return ("attr", key, value)

    def wait(self, children):
        return ("wait", tuple(str(c) for c in children[1:]))

    def signal(self, children):
        return ("signal", tuple(str(c) for c in children[1:]))

    def schedule(self, children):
        return ("schedule", tuple(children))

    def launch(self, children):
        kernel, *rest = children
        note = ""
        if rest and rest[-1].type == "COMMENT":
            text = str(rest.pop())[1:].rstrip("\r")
            note = text[1:] if text.startswith(" ") else text
        stream = "compute"
        if rest and isinstance(rest[-1], tuple) and rest[-1][0] == "stream":
            _, stream, line = rest.pop()
        flops = rest.pop()
        flops = int(flops) if flops.type == "INT" else float(flops)
        return LaunchRec(kernel.line, Launch(str(kernel), tuple(rest), note, flops, stream))

    def binding(self, children):
        param, tensor = children
        return str(param), str(tensor)

    def repeat(self, children):
        var, first, last, *body = children
        step = 1
        if body and isinstance(body[0], lark.Token) and body[0].type == "INT":
            step = int(body.pop(0))
        if int(last) < int(first) - 1:
            raise LineError(var.line, f"repeat range {first}..{last} runs backwards")
        if step < 1 or int(last) >= int(first) and (int(last) - int(first)) % step:
            raise LineError(var.line, f"repeat range {first}..{last} is not whole steps of "
                                      f"{step}")
        return RepeatRec(var.line, str(var), int(first), int(last), tuple(body), step)



def did_you_mean(name: str, candidates) -> str:
    close = difflib.get_close_matches(str(name), sorted(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""



@cache
def _parser() -> lark.Lark:
    grammar = (Path(__file__).parent / "listing.lark").read_text()
    # LALR with the reader applied during the parse: a full model's listing is a thousand
    # lines, its schedule folded.
    return lark.Lark(grammar, parser="lalr", transformer=_Reader(), maybe_placeholders=False)


# ---------------------------------------------------------------------------- syntax errors

_TERMINAL_NAMES = {
    "NAME": "a name", "WORD": "a name", "MNEMONIC": "an instruction", "TNAME": "a tensor name",
    "STEP": "a view step", "EXPR": "an expression", "VALUE": "a value", "SLOTS": "xSLOTS",
    "BLOCK": "ROWSxCOLS", "INT": "an integer", "FLOAT": "a number", "COMMENT": "a ; comment",
    "_NL": "end of line", "$END": "end of input", "WAIT": "'wait('", "SIGNAL": "'signal('",
}
_LINE_KINDS = {"tensor": "tensor declaration", "view": "view declaration", "kernel": "kernel header",
               "grid": "grid line", "buffer": "buffer declaration", "token": "token line",
               "loop": "loop line", "launch": "launch", "repeat": "repeat line",
               "sizes": "sizes line"}
_BOX = re.compile(r"@\w+\[[^\]\n]*\]?")


def _describe_terminal(name: str) -> str:
    return describe_terminal(_parser(), _TERMINAL_NAMES, name)


def read_records(text: str):
    """The listing's lines as records, in order."""
    return _parser().parse(text if text.endswith("\n") else text + "\n")


def syntax_error(err: UnexpectedInput, file: str, lines: list[str]) -> ListingError:
    if isinstance(err, UnexpectedCharacters):
        what, expected = f"'{err.char}'", err.allowed
    else:
        assert isinstance(err, UnexpectedToken), err
        tok = err.token
        what = {"_NL": "end of line", "$END": "end of input"}.get(tok.type, f"'{tok}'")
        expected = err.accepts or err.expected
    line = err.line if err.line > 0 else len(lines)
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    shown = sorted({_describe_terminal(n) for n in expected or ()})
    tail = f" (expected {' or '.join(shown)})" if shown else ""
    for box in _BOX.finditer(text):
        if box.start() < err.column <= box.end() + 1:
            return ListingError(file, line, f"malformed box '{box.group()}': each dimension "
                                            f"is START:+SIZE with an integer SIZE; unexpected "
                                            f"{what}{tail}")
    words = text.split()
    kind = _LINE_KINDS.get(words[0], "instruction" if "." in words[0] else "line") if words else "line"
    if kind == "instruction" and set(expected or ()) == {"EQUAL"}:
        tail = " (operands are separated by ',', attributes are written KEY=VALUE)"
    return ListingError(file, line, f"cannot read this {kind}: unexpected {what}{tail}")

