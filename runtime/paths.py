"""Which shared resources a transfer crosses, and with what share of its bytes.

The machine (isa/machine.py) says where a tensor's bytes live and how they reach a die's
cores: a route of links to the cache in front of the memory, the cache, and links on to the
memory. A load by a core on die r crosses the near links and the cache with every byte, and
the far links and the memory with the bytes that miss. Interleaved bytes (UMA) live in each
die's instance in equal parts; a replicated tensor is read from the reader's own copy and
written to every copy. A store is done once in the cache (write-back): its bytes cross the
near links then, and the far links and the memory when they drain.
"""
from __future__ import annotations

from isa.instructions import Compute, Fence, Transfer
from isa.machine import Machine, MemoryUnit
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
    return machine.parts(machine.default_memory, inst.home, die, store)


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
    shares = parts(machine, inst, die, store)
    routes = [(machine.route(die, m, inward=not store), share) for m, share in shares]
    if not store:
        miss = min(fractions[c.tensor], c.multicast / inst.share)
        path = _load_path(routes, miss, c.multicast)
        latency = (_mean(routes, lambda r: _cache_latency(r) + miss * _memory_latency(r))
                   + _crossing(routes, lambda r: r.near_latency))
        return Op(TRANSFER, inst.label, inst.waits, inst.signals, nbytes=c.bytes,
                  path=path, cap=target.dma.load_bytes_per_cycle, latency=latency)
    # Write-back: a store is done once in the cache; memory absorbs it later.
    path = tuple((_front(r).id, share) for r, share in routes)
    path += tuple((link.id, share) for r, share in routes for link in r.near)
    return Op(TRANSFER, inst.label, inst.waits, inst.signals, nbytes=c.bytes,
              path=path, cap=target.dma.store_bytes_per_cycle,
              latency=_mean(routes, _cache_latency) + _crossing(routes, lambda r: r.near_latency))


def _load_path(routes, miss: float, multicast: int, links: bool = True) -> tuple:
    """Caches and near links carry every byte, memories and far links the misses; a multicast
    load is one read for its cluster."""
    path = tuple((_front(r).id, share / multicast) for r, share in routes)
    path += tuple((r.memory.id, share * miss / multicast) for r, share in routes if r.cache)
    if not links:
        return path
    path += tuple((link.id, share / multicast) for r, share in routes for link in r.near)
    path += tuple((link.id, share * miss / multicast) for r, share in routes for link in r.far)
    return path


def _front(route) -> MemoryUnit:
    """What a transfer reaches first: the cache in front of the memory, else the memory."""
    return route.cache or route.memory


def _cache_latency(route) -> float:
    return route.cache.latency_cycles if route.cache else 0.0


def _memory_latency(route) -> float:
    return route.memory.latency_cycles + route.far_latency if route.cache else \
        route.memory.latency_cycles


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
    the same number of bytes arrives from other devices and is written to this die's cache."""
    c = inst.cost
    machine = target.machine
    routes = [(machine.route(die, m), share) for m, share in parts(machine, inst, die)]
    miss = fractions.get(c.tensor, 1.0)
    path = _load_path(routes, miss, 1, links=False)
    if c.link == "local":
        own = machine.route(die, machine.memory(machine.default_memory, die))
        cap, latency = target.dma.load_bytes_per_cycle, _cache_latency(own)
    else:
        link = machine.device_link(c.link)
        path += ((link.id, 1.0),)
        cap, latency = link.bytes_per_cycle, link.latency_cycles
    arrival = _front(machine.route(die, machine.memory(machine.default_memory, die), False))
    path = _merged(path + ((arrival.id, 1.0),))
    return Op(TRANSFER, inst.label, inst.waits, inst.signals, nbytes=c.bytes, path=path, cap=cap,
              latency=latency + miss * _mean(routes, _memory_latency))


def _merged(path) -> tuple:
    out: dict[str, float] = {}
    for resource, coef in path:
        out[resource] = out.get(resource, 0.0) + coef
    return tuple(out.items())


def written_bytes(stream, count: int, die: int, machine: Machine,
                  absorbed: dict[str, float]) -> dict[str, float]:
    """Bytes an item's stores leave for memory to absorb, by the resources they cross on the
    way (the far links and the memory); `absorbed`: per tensor, the share of stored bytes
    that reach memory (rewrites of lines still in the cache reach it once)."""
    out: dict[str, float] = {}

    def add(route, nbytes):
        for rid in [link.id for link in route.far] + [route.memory.id]:
            out[rid] = out.get(rid, 0.0) + nbytes
    for inst in stream:
        c = inst.cost
        if isinstance(c, Transfer) and c.direction == "store":
            nbytes = c.bytes * absorbed.get(c.tensor, 1.0) * count
            for m, share in parts(machine, inst, die, store=True):
                add(machine.route(die, m, inward=False), nbytes * share)
        elif isinstance(c, Transfer) and c.direction == "send":    # what arrives, written here
            own = machine.memory(machine.default_memory, die)
            add(machine.route(die, own, inward=False), c.bytes * count)
    return out
