"""The assembler: read a listing, as isa/listing.py prints it, back into a Program.

    parse_listing(text, file, target=None) -> Program

`parse_listing(render(p)) == p` for every program the compiler makes, so a user can edit a
listing and run it (`dsc run FILE.lst --target T`). The grammar is listing.lark beside this
file. Reading is two steps: the LALR parser turns each line into a record that keeps its line
number (`_Reader`), and `_Assembler` builds the program from the records, checking each one as
it goes with the checks of check.py, so every error names the listing line at fault:

    FILE:LINE: error: MESSAGE

Without a target the checks are those that hold on any target (declared names, operand kinds,
attributes, tokens, launch bindings); with one, also that each instruction exists on it and
that each kernel's buffers fit.
"""
from __future__ import annotations

import difflib
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import lark
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from isa.errors import ListingError  # noqa: F401  (raised here; defined apart for the CLI)
from isa.deployment import Deployment, DeploymentError
from isa.check import (KernelScope, ProgramError, check_buffers, check_instruction, check_launch,
                       check_reach)
from isa.expr import Bin, Const, ExprError, Var, parse_expr, variables
from isa.formats import DTYPES, FormatError, Scaling
from isa.instructions import INSTRUCTIONS, InstrDef, lookup, lookup_any
from isa.listing import parse_value
from isa.program import (Attr, Box, Buf, BufferDecl, Instr, Kernel, Launch, Loop, Param,
                         Program, Repeat, STREAMS, TensorDecl, TensorRef, ViewStep, bind_name)
from isa.target_schema import Target

HEADER = "; dsc listing"
VIEW_STEPS = {"transpose": None, "reshape": None, "slice": 3}     # op -> number of args, if fixed


def is_listing(path: str) -> bool:
    """A listing by its suffix (.lst, .isa) or its first line (`; dsc listing`)."""
    if Path(path).suffix in (".lst", ".isa"):
        return True
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(HEADER)
    except OSError:
        return False


def parse_listing(text: str, file: str = "<listing>", target: Target | None = None) -> Program:
    """Read a listing; a ListingError names the file and line of the first problem."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    if not first.startswith(HEADER):
        raise ListingError(file, 1, "not a dsc listing: the first line must be "
                                    "'; dsc listing: model NAME, target NAME'")
    try:
        records = _parser().parse(text if text.endswith("\n") else text + "\n")
        return _Assembler(target).program(records)
    except UnexpectedInput as err:
        raise _syntax_error(err, file, text.splitlines()) from None
    except _Error as err:
        raise ListingError(file, err.line, err.message) from None


# ------------------------------------------------------------------------ lines to records

class _Error(Exception):
    """An error at a listing line; parse_listing adds the file name."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line, self.message = line, message


@dataclass(frozen=True)
class _Note:
    line: int
    text: str


@dataclass(frozen=True)
class _Fold:
    var: str
    first: int
    last: int


@dataclass(frozen=True)
class _Decl:
    """A `tensor` or `view` line: name, type, kind, view base and steps, `for` clause."""
    line: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scaling: Scaling | None
    kind: str
    base: str | None
    steps: tuple[ViewStep, ...]
    fold: _Fold | None
    home: str | None = None


@dataclass(frozen=True)
class _Dies:
    """A kernel's `dies VAR` line."""
    line: int
    var: str


@dataclass(frozen=True)
class _KernelRec:
    line: int
    name: str
    params: tuple[Param, ...]
    items: tuple


@dataclass(frozen=True)
class _Pairs:
    """A `grid`, `token` or `sizes` line: name=INT pairs."""
    kind: str
    line: int
    pairs: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class _BufferRec:
    line: int
    decl: BufferDecl


@dataclass(frozen=True)
class _InstrRec:
    line: int
    op: str
    operands: tuple          # ("box", name, ((expr text, size), ...)) | ("tensor", name)
                             # | ("buf", name, slot text or None)
    attrs: tuple[tuple[str, str], ...]
    wait: tuple[str, ...] | None
    signal: tuple[str, ...] | None


@dataclass(frozen=True)
class _LoopRec:
    line: int
    var: str
    count: int
    body: tuple


@dataclass(frozen=True)
class _RepeatRec:
    line: int
    var: str
    first: int
    last: int
    body: tuple


@dataclass(frozen=True)
class _LaunchRec:
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
        values = {str(k): (int(v) if v.type == "INT" else str(v)) for k, v in settings}
        try:
            return ("deploy", Deployment(
                values.pop("devices"), values.pop("per_node"), values.pop("attn"),
                values.pop("ffn"), values.pop("moe"), values.pop("mb"),
                values.pop("a2a", "direct")), keyword.line, values)
        except KeyError as missing:
            raise _Error(keyword.line, f"deploy line without {missing.args[0]}= (expected "
                                       "devices, per_node, attn, ffn, moe and mb)") from None
        except (DeploymentError, TypeError) as err:
            raise _Error(keyword.line, f"bad deploy line: {err}") from None

    def setting(self, children):
        return children[0], children[1]

    def stream(self, children):
        return ("stream", str(children[0]), children[0].line)

    def note(self, children):
        text = str(children[0])[1:].rstrip("\r")
        return _Note(children[0].line, text[1:] if text.startswith(" ") else text)

    def tensor(self, children):
        name, (dtype, shape), *rest = children
        fold = rest.pop() if rest and isinstance(rest[-1], _Fold) else None
        home = str(rest.pop())[5:] if getattr(rest[-1], "type", None) == "HOME" else None
        kind = rest.pop()
        if kind == "view":
            raise _Error(name.line, "a view is declared as 'view NAME: TYPE = BASE.STEP(...)'")
        scaling = rest[0] if rest else None
        return _Decl(name.line, str(name), dtype, shape, scaling, str(kind), None, (), fold, home)

    def dies(self, children):
        return _Dies(children[0].line, str(children[0]))

    def view(self, children):
        name, (dtype, shape), *rest = children
        fold = rest.pop() if rest and isinstance(rest[-1], _Fold) else None
        scaling = rest.pop(0) if isinstance(rest[0], Scaling) else None
        base, *steps = rest
        return _Decl(name.line, str(name), dtype, shape, scaling, "view", str(base),
                     tuple(steps), fold)

    def step(self, children):
        op, *args = children
        name = str(op)[1:]
        if name not in VIEW_STEPS:
            raise _Error(op.line, f"unknown view step '{name}' (expected "
                                  f"{', '.join(VIEW_STEPS)}){_did_you_mean(name, VIEW_STEPS)}")
        if VIEW_STEPS[name] is not None and len(args) != VIEW_STEPS[name]:
            raise _Error(op.line, f"{name} takes {VIEW_STEPS[name]} integers, got {len(args)}")
        return ViewStep(name, tuple(int(a) for a in args))

    def fold(self, children):
        var, first, last = children
        if int(last) < int(first):
            raise _Error(var.line, f"empty range {first}..{last}")
        return _Fold(str(var), int(first), int(last))

    def type(self, children):
        dtype, *dims = children
        if dtype not in DTYPES:
            raise _Error(dtype.line, f"unknown dtype '{dtype}'{_did_you_mean(dtype, DTYPES)}")
        return str(dtype), tuple(int(d) for d in dims)

    def scaling(self, children):
        dtype, block, *tensor_dtype = children
        rows, cols = (int(n) for n in block.split("x"))
        try:
            return Scaling(str(dtype), (rows, cols), *(str(t) for t in tensor_dtype))
        except FormatError as err:
            raise _Error(dtype.line, str(err)) from None

    def kernel(self, children):
        name, *rest = children
        params = tuple(c for c in rest if isinstance(c, Param))
        items = tuple(c for c in rest if not isinstance(c, Param))
        return _KernelRec(name.line, str(name), params, items)

    def param(self, children):
        *names, (dtype, shape) = children
        if len(names) == 2 and names[0] != "out":
            raise _Error(names[0].line, f"unexpected '{names[0]}' before parameter "
                                        f"'{names[1]}' (only 'out' may come there)")
        return Param(str(names[-1]), dtype, shape, len(names) == 2)

    def grid(self, children):
        return self._pairs("grid", children)

    def tokens(self, children):
        return self._pairs("token", children)

    @staticmethod
    def _pairs(kind, children):
        keyword, *pairs = children
        return _Pairs(kind, keyword.line, tuple((str(k), v) for k, v in pairs))

    def buffer(self, children):
        name, (dtype, shape), *rest = children
        offset = int(rest.pop()[1:]) if rest[-1].type == "OFFSET" else None
        slots = int(rest.pop(0)[1:]) if len(rest) == 2 else 1
        return _BufferRec(name.line,
                          BufferDecl(str(name), dtype, shape, slots, str(rest[0]), offset))

    def loop(self, children):
        var, count, *body = children
        return _LoopRec(var.line, str(var), int(count), tuple(body))

    def instr(self, children):
        op, *rest = children
        operands = tuple(c for c in rest if isinstance(c, tuple) and c[0] in ("box", "tensor", "buf"))
        attrs = tuple((str(c[1]), str(c[2])) for c in rest if isinstance(c, tuple) and c[0] == "attr")
        clauses = [c for c in rest if isinstance(c, tuple) and c[0] in ("wait", "signal")]
        found = {}
        for kind, names in clauses:
            if kind in found:
                raise _Error(op.line, f"'{kind}(...)' is given twice")
            found[kind] = names
        return _InstrRec(op.line, str(op), operands, attrs, found.get("wait"),
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
            if stream not in STREAMS:
                raise _Error(line, f"unknown stream '{stream}' (expected {', '.join(STREAMS)})")
        flops = rest.pop()
        flops = int(flops) if flops.type == "INT" else float(flops)
        return _LaunchRec(kernel.line, Launch(str(kernel), tuple(rest), note, flops, stream))

    def binding(self, children):
        param, tensor = children
        return str(param), str(tensor)

    def repeat(self, children):
        var, first, last, *body = children
        if int(last) < int(first) - 1:
            raise _Error(var.line, f"repeat range {first}..{last} runs backwards")
        return _RepeatRec(var.line, str(var), int(first), int(last), tuple(body))


# ------------------------------------------------------------------------ records to program

class _Assembler:
    """Builds the Program from the records in order, checking each against what came before."""

    def __init__(self, target: Target | None):
        self.target = target
        self.tensors: dict[str, TensorDecl] = {}
        self.tensor_lines: dict[str, int] = {}
        self.kernels: dict[str, Kernel] = {}
        self.kernel_lines: dict[str, int] = {}

    def program(self, records) -> Program:
        (_, model, target_name), *rest = records
        sizes = rest.pop(0).pairs if rest and isinstance(rest[0], _Pairs) else ()
        deployment = Deployment()
        if rest and isinstance(rest[0], tuple) and rest[0][0] == "deploy":
            _, deployment, line, extra = rest.pop(0)
            if extra:
                raise _Error(line, f"unknown deploy setting '{next(iter(extra))}'")
        _, schedule = rest.pop()
        notes, leading = [], True
        for rec in rest:
            if isinstance(rec, _Note):
                if leading:
                    notes.append(rec.text)
                continue
            leading = False
            if isinstance(rec, _Decl):
                self.declare(rec)
            else:
                self.kernel(rec)
        items = self.schedule(schedule, [{}])
        return Program(model, target_name, tuple(self.tensors.values()),
                       tuple(self.kernels.values()), items, tuple(sizes), tuple(notes),
                       deployment)

    # -- tensors

    def declare(self, rec: _Decl) -> None:
        for env in ([{rec.fold.var: i} for i in range(rec.fold.first, rec.fold.last + 1)]
                    if rec.fold else [{}]):
            name = self.bind(rec.name, env, rec.line)
            base = self.bind(rec.base, env, rec.line) if rec.base is not None else None
            if name in self.tensors:
                raise _Error(rec.line, f"tensor '{name}' is declared twice (first on line "
                                       f"{self.tensor_lines[name]})")
            self.tensors[name] = TensorDecl(name, rec.dtype, rec.shape, rec.kind, rec.scaling,
                                            base, rec.steps, rec.home)
            self.tensor_lines[name] = rec.line

    @staticmethod
    def bind(template: str, env: dict[str, int], line: int) -> str:
        try:
            return bind_name(template, env)
        except KeyError as err:
            where = "outside a 'for' clause" if not env else f"(the 'for' variable is {next(iter(env))})"
            raise _Error(line, f"unknown variable {err} in the name '{template}' {where}") from None
        except (ExprError, ValueError) as err:
            raise _Error(line, f"cannot read the name '{template}': {err}") from None

    # -- kernels

    def kernel(self, rec: _KernelRec) -> None:
        if rec.name in self.kernels:
            raise _Error(rec.line, f"kernel '{rec.name}' is defined twice (first on line "
                                   f"{self.kernel_lines[rec.name]})")
        notes, grid, buffers, tokens, stmts = [], None, [], [], []
        die_var = None
        for number, item in enumerate(rec.items):
            if isinstance(item, _Dies):
                die_var = item.var
            elif isinstance(item, _Note):
                if number == len(notes):                 # notes come first; later ones are comments
                    notes.append(item.text)
            elif isinstance(item, _Pairs) and item.kind == "grid":
                if grid is not None:
                    raise _Error(item.line, "a kernel has one 'grid' line")
                grid = item.pairs
            elif isinstance(item, _Pairs):
                tokens.extend((name, count, item.line) for name, count in item.pairs)
            elif isinstance(item, _BufferRec):
                buffers.append(item)
            else:
                stmts.append(item)
        grid = grid or ()
        _unique(rec.line, "parameter", [p.name for p in rec.params])
        _unique(rec.line, "grid variable", [v for v, _ in grid])
        for name, line in _duplicates([(b.decl.name, b.line) for b in buffers]):
            raise _Error(line, f"buffer '{name}' is declared twice")
        for name, line in _duplicates([(t, line) for t, _, line in tokens]):
            raise _Error(line, f"token '{name}' is declared twice")
        located: list[tuple[Instr, int]] = []
        body = self.body(stmts, frozenset(v for v, _ in grid), located)
        if die_var is not None and die_var not in {v for v, _ in grid}:
            raise _Error(rec.line, f"kernel {rec.name}: 'dies {die_var}' names no grid dim")
        kernel = Kernel(rec.name, rec.params, grid, tuple(b.decl for b in buffers),
                        tuple((t, n) for t, n, _ in tokens), body, tuple(notes), die_var)
        self.check_kernel(kernel, located, rec.line)
        self.kernels[rec.name] = kernel
        self.kernel_lines[rec.name] = rec.line

    def body(self, stmts, scope: frozenset, located: list) -> tuple:
        out = []
        for stmt in stmts:
            if isinstance(stmt, _Note):
                continue
            if isinstance(stmt, _LoopRec):
                if stmt.var in scope:
                    raise _Error(stmt.line, f"loop variable '{stmt.var}' is already in use")
                out.append(Loop(stmt.var, stmt.count,
                                self.body(stmt.body, scope | {stmt.var}, located)))
                continue
            ins = self.instruction(stmt, scope)
            located.append((ins, stmt.line))
            out.append(ins)
        return tuple(out)

    def instruction(self, rec: _InstrRec, scope: frozenset) -> Instr:
        args = []
        for operand in rec.operands:
            if operand[0] == "box":
                _, name, dims = operand
                starts = tuple(self.expr(text, scope, rec.line, f"the box on '@{name}'")
                               for text, _ in dims)
                args.append(Box(name, starts, tuple(size for _, size in dims)))
            elif operand[0] == "tensor":
                args.append(TensorRef(operand[1]))
            else:
                _, name, slot = operand
                args.append(Buf(name, None if slot is None else
                                self.expr(slot, scope, rec.line, f"the slot of '{name}'")))
        for key, text in rec.attrs:
            try:
                value = parse_value(text, scope)
            except ValueError as err:
                raise _Error(rec.line, f"cannot read the value of attribute '{key}': {err}") from None
            for e in _expressions(value):
                self.check_variables(e, text, scope, rec.line)
            args.append(Attr(key, value))
        return Instr(rec.op, tuple(args), rec.wait or (), rec.signal or ())

    def expr(self, text: str, scope: frozenset, line: int, where: str):
        try:
            e = parse_expr(text)
        except ExprError as err:
            raise _Error(line, f"cannot read the expression '{text}' in {where}: {err}") from None
        self.check_variables(e, text, scope, line)
        return e

    @staticmethod
    def check_variables(e, text: str, scope: frozenset, line: int) -> None:
        unknown = sorted(variables(e) - scope)
        if unknown:
            known = ", ".join(sorted(scope)) or "none"
            raise _Error(line, f"unknown variable '{unknown[0]}' in '{text}' (grid and loop "
                               f"variables here: {known})")

    def check_kernel(self, kernel: Kernel, located, line: int) -> None:
        scope = KernelScope.of(kernel)
        for ins, ins_line in located:
            with _at(ins_line):
                definition = self.definition(ins.op, ins_line)
                check_instruction(ins, definition, scope)
                if self.target is not None:
                    check_reach(ins, definition, scope, self.target)
        if self.target is not None:
            with _at(line):
                check_buffers(kernel, self.target)

    def definition(self, op: str, line: int) -> InstrDef:
        """The instruction `op` names; an unknown opcode or one the target lacks is an error."""
        target = self.target
        found = lookup(op, target)
        if found is not None and target is not None and found.unit not in target.units:
            raise _Error(line, f"'{op}' is not an instruction of target {target.name}: it has "
                               f"no '{found.unit}' unit")
        if found is not None:
            return found
        fixed = tuple(f"fix.{o}" for o in target.fixed_pipe.ops) if target and target.fixed_pipe else ()
        if target is None and lookup_any(op) is not None:
            return lookup_any(op)                        # checked against a target later
        if not op.startswith("fix."):
            raise _Error(line, f"unknown opcode '{op}'{_did_you_mean(op, (*INSTRUCTIONS, *fixed))}")
        if target is None:
            return lookup_any(op)                        # checked against a target later
        if target.fixed_pipe is None:
            raise _Error(line, f"'{op}' is not an instruction of target {target.name}: it has "
                               "no fixed pipe")
        raise _Error(line, f"'{op}' is not an instruction of target {target.name}: its fixed "
                           f"pipe does {', '.join(target.fixed_pipe.ops)}{_did_you_mean(op, fixed)}")

    # -- schedule

    def schedule(self, recs, envs: list[dict[str, int]]) -> tuple:
        items = []
        for rec in recs:
            if isinstance(rec, _Note):
                continue
            if isinstance(rec, _RepeatRec):
                inner = [{**env, rec.var: i} for env in envs
                         for i in range(rec.first, rec.last + 1)]
                items.append(Repeat(rec.var, rec.first, rec.last - rec.first + 1,
                                    self.schedule(rec.body, inner)))
                continue
            self.check_launch(rec, envs)
            items.append(rec.launch)
        return tuple(items)

    def check_launch(self, rec: _LaunchRec, envs) -> None:
        name = rec.launch.kernel
        if name not in self.kernels:
            raise _Error(rec.line, f"launch of undefined kernel '{name}'"
                                   f"{_did_you_mean(name, self.kernels)}")
        with _at(rec.line):
            for env in envs:
                check_launch(rec.launch, env, self.kernels, self.tensors)


@contextmanager
def _at(line: int):
    """Report a check's ProgramError (or a name that does not bind) at `line`."""
    try:
        yield
    except ProgramError as err:
        raise _Error(line, str(err)) from None
    except KeyError as err:
        raise _Error(line, f"unknown variable {err} in a tensor name") from None
    except ValueError as err:                   # a `{...}` in a name that is not an expression
        raise _Error(line, f"cannot bind a tensor name: {err}") from None


def _expressions(value) -> list:
    """The expressions in an attribute value (itself, or the items of a tuple)."""
    if isinstance(value, (Const, Var, Bin)):
        return [value]
    if isinstance(value, tuple):
        return [e for item in value for e in _expressions(item)]
    return []


def _did_you_mean(name: str, candidates) -> str:
    close = difflib.get_close_matches(str(name), sorted(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _duplicates(named: list[tuple[str, int]]):
    seen = set()
    for name, line in named:
        if name in seen:
            yield name, line
        seen.add(name)


def _unique(line: int, what: str, names: list[str]) -> None:
    for name, _ in _duplicates([(n, line) for n in names]):
        raise _Error(line, f"{what} '{name}' is declared twice")


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
    if name in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[name]
    pattern = _parser().get_terminal(name).pattern
    return f"'{pattern.value}'" if pattern.type == "str" else name


def _syntax_error(err: UnexpectedInput, file: str, lines: list[str]) -> ListingError:
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
