"""Simulate one kernel launch: work items in waves over the cores, identical cores once.

1. Items fall into a few classes (work_items.py) whose instruction streams are expanded once
   (streams.py).
2. Off-chip reads go through L2. Re-reads of the same data by other tiles hit L2 when the
   working set fits in it: per tensor, the fraction of loaded bytes that reach memory is
   unique bytes / loaded bytes, scaled towards 1 as the working set outgrows L2. The working
   set is what the items of one wave load (each byte once): a byte a later wave reads again
   has met at most that much other data in between. Items of one
   wave that load the same box at the same time share one memory fetch whatever the footprint.
   Stores are written back: they cost L2 bandwidth when issued and their bytes reach memory in
   the background, once per distinct byte (a region rewritten while in L2 is written back
   once); a kernel never takes less than its off-chip bytes over memory bandwidth. A tensor
   a kernel both stores and loads is a hand-over through L2 (split cube/vector cores pass
   tiles this way): its loads hit L2 unless what one wave's items write to it (an upper
   bound on what is live at once) outgrows L2.
3. Items are dealt to the cores in waves. A wave is a set of (class, die) groups with counts;
   each group runs as one engine group weighted by its count, so bandwidth sharing sees every
   core (paths.py says which resources each transfer crosses). Identical waves are simulated
   once: they start from the same idle state, so reusing their time is exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from isa.instructions import Transfer, lookup
from isa.program import Box, Kernel, TensorDecl, walk
from isa.target_schema import Target
from isa.workload import kernel_problem
from runtime import paths
from runtime.engine import Engine, Group
from runtime.errors import SimulationError
from runtime.persistent import worker_cycles
from runtime.streams import (box_bytes, concurrent_share, expand, home_memory,  # noqa: F401
                             item_stream, value)
from runtime.work_items import classes, waves as wave_list

@dataclass
class KernelResult:
    cycles: float
    items: int
    waves: int
    unit_busy: dict[str, float] = field(default_factory=dict)          # core-cycles, all cores
    token_wait: dict[tuple[str, str], float] = field(default_factory=dict)
    bandwidth_wait: dict[tuple[str, str], float] = field(default_factory=dict)
    resource_bytes: dict[str, float] = field(default_factory=dict)
    # Who releases each token (units whose instructions signal it), and which tokens count
    # free buffer slots (those starting above zero): what the stall reasons name.
    token_sources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    slot_tokens: frozenset = frozenset()
    simulated_instructions: int = 0      # instructions the engine executed
    executed_instructions: int = 0       # instructions they stand for, over all cores and waves
    # Record mode: each wave's (start, end, composition index), and each composition's trace
    # and groups (((class, die), cores), ...).
    timeline: list[tuple[float, float, int]] = field(default_factory=list)
    wave_traces: list = field(default_factory=list)
    compositions: list[tuple] = field(default_factory=list)
    # Per parameter, the distinct bytes the kernel read and wrote: what it leaves in the
    # caches for the kernels after it (runtime/residency.py).
    touched: dict[str, tuple[float, float]] = field(default_factory=dict)
    kept_hits: float = 0.0               # bytes read from what earlier kernels left in a cache
    handover_overlap: float = 0.0        # persistent: cycles a hand-over between items saves (mean)


def _memory_shares(streams, counts, params, bases, target: Target, resident: dict):
    """Per loaded tensor, the share of its loaded bytes that miss the cache in front of its
    memory; per stored tensor, the share of its stored bytes that memory absorbs (see module
    doc). Tensors behind one cache share its capacity; with no cache every load misses; the
    part of a tensor earlier kernels left in the cache (`resident`) hits on its first touch.
    Also each tensor's distinct bytes read and written."""
    loaded: dict[str, float] = {}
    stored: dict[str, float] = {}
    distinct: dict[str, float] = {}            # loaded bytes no other item of a wave shares
    per_item: dict[str, float] = {}            # most bytes one item stores to a tensor
    for stream, count in zip(streams, counts):
        mine: dict[str, float] = {}
        for inst in stream:
            c = inst.cost
            if isinstance(c, Transfer):
                into = stored if c.direction == "store" else loaded      # a send reads
                into[c.tensor] = into.get(c.tensor, 0.0) + c.bytes * count / c.multicast
                if c.direction == "store":
                    mine[c.tensor] = mine.get(c.tensor, 0.0) + c.bytes
                else:
                    distinct[c.tensor] = distinct.get(c.tensor, 0.0) + \
                        c.bytes * count / max(inst.share, c.multicast)
        for t, b in mine.items():
            per_item[t] = max(per_item.get(t, 0.0), b)
    unique = {t: min(b, params[t].nbytes) for t, b in loaded.items()}
    machine = target.machine
    cache = {t: machine.reach(0, home_memory(params[t], bases.get(t))).cache for t in loaded}
    # The working set: what the items of one wave (the tiles in flight) load, each byte once;
    # a byte re-read by a later wave meets at most that much other data in between.
    items = sum(counts)
    wave = min(target.cores, items)
    footprint: dict[str, float] = {}
    for t, nbytes in unique.items():
        if cache[t] is not None:
            window = min(nbytes, distinct.get(t, 0.0) / max(items, 1) * wave)
            footprint[cache[t].family] = footprint.get(cache[t].family, 0.0) + window

    def spill(t, nbytes):
        room = cache[t].bytes
        return 0.0 if nbytes <= room else 1.0 - room / nbytes
    miss, cold = {}, {}              # cold: as if the cache held nothing at the start
    for t, b in loaded.items():
        if b <= 0 or cache[t] is None:
            miss[t] = 1.0
        elif t in stored:          # handed over through L2: read back what this kernel wrote,
            # soon after: at most what the cores of one wave write is live at once.
            miss[t] = spill(t, min(params[t].nbytes, target.cores * per_item[t]))
        else:
            again = (1 - unique[t] / b) * spill(t, footprint[cache[t].family])
            cold[t] = unique[t] / b + again
            miss[t] = unique[t] / b * (1 - resident.get(t, 0.0)) + again
    absorbed = {t: min(b, params[t].nbytes) / b if b > 0 else 1.0 for t, b in stored.items()}
    touched = {t: (unique.get(t, 0.0), min(stored.get(t, 0.0), params[t].nbytes))
               for t in {**loaded, **stored}}
    return miss, absorbed, touched, {t: cold[t] for t in cold if resident.get(t)}


def _kept_hits(streams, counts, miss: dict, cold: dict) -> float:
    """Bytes the loads would have read from memory had the cache held nothing at the start
    (the loads' own misses, as paths.py counts them: a wave's shared reads fetched once)."""
    kept = 0.0
    for stream, count in zip(streams, counts):
        for inst in stream:
            c = inst.cost
            if isinstance(c, Transfer) and c.direction != "store" and c.tensor in cold:
                cap = c.multicast / inst.share if c.direction == "load" else 1.0
                saved = min(cold[c.tensor], cap) - min(miss[c.tensor], cap)
                kept += count * c.bytes / c.multicast * saved
    return kept


def simulate_kernel(kernel: Kernel, params: dict[str, TensorDecl], target: Target,
                    record: bool = False, bases: dict[str, TensorDecl] | None = None,
                    resident: dict[str, float] | None = None,
                    background: dict[str, float] | None = None) -> KernelResult:
    """`bases`: the base tensor of each parameter that is a view (to place its bytes);
    `resident`: per parameter, the share of its bytes the caches hold when the kernel starts
    (earlier kernels left them there); `background`: bytes per cycle of some resources that
    traffic outside the kernel takes while it runs (the links' sends and receives:
    runtime/contention.py), which its own transfers cannot use. A kernel beyond the
    interpreter's bounds (isa/workload.py) is a SimulationError."""
    problem = kernel_problem(kernel, target.cores, target.chip.dies)
    if problem:
        raise SimulationError(f"error: {problem}")
    bases = bases or {}
    shares = {id(ins): concurrent_share(kernel, box, target.cores) for ins in walk(kernel.body)
              for box in ins.args if isinstance(box, Box) and lookup(ins.op, target).unit == "ld"}
    streams, class_of_key, signatures = [], {}, {}
    memo: dict = {}
    for key, die, env in classes(kernel, target.chip.dies):
        stream = item_stream(kernel, params, bases, target, env, shares, memo)
        sig = tuple(id(i) for i in stream)       # equal instances are shared through memo
        if sig not in signatures:
            signatures[sig] = len(streams)
            streams.append(stream)
        class_of_key[(key, die)] = signatures[sig]
    dealt = wave_list(kernel, class_of_key, target)
    counts = [0] * len(streams)
    for comp, times in zip(dealt.compositions, dealt.counts()):
        for (cls, _), count in comp:
            counts[cls] += count * times
    fractions, absorbed, touched, cold = _memory_shares(streams, counts, params, bases, target,
                                                        resident or {})
    kept = _kept_hits(streams, counts, fractions, cold) if cold else 0.0
    ops: dict[tuple[int, int], dict] = {}
    capacity = _left(target.machine.capacity, background or {})
    tokens = dict(kernel.tokens)
    result = KernelResult(0.0, sum(counts), 0, token_sources=token_sources(kernel, target),
                          slot_tokens=frozenset(t for t, n in kernel.tokens if n > 0),
                          touched=touched, kept_hits=kept)
    simulated: list[float] = []
    on_die: dict[tuple[int, int], int] = {}
    for comp, times in zip(dealt.compositions, dealt.counts()):
        groups = []
        for (cls, die), count in comp:
            if (cls, die) not in ops:
                ops[(cls, die)] = paths.ops_for(streams[cls], fractions, target, die)
            groups.append(Group(f"class{cls}.d{die}", count, ops[(cls, die)]))
            on_die[(cls, die)] = on_die.get((cls, die), 0) + count * times
        wave = Engine(groups, tokens, capacity, record).run()
        simulated.append(wave.cycles)
        result.cycles += wave.cycles * times
        result.waves += times
        if record:
            result.compositions.append(comp)
            result.wave_traces.append(wave.trace)
        _accumulate(result, wave, times, target.chip.dies > 1)
    saved = 0.0
    if kernel.persistent and result.waves > 1:
        counts_of = dealt.counts()
        most = max(range(len(counts_of)), key=lambda c: (counts_of[c], -c))
        waves = result.waves
        worker = worker_cycles(dealt.compositions[most], streams, fractions, target, tokens,
                               capacity, simulated[most], waves)
        saved = max(0.0, waves * simulated[most] - worker) / (waves - 1)
        result.cycles -= saved * (waves - 1)
        result.handover_overlap = saved
    if record:
        start = 0.0
        for comp in dealt.order():
            result.timeline.append((start, start + simulated[comp], comp))
            start += simulated[comp] - saved
    for (cls, die), count in on_die.items():
        written = paths.written_bytes(streams[cls], count, die, target.machine, absorbed)
        for res, b in written.items():
            result.resource_bytes[res] = result.resource_bytes.get(res, 0.0) + b
    # Write-backs drain in the background, but every resource's bandwidth holds over the
    # whole kernel, after the first access has reached it (the pipeline fill Little's law
    # charges once: a small kernel does not reach the roof at once).
    resources = target.machine.resources
    result.cycles = max([result.cycles] + [b / capacity[r] + resources[r].latency_cycles
                                           for r, b in result.resource_bytes.items() if b > 0])
    _totals(result, target)
    return result


def _left(capacity: dict[str, float], background: dict[str, float]) -> dict[str, float]:
    """What each resource carries for the kernel: its capacity less the background's rate."""
    out = dict(capacity)
    for resource, rate in background.items():
        if rate >= out[resource]:
            raise SimulationError(f"error: traffic beside the kernel takes {rate:,.1f} bytes "
                                  f"per cycle of {resource}, which carries "
                                  f"{out[resource]:,.1f}: the links outrun the memory")
        out[resource] -= rate
    return out


def token_sources(kernel: Kernel, target: Target) -> dict[str, tuple[str, ...]]:
    sources: dict[str, set[str]] = {}
    for ins in walk(kernel.body):
        for tok in ins.signal:
            sources.setdefault(tok, set()).add(lookup(ins.op, target).unit)
    return {tok: tuple(sorted(units)) for tok, units in sorted(sources.items())}


def _accumulate(result: KernelResult, wave, times: int, per_die: bool) -> None:
    for (group, unit), stats in wave.units.items():
        w = wave.weights[group] * times
        result.simulated_instructions += stats.ops
        result.executed_instructions += stats.ops * w
        keys = [unit] + ([f"{unit}@{group.split('.')[-1]}"] if per_die else [])
        for k in keys:
            result.unit_busy[k] = result.unit_busy.get(k, 0.0) + stats.busy * w
        for tok, t in stats.token_wait.items():
            result.token_wait[(unit, tok)] = result.token_wait.get((unit, tok), 0.0) + t * w
        for res, t in stats.bandwidth_wait.items():
            result.bandwidth_wait[(unit, res)] = result.bandwidth_wait.get((unit, res), 0.0) + t * w
    for res, b in wave.resource_bytes.items():
        result.resource_bytes[res] = result.resource_bytes.get(res, 0.0) + b * times


def _totals(result: KernelResult, target: Target) -> None:
    """The instances of each memory or link family summed under the family's name (the
    report's totals: "memory" is every die's memory)."""
    for family, ids in target.machine.family_totals.items():
        result.resource_bytes[family] = sum(result.resource_bytes.get(r, 0.0) for r in ids)
