"""Which shared resources a transfer crosses, and with what share of its bytes.

The machine (isa/machine.py) says where a tensor's bytes live and how they reach a die's
cores: a route of links to the cache in front of the memory, the cache, and links on to the
memory. A load by a core on die r crosses the near links and the cache with every byte, and
the far links and the memory with the bytes that miss. Interleaved bytes (UMA) live in each
die's instance in equal parts; a replicated tensor is read from the reader's own copy and
written to every copy. A store is done in the cache: its bytes cross the near links then,
and the far links and the memory when they drain (write-back) or at once (write-through).

A load moves at most at its core's port rate and, where the target limits the bytes a core
keeps outstanding (`dma.bytes_in_flight`), at most that many bytes per cycle of the latency
each waits (Little's law); otherwise the buffer slots a kernel fills bound what is in flight.

What the target file may add to a resource, and what it costs a transfer:
- a memory's access size: a run of contiguous bytes moves in whole accesses, so a run shorter
  than one (a 64-byte row on 128-byte accesses) costs the memory the whole access;
- a memory's request rate: its accesses per cycle are a resource of their own, which each
  transfer loads with its accesses per byte (fine-grained gathers are bound by it);
- a link's conversion: bytes of a listed element type cross it converted (fewer bytes).
"""
from __future__ import annotations

import math

from isa.formats import DTYPES
from isa.instructions import Compute, Fence, Transfer
from isa.machine import LinkUnit, Machine, MemoryUnit, Route
from isa.target_schema import Target
from runtime.engine import COMPUTE, FENCE, TRANSFER, Op


def ops_for(stream, fractions: dict[str, float], target: Target, die: int) -> dict[str, list[Op]]:
    """The engine ops of an item's stream run by a core on `die`. Streams share interned
    instances (streams.py), so each distinct instance becomes one op, reused."""
    units: dict[str, list[Op]] = {}
    made: dict[int, Op] = {}
    for inst in stream:
        op = made.get(id(inst))
        if op is None:
            op = made[id(inst)] = _op(inst, fractions, target, die)
        units.setdefault(inst.unit, []).append(op)
    return units


def parts(machine: Machine, inst, die: int, store: bool = False) -> list[tuple[MemoryUnit, float]]:
    """The memory instances holding a transfer's bytes, with their shares."""
    return machine.parts(inst.memory or machine.default_memory, inst.home, die, store)


def _op(inst, fractions: dict[str, float], target: Target, die: int) -> Op:
    c = inst.cost
    if isinstance(c, Compute):
        return Op(COMPUTE, inst.label, inst.waits, inst.signals, cycles=c.cycles)
    if isinstance(c, Fence):
        return Op(FENCE, inst.label, inst.waits, inst.signals)
    assert isinstance(c, Transfer)
    if c.direction == "send":
        return _send_op(inst, fractions, target, die)
    machine = target.machine
    store = c.direction == "store"
    routes = [(machine.route(die, m, inward=not store), share)
              for m, share in parts(machine, inst, die, store)]
    near = _crossing(routes, lambda r: r.near_latency)
    if not store:
        miss = min(fractions[c.tensor], c.multicast / inst.share)
        path = _merged(_load_path(routes, miss, c, c.multicast))
        latency = _mean(routes, lambda r: _cache_latency(r) + _missed(r, miss) * r.miss_latency)
        latency += near
        return Op(TRANSFER, inst.label, inst.waits, inst.signals, nbytes=c.bytes,
                  path=path, cap=_in_flight_cap(target, latency), latency=latency)
    path = _merged(_store_path(routes, c))
    latency = _mean(routes, lambda r: _cache_latency(r) + (r.miss_latency if _through(r) else 0))
    return Op(TRANSFER, inst.label, inst.waits, inst.signals, nbytes=c.bytes,
              path=path, cap=target.dma.store_bytes_per_cycle, latency=latency + near)


def _in_flight_cap(target: Target, latency: float) -> float:
    """A core's load rate: its port's, and by Little's law no more than the bytes it can keep
    in flight per cycle of latency each waits (when the target limits them)."""
    port = target.dma.load_bytes_per_cycle
    window = target.dma.bytes_in_flight
    if window is None or latency <= 0:
        return port
    return min(port, window / latency)


def _load_path(routes, miss: float, c: Transfer, multicast: int, links: bool = True) -> list:
    """Caches and near links carry every byte, memories and far links the misses; a multicast
    load is one read for its cluster."""
    path = [(_front(r), share / multicast) for r, share in routes]
    path += [(r.memory, share * miss / multicast) for r, share in routes if r.cache]
    if links:
        path += [(link, share / multicast) for r, share in routes for link in r.near]
        path += [(link, share * miss / multicast) for r, share in routes for link in r.far]
    return _costed(path, c)


def _store_path(routes, c: Transfer) -> list:
    """A store is done in the cache (and through to the memory, where the cache writes
    through); with no cache, in the memory."""
    path = [(_front(r), share) for r, share in routes]
    path += [(link, share) for r, share in routes for link in r.near]
    path += [(link, share) for r, share in routes if _through(r) for link in r.far]
    path += [(r.memory, share) for r, share in routes if _through(r)]
    return _costed(path, c)


def _costed(path: list, c: Transfer) -> list:
    """(resource id, coefficient) with what each resource adds: a memory's whole accesses and
    its requests, a link's conversion."""
    out = []
    for unit, coef in path:
        if isinstance(unit, LinkUnit):
            out.append((unit.id, coef * _converted(unit, c.dtype)))
            continue
        out.append((unit.id, coef * _whole_accesses(unit, c)))
        if unit.requests is not None:
            out.append((unit.requests.id, coef * _accesses_per_byte(unit, c)))
    return out


def _run(c: Transfer) -> int:
    return c.run or c.bytes or 1


def _whole_accesses(unit: MemoryUnit, c: Transfer) -> float:
    """Bytes the memory moves per byte asked for: runs round up to whole accesses."""
    if unit.access_bytes is None:
        return 1.0
    run = _run(c)
    return math.ceil(run / unit.access_bytes) * unit.access_bytes / run


def _accesses_per_byte(unit: MemoryUnit, c: Transfer) -> float:
    run = _run(c)
    return math.ceil(run / (unit.access_bytes or run)) / run


def _converted(link: LinkUnit, dtype: str) -> float:
    """Bytes a link carries per byte of `dtype`: fewer when it converts that type."""
    for src, dst in link.converts:
        if src == dtype:
            return DTYPES[dst].bits / DTYPES[src].bits
    return 1.0


def _missed(route: Route, miss: float) -> float:
    """The share of a load that reaches the memory: its misses, or all of it with no cache."""
    return miss if route.cache else 1.0


def _through(route: Route) -> bool:
    return route.cache is None or route.cache.write_through


def _front(route: Route) -> MemoryUnit:
    """What a transfer reaches first: the cache in front of the memory, else the memory."""
    return route.cache or route.memory


def _cache_latency(route: Route) -> float:
    return route.cache.latency_cycles if route.cache else 0.0


def _mean(routes, figure) -> float:
    """A latency averaged over the parts of a transfer, by their shares."""
    total = sum(share for _, share in routes)
    return sum(share * figure(r) for r, share in routes) / total


def _crossing(routes, figure) -> float:
    """The latency of the links a transfer crosses: each part's by its share, at most the
    longest (a copy written to every die waits for the farthest)."""
    return min(sum(share * figure(r) for r, share in routes),
               max(figure(r) for r, _ in routes))


def _send_op(inst, fractions: dict[str, float], target: Target, die: int) -> Op:
    """A send reads its bytes here (cache, memory for the misses) and puts them on the link;
    the same number of bytes arrives from other devices and is written to this die's cache.
    Its latency is the link's: a device link's is a message's one-way time from memory to
    memory as benchmarks measure it, reading the source included. A local copy (a device's
    own chunk) is made by all the die's cores, each through its own port, so the memory
    system, not one core's port, sets its rate; it waits for its reads' latency."""
    c = inst.cost
    machine = target.machine
    routes = [(machine.route(die, m), share) for m, share in parts(machine, inst, die)]
    miss = fractions.get(c.tensor, 1.0)
    path = _load_path(routes, miss, c, 1, links=False)
    own = machine.route(die, machine.memory(machine.default_memory, die), inward=False)
    if c.link == "local":
        cap = target.dma.load_bytes_per_cycle * target.chip.cores_per_die
        latency = _cache_latency(own) + _mean(routes, lambda r: _missed(r, miss) * r.miss_latency)
    else:
        link = machine.device_link(c.link)
        scale = _converted(link, c.dtype)
        path += [(link.id, scale)]
        cap, latency = link.bytes_per_cycle / scale, link.latency_cycles
    path = _merged(path + _costed([(_front(own), 1.0)], c))
    return Op(TRANSFER, inst.label, inst.waits, inst.signals, nbytes=c.bytes, path=path, cap=cap,
              latency=latency)


def _merged(path) -> tuple:
    out: dict[str, float] = {}
    for resource, coef in path:
        out[resource] = out.get(resource, 0.0) + coef
    return tuple(out.items())


def written_bytes(stream, count: int, die: int, machine: Machine,
                  absorbed: dict[str, float]) -> dict[str, float]:
    """Bytes an item's stores leave for memory to absorb, by the resources they cross on the
    way (the far links and the memory); `absorbed`: per tensor, the share of stored bytes
    that reach memory (rewrites of lines still in the cache reach it once). Stores through a
    write-through cache, or with no cache, reached memory when they were made."""
    out: dict[str, float] = {}

    def add(route: Route, c: Transfer, nbytes: float):
        if _through(route):
            return
        for rid, coef in _costed([(link, 1.0) for link in route.far] + [(route.memory, 1.0)],
                                 c):
            out[rid] = out.get(rid, 0.0) + nbytes * coef
    for inst in stream:
        c = inst.cost
        if isinstance(c, Transfer) and c.direction == "store":
            nbytes = c.bytes * absorbed.get(c.tensor, 1.0) * count
            for m, share in parts(machine, inst, die, store=True):
                add(machine.route(die, m, inward=False), c, nbytes * share)
        elif isinstance(c, Transfer) and c.direction == "send":    # what arrives, written here
            own = machine.memory(machine.default_memory, die)
            add(machine.route(die, own, inward=False), c, c.bytes * count)
    return out
