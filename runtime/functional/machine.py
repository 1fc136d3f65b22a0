"""Execute an ISA program with numpy: launches in schedule order, work items in row-major grid
order, instructions in program order with loops unrolled.

Program order is a valid sequential execution of a work item's token-synchronised unit
streams: the templates emit every producer before its consumers, so tokens need no
simulation here (the timing engine checks them). Buffers are arrays per (buffer, slot) of the
declared shape, zero at the start of each launch; every write rounds to the buffer's dtype.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from isa.expr import compile_expr
from isa.formats import Scaling
from isa.instructions import InstrDef, lookup_any
from isa.program import (Attr, Box, Buf, Instr, Kernel, Launch, Loop, Program, bind_name,
                         expand_schedule, scale_name, walk)
from isa.target_schema import Target
from runtime.functional.semantics import semantics_of
from runtime.functional.storage import (FunctionalError, InstructionFailed, Memory,
                                        round_to_dtype, zeros)

FED_KINDS = ("input", "weight", "cache")


def definition(ins: Instr) -> InstrDef:
    """The record of an instruction (whichever targets offer it: the listing was checked)."""
    found = lookup_any(ins.op)
    if found is None:
        raise FunctionalError(f"'{ins.op}' is not an instruction: it has no functional "
                              "semantics")
    return found


@lru_cache(maxsize=None)
def _compiled(expr):
    return compile_expr(expr)


def value(v, env: dict[str, int]):
    """An attribute, slot or box start: numbers, strings and tuples as they are, index
    expressions evaluated over the work item's grid and loop variables."""
    if v is None or isinstance(v, (int, float, str, tuple)):
        return v
    return _compiled(v)(env)


def unroll(body, env: dict[str, int]) -> list[tuple[Instr, dict[str, int]]]:
    """Every instruction of a body in program order with its loop variables, loops unrolled."""
    out = []
    for stmt in body:
        if isinstance(stmt, Loop):
            for i in range(stmt.count):
                out += unroll(stmt.body, {**env, stmt.var: i})
        else:
            out.append((stmt, env))
    return out


@dataclass
class Accumulation:
    """What the matrix unit did in one input format."""
    bits: int | None                  # mantissa bits of the limited accumulator, None: fp32
    instructions: int = 0
    promoted_every: set[int] = field(default_factory=set)   # K summed before each promotion


@dataclass
class RunStats:
    instructions: int = 0
    launches: int = 0
    accumulation: dict[str, Accumulation] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class LaunchContext:
    """Buffers and bindings of one kernel launch; what the semantics functions see."""

    def __init__(self, machine: "Machine", kernel: Kernel, binding: dict[str, str]):
        self.machine, self.memory = machine, machine.memory
        self.kernel, self.binding = kernel, binding
        self.decls = {b.name: b for b in kernel.buffers}
        self.buffers: dict[tuple[str, int], np.ndarray] = {}
        self.partial: dict[tuple[str, int], tuple[str, int]] = {}   # limited sums: (fmt, K)
        self.env: dict[str, int] = {}
        self.definitions = [(ins, definition(ins)) for ins in walk(kernel.body)]
        stored = [d.buffer_and_box(ins) for ins, d in self.definitions if d.semantics == "store"]
        self.stores = {buf.name: box.tensor for buf, box in stored}
        self.dtypes = {b.name: b.dtype for b in kernel.buffers}
        self.dtypes.update(self._wide_scale_buffers())
        self._check_scales_bound()

    # -- names, attributes, boxes --

    def tensor(self, param: str) -> str:
        try:
            return self.binding[param]
        except KeyError:
            raise FunctionalError(f"kernel {self.kernel.name}: parameter '{param}' is not "
                                  "bound by the launch") from None

    def attrs(self, ins: Instr) -> dict:
        return {a.key: value(a.value, self.env) for a in ins.args if isinstance(a, Attr)}

    def starts(self, box: Box) -> list[int]:
        return [value(s, self.env) for s in box.starts]

    def buffer_decl(self, name: str):
        try:
            return self.decls[name]
        except KeyError:
            raise FunctionalError(f"kernel {self.kernel.name}: no buffer '{name}'") from None

    def accumulator_bits(self, fmt: str) -> int | None:
        """The mantissa bits the matrix unit keeps in `fmt` (None: float32 or better; always
        None when the machine accumulates exactly)."""
        if self.machine.exact_accumulation:
            return None
        unit = self.machine.target.matrix.formats.get(fmt)
        return unit.accumulator_bits if unit else None

    # -- buffers --

    def _key(self, buf: Buf) -> tuple[str, int]:
        decl = self.buffer_decl(buf.name)
        slot = 0 if buf.slot is None else value(buf.slot, self.env)
        if not 0 <= slot < decl.slots:
            raise FunctionalError(f"kernel {self.kernel.name}: slot {slot} of {buf.name}, "
                                  f"which has {decl.slots}")
        return buf.name, slot

    def read(self, buf: Buf) -> np.ndarray:
        key = self._key(buf)
        if key not in self.buffers:
            self.buffers[key] = zeros(self.decls[buf.name].shape, self.dtypes[buf.name])
        return self.buffers[key]

    def write(self, buf: Buf, values: np.ndarray, pad: bool = False) -> None:
        """Round `values` to the buffer's dtype and write them at its leading corner; with
        `pad` the rest of the buffer becomes zero (a load), else it keeps its values."""
        key = self._key(buf)
        shape = self.decls[buf.name].shape
        values = round_to_dtype(_fit(np.asarray(values), shape, buf.name), self.dtypes[buf.name])
        if values.shape == tuple(shape):
            self.buffers[key] = values
            return
        out = zeros(shape, self.dtypes[buf.name]) if pad else self.read(buf).copy()
        out[tuple(slice(0, n) for n in values.shape)] = values
        self.buffers[key] = out

    def corner(self, buf: Buf, sizes: tuple[int, ...]) -> np.ndarray:
        """The buffer's leading corner shaped like a box of `sizes`."""
        data = self.read(buf)
        inner = list(sizes)
        while len(inner) > data.ndim and inner[0] == 1:
            inner.pop(0)
        if len(inner) == data.ndim and all(i <= d for i, d in zip(inner, data.shape)):
            return data[tuple(slice(0, i) for i in inner)].reshape(sizes)
        if data.size == math.prod(sizes):
            return data.reshape(sizes)
        raise FunctionalError(f"kernel {self.kernel.name}: buffer {buf.name} "
                              f"{list(data.shape)} cannot fill a box of {list(sizes)}")

    # -- formats --

    def quant_scaling(self, buffer: str) -> Scaling:
        """The scaling of the tensor an st.tile of this kernel stores `buffer` to."""
        param = self.stores.get(buffer)
        decl = self.memory.decl(self.tensor(param)) if param else None
        if decl is None or decl.scaling is None:
            where = f"stored to {decl.name}, which is not block-scaled" if decl else "never stored"
            raise FunctionalError(f"vec.quant in kernel {self.kernel.name}: its element buffer "
                                  f"{buffer} is {where}, so its format is unknown")
        return decl.scaling

    def _wide_scale_buffers(self) -> dict[str, str]:
        """Scale buffers of formats with a per-tensor scale hold the fp32 divisor (storage.py)."""
        wide = {}
        for ins, d in self.definitions:
            if d.buffer_and_box(ins):
                buf, box = d.buffer_and_box(ins)
                name = self.tensor(box.tensor)
                if self.memory.storage_dtype(name) != self.memory.decl(name).dtype:
                    wide[buf.name] = self.memory.storage_dtype(name)
            elif d.semantics == "quant" and self.quant_scaling(ins.args[0].name).tensor_dtype:
                wide[ins.args[1].name] = "fp32"
        return wide

    # -- bookkeeping for the report --

    def _warn(self, warning: str) -> None:
        if warning not in self.machine.stats.warnings:
            self.machine.stats.warnings.append(warning)

    def _check_scales_bound(self) -> None:
        """Elements of a block-scaled tensor mean nothing without their scales: a launch that
        reads them must also bind the scale companion (else no instruction can apply it)."""
        bound = set(self.binding.values())
        for param in self.kernel.params:
            name = self.binding.get(param.name)
            decl = self.memory.decls.get(name)
            if param.output or decl is None or decl.scaling is None:
                continue
            if scale_name(name) not in bound:
                self._warn(f"kernel {self.kernel.name} reads the elements of block-scaled "
                           f"{self.memory.root(name)} without its scales (no scale operand "
                           "is bound): its results miss the block scales")

    def note_read(self, tensor: str) -> None:
        root = self.memory.root(tensor)
        if root in self.memory.written or self.memory.decl(root).kind in FED_KINDS:
            return
        self._warn(f"kernel {self.kernel.name} reads {root} before anything was stored to it "
                   "(it reads zeros)")

    def note_mma(self, fmt: str, dst: Buf, k: int, first: bool) -> None:
        stats = self.machine.stats.accumulation
        acc = stats.setdefault(fmt, Accumulation(self.accumulator_bits(fmt)))
        acc.instructions += 1
        key = self._key(dst)
        if acc.bits is None:
            return
        done = 0 if first or key not in self.partial else self.partial[key][1]
        self.partial[key] = (fmt, done + k)

    def note_promote(self, part: Buf) -> None:
        fmt_k = self.partial.pop(self._key(part), None)
        if fmt_k:
            self.machine.stats.accumulation[fmt_k[0]].promoted_every.add(fmt_k[1])


def _fit(values: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """`values` with the buffer's rank: leading unit dims dropped or added, else reshaped."""
    while values.ndim > len(shape) and values.shape[0] == 1:
        values = values[0]
    while values.ndim < len(shape):
        values = values[None]
    if values.ndim == len(shape) and all(v <= s for v, s in zip(values.shape, shape)):
        return values
    if values.size == math.prod(shape):
        return values.reshape(shape)
    raise FunctionalError(f"a {list(values.shape)} result does not fit buffer {name} {list(shape)}")


class Machine:
    """A program's tensors and the loop that executes its schedule."""

    def __init__(self, program: Program, target: Target, exact_accumulation: bool = False):
        """`exact_accumulation`: the matrix unit sums products exactly whatever its formats'
        accumulators keep (the reference that isolates the accumulator's error)."""
        self.program, self.target = program, target
        self.exact_accumulation = exact_accumulation
        self.memory = Memory(program)
        self.kernels = program.kernel_table()
        self.stats = RunStats()
        self._streams: dict[str, list] = {}

    def store_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Inputs, weights and caches take their fed values, stored in their formats."""
        for decl in self.program.tensors:
            if decl.kind not in FED_KINDS or decl.base is not None:
                continue
            if decl.name not in feeds:
                raise FunctionalError(f"no value fed for {decl.kind} {decl.name}")
            self.memory.store(decl.name, feeds[decl.name])

    def run(self) -> RunStats:
        for kernel in self.program.kernels:      # every instruction has semantics, up front
            self._stream(kernel)
        with np.errstate(all="ignore"):
            for launch, env in expand_schedule(self.program.schedule):
                self.launch(launch, env)
        return self.stats

    def launch(self, launch: Launch, env: dict[str, int]) -> None:
        kernel = self.kernels[launch.kernel]
        ctx = LaunchContext(self, kernel, {p: bind_name(t, env) for p, t in launch.args})
        stream = self._stream(kernel)
        names = [var for var, _ in kernel.grid]
        for coords in itertools.product(*(range(size) for _, size in kernel.grid)):
            item = dict(zip(names, coords))
            for ins, loop_env, run in stream:
                ctx.env = {**item, **loop_env}
                try:
                    run(ctx, ins)
                except FunctionalError:
                    raise
                except Exception as err:
                    err.add_note(f"executing {ins.op} in kernel {kernel.name} at {ctx.env}")
                    raise InstructionFailed(_failed(ins, kernel, ctx)) from err
        self.stats.instructions += len(stream) * kernel.grid_size
        self.stats.launches += 1

    def _stream(self, kernel: Kernel) -> list:
        """(instruction, loop variables, semantics) of one work item, loops unrolled."""
        if kernel.name not in self._streams:
            try:
                self._streams[kernel.name] = [(ins, env, semantics_of(definition(ins)))
                                              for ins, env in unroll(kernel.body, {})]
            except FunctionalError as err:
                raise FunctionalError(f"kernel {kernel.name}: {err}") from None
        return self._streams[kernel.name]


def _failed(ins, kernel: Kernel, ctx) -> str:
    """An instruction that cannot be executed, in the listing's own terms: its operands'
    buffer shapes and its attributes."""
    where = ", ".join(f"{k}={v}" for k, v in ctx.env.items())
    shapes = []
    for a in ins.args:
        if isinstance(a, Buf) and a.name in ctx.decls:
            shapes.append(f"{a.name} {list(ctx.decls[a.name].shape)}")
    attrs = " ".join(f"{a.key}={a.value}" for a in ins.args if isinstance(a, Attr))
    return (f"{ins.op} in kernel {kernel.name}" + (f" at {where}" if where else "")
            + f" cannot be executed with its operands ({', '.join(shapes) or 'none'})"
            + (f" and attributes ({attrs})" if attrs else "")
            + ": they do not fit what the instruction computes")
