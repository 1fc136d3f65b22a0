"""The assembler: read a listing, as isa/listing.py prints it, back into a Program.

    parse_listing(text, file, target=None) -> Program

`parse_listing(render(p)) == p` for every program the compiler makes, so a user can edit a
listing and run it (`dsc run FILE.lst --target T`). The grammar is listing.lark beside this
file. Reading is two steps: the LALR parser turns each line into a record that keeps its line
number (isa/listing_reader.py), and `_Assembler` builds the program from the records, checking each one as
it goes with the checks of check.py, so every error names the listing line at fault:

    FILE:LINE: error: MESSAGE

Without a target the checks are those that hold on any target (declared names, operand kinds,
attributes, tokens, launch bindings, and the whole-kernel rules of isa/verify: bounds,
coverage, races); with one, also that each instruction exists on it and that each kernel's
buffers fit.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

from lark.exceptions import UnexpectedInput

from isa.errors import ListingError  # noqa: F401  (raised here; defined apart for the CLI)
from isa.deployment import Deployment
from isa.check import (KernelScope, ProgramError, check_buffers, check_instruction, check_launch,
                       check_reach, check_stream)
from isa.verify import verify_kernel
from isa.expr import Bin, Const, ExprError, Var, parse_expr, variables
from isa.instructions import INSTRUCTIONS, InstrDef, lookup, lookup_any
from isa.listing import parse_value
from isa.listing_file import HEADER, is_listing  # noqa: F401  (what a listing file is)
from isa.program import (Attr, Box, Buf, Instr, Kernel, Loop, Program, Repeat, TensorDecl,
                         TensorRef, bind_name)
from isa.listing_reader import (BufferRec, Decl, Dies, InstrRec, KernelRec, LaunchRec, LineError,
                                LoopRec, Note, Pairs, Persistent, RepeatRec, did_you_mean,
                                read_records, syntax_error)
from isa.target_schema import Target
from isa.views import tensor_problems
from isa.workload import MAX_LAUNCH_FLOPS, MAX_LAUNCHES, kernel_problem

def parse_listing(text: str, file: str = "<listing>", target: Target | None = None) -> Program:
    """Read a listing; a ListingError names the file and line of the first problem."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    if not first.startswith(HEADER):
        raise ListingError(file, 1, "not a dsc listing: the first line must be "
                                    "'; dsc listing: model NAME, target NAME'")
    assembler = _Assembler(target)
    try:
        return assembler.program(read_records(text))
    except UnexpectedInput as err:
        raise syntax_error(err, file, text.splitlines()) from None
    except LineError as err:
        compiled_for = assembler.compiled_for
        note = (f" (the listing was compiled for target {compiled_for}, and is checked here "
                f"against {target.name})" if target is not None and compiled_for is not None
                and compiled_for != target.name else "")
        raise ListingError(file, err.line, err.message + note) from None


def retarget_warning(program: Program, target: Target, file: str) -> str | None:
    """A listing run on another target than the one its header names: valid there (it passed
    the target's checks), but its tiles and buffers were chosen for the other one."""
    if program.target == target.name:
        return None
    return (f"{file}:1: warning: the listing was compiled for target {program.target} and "
            f"runs on {target.name}: it passes {target.name}'s checks, but its tiles, stages "
            f"and buffer placement were chosen for {program.target}")


# ------------------------------------------------------------------------ records to program

class _Assembler:
    """Builds the Program from the records in order, checking each against what came before."""

    def __init__(self, target: Target | None):
        self.target = target
        self.compiled_for: str | None = None         # the target the header names
        self.tensors: dict[str, TensorDecl] = {}
        self.tensor_lines: dict[str, int] = {}
        self.kernels: dict[str, Kernel] = {}
        self.kernel_lines: dict[str, int] = {}
        self.launches = 0                              # so far, repeats unrolled

    def program(self, records) -> Program:
        (_, model, target_name), *rest = records
        self.compiled_for = target_name
        sizes = rest.pop(0).pairs if rest and isinstance(rest[0], Pairs) else ()
        deployment = Deployment()
        if rest and isinstance(rest[0], tuple) and rest[0][0] == "deploy":
            _, deployment, line, extra = rest.pop(0)
            if extra:
                raise LineError(line, f"unknown deploy setting '{next(iter(extra))}'")
        _, schedule = rest.pop()
        notes, leading = [], True
        for rec in rest:
            if isinstance(rec, Note):
                if leading:
                    notes.append(rec.text)
                continue
            leading = False
            if isinstance(rec, Decl):
                self.declare(rec)
            else:
                self.kernel(rec)
        problems = sorted(tensor_problems(self.tensors), key=lambda p: self.tensor_lines[p[0]])
        if problems:
            name, problem = problems[0]
            raise LineError(self.tensor_lines[name], problem)
        items = self.schedule(schedule, [{}])
        return Program(model, target_name, tuple(self.tensors.values()),
                       tuple(self.kernels.values()), items, tuple(sizes), tuple(notes),
                       deployment)

    # -- tensors

    def declare(self, rec: Decl) -> None:
        if rec.fold and rec.fold.last - rec.fold.first + 1 > MAX_LAUNCHES:
            raise LineError(rec.line, f"'for {rec.fold.var} in {rec.fold.first}.."
                                      f"{rec.fold.last}' declares more than {MAX_LAUNCHES:,} "
                                      "tensors (one per launch at most)")
        for env in ([{rec.fold.var: i} for i in range(rec.fold.first, rec.fold.last + 1)]
                    if rec.fold else [{}]):
            name = self.bind(rec.name, env, rec.line)
            base = self.bind(rec.base, env, rec.line) if rec.base is not None else None
            if name in self.tensors:
                raise LineError(rec.line, f"tensor '{name}' is declared twice (first on line "
                                       f"{self.tensor_lines[name]})")
            if rec.memory is not None and self.target is not None and \
                    rec.memory not in self.target.machine.placeable:
                raise LineError(rec.line, f"tensor '{name}' in={rec.memory}: target "
                                          f"{self.target.name} has no such memory (tensors can "
                                          f"live in {', '.join(self.target.machine.placeable)})")
            self.tensors[name] = TensorDecl(name, rec.dtype, rec.shape, rec.kind, rec.scaling,
                                            base, rec.steps, rec.home, rec.memory)
            self.tensor_lines[name] = rec.line

    @staticmethod
    def bind(template: str, env: dict[str, int], line: int) -> str:
        try:
            return bind_name(template, env)
        except KeyError as err:
            where = "outside a 'for' clause" if not env else f"(the 'for' variable is {next(iter(env))})"
            raise LineError(line, f"unknown variable {err} in the name '{template}' {where}") from None
        except (ExprError, ValueError) as err:
            raise LineError(line, f"cannot read the name '{template}': {err}") from None

    # -- kernels

    def kernel(self, rec: KernelRec) -> None:
        if rec.name in self.kernels:
            raise LineError(rec.line, f"kernel '{rec.name}' is defined twice (first on line "
                                   f"{self.kernel_lines[rec.name]})")
        notes, grid, buffers, tokens, stmts = [], None, [], [], []
        die_var, grid_line, persistent = None, rec.line, False
        for number, item in enumerate(rec.items):
            if isinstance(item, Dies):
                die_var = item.var
            elif isinstance(item, Persistent):
                persistent = True
            elif isinstance(item, Note):
                if number == len(notes):                 # notes come first; later ones are comments
                    notes.append(item.text)
            elif isinstance(item, Pairs) and item.kind == "grid":
                if grid is not None:
                    raise LineError(item.line, "a kernel has one 'grid' line")
                grid, grid_line = item.pairs, item.line
            elif isinstance(item, Pairs):
                tokens.extend((name, count, item.line) for name, count in item.pairs)
            elif isinstance(item, BufferRec):
                buffers.append(item)
            else:
                stmts.append(item)
        grid = grid or ()
        _unique(rec.line, "parameter", [p.name for p in rec.params])
        _unique(rec.line, "grid variable", [v for v, _ in grid])
        for name, line in _duplicates([(b.decl.name, b.line) for b in buffers]):
            raise LineError(line, f"buffer '{name}' is declared twice")
        for name, line in _duplicates([(t, line) for t, _, line in tokens]):
            raise LineError(line, f"token '{name}' is declared twice")
        located: list[tuple[Instr, int]] = []
        body = self.body(stmts, frozenset(v for v, _ in grid), located)
        if die_var is not None and die_var not in {v for v, _ in grid}:
            raise LineError(rec.line, f"kernel {rec.name}: 'dies {die_var}' names no grid dim")
        kernel = Kernel(rec.name, rec.params, grid, tuple(b.decl for b in buffers),
                        tuple((t, n) for t, n, _ in tokens), body, tuple(notes), die_var,
                        persistent)
        lines = {"instr": [line for _, line in located], "grid": {None: grid_line},
                 "buffer": {b.decl.name: b.line for b in buffers},
                 "token": {t: line for t, _, line in tokens}}
        if self.target is not None:                  # before analyses that scale with it
            problem = kernel_problem(kernel, self.target.cores, self.target.chip.dies)
            if problem:
                raise LineError(rec.line, problem)
        self.check_kernel(kernel, located, rec.line, lines)
        self.kernels[rec.name] = kernel
        self.kernel_lines[rec.name] = rec.line

    def body(self, stmts, scope: frozenset, located: list) -> tuple:
        out = []
        for stmt in stmts:
            if isinstance(stmt, Note):
                continue
            if isinstance(stmt, LoopRec):
                if stmt.var in scope:
                    raise LineError(stmt.line, f"loop variable '{stmt.var}' is already in use")
                out.append(Loop(stmt.var, stmt.count,
                                self.body(stmt.body, scope | {stmt.var}, located)))
                continue
            ins = self.instruction(stmt, scope)
            located.append((ins, stmt.line))
            out.append(ins)
        return tuple(out)

    def instruction(self, rec: InstrRec, scope: frozenset) -> Instr:
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
                raise LineError(rec.line, f"cannot read the value of attribute '{key}': {err}") from None
            for e in _expressions(value):
                self.check_variables(e, text, scope, rec.line)
            args.append(Attr(key, value))
        return Instr(rec.op, tuple(args), rec.wait or (), rec.signal or ())

    def expr(self, text: str, scope: frozenset, line: int, where: str):
        try:
            e = parse_expr(text)
        except ExprError as err:
            raise LineError(line, f"cannot read the expression '{text}' in {where}: {err}") from None
        self.check_variables(e, text, scope, line)
        return e

    @staticmethod
    def check_variables(e, text: str, scope: frozenset, line: int) -> None:
        unknown = sorted(variables(e) - scope)
        if unknown:
            known = ", ".join(sorted(scope)) or "none"
            raise LineError(line, f"unknown variable '{unknown[0]}' in '{text}' (grid and loop "
                               f"variables here: {known})")

    def check_kernel(self, kernel: Kernel, located, line: int, lines: dict) -> None:
        scope = KernelScope.of(kernel)
        definitions = []
        for ins, ins_line in located:
            with _at(ins_line):
                definition = self.definition(ins.op, ins_line)
                check_instruction(ins, definition, scope)
                if self.target is not None:
                    check_reach(ins, definition, scope, self.target)
            definitions.append(definition)
        try:
            if self.target is not None:
                check_buffers(kernel, self.target)
            verify_kernel(kernel, definitions)
        except ProgramError as err:
            kind, key = err.where or ("kernel", None)
            raise LineError(lines[kind][key] if kind in lines else line, str(err)) from None

    def definition(self, op: str, line: int) -> InstrDef:
        """The instruction `op` names; an unknown opcode or one the target lacks is an error."""
        target = self.target
        found = lookup(op, target)
        if found is not None and target is not None and found.unit not in target.units:
            raise LineError(line, f"'{op}' is not an instruction of target {target.name}: it has "
                               f"no '{found.unit}' unit")
        if found is not None:
            return found
        fixed = tuple(f"fix.{o}" for o in target.fixed_pipe.ops) if target and target.fixed_pipe else ()
        if target is None and lookup_any(op) is not None:
            return lookup_any(op)                        # checked against a target later
        if not op.startswith("fix."):
            raise LineError(line, f"unknown opcode '{op}'{did_you_mean(op, (*INSTRUCTIONS, *fixed))}")
        if target is None:
            return lookup_any(op)                        # checked against a target later
        if target.fixed_pipe is None:
            raise LineError(line, f"'{op}' is not an instruction of target {target.name}: it has "
                               "no fixed pipe")
        raise LineError(line, f"'{op}' is not an instruction of target {target.name}: its fixed "
                           f"pipe does {', '.join(target.fixed_pipe.ops)}{did_you_mean(op, fixed)}")

    # -- schedule

    def schedule(self, recs, envs: list[dict[str, int]]) -> tuple:
        items = []
        for rec in recs:
            if isinstance(rec, Note):
                continue
            if isinstance(rec, RepeatRec):
                values = range(rec.first, rec.last + 1, rec.step)
                if len(envs) * len(values) > MAX_LAUNCHES:
                    raise LineError(rec.line, f"'repeat {rec.var} {rec.first}..{rec.last}' "
                                              f"unrolls to more than {MAX_LAUNCHES:,} launches: "
                                              "the interpreter runs each one")
                inner = [{**env, rec.var: i} for env in envs for i in values]
                items.append(Repeat(rec.var, rec.first, len(values),
                                    self.schedule(rec.body, inner), rec.step))
                continue
            self.launches += len(envs)
            if self.launches > MAX_LAUNCHES:
                raise LineError(rec.line, f"the schedule has more than {MAX_LAUNCHES:,} "
                                          "launches (repeats unrolled): the interpreter runs "
                                          "each one")
            flops = rec.launch.flops
            if not (math.isfinite(flops) and 0 <= flops <= MAX_LAUNCH_FLOPS):
                raise LineError(rec.line, f"launch of {rec.launch.kernel}: flops={flops!r}: "
                                          f"expected a number from 0 to {MAX_LAUNCH_FLOPS:g}")
            self.check_launch(rec, envs)
            items.append(rec.launch)
        return tuple(items)

    def check_launch(self, rec: LaunchRec, envs) -> None:
        name = rec.launch.kernel
        if name not in self.kernels:
            raise LineError(rec.line, f"launch of undefined kernel '{name}'"
                                   f"{did_you_mean(name, self.kernels)}")
        with _at(rec.line):
            for env in envs:
                check_launch(rec.launch, env, self.kernels, self.tensors)
            if self.target is not None:
                check_stream(rec.launch, self.target)


@contextmanager
def _at(line: int):
    """Report a check's ProgramError (or a name that does not bind) at `line`."""
    try:
        yield
    except ProgramError as err:
        raise LineError(line, str(err)) from None
    except KeyError as err:
        raise LineError(line, f"unknown variable {err} in a tensor name") from None
    except ValueError as err:                   # a `{...}` in a name that is not an expression
        raise LineError(line, f"cannot bind a tensor name: {err}") from None


def _expressions(value) -> list:
    """The expressions in an attribute value (itself, or the items of a tuple)."""
    if isinstance(value, (Const, Var, Bin)):
        return [value]
    if isinstance(value, tuple):
        return [e for item in value for e in _expressions(item)]
    return []



def _duplicates(named: list[tuple[str, int]]):
    seen = set()
    for name, line in named:
        if name in seen:
            yield name, line
        seen.add(name)


def _unique(line: int, what: str, names: list[str]) -> None:
    for name, _ in _duplicates([(n, line) for n in names]):
        raise LineError(line, f"{what} '{name}' is declared twice")
