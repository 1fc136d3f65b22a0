"""What one work item executes: its instruction instances with their costs.

Costs come from the instruction table (isa/instructions.py) evaluated for the item: box sizes
clipped at the tensor's edges, the die that holds each transfer's bytes, and how many items of
a wave load the same bytes together. An instance's cost depends only on the values of the
variables its boxes read, so costs are computed once per distinct value and shared.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache


from isa.expr import compile_expr, variables
from isa.instructions import CostContext, Transfer, lookup
from isa.layout import home_die, view_axis_to_base
from isa.program import Box, Kernel, Loop, TensorDecl
from isa.target_schema import Target


@dataclass
class Instance:
    unit: str
    label: str
    cost: object           # Compute, Transfer or Fence
    waits: tuple
    signals: tuple
    share: float = 1.0     # work items of a wave loading these same bytes at the same time
    home: object = None    # die holding a transfer's bytes: None interleaved, -1 the requester's
    memory: str = ""       # the memory family holding them (the machine's default if "")


@lru_cache(maxsize=None)
def _compiled(expr):
    return compile_expr(expr)


def value(v, env):
    """An attribute or slot: ints pass through, expressions are evaluated in `env`."""
    return v if isinstance(v, (int, float, str, tuple)) else _compiled(v)(env)


def expand(body, env: dict) -> list:
    """(instruction, env) for every executed instruction of a body, loops unrolled."""
    out = []
    for stmt in body:
        if isinstance(stmt, Loop):
            for i in range(stmt.count):
                out.extend(expand(stmt.body, {**env, stmt.var: i}))
        else:
            out.append((stmt, env))
    return out


def box_bytes(box: Box, decl: TensorDecl, env: dict) -> int:
    """Bytes of the in-bounds part of a box (an edge tile past the tensor's end moves less)."""
    return _box_counter(box, decl.shape, decl.bits)(env)


@lru_cache(maxsize=None)
def _box_counter(box: Box, shape: tuple, bits: int):
    """A function env -> in-bounds bytes of `box` on a tensor of `shape` (compiled once)."""
    dims = [(_compiled(start), size, dim) for start, size, dim in zip(box.starts, box.sizes, shape)]

    def count(env) -> int:
        elems = 1
        for start, size, dim in dims:
            s = start(env)
            elems *= max(0, min(s + size, dim) - max(s, 0))
        return math.ceil(elems * bits / 8)
    if all(not variables(start) for start in box.starts):
        value = count({})
        return lambda env: value
    return count


def run_bytes(box: Box, decl: TensorDecl, base: TensorDecl | None, env: dict) -> int:
    """Bytes of the longest contiguous run of a box in memory: its innermost dimension's
    in-bounds extent, times each next outer one while the box spans whole inner dimensions.
    A view that reorders axes runs along the view axis that walks the base's last axis."""
    extents = [max(0, min(s + size, dim) - max(s, 0)) for s, size, dim in
               zip((_compiled(st)(env) for st in box.starts), box.sizes, decl.shape)]
    element = decl.bits / 8
    if base is not None and any(step.op == "transpose" for step in decl.steps):
        last = len(base.shape) - 1
        axis = next((v for v in range(len(decl.shape))
                     if view_axis_to_base(base.shape, decl.steps, v) == last), None)
        return max(1, math.ceil(element * (extents[axis] if axis is not None else 1)))
    run = 1
    for extent, dim in zip(reversed(extents), reversed(decl.shape)):
        run *= extent
        if extent != dim:
            break
    return max(1, math.ceil(run * element))


def concurrent_share(kernel: Kernel, box: Box, cores: int) -> float:
    """How many work items of a full wave load the same box as any one of them: items that
    differ only in grid coordinates the box does not depend on read identical bytes together,
    and L2 fetches them from memory once."""
    if not kernel.grid:
        return 1.0
    used = set().union(*(variables(s) for s in box.starts))
    sizes = [size for _, size in kernel.grid]
    wave = min(cores, math.prod(sizes))
    kept = [axis for axis, (var, _) in enumerate(kernel.grid) if var in used]
    if not kept:
        return float(wave)
    strides = [math.prod(sizes[axis + 1:]) for axis in range(len(sizes))]
    distinct = {tuple(item // strides[a] % sizes[a] for a in kept) for item in range(wave)}
    return wave / len(distinct)


def item_stream(kernel: Kernel, params: dict[str, TensorDecl], bases: dict[str, TensorDecl],
                target: Target, env: dict, shares: dict[int, float], memo: dict) -> list[Instance]:
    """The instances one work item at grid coordinates `env` executes, in program order."""
    buffers = {b.name: b for b in kernel.buffers}
    stream = []
    for ins, ienv in expand(kernel.body, env):
        keyer = memo.get(id(ins))
        if keyer is None:
            keyer = memo[id(ins)] = _cost_key(ins, params, target.chip.dies)
        key = (id(ins), keyer(ienv))
        inst = memo.get(key)
        if inst is None:
            inst = _instance(ins, ienv, params, bases, buffers, target, shares)
            # Interned by value: equal instances are one object, so streams compare by id.
            inst = memo.setdefault(("value", inst.unit, inst.label, inst.cost, inst.waits,
                                    inst.signals, inst.share, inst.home, inst.memory), inst)
            memo[key] = inst
        stream.append(inst)
    return stream


def _instance(ins, env, params, bases, buffers, target: Target, shares) -> Instance:
    definition = lookup(ins.op, target)
    ctx = CostContext(
        target,
        box_bytes=lambda box: box_bytes(box, params[box.tensor], env),
        buffer_bytes=lambda name: buffers[name].slot_bytes,
        row_bytes=lambda t: math.ceil(params[t].shape[-1] * params[t].bits / 8),
        run_bytes=lambda box: run_bytes(box, params[box.tensor], bases.get(box.tensor), env),
        dtype=lambda t: params[t].dtype)
    cost = definition.cost(ins, ctx)
    home, memory = None, ""
    if isinstance(cost, Transfer):
        decl = params[cost.tensor]
        memory = home_memory(decl, bases.get(cost.tensor)) or ""
    if isinstance(cost, Transfer) and target.chip.dies > 1:
        box = next((a for a in ins.args if isinstance(a, Box)), None)
        starts = [_compiled(s)(env) for s in box.starts] if box else [0] * len(decl.shape)
        home = home_die(decl, bases.get(cost.tensor), starts, -1, target.chip.dies)
    return Instance(definition.unit, ins.op, cost, ins.wait, ins.signal,
                    shares.get(id(ins), 1.0), home, memory)


def home_memory(decl: TensorDecl, base: TensorDecl | None) -> str | None:
    """The memory family a tensor's bytes live in (a view's are its base's); None: the
    target's default."""
    return (base or decl).memory


def _cost_key(ins, params: dict[str, TensorDecl], dies: int):
    """A function env -> what the instance's cost depends on. On one die that is the in-bounds
    extent of each box (most loop iterations move equal tiles); on several, the box starts
    themselves, which also decide the die holding the bytes."""
    boxes = [a for a in ins.args if isinstance(a, Box)]
    if not boxes:
        return lambda env: ()
    if dies > 1:
        names = set()
        for box in boxes:
            for start in box.starts:
                names |= variables(start)
        reads = tuple(sorted(names))
        return lambda env: tuple(env[v] for v in reads)
    dims = [(_compiled(start), size, dim) for box in boxes
            for start, size, dim in zip(box.starts, box.sizes, params[box.tensor].shape)]

    def extents(env):
        out = []
        for start, size, dim in dims:
            s = start(env)
            out.append(min(s + size, dim) - max(s, 0))
        return tuple(out)
    return extents
