"""The IR text form: `print_graph` writes a Graph one node per line, `parse_graph` reads it back.

    # dsc ir
    model gemm
    size M = 4096
    policy weights = fp8_e4m3 scaled(fp32, 128x128)
    repeat layer from 3: layer.5 times 55
    %a = input() : fp8_e4m3[4096,2048] scaled(fp32, 1x128) @ "gemm.ds":4:10
    %c = matmul(%a, %b) : bf16[4096,7168] @ "gemm.ds":6:10
    %s = topk(%x, %bias) {groups=8, k=8, topk_groups=4} : i32[128,8] @ "std/moe.ds":12:3
    output %c

Nodes come in the graph's deterministic topological order, attributes sorted by key, every type
explicit, so the text of a graph is stable enough for golden files. Parsing re-issues node ids
in line order, so `parse_graph(print_graph(g)) == g` whenever g's ids are already topologically
ordered (always true of graphs built front to back), and `print_graph(parse_graph(t)) == t` for
any printed text. The grammar is ir.lark beside this file; docs/ir.md describes the format.
"""
from __future__ import annotations

import json
import numbers
import re
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import lark
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from compiler.errors import DscError, Loc, register_source
from compiler.ir.graph import Graph, Node, Steady, TensorType, make_attrs
from isa.formats import Format, FormatError, Scaling, parse_format
from isa.grammar_terms import describe_terminal

HEADER = "# dsc ir"
_BARE_NAME = re.compile(r"[A-Za-z0-9_.]+")


# ----------------------------------------------------------------------------------- printing

def quote(text: str) -> str:
    """A double-quoted string with JSON escapes; ASCII only, so no character can end a line."""
    return json.dumps(text)


def name_text(name: str) -> str:
    """Names of letters, digits, `_` and `.` print bare; anything else is quoted."""
    return name if _BARE_NAME.fullmatch(name) else quote(name)


def _print_sequence(values) -> str:
    return "[" + ", ".join(print_value(v) for v in values) + "]"


# One printer per attribute value type; exact types, so that bool does not print as int.
_VALUE_PRINTERS = {
    bool: lambda v: "true" if v else "false",
    int: str,
    float: repr,        # repr round-trips exactly: 1e-06, 10000.0, inf
    str: quote,
    type(None): lambda v: "none",
    tuple: _print_sequence,
    list: _print_sequence,
    Format: lambda v: f"format({quote(str(v))})",
}


def print_value(value) -> str:
    printer = _VALUE_PRINTERS.get(type(value))
    if printer is not None:
        return printer(value)
    # numpy scalars and other number types print as the Python number they are equal to.
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    raise TypeError(f"cannot print attribute value {value!r} of type {type(value).__name__}")


def print_loc(loc: Loc | None) -> str:
    return f" @ {quote(loc.file)}:{loc.line}:{loc.col}" if loc else ""


def print_node(node: Node, names: dict[int, str]) -> str:
    """One node's line; `names` gives the names of the nodes it reads, by id."""
    args = ", ".join("%" + name_text(names[i]) for i in node.inputs)
    attrs = sorted(node.attrs, key=lambda kv: kv[0])
    braces = " {" + ", ".join(f"{name_text(k)}={print_value(v)}" for k, v in attrs) + "}"
    sched = (" sched {" + ", ".join(f"{name_text(k)}={print_value(v)}" for k, v in node.sched)
             + "}") if node.sched else ""
    return (f"%{name_text(node.name)} = {node.op}({args}){braces if attrs else ''}"
            f" : {node.type}{sched}{print_loc(node.loc)}")


def print_graph(g: Graph) -> str:
    lines = [HEADER, f"model {name_text(g.model)}"]
    lines += [f"size {name_text(k)} = {v}" for k, v in g.sizes.items()]
    lines += [f"policy {name_text(k)} = {f}" for k, f in g.policy.items()]
    lines += [f"deploy {name_text(k)} = {v}" for k, v in g.deploy.items()]
    lines += [str(s) for s in g.steady]
    names: dict[int, str] = {}
    for node in g.nodes():
        lines.append(print_node(node, names))
        names[node.id] = node.name
    lines += [f"output %{name_text(g.node(i).name)}" for i in g.outputs]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ parsing

class _TextError(Exception):
    """An error at a token; parse_graph adds the file name and makes it a DscError."""

    def __init__(self, tok: lark.Token, message: str, expected: str | None = None):
        super().__init__(message)
        self.tok, self.message, self.expected = tok, message, expected


@contextmanager
def _formats_at(tok: lark.Token):
    try:
        yield
    except FormatError as e:
        raise _TextError(tok, str(e)) from None


def _unquote(tok: lark.Token) -> str:
    try:
        return json.loads(tok)
    except ValueError:
        raise _TextError(tok, f"bad escape in string {tok}",
                         'a string with JSON escapes (\\" \\\\ \\n \\uXXXX)') from None


class _Sched(dict):
    """The `sched {...}` annotations of a node (a dict subclass, to tell them from attrs)."""


class _Reader(lark.Transformer):
    """Turns parse-tree nodes into statement records `(kind, args...)`, decoding every token.

    Tokens that a later check may need to point at are kept (with their text decoded) so
    errors carry the line and column of the offending word. It runs inside the LALR parser
    (no tree is built), so it holds no per-parse state.
    """

    def decoded(self, tok: lark.Token) -> lark.Token:
        """A name token (bare, or quoted after `%`) with its text as the name it spells."""
        text = tok[1:] if tok.startswith("%") else str(tok)
        name = _unquote(tok.update(value=text)) if text.startswith('"') else text
        return tok.update(value=name)

    # statements
    def start(self, children):
        return children

    def model(self, children):
        return ("model", children[0])

    def size(self, children):
        name, value = children
        return ("size", name, int(value))

    def policy(self, children):
        name, fmt = children
        return ("policy", name, fmt)

    def deploy(self, children):
        name, value = children
        return ("deploy", name, int(value) if value.isdigit() else str(value))

    def repeat(self, children):
        name, first, scope, times, period = (*children, None)[:5]
        prefix, _, index = scope.rpartition(".")
        if prefix != name or not index.isdigit() or int(index) <= int(first) or int(times) < 2:
            raise _TextError(scope, f"'{scope} times {times}' is not an iteration of repeat "
                                    f"'{name}' after its first ({first}) that stands for several",
                             f"{name}.INDEX times N, INDEX above {first}, N at least 2")
        if period is not None and int(period) < 1:
            raise _TextError(period, f"a repeat's period is at least 1, got {period}",
                             "period P, P at least 1")
        return ("repeat", Steady(str(name), int(first), int(index), int(times),
                                 1 if period is None else int(period)))

    def output(self, children):
        return ("output", self.decoded(children[0]))

    def node(self, children):
        ref, op, operands, *rest = children
        attrs = next((r for r in rest if type(r) is dict), {})
        type_ = next(r for r in rest if isinstance(r, TensorType))
        loc = next((r for r in rest if isinstance(r, Loc)), None)
        sched = next((r for r in rest if isinstance(r, _Sched)), _Sched())
        return ("node", self.decoded(ref), str(op), operands, attrs, type_, loc, dict(sched))

    def sched(self, children):
        return _Sched(children[0])

    def operands(self, children):
        return [self.decoded(tok) for tok in children]

    def attrs(self, children):
        values: dict[str, object] = {}
        for key, value in children:
            if key in values:
                raise _TextError(key, f"attribute '{key}' is given twice")
            values[str(key)] = value
        return values

    def attr(self, children):
        return tuple(children)

    def name(self, children):
        return self.decoded(children[0])

    # attribute values
    def int_value(self, children):
        return int(children[0])

    def float_value(self, children):
        return float(children[0])

    def true(self, children):
        return True

    def false(self, children):
        return False

    def none(self, children):
        return None

    def string(self, children):
        return _unquote(children[0])

    def list_value(self, children):
        return tuple(children)

    def format_value(self, children):
        with _formats_at(children[0]):
            return parse_format(_unquote(children[0]))

    # types and positions
    def tensor_type(self, children):
        dtype, *rest = children
        scaling = rest.pop() if rest and isinstance(rest[-1], Scaling) else None
        return TensorType(tuple(int(d) for d in rest), self.make_format(dtype, scaling))

    def format(self, children):
        return self.make_format(*children)

    def make_format(self, dtype: lark.Token, scaling: Scaling | None = None) -> Format:
        # Through parse_format, so aliases (mxfp4, nvfp4) and their rules are the language's.
        with _formats_at(dtype):
            return parse_format(f"{dtype} {scaling}" if scaling else str(dtype))

    def scaling(self, children):
        dtype, block, *tensor_dtype = children
        rows, cols = (int(n) for n in block.split("x"))
        with _formats_at(dtype):
            return Scaling(str(dtype), (rows, cols), *(str(t) for t in tensor_dtype))

    def loc(self, children):
        file, line, col = children
        return Loc(_unquote(file), int(line), int(col))


class _Builder:
    """Replays statement records into a Graph, resolving `%name` references to node ids."""

    def __init__(self):
        self.graph: Graph | None = None
        self.ids: dict[str, int] = {}
        self.lines: dict[str, int] = {}     # line of each definition, for "defined twice"

    def model(self, name):
        self.graph = Graph(str(name))

    def size(self, name, value):
        if name in self.graph.sizes:
            raise _TextError(name, f"size '{name}' is given twice")
        self.graph.sizes[str(name)] = value

    def policy(self, name, fmt):
        if name in self.graph.policy:
            raise _TextError(name, f"policy '{name}' is given twice")
        self.graph.policy[str(name)] = fmt

    def deploy(self, name, value):
        if name in self.graph.deploy:
            raise _TextError(name, f"deploy '{name}' is given twice")
        self.graph.deploy[str(name)] = value

    def repeat(self, steady: Steady):
        self.graph.steady += (steady,)

    def resolve(self, ref: lark.Token) -> int:
        if ref not in self.ids:
            raise _TextError(ref, f"%{name_text(ref)} is not defined on an earlier line")
        return self.ids[ref]

    def node(self, ref, op, operands, attrs, type_, loc, sched):
        if ref in self.ids:
            raise _TextError(ref, f"%{name_text(ref)} is defined twice "
                                  f"(first on line {self.lines[ref]})")
        inputs = [self.resolve(r) for r in operands]
        node = self.graph.add(op, inputs, type_, str(ref), make_attrs(attrs), loc,
                              make_attrs(sched))
        self.ids[str(ref)] = node.id
        self.lines[str(ref)] = ref.line

    def output(self, ref):
        self.graph.outputs.append(self.resolve(ref))


def parse_graph(text: str, file: str = "<ir>") -> Graph:
    """Read IR text; errors are DscErrors at the line and column of the offending text."""
    register_source(file, text)
    builder = _Builder()
    try:
        records = _parser().parse(text if text.endswith("\n") else text + "\n")
        for kind, *args in records:
            getattr(builder, kind)(*args)
    except UnexpectedInput as e:
        raise _syntax_error(e, file) from None
    except _TextError as e:
        raise DscError(e.message, Loc(file, e.tok.line, e.tok.column), e.expected) from None
    return builder.graph


@cache
def _parser() -> lark.Lark:
    grammar = (Path(__file__).parent / "ir.lark").read_text()
    # LALR with the reader applied during the parse: IR dumps of big models run to thousands
    # of lines. No placeholders, so `[]` and `[none]` stay distinguishable.
    return lark.Lark(grammar, parser="lalr", transformer=_Reader(), maybe_placeholders=False)


# ------------------------------------------------------------------------------ syntax errors

# How the grammar's named terminals read in "expected ..." lists.
_TERMINAL_NAMES = {
    "REF": "%name", "WORD": "a name", "STRING": "a quoted string", "BLOCK": "ROWSxCOLS",
    "INT": "an integer", "FLOAT": "a number", "_NL": "end of line", "$END": "end of input",
}


def _describe_terminal(name: str) -> str:
    return describe_terminal(_parser(), _TERMINAL_NAMES, name)


def _expected(names) -> str | None:
    shown = sorted({_describe_terminal(n) for n in names if n != "COMMENT"})
    return " or ".join(shown) if shown else None


def _syntax_error(err: UnexpectedInput, file: str) -> DscError:
    if isinstance(err, UnexpectedCharacters):
        return DscError(f"unexpected character {err.char!r}", Loc(file, err.line, err.column),
                        _expected(err.allowed))
    assert isinstance(err, UnexpectedToken), err
    tok = err.token
    what = "end of line" if tok.type == "_NL" else f"'{tok}'"
    if tok.type == "$END":
        what = "end of input"
    return DscError(f"unexpected {what}", Loc(file, err.line, err.column),
                    _expected(err.accepts or err.expected))
