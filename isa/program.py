"""The ISA program: off-chip tensors, kernels written once with loop structure, and a schedule.

A kernel is what one core runs for one work item of its grid (one output tile, one expert,
one block of rows): an instruction stream with loops, over buffers and dependency tokens. The
schedule launches kernels with tensors bound to their parameters; `Repeat` folds identical
layers, so a 61-layer model is a few dozen kernels and a short schedule, not millions of
instructions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Union

from isa.deployment import Deployment
from isa.expr import Expr
from isa.formats import DTYPES, Scaling


# ---- off-chip tensors -------------------------------------------------------------------

@dataclass(frozen=True)
class ViewStep:
    """One step of a view: ("transpose", perm), ("reshape", shape) or ("slice", (axis, start, stop))."""
    op: str
    arg: tuple


@dataclass(frozen=True)
class TensorDecl:
    name: str
    dtype: str
    shape: tuple[int, ...]
    kind: str                        # input | weight | cache | output | temp | scale | view
    scaling: Scaling | None = None   # the block scaling of the elements; scales are `NAME.scale`
    base: str | None = None          # views: the tensor they look into
    steps: tuple[ViewStep, ...] = ()
    # Which die's memory holds it (multi-die targets): None = interleaved over all dies (UMA),
    # "split:A" = halves of base axis A on successive dies, "replicate" = a copy on every die.
    home: str | None = None
    # Which of the target's memories holds it (the place pass's choice by role); None = the
    # memory tensors live in unless placed elsewhere. Views live where their base does.
    memory: str | None = None

    @property
    def bits(self) -> int:
        return DTYPES[self.dtype].bits

    @cached_property
    def nbytes(self) -> int:          # asked for every launch's every tensor: computed once
        return math.ceil(math.prod(self.shape) * self.bits / 8)


def scale_name(tensor: str) -> str:
    return f"{tensor}.scale"


def tensor_scale_name(tensor: str) -> str:
    """The per-tensor scale of formats that have one (NVFP4's fp32 scale)."""
    return f"{tensor}.tscale"


# ---- operands ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Buf:
    """An on-chip buffer, optionally one slot of a multi-buffered one: `sa[k%2]`."""
    name: str
    slot: Expr | None = None


@dataclass(frozen=True)
class Box:
    """A window of an off-chip tensor: per dim `start:+size`; sizes are static."""
    tensor: str
    starts: tuple[Expr, ...]
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class TensorRef:
    """A whole off-chip tensor (the source of a gather)."""
    tensor: str


@dataclass(frozen=True)
class Attr:
    """A named immediate: `n=16384`, `k=8`, `first=k==0`, `fmt=fp8_e4m3`, `shape=128x128x64`."""
    key: str
    value: Union[int, float, str, Expr, tuple]


Operand = Union[Buf, Box, TensorRef, Attr]


@dataclass(frozen=True)
class Instr:
    op: str                                  # mnemonic, e.g. "ld.tile", "mm.mma", "vec.silu"
    args: tuple[Operand, ...]
    wait: tuple[str, ...] = ()               # tokens consumed before the instruction starts
    signal: tuple[str, ...] = ()             # tokens produced when it completes

    def __hash__(self) -> int:
        # Kernels are de-duplicated by value (lower/schedule.py): hash each instruction once.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((self.op, self.args, self.wait, self.signal))
            object.__setattr__(self, "_hash", cached)
        return cached

    def attr(self, key: str, default=None):
        for a in self.args:
            if isinstance(a, Attr) and a.key == key:
                return a.value
        return default

    @property
    def operands(self) -> tuple[Operand, ...]:
        return tuple(a for a in self.args if not isinstance(a, Attr))


@dataclass(frozen=True)
class Loop:
    var: str
    count: int
    body: tuple["Stmt", ...]


Stmt = Union[Instr, Loop]


# ---- kernels and schedule ---------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    name: str
    dtype: str
    shape: tuple[int, ...]
    output: bool = False


@dataclass(frozen=True)
class BufferDecl:
    name: str
    dtype: str
    shape: tuple[int, ...]
    slots: int
    space: str                       # the target buffer (smem, registers, ub, l0c...) it lives in
    offset: int | None = None        # byte offset in the space, once the plan pass placed it

    @property
    def slot_bytes(self) -> int:
        return math.ceil(math.prod(self.shape) * DTYPES[self.dtype].bits / 8)

    @property
    def nbytes(self) -> int:
        return self.slot_bytes * self.slots


@dataclass(frozen=True)
class Kernel:
    name: str
    params: tuple[Param, ...]
    grid: tuple[tuple[str, int], ...]         # (variable, size) per grid dim, row-major order
    buffers: tuple[BufferDecl, ...]
    tokens: tuple[tuple[str, int], ...]       # (token, initial count)
    body: tuple[Stmt, ...]
    notes: tuple[str, ...] = ()               # printed as comments: source ops, tile choice
    die_var: str | None = None                # NUMA: this grid dim's halves go to the dies
    # One persistent worker per core walks the items in grid order, each item's epilogue
    # overlapping the next one's main loop (docs/timing.md, "Persistent kernels").
    persistent: bool = False

    @property
    def grid_size(self) -> int:
        return math.prod(size for _, size in self.grid)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


@dataclass(frozen=True)
class Launch:
    kernel: str
    args: tuple[tuple[str, str], ...]        # (param, tensor name template, e.g. layer.{i}.w1)
    note: str = ""                           # what it computes, in IR names
    flops: float = 0.0                       # the model's FLOPs for it (padding excluded)
    # The in-order queue it runs on: the cores' ("compute"), or a link's to other devices (a
    # collective's sends run there while the cores compute), named as the target names it.
    stream: str = "compute"


@dataclass(frozen=True)
class Repeat:
    """Run `body` for var = start, start+step, ... (count values); `{var}` in tensor names is
    substituted. A step of p > 1 repeats a body of p layers ({i} .. {i+p-1}): a model whose
    layers alternate (DeepSeek-V4's compression ratios) folds with p = 2."""
    var: str
    start: int
    count: int
    body: tuple["Item", ...]
    step: int = 1

    @property
    def last(self) -> int:
        return self.start + (self.count - 1) * self.step


Item = Union[Launch, Repeat]


@dataclass(frozen=True)
class Program:
    model: str
    target: str
    tensors: tuple[TensorDecl, ...]
    kernels: tuple[Kernel, ...]
    schedule: tuple[Item, ...]
    sizes: tuple[tuple[str, int], ...] = ()
    notes: tuple[str, ...] = field(default=())
    deployment: Deployment = Deployment()    # the program is what each device runs
    # How the compiler saw the experts' load (compiler/expert_load.py: the hottest and
    # coldest device against the mean, placed in order and as deployed); not in a listing.
    expert_load: tuple[tuple[str, float], ...] = field(default=(), compare=False)

    def tensor_table(self) -> dict[str, TensorDecl]:
        return {t.name: t for t in self.tensors}

    def kernel_table(self) -> dict[str, Kernel]:
        return {k.name: k for k in self.kernels}


def walk(stmts) -> "list[Instr]":
    """Every instruction of a body once, loops not unrolled (for static checks)."""
    out = []
    for s in stmts:
        out.extend(walk(s.body) if isinstance(s, Loop) else [s])
    return out


def expand_schedule(items, env: dict[str, int] | None = None):
    """Yield (launch, env) for every launch in order, repeats unrolled."""
    env = env or {}
    for item in items:
        if isinstance(item, Launch):
            yield item, env
        else:
            for i in range(item.start, item.last + 1, item.step):
                yield from expand_schedule(item.body, {**env, item.var: i})


def bind_name(template: str, env: dict[str, int]) -> str:
    """`layer.{i}.w1` with i=3 -> `layer.3.w1`; `{i-1}` and `{i+2}` are allowed."""
    if "{" not in template:
        return template
    return _binder(template)(env)


@lru_cache(maxsize=None)
def _binder(template: str):
    """env -> the bound name (the interpreter binds every launch's names: kept fast)."""
    parts = _name_parts(template)
    if len(parts) == 3:                                   # `layer.{i}.w1`, the usual form
        head, index, tail = parts
        return lambda env: head + str(index(env)) + tail
    return lambda env: "".join([p if p.__class__ is str else str(p(env)) for p in parts])


@lru_cache(maxsize=None)
def _name_parts(template: str) -> tuple:
    """Literal text and compiled `{expr}` pieces of a name template."""
    from isa.expr import compile_expr, parse_expr
    parts, pos = [], 0
    while (start := template.find("{", pos)) >= 0:
        end = template.index("}", start)
        parts += [template[pos:start], compile_expr(parse_expr(template[start + 1:end]))]
        pos = end + 1
    parts.append(template[pos:])
    return tuple(parts)
