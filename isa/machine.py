"""The machine a target file describes, as one frozen graph of memories and links.

Places are where things sit: each die of the package (its cores, `d0`, `d1`, ...) and any
other place a link names (a CPU, a memory pool). Memories sit at places; a memory declared
per die has one instance on each die. Links join two places, one resource per direction.
Links of a device to other devices (inside its node, across the network) are resources too,
used by the sends of collectives.

Every resource has an id that reports show in their keys ("memory.d0", "l2.d1", "link.d0>d1",
"nvlink") and a label for people ("die 1 memory"); ids are made here and nowhere else, and no
module takes one apart: what a report needs to know about a resource (its kind, die, label)
is an attribute of it.

A route is how bytes that live in one memory instance reach the cores of one die: the links
from the die to the cache in front of that memory (crossed by every byte), the cache, the
links from the cache on to the memory (crossed by the misses only) and the memory itself.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from functools import cached_property
from typing import Union


@dataclass(frozen=True)
class MemoryUnit:
    """One instance of a declared memory (or cache)."""
    id: str                       # "memory.d0", or the family name when there is one instance
    family: str                   # the declared name: "memory", "l2", "host"
    label: str                    # how reports name it: "die 1 memory", "L2", "host"
    place: str                    # where it sits: "d0", or a named place such as "cpu"
    die: int | None               # the die it belongs to (per-die instances), else None
    bytes: int                    # capacity
    bytes_per_cycle: float        # bandwidth in bytes per core clock
    latency_cycles: float         # extra latency of an access that reaches it
    caches: tuple[str, ...] = ()  # a cache: the memory families it stands in front of
    write_through: bool = False   # a cache's stores go on to the memory as they are made
    keeps: bool = True            # a cache keeps what kernels wrote and read for later kernels
    access_bytes: int | None = None          # runs of bytes move in whole accesses
    requests: "RequestUnit | None" = None    # the rate it serves accesses at, if limited
    achievable: float = 1.0       # the share of its datasheet bandwidth bytes_per_cycle is
    source: str = ""              # the measurement that share comes from (when below 1)

    @property
    def is_cache(self) -> bool:
        return bool(self.caches)


@dataclass(frozen=True)
class RequestUnit:
    """The request rate of one memory instance: a resource whose capacity is accesses per
    cycle (a transfer puts its accesses per byte on it)."""
    id: str                       # "memory.d0 requests"
    family: str                   # "memory requests"
    label: str
    die: int | None
    bytes_per_cycle: float        # accesses per cycle (the engine's capacity)
    latency_cycles: float = 0.0

    @property
    def is_cache(self) -> bool:
        return False


@dataclass(frozen=True)
class LinkUnit:
    """One direction of one declared link."""
    id: str                       # "link.d0>d1", or "nvlink" for a link to other devices
    family: str
    label: str                    # "die link 0->1", "nvlink"
    src: str                      # place the bytes leave ("device" for device links)
    dst: str
    bytes_per_cycle: float
    latency_cycles: float
    die: int | None = None        # the die it leaves, for per-die report lines
    towards: str = ""             # its destination for people: "die 1", "cpu"
    converts: tuple[tuple[str, str], ...] = ()   # (from dtype, to dtype) applied on the way
    achievable: float = 1.0       # the share of its datasheet bandwidth bytes_per_cycle is
    source: str = ""              # the measurement that share comes from (when below 1)

    @property
    def is_cache(self) -> bool:
        return False


Resource = Union[MemoryUnit, LinkUnit, RequestUnit]


@dataclass(frozen=True)
class Route:
    """How bytes living in `memory` reach (or leave) the cores of one die."""
    memory: MemoryUnit
    cache: MemoryUnit | None      # the cache that stands in front of `memory` on the way
    near: tuple[LinkUnit, ...]    # links between the cores and the cache: every byte
    far: tuple[LinkUnit, ...]     # links between the cache and the memory: the misses

    @property
    def near_latency(self) -> float:
        """Cycles the links between the cores and the cache add."""
        return sum(link.latency_cycles for link in self.near)

    @property
    def far_latency(self) -> float:
        """Cycles the links between the cache and the memory add."""
        return sum(link.latency_cycles for link in self.far)

    # What the compiler's estimates use: one access's latencies and the rates bytes flow at.

    @property
    def hit_latency(self) -> float:
        """Cycles from the cores to the cache and back (to the memory, with no cache)."""
        return self.near_latency + (self.cache.latency_cycles if self.cache else 0.0)

    @property
    def miss_latency(self) -> float:
        """Cycles a miss adds: on to the memory and back (nothing more with no cache)."""
        return self.memory.latency_cycles + (self.far_latency if self.cache else 0.0)

    @property
    def hit_bytes_per_cycle(self) -> float:
        """The rate of the cache (or memory) that every byte crosses, for all cores."""
        return (self.cache or self.memory).bytes_per_cycle

    @property
    def miss_bytes_per_cycle(self) -> float:
        """The rate bytes from the memory itself arrive at: its own, or a slower far link's."""
        return min([self.memory.bytes_per_cycle] + [link.bytes_per_cycle for link in self.far])


@dataclass(frozen=True)
class Machine:
    """Resources by id, in declaration order; routes are computed on demand and memoised."""
    name: str
    dies: int
    memories: tuple[MemoryUnit, ...]
    links: tuple[LinkUnit, ...]              # links between places of this device
    device_links: tuple[LinkUnit, ...]       # links to other devices
    default_memory: str                      # the family tensors live in unless placed
    scopes: tuple[tuple[str, str], ...] = () # ("node" | "network", device link id)
    _routes: dict = field(default_factory=dict, compare=False, repr=False)

    # -- resources --

    @cached_property
    def resources(self) -> dict[str, Resource]:
        requests = [m.requests for m in self.memories if m.requests]
        return {r.id: r for r in (*self.memories, *requests, *self.links, *self.device_links)}

    def resource(self, rid: str) -> Resource:
        return self.resources[rid]

    @cached_property
    def capacity(self) -> dict[str, float]:
        """Bytes per cycle each resource carries (each direction of a link on its own)."""
        return {rid: r.bytes_per_cycle for rid, r in self.resources.items()}

    @cached_property
    def families(self) -> dict[str, tuple[Resource, ...]]:
        """Instances of each declared memory or link, by its declared name."""
        out: dict[str, list[Resource]] = {}
        for r in self.resources.values():
            out.setdefault(r.family, []).append(r)
        return {name: tuple(rs) for name, rs in out.items()}

    @cached_property
    def family_totals(self) -> dict[str, tuple[str, ...]]:
        """Families with several instances, and their instance ids: reports add those up
        under the family's name ("memory" = every die's memory)."""
        return {name: tuple(r.id for r in rs) for name, rs in self.families.items()
                if len(rs) > 1 or rs[0].id != name}

    def reach(self, die: int = 0, family: str | None = None) -> Route:
        """How the cores of `die` load from a memory family (by default, the one tensors
        live in unless placed elsewhere): what the compiler's estimates ask."""
        return self.route(die, self.memory(family or self.default_memory, die))

    def bytes_of(self, family: str | None = None) -> int:
        """What a memory family holds, all its instances together."""
        return sum(m.bytes for m in self.memories if m.family == (family or self.default_memory))

    def bandwidth_of(self, family: str | None = None) -> float:
        """Bytes per cycle of a memory family (default: where tensors live), all instances."""
        return sum(m.bytes_per_cycle for m in self.memories
                   if m.family == (family or self.default_memory))

    def peak_bandwidth_of(self, family: str | None = None) -> float:
        """The datasheet bytes per cycle of a memory family, all instances."""
        return sum(m.bytes_per_cycle / m.achievable for m in self.memories
                   if m.family == (family or self.default_memory))

    def memory(self, family: str, die: int) -> MemoryUnit:
        """The instance of a memory family that die `die` owns (its own, for per-die
        families; the one instance otherwise)."""
        units = [m for m in self.memories if m.family == family]
        return next((m for m in units if m.die == die), units[0])

    def device_link(self, name: str) -> LinkUnit:
        for link in self.device_links:
            if link.id == name:
                return link
        raise KeyError(name)

    def link_for(self, scope: str) -> LinkUnit | None:
        """The link to the other devices of this node ("node") or of other nodes
        ("network"); None when the target has none."""
        name = dict(self.scopes).get(scope)
        return self.device_link(name) if name else None

    @property
    def placeable(self) -> tuple[str, ...]:
        """Memory families a tensor can live in (every memory that is not a cache)."""
        return tuple(dict.fromkeys(m.family for m in self.memories if not m.is_cache))

    # -- where a tensor's bytes are --

    def parts(self, family: str, home, requester: int, store: bool = False
              ) -> list[tuple[MemoryUnit, float]]:
        """(memory instance, share of the bytes) of a transfer by a core on die `requester`
        of bytes of memory family `family`. `home` places them over the dies of a per-die
        family: None interleaved over all (UMA), -1 replicated (read from the requester's
        copy, written to every copy), or a die."""
        units = [m for m in self.memories if m.family == family]
        if len(units) == 1:
            return [(units[0], 1.0)]
        if home is None:
            return [(m, 1.0 / len(units)) for m in units]
        if home == -1:
            return [(m, 1.0) for m in units] if store else [(self.memory(family, requester), 1.0)]
        return [(self.memory(family, home), 1.0)]

    # -- routes --

    def route(self, die: int, memory: MemoryUnit, inward: bool = True) -> Route:
        """The route between the cores of `die` and `memory`: towards the cores (a load,
        `inward`) or away from them (a store)."""
        key = (die, memory.id, inward)
        found = self._routes.get(key)
        if found is None:
            found = self._routes[key] = self._route(die, memory, inward)
        return found

    def _route(self, die: int, memory: MemoryUnit, inward: bool) -> Route:
        places = self._path(f"d{die}", memory.place)
        cache, at = None, None
        for i, place in enumerate(places):      # the cache nearest the memory along the way
            for m in self.memories:
                if m.place == place and memory.family in m.caches:
                    cache, at = m, i
        hops = list(zip(places, places[1:]))
        split = at if at is not None else len(hops)
        near, far = hops[:split], hops[split:]
        return Route(memory, cache, self._links(near, inward), self._links(far, inward))

    def _links(self, hops, inward: bool) -> tuple[LinkUnit, ...]:
        by_ends = {(link.src, link.dst): link for link in self.links}
        return tuple(by_ends[(b, a)] if inward else by_ends[(a, b)] for a, b in hops)

    def _path(self, start: str, goal: str) -> list[str]:
        """Places from `start` to `goal` along links, least latency first, then fewest hops,
        then by name (so the route is deterministic)."""
        queue = [(0.0, 0, [start])]
        seen = set()
        while queue:
            latency, hops, path = heapq.heappop(queue)
            here = path[-1]
            if here == goal:
                return path
            if here in seen:
                continue
            seen.add(here)
            for link in self.links:
                if link.src == here and link.dst not in seen:
                    heapq.heappush(queue, (latency + link.latency_cycles, hops + 1,
                                           path + [link.dst]))
        raise ValueError(f"{self.name}: no route from {start} to {goal}")
