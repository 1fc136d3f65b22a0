"""The static verifier: a program checked against a target before anything runs.

Every launch binds each parameter to a declared tensor of the parameter's type; every
instruction exists on the target, has operands of the kinds its definition lists and the
attributes it requires, names declared buffers and parameters; every token it waits on is
declared and either starts with credit or is signalled in the kernel; the buffers of each
space fit the target's capacity; every view's base and steps give its declared shape, and
every block-scaled tensor has its scales (isa/views.py). Then each kernel as a whole
(isa/verify): indices in bounds, outputs and swept dimensions covered exactly once, no races
on buffers, buffers that share memory live at different times, tokens that can be credited.

`check_program` runs them all. The pieces (`check_instruction`, `check_buffers`,
`verify_kernel`, `check_launch`) are also used one record at a time by the assembler, which
knows the listing line of each record and reports it: a ProgramError's `where` names the
record at fault.
"""
from __future__ import annotations

from dataclasses import dataclass

from isa.errors import ProgramError
from isa.instructions import OPERAND_TYPES, InstrDef, attr_problem, lookup
from isa.listing import fmt_value
from isa.program import (Attr, Box, Buf, BufferDecl, Instr, Kernel, Launch, Param, Program,
                         TensorDecl, TensorRef, bind_name, expand_schedule, walk)
from isa.target_schema import Target
from isa.verify import verify_kernel
from isa.views import tensor_problems


@dataclass(frozen=True)
class KernelScope:
    """What the instructions of one kernel may name."""
    where: str
    buffers: dict[str, BufferDecl]
    params: dict[str, Param]
    tokens: dict[str, int]
    signalled: frozenset[str]

    @classmethod
    def of(cls, kernel: Kernel) -> "KernelScope":
        return cls(f"kernel {kernel.name}", {b.name: b for b in kernel.buffers},
                   {p.name: p for p in kernel.params}, dict(kernel.tokens),
                   frozenset(tok for ins in walk(kernel.body) for tok in ins.signal))


def check_program(program: Program, target: Target) -> None:
    kernels = program.kernel_table()
    tensors = program.tensor_table()
    for name, problem in tensor_problems(tensors):
        raise ProgramError(f"tensor {name}: {problem}")
    for kernel in program.kernels:
        check_kernel(kernel, target)
    for launch, env in expand_schedule(program.schedule):
        check_launch(launch, env, kernels, tensors)
        check_stream(launch, target)


def check_kernel(kernel: Kernel, target: Target) -> None:
    scope = KernelScope.of(kernel)
    definitions = []
    for index, ins in enumerate(walk(kernel.body)):
        definition = lookup(ins.op, target)
        if definition is None:
            raise ProgramError(f"{scope.where}: '{ins.op}' is not an instruction of target "
                               f"{target.name}", ("instr", index))
        try:
            check_instruction(ins, definition, scope)
            check_reach(ins, definition, scope, target)
        except ProgramError as err:
            raise ProgramError(str(err), ("instr", index)) from None
        definitions.append(definition)
    check_buffers(kernel, target)
    verify_kernel(kernel, definitions)


# On split cube/vector designs each compute unit touches only its own core's buffers: the
# vector unit those holding vector data, the matrix unit those holding its operands and
# accumulators. Everything else crosses through memory (vld/vst, fix.st, ld/st).
_OWN_ROLES = {"vec": {"vector"}, "mm": {"matrix_a", "matrix_b", "accumulator"}}


def check_reach(ins: Instr, definition: InstrDef, scope: KernelScope, target: Target) -> None:
    """What an instruction needs of this target beyond existing on it: the matrix format it
    names, a multicast its loads can do, the link a send goes over, and buffers its unit can
    reach."""
    mcast = ins.attr("mcast", 1)
    if mcast > target.dma.multicast:
        raise ProgramError(f"{scope.where}: {ins.op} mcast={mcast}: the loads of target "
                           f"{target.name} reach at most {target.dma.multicast} cores at once "
                           "(dma.multicast)")
    pair = ins.attr("pair", 1)
    if pair > 1 and not any(f.pair_m for f in target.matrix.formats.values()):
        raise ProgramError(f"{scope.where}: {ins.op} pair={pair}: target {target.name} has no "
                           "two-core matrix instruction (no format lists pair_m)")
    if pair > 2:
        raise ProgramError(f"{scope.where}: {ins.op} pair={pair}: a two-core instruction "
                           "splits its B tile between 2 cores")
    fmt = ins.attr("fmt") if definition.unit == "mm" else None
    if fmt is not None and fmt not in target.matrix.formats:
        raise ProgramError(f"{scope.where}: {ins.op} fmt={fmt}: the matrix unit of target "
                           f"{target.name} has no {fmt} format (it has "
                           f"{', '.join(target.matrix.formats)})")
    if fmt is not None and definition.semantics == "mma":
        _check_mma_operands(ins, fmt, scope, target)
    if definition.kind == "send":
        links = ("local",) + tuple(link.id for link in target.machine.device_links)
        if ins.attr("link") not in links:
            raise ProgramError(f"{scope.where}: {ins.op} over link '{ins.attr('link')}', which "
                               f"target {target.name} does not have (its links: "
                               f"{', '.join(links)})")
    roles = _OWN_ROLES.get(definition.unit)
    if roles is None or target.matrix.results_to_vector != "memory":
        return
    for a in ins.args:
        if isinstance(a, Buf) and a.name in scope.buffers:
            space = scope.buffers[a.name].space
            if space in target.buffers and not roles & set(target.buffers[space].holds):
                raise ProgramError(
                    f"{scope.where}: {ins.op} reaches buffer {a.name} in {space}, which the "
                    f"{definition.unit} unit of target {target.name} cannot access (its cores "
                    f"are split: {space} holds {', '.join(target.buffers[space].holds)}); "
                    "data crosses between the cores through memory")


def _check_mma_operands(ins: Instr, fmt: str, scope: KernelScope, target: Target) -> None:
    """The A and B buffers of a matrix instruction hold dtypes its format reads as they are:
    the format's own, or one of its native_operands; any other is widened first (vec.cvt)."""
    for operand, arg in zip("ab", ins.operands[1:3]):
        decl = scope.buffers.get(arg.name) if isinstance(arg, Buf) else None
        if decl is None or target.matrix.takes(fmt, decl.dtype):
            continue
        native = target.matrix.formats[fmt].native_operands
        takes = fmt + (f" or {', '.join(native)}" if native else " only")
        raise ProgramError(f"{scope.where}: {ins.op} fmt={fmt}: operand {operand} "
                           f"{arg.name} holds {decl.dtype}, which the {fmt} instruction of "
                           f"target {target.name} does not read (it takes {takes}); widen "
                           f"it first (vec.cvt)")


def check_instruction(ins: Instr, definition: InstrDef, scope: KernelScope) -> None:
    """Operands, attributes and tokens of one instruction against its definition."""
    _check_operands(ins, definition, scope.buffers, scope.params, scope.where)
    for tok in ins.wait + ins.signal:
        if tok not in scope.tokens:
            raise ProgramError(f"{scope.where}: {ins.op} uses undeclared token '{tok}'")
    for tok in ins.wait:
        if tok not in scope.signalled and scope.tokens[tok] <= 0:
            raise ProgramError(f"{scope.where}: {ins.op} waits for token '{tok}', which nothing "
                               "signals and which starts at 0")


def check_buffers(kernel: Kernel, target: Target) -> None:
    """The buffers of each space fit the target's capacity for it: a placed buffer by its
    last byte, unplaced ones packed after the highest byte so far."""
    used: dict[str, int] = {}
    for b in kernel.buffers:
        if b.space not in target.buffers:
            raise ProgramError(f"kernel {kernel.name}: buffer {b.name} is in '{b.space}', "
                               f"and target {target.name} has no such buffer space (it has "
                               f"{', '.join(target.buffers)})", ("buffer", b.name))
        end = b.offset + b.nbytes if b.offset is not None else used.get(b.space, 0) + b.nbytes
        used[b.space] = max(used.get(b.space, 0), end)
        capacity = target.buffers[b.space].bytes
        if used[b.space] > capacity:
            placed = f"at {b.offset} " if b.offset is not None else ""
            raise ProgramError(f"kernel {kernel.name}: buffer {b.name} ({b.nbytes} bytes "
                               f"{placed}in {b.space}) ends at byte {used[b.space]}, past the "
                               f"{capacity} bytes of {b.space} on target {target.name}: "
                               "buffers must fit the core's capacity", ("buffer", b.name))


def check_stream(launch: Launch, target: Target) -> None:
    """A launch runs on the cores ("compute") or on one of the target's links to other
    devices."""
    streams = ("compute",) + tuple(link.id for link in target.machine.device_links)
    if launch.stream not in streams:
        raise ProgramError(f"launch of {launch.kernel} on stream '{launch.stream}', which target "
                           f"{target.name} does not have (its streams: {', '.join(streams)})")


def check_launch(launch: Launch, env: dict[str, int], kernels: dict[str, Kernel],
                 tensors: dict[str, TensorDecl]) -> None:
    """One launch, its names bound in `env`: the kernel exists and each parameter is bound to
    a declared tensor of the parameter's type."""
    if launch.kernel not in kernels:
        raise ProgramError(f"launch of undefined kernel '{launch.kernel}'")
    kernel = kernels[launch.kernel]
    names = [p for p, _ in launch.args]
    twice = next((p for k, p in enumerate(names) if p in names[:k]), None)
    if twice is not None:              # a second binding would hide the first from the checks
        raise ProgramError(f"launch of {kernel.name}: parameter '{twice}' is bound twice")
    bound = dict(launch.args)
    missing = [p.name for p in kernel.params if p.name not in bound]
    extra = [p for p in bound if p not in {q.name for q in kernel.params}]
    if missing or extra:
        raise ProgramError(f"launch of {kernel.name}: " + (
            f"parameter '{missing[0]}' is not bound" if missing else f"no parameter '{extra[0]}'"))
    for param in kernel.params:
        name = bind_name(bound[param.name], env)
        decl = tensors.get(name)
        if decl is None:
            raise ProgramError(f"launch of {kernel.name}: tensor '{name}' is not declared")
        if (decl.dtype, decl.shape) != (param.dtype, param.shape):
            raise ProgramError(
                f"launch of {kernel.name}: '{param.name}' expects {param.dtype}{list(param.shape)}"
                f" but '{name}' is {decl.dtype}{list(decl.shape)}")


_KIND_NAMES = {"buf": "a buffer", "box": "a box @param[...]", "tensor": "a tensor @param"}


def _kind_of(operand) -> str:
    return next(kind for kind, cls in OPERAND_TYPES.items() if isinstance(operand, cls))


def _check_operands(ins, definition, buffers, params, where) -> None:
    operands = [a for a in ins.args if not isinstance(a, Attr)]
    kinds = list(definition.operands)
    if kinds and kinds[-1].endswith("*"):
        kinds = kinds[:-1] + [kinds[-1][:-1]] * max(1, len(operands) - len(kinds) + 1)
    else:                       # trailing "?" kinds may be left out, from the end
        required = [k for k in kinds if not k.endswith("?")]
        kinds = [k.rstrip("?") for k in kinds][:max(len(required), min(len(operands), len(kinds)))]
    if len(operands) != len(kinds):
        raise ProgramError(f"{where}: {ins.op} takes {len(kinds)} operands, got {len(operands)}")
    for number, (operand, kind) in enumerate(zip(operands, kinds), 1):
        if not isinstance(operand, OPERAND_TYPES[kind]):
            raise ProgramError(f"{where}: {ins.op} operand {number} must be {_KIND_NAMES[kind]},"
                               f" got {_KIND_NAMES[_kind_of(operand)]}")
        if isinstance(operand, Buf) and operand.name not in buffers:
            raise ProgramError(f"{where}: {ins.op} uses undeclared buffer '{operand.name}'")
        if isinstance(operand, (Box, TensorRef)) and operand.tensor not in params:
            raise ProgramError(f"{where}: {ins.op} uses '@{operand.tensor}', not a parameter")
        if isinstance(operand, Box) and len(operand.starts) != len(params[operand.tensor].shape):
            raise ProgramError(f"{where}: {ins.op} box on '@{operand.tensor}' has "
                               f"{len(operand.starts)} dims, the tensor has "
                               f"{len(params[operand.tensor].shape)}")
    keys = {a.key for a in ins.args if isinstance(a, Attr)}
    for key in definition.attrs:
        if key not in keys:
            raise ProgramError(f"{where}: {ins.op} needs attribute '{key}'")
    allowed = set(definition.attrs) | set(definition.optional_attrs)
    for key in sorted(keys - allowed):
        raise ProgramError(f"{where}: {ins.op} has no attribute '{key}'")
    for a in ins.args:
        problem = isinstance(a, Attr) and attr_problem(a.key, a.value)
        if problem:
            raise ProgramError(f"{where}: {ins.op} {a.key}={fmt_value(a.value)}: {problem}")
