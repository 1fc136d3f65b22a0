"""Which shared resources a transfer crosses, and with what share of its bytes.

Every die has its own L2 and off-chip memory; a die-to-die link joins each pair of dies, one
resource per direction. A load by a core on die r of bytes homed on die h reads h's L2 (and
h's memory for the L2 misses) and, when h is not r, crosses the link h->r. Interleaved bytes
(UMA) are homed on each die in equal parts; a replicated tensor is read from the reader's
own die and written to every die. A store writes its home die's L2 (write-back) and crosses
r->h when remote; its memory traffic is counted when it drains.
"""
from __future__ import annotations

import re

from isa.instructions import Compute, Fence, Transfer
from isa.target_schema import Target
from runtime.engine import COMPUTE, FENCE, TRANSFER, Op


def l2(d: int) -> str:
    return f"l2.d{d}"


def memory(d: int) -> str:
    return f"memory.d{d}"


def link(a: int, b: int) -> str:
    return f"link.d{a}>d{b}"


def label(resource: str, dies: int) -> str:
    """How reports name a resource: 'memory.d1' -> 'memory' (one die) or 'die 1 memory',
    'l2.d0' -> 'L2', 'link.d0>d1' -> 'die link 0->1'."""
    m = re.match(r"^link\.d(\d+)>d(\d+)$", resource)
    if m:
        return f"die link {m.group(1)}\u2192{m.group(2)}"
    m = re.match(r"^(.*)\.d(\d+)$", resource)
    if m:
        kind = "L2" if m.group(1) == "l2" else m.group(1)
        return kind if dies == 1 else f"die {m.group(2)} {kind}"
    return resource


# A device's links to other devices, each way. SPMD devices send as much as they receive, so
# a send's bytes are counted once, on its device's outgoing link.
DEVICE_LINKS = ("nvlink", "network")


def capacities(target: Target) -> dict[str, float]:
    dies = range(target.chip.dies)
    out = {}
    for d in dies:
        out[l2(d)] = target.l2.bytes_per_cycle
        out[memory(d)] = target.memory_bytes_per_cycle
    if target.die_link is not None:
        per_cycle = target.die_link.bandwidth_gbs * 1e9 / target.clock_hz
        out.update({link(a, b): per_cycle for a in dies for b in dies if a != b})
    if target.system is not None:
        out.update({name: target.link_bytes_per_cycle(name) for name in DEVICE_LINKS})
    return out


def homes(home, requester: int, dies: int, store: bool = False) -> list[tuple[int, float]]:
    """(die, share of the bytes) for a transfer's bytes. A replicated tensor is read from the
    requester's own copy, and written to every die's copy."""
    if home is None:
        return [(d, 1.0 / dies) for d in range(dies)]
    if home == -1:
        return [(d, 1.0) for d in range(dies)] if store else [(requester, 1.0)]
    return [(home, 1.0)]


def link_latency(target: Target) -> float:
    return target.die_link.latency_ns * 1e-9 * target.clock_hz if target.die_link else 0.0


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


def _op(inst, fractions: dict[str, float], target: Target, die: int) -> Op:
    c = inst.cost
    if isinstance(c, Compute):
        return Op(COMPUTE, inst.label, inst.waits, inst.signals, cycles=c.cycles)
    if isinstance(c, Fence):
        return Op(FENCE, inst.label, inst.waits, inst.signals)
    assert isinstance(c, Transfer)
    if c.direction == "send":
        return _send_op(inst, fractions, target, die)
    parts = homes(inst.home, die, target.chip.dies, store=c.direction == "store")
    remote = min(1.0, sum(share for h, share in parts if h != die))
    if c.direction == "load":
        miss = min(fractions[c.tensor], c.multicast / inst.share)
        path = tuple((l2(h), share / c.multicast) for h, share in parts)
        path += tuple((memory(h), share * miss / c.multicast) for h, share in parts)
        path += tuple((link(h, die), share / c.multicast) for h, share in parts if h != die)
        latency = (target.l2.latency_cycles + miss * target.memory_latency_cycles
                   + remote * link_latency(target))
        return Op(TRANSFER, inst.label, inst.waits, inst.signals, nbytes=c.bytes,
                  path=path, cap=target.dma.load_bytes_per_cycle, latency=latency)
    # L2 is write-back: a store is done once in L2; memory absorbs it later.
    path = tuple((l2(h), share) for h, share in parts)
    path += tuple((link(die, h), share) for h, share in parts if h != die)
    return Op(TRANSFER, inst.label, inst.waits, inst.signals, nbytes=c.bytes,
              path=path, cap=target.dma.store_bytes_per_cycle,
              latency=target.l2.latency_cycles + remote * link_latency(target))


def _send_op(inst, fractions: dict[str, float], target: Target, die: int) -> Op:
    """A send reads its bytes here (L2, memory for the misses) and puts them on the link; the
    same number of bytes arrives from other devices and is written to this die's L2."""
    c = inst.cost
    parts = homes(inst.home, die, target.chip.dies)
    miss = fractions.get(c.tensor, 1.0)
    path = tuple((l2(h), share) for h, share in parts)
    path += tuple((memory(h), share * miss) for h, share in parts)
    if c.link == "local":
        cap, latency = target.dma.load_bytes_per_cycle, target.l2.latency_cycles
    else:
        path += ((c.link, 1.0),)
        cap, latency = target.link_bytes_per_cycle(c.link), target.link_latency_cycles(c.link)
    path = _merged(path + ((l2(die), 1.0),))
    return Op(TRANSFER, inst.label, inst.waits, inst.signals, nbytes=c.bytes, path=path, cap=cap,
              latency=latency + miss * target.memory_latency_cycles)


def _merged(path) -> tuple:
    out: dict[str, float] = {}
    for resource, coef in path:
        out[resource] = out.get(resource, 0.0) + coef
    return tuple(out.items())


def written_bytes(stream, count: int, die: int, dies: int,
                  absorbed: dict[str, float]) -> dict[str, float]:
    """Bytes an item's stores leave for memory to absorb, by the memory that absorbs them;
    `absorbed`: per tensor, the share of stored bytes that reach memory (rewrites of lines
    still in L2 reach it once)."""
    out: dict[str, float] = {}
    for inst in stream:
        c = inst.cost
        if isinstance(c, Transfer) and c.direction == "store":
            nbytes = c.bytes * absorbed.get(c.tensor, 1.0) * count
            for h, share in homes(inst.home, die, dies, store=True):
                out[memory(h)] = out.get(memory(h), 0.0) + nbytes * share
        elif isinstance(c, Transfer) and c.direction == "send":    # what arrives, written here
            out[memory(die)] = out.get(memory(die), 0.0) + c.bytes * count
    return out
