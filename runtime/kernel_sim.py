"""Simulate one kernel launch: work items in waves over the cores, identical cores once.

1. Work items differ only at the last coordinate of a grid dim (edge tiles move fewer bytes),
   so the items fall into a few classes; each class's instruction stream is expanded once.
2. Off-chip reads go through L2. Re-reads of the same data by other tiles hit L2 when the
   kernel's operands fit in it: per tensor, the fraction of loaded bytes that reach memory is
   unique bytes / loaded bytes (scaled towards 1 as the footprint outgrows L2). Items of one
   wave that load the same box at the same time share one memory fetch whatever the footprint.
   Stores are written back: they cost L2 bandwidth when issued and their bytes reach memory in
   the background; a kernel never takes less than its off-chip bytes over memory bandwidth.
3. Items are dealt to the cores in waves in row-major grid order. A wave is a set of classes
   with counts; each class runs as one engine group weighted by its count, so bandwidth sharing
   sees every core. Identical waves are simulated once: they start from the same idle state,
   so reusing their time is exact.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from isa.expr import compile_expr, variables
from isa.instructions import Compute, CostContext, Fence, Transfer, lookup
from isa.program import Box, Kernel, Loop, TensorDecl, walk
from isa.target_schema import Target
from runtime.engine import COMPUTE, FENCE, TRANSFER, Engine, Group, Op


@dataclass
class KernelResult:
    cycles: float
    items: int
    waves: int
    unit_busy: dict[str, float] = field(default_factory=dict)          # core-cycles, all cores
    token_wait: dict[tuple[str, str], float] = field(default_factory=dict)
    bandwidth_wait: dict[tuple[str, str], float] = field(default_factory=dict)
    resource_bytes: dict[str, float] = field(default_factory=dict)
    simulated_instructions: int = 0      # instructions the engine executed
    executed_instructions: int = 0       # instructions they stand for, over all cores and waves
    # Record mode: each wave's (start, end, composition index), and each composition's trace
    # and groups ((class, cores), ...).
    timeline: list[tuple[float, float, int]] = field(default_factory=list)
    wave_traces: list = field(default_factory=list)
    compositions: list[tuple] = field(default_factory=list)


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
    fixed = all(not variables(start) for start in box.starts)

    def count(env) -> int:
        elems = 1
        for start, size, dim in dims:
            s = start(env)
            elems *= max(0, min(s + size, dim) - max(s, 0))
        return math.ceil(elems * bits / 8)
    if fixed:
        value = count({})
        return lambda env: value
    return count


@dataclass
class _Instance:
    unit: str
    label: str
    cost: object
    waits: tuple
    signals: tuple
    share: float = 1.0      # work items of a wave loading these same bytes at the same time


def concurrent_share(kernel: Kernel, box: Box, cores: int) -> float:
    """How many work items of a full wave load the same box as any one of them: items that
    differ only in grid coordinates the box does not depend on read identical bytes together,
    and L2 fetches them from memory once."""
    if not kernel.grid:
        return 1.0
    used = set().union(*(variables(s) for s in box.starts))
    sizes = [size for _, size in kernel.grid]
    wave = min(cores, math.prod(sizes))
    coords = np.unravel_index(np.arange(wave), sizes)
    keep = [c for (var, _), c in zip(kernel.grid, coords) if var in used]
    if not keep:
        return float(wave)
    distinct = len(set(zip(*keep)))
    return wave / distinct


def _class_stream(kernel: Kernel, params: dict[str, TensorDecl], target: Target, env: dict,
                  shares: dict[int, float], memo: dict) -> list[_Instance]:
    """The instruction instances one work item executes, with their costs.

    An instance's cost depends only on the values of the variables its boxes read, so costs
    are remembered in `memo` under (instruction, those values), across loop iterations and
    across the classes of one kernel.
    """
    buffers = {b.name: b for b in kernel.buffers}
    stream = []
    for ins, ienv in expand(kernel.body, env):
        reads = memo.get(id(ins))
        if reads is None:
            reads = memo[id(ins)] = _box_variables(ins)
        key = (id(ins), tuple(ienv[v] for v in reads))
        inst = memo.get(key)
        if inst is None:
            definition = lookup(ins.op, target)
            ctx = CostContext(
                target,
                box_bytes=lambda box, e=ienv: box_bytes(box, params[box.tensor], e),
                buffer_bytes=lambda name: buffers[name].slot_bytes,
                row_bytes=lambda t: math.ceil(params[t].shape[-1] * params[t].bits / 8))
            inst = _Instance(definition.unit, ins.op, definition.cost(ins, ctx), ins.wait,
                             ins.signal, shares.get(id(ins), 1.0))
            # Interned by value: equal instances are one object, so streams compare by id.
            inst = memo.setdefault(("value", inst.unit, inst.label, inst.cost, inst.waits,
                                    inst.signals, inst.share), inst)
            memo[key] = inst
        stream.append(inst)
    return stream


def _box_variables(ins) -> tuple[str, ...]:
    names = set()
    for a in ins.args:
        if isinstance(a, Box):
            for start in a.starts:
                names |= variables(start)
    return tuple(sorted(names))


def _classes(kernel: Kernel):
    """Representative coordinates per class: interior (0) or last, for each grid dim."""
    choices = [((False, 0),) if size == 1 else ((False, 0), (True, size - 1))
               for _, size in kernel.grid]
    for combo in itertools.product(*choices):
        key = tuple(flag for flag, _ in combo)
        env = {var: coord for (var, _), (_, coord) in zip(kernel.grid, combo)}
        count = math.prod(1 if flag else (size - 1 if size > 1 else 1)
                          for (_, size), (flag, _) in zip(kernel.grid, combo))
        yield key, env, count


def _hbm_fractions(streams, counts, params, target: Target) -> dict[str, float]:
    """Per loaded tensor: the share of its loaded bytes that miss L2 (see module doc)."""
    loaded: dict[str, float] = {}
    for stream, count in zip(streams, counts):
        for inst in stream:
            if isinstance(inst.cost, Transfer) and inst.cost.direction == "load":
                c = inst.cost
                loaded[c.tensor] = loaded.get(c.tensor, 0.0) + c.bytes * count / c.multicast
    unique = {t: min(b, params[t].nbytes) for t, b in loaded.items()}
    footprint = sum(unique.values())
    spill = 0.0 if footprint <= target.l2.bytes else 1.0 - target.l2.bytes / footprint
    return {t: (unique[t] / b + (1 - unique[t] / b) * spill) if b > 0 else 1.0
            for t, b in loaded.items()}


def _ops(stream, fractions, target: Target) -> dict[str, list[Op]]:
    units: dict[str, list[Op]] = {}
    l2_latency = target.l2.latency_cycles
    for inst in stream:
        c = inst.cost
        if isinstance(c, Compute):
            op = Op(COMPUTE, inst.label, inst.waits, inst.signals, cycles=c.cycles)
        elif isinstance(c, Transfer):
            if c.direction == "load":
                miss = min(fractions[c.tensor], c.multicast / inst.share)
                op = Op(TRANSFER, inst.label, inst.waits, inst.signals, nbytes=c.bytes,
                        path=(("l2", 1.0 / c.multicast), ("memory", miss / c.multicast)),
                        cap=target.dma.load_bytes_per_cycle,
                        latency=l2_latency + miss * target.memory_latency_cycles)
            else:
                # L2 is write-back: a store is done once in L2; memory absorbs it later.
                op = Op(TRANSFER, inst.label, inst.waits, inst.signals, nbytes=c.bytes,
                        path=(("l2", 1.0),), cap=target.dma.store_bytes_per_cycle,
                        latency=l2_latency)
        else:
            assert isinstance(c, Fence)
            op = Op(FENCE, inst.label, inst.waits, inst.signals)
        units.setdefault(inst.unit, []).append(op)
    return units


def _wave_compositions(kernel: Kernel, class_of_key: dict, cores: int) -> list[tuple]:
    """Each wave's composition ((class, count), ...), in launch order."""
    sizes = [size for _, size in kernel.grid]
    index = np.arange(math.prod(sizes))
    # An item's class key has one flag per grid dim: "at the last coordinate of a dim > 1".
    code = np.zeros(len(index), dtype=np.int64)
    for coord, size in zip(np.unravel_index(index, sizes) if sizes else (), sizes):
        code = code * 2 + ((coord == size - 1) & (size > 1))
    lut = np.zeros(2 ** len(sizes), dtype=np.int64)
    for key, cls in class_of_key.items():
        lut[sum(int(flag) << (len(key) - 1 - d) for d, flag in enumerate(key))] = cls
    waves = index // cores
    table = np.zeros((int(waves[-1]) + 1, max(class_of_key.values()) + 1), dtype=np.int64)
    np.add.at(table, (waves, lut[code]), 1)
    return [tuple((c, int(n)) for c, n in enumerate(row) if n) for row in table]


def simulate_kernel(kernel: Kernel, params: dict[str, TensorDecl], target: Target,
                    record: bool = False) -> KernelResult:
    reps = list(_classes(kernel))
    shares = {id(ins): concurrent_share(kernel, box, target.cores) for ins in walk(kernel.body)
              for box in ins.args if isinstance(box, Box) and ins.op.startswith("ld.")}
    streams, class_of_key, signatures = [], {}, {}
    counts: list[int] = []
    memo: dict = {}
    for key, env, count in reps:
        stream = _class_stream(kernel, params, target, env, shares, memo)
        sig = tuple(id(i) for i in stream)       # equal instances are shared through memo
        if sig not in signatures:
            signatures[sig] = len(streams)
            streams.append(stream)
            counts.append(0)
        cls = signatures[sig]
        class_of_key[key] = cls
        counts[cls] += count
    fractions = _hbm_fractions(streams, counts, params, target)
    unit_ops = [_ops(s, fractions, target) for s in streams]
    capacity = {"l2": target.l2.bytes_per_cycle, "memory": target.memory_bytes_per_cycle}
    tokens = dict(kernel.tokens)
    result = KernelResult(0.0, sum(counts), 0)
    waves = _wave_compositions(kernel, class_of_key, target.cores)
    repeats: dict[tuple, int] = {}
    for comp in waves:
        repeats[comp] = repeats.get(comp, 0) + 1
    simulated: dict[tuple, float] = {}
    for comp, times in repeats.items():
        groups = [Group(f"class{cls}", count, unit_ops[cls]) for cls, count in comp]
        wave = Engine(groups, tokens, capacity, record).run()
        simulated[comp] = wave.cycles
        result.cycles += wave.cycles * times
        result.waves += times
        if record:
            result.compositions.append(comp)
            result.wave_traces.append(wave.trace)
        for (group, unit), stats in wave.units.items():
            w = wave.weights[group] * times
            result.simulated_instructions += stats.ops
            result.executed_instructions += stats.ops * w
            result.unit_busy[unit] = result.unit_busy.get(unit, 0.0) + stats.busy * w
            for tok, t in stats.token_wait.items():
                result.token_wait[(unit, tok)] = result.token_wait.get((unit, tok), 0.0) + t * w
            for res, t in stats.bandwidth_wait.items():
                result.bandwidth_wait[(unit, res)] = result.bandwidth_wait.get((unit, res), 0.0) + t * w
        for res, b in wave.resource_bytes.items():
            result.resource_bytes[res] = result.resource_bytes.get(res, 0.0) + b * times
    if record:
        index = {comp: k for k, comp in enumerate(result.compositions)}
        start = 0.0
        for comp in waves:
            result.timeline.append((start, start + simulated[comp], index[comp]))
            start += simulated[comp]
    written = sum(i.cost.bytes * n for stream, n in zip(streams, counts) for i in stream
                  if isinstance(i.cost, Transfer) and i.cost.direction == "store")
    result.resource_bytes["memory"] = result.resource_bytes.get("memory", 0.0) + written
    # Write-backs drain in the background, but memory bandwidth holds over the whole kernel.
    result.cycles = max(result.cycles, result.resource_bytes["memory"] / capacity["memory"])
    return result
