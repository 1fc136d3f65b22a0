"""Build the machine graph (isa/machine.py) from a loaded target, and check that it holds.

The shorthand tables of a target file expand into named memories and links first:

    [memory]             -> [memories.memory]   one per die
    [l2]                 -> [memories.l2]       one per die, a cache in front of "memory"
    [die_link]           -> [links.link]        between = ["die", "die"]
    [system.intra_node]  -> [links.nvlink]      between = ["device", "node"]
    [system.inter_node]  -> [links.network]     between = ["device", "network"]

then every declared memory and link, shorthand or not, becomes instances: one per die for a
memory `at = "die"`, one per direction (and per die, for a die end) for a link. Each rule
that relates several declarations is checked here and reported against the key to fix.
"""
from __future__ import annotations

import re

from isa.formats import DTYPES
from isa.machine import LinkUnit, Machine, MemoryUnit, RequestUnit
from isa.target_schema import LinkSpec, MemorySpec

SCOPES = ("node", "network")          # what a device link joins a device to
_PLACE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_DIE_PLACE = re.compile(r"d\d+")
_RESERVED = ("die", "device") + SCOPES


class MachineError(ValueError):
    """A declaration the graph cannot be built from; `key` is the dotted key to fix."""

    def __init__(self, key: tuple[str, ...], message: str):
        super().__init__(message)
        self.key = key


def declared(target) -> tuple[dict, dict]:
    """(memories, links): name -> (spec, dotted key of its table), shorthand ones first."""
    memories: dict[str, tuple[MemorySpec, tuple]] = {}
    links: dict[str, tuple[LinkSpec, tuple]] = {}
    if target.memory is not None:
        m = target.memory
        memories["memory"] = (MemorySpec(m.bytes, bandwidth_gbs=m.bandwidth_gbs,
                                         latency_ns=m.latency_ns, achievable=m.achievable,
                                         achievable_source=m.achievable_source), ("memory",))
    if target.l2 is not None:
        if target.memory is None:
            raise MachineError(("l2",), "[l2] is the cache in front of [memory], and there "
                                        "is no [memory] table")
        c = target.l2
        memories["l2"] = (MemorySpec(c.bytes, bytes_per_cycle=c.bytes_per_cycle,
                                     latency_cycles=c.latency_cycles, caches=("memory",),
                                     keeps=c.keeps, label="L2"), ("l2",))
    if target.die_link is not None:
        d = target.die_link
        links["link"] = (LinkSpec(("die", "die"), d.bandwidth_gbs, latency_ns=d.latency_ns,
                                  label="die link"), ("die_link",))
    if target.system is not None:
        for name, spec, scope, table in (("nvlink", target.system.intra_node, "node", "intra_node"),
                                         ("network", target.system.inter_node, "network",
                                          "inter_node")):
            if spec is not None:
                links[name] = (LinkSpec(("device", scope), spec.bandwidth_gbs,
                                        latency_us=spec.latency_us, achievable=spec.achievable,
                                        achievable_source=spec.achievable_source),
                               ("system", table))
    for name, spec in target.memories.items():
        if name in memories:
            raise MachineError(("memories", name), f"the name '{name}' is taken by the "
                                                   f"[{memories[name][1][0]}] table")
        memories[name] = (spec, ("memories", name))
    for name, spec in target.links.items():
        if name in links:
            raise MachineError(("links", name), f"the name '{name}' is taken by the "
                                                f"[{'.'.join(links[name][1])}] table")
        links[name] = (spec, ("links", name))
    return memories, links


def build_machine(target) -> Machine:
    memories, links = declared(target)
    hz, dies = target.clock_hz, target.chip.dies
    _check_memories(memories, links, dies)
    units = []
    for name, (spec, where) in memories.items():
        _check_achievable(spec, where)
        units += _memory_units(name, spec, dies, hz, target.sustained)
    on_chip, device, scopes = [], [], []
    for name, (spec, where) in links.items():
        _check_link(name, spec, where, target, dies)
        if spec.between[0] == "device":
            device.append(_link_unit(name, spec, "device", spec.between[1], hz, dies,
                                     target.sustained))
            scopes.append((spec.between[1], name))
        else:
            on_chip += _link_units(name, spec, dies, hz, target.sustained)
    default = next(n for n, (spec, _) in memories.items() if not spec.caches)
    machine = Machine(target.name, dies, tuple(units), tuple(on_chip), tuple(device), default,
                      tuple(scopes))
    _check_reach(machine, memories, links, dies)
    return machine


# -- instances --


def _memory_units(name: str, spec: MemorySpec, dies: int, hz: float,
                  sustained: bool) -> list[MemoryUnit]:
    """`sustained`: the run uses achievable bandwidths (else the datasheet's)."""
    achievable = spec.achievable if sustained else 1.0
    rate = achievable * (spec.bytes_per_cycle if spec.bytes_per_cycle is not None else
                         spec.bandwidth_gbs * 1e9 / hz)
    latency = spec.latency_cycles if spec.latency_cycles is not None else \
        (spec.latency_ns or 0.0) * 1e-9 * hz
    label = spec.label or name
    if spec.at == "die":
        where = [(f"{name}.d{d}", f"die {d} {label}" if dies > 1 else label, f"d{d}", d)
                 for d in range(dies)]
    else:
        where = [(name, label, spec.at, None)]
    out = []
    for uid, text, place, die in where:
        requests = None
        if spec.requests_per_ns is not None:
            requests = RequestUnit(f"{uid} requests", f"{name} requests", f"{text} requests",
                                   die, spec.requests_per_ns / (hz * 1e-9))
        out.append(MemoryUnit(uid, name, text, place, die, spec.bytes, rate, latency,
                              spec.caches, spec.write == "through", spec.keeps == "lru",
                              spec.access_bytes, requests, achievable,
                              spec.achievable_source if achievable < 1 else ""))
    return out


def _link_units(name: str, spec: LinkSpec, dies: int, hz: float,
                sustained: bool) -> list[LinkUnit]:
    a, b = spec.between
    ends_a = [f"d{d}" for d in range(dies)] if a == "die" else [a]
    ends_b = [f"d{d}" for d in range(dies)] if b == "die" else [b]
    pairs = []
    for x in ends_a:
        for y in ends_b:
            if x != y and (x, y) not in pairs:
                pairs += [(x, y)] if a == b == "die" else [(x, y), (y, x)]
    return [_link_unit(name, spec, x, y, hz, dies, sustained) for x, y in pairs]


def _link_unit(name: str, spec: LinkSpec, src: str, dst: str, hz: float, dies: int,
               sustained: bool) -> LinkUnit:
    achievable = spec.achievable if sustained else 1.0
    rate = spec.bandwidth_gbs * achievable * 1e9 / hz
    latency = (spec.latency_ns * 1e-9 if spec.latency_ns is not None
               else spec.latency_us * 1e-6) * hz
    converts = tuple(tuple(c.split(">")) for c in spec.converts)
    label = spec.label or name
    source = spec.achievable_source if achievable < 1 else ""
    if src == "device":
        return LinkUnit(name, name, label, src, dst, rate, latency, converts=converts,
                        achievable=achievable, source=source)
    die = lambda p: int(p[1:]) if _DIE_PLACE.fullmatch(p) else None
    if die(src) is not None and die(dst) is not None:
        text = f"{label} {die(src)}\u2192{die(dst)}"
    else:
        text = f"{label} {_place_label(src, dies)}\u2192{_place_label(dst, dies)}"
    return LinkUnit(f"{name}.{src}>{dst}", name, text, src, dst, rate, latency, die(src),
                    _place_label(dst, dies), converts, achievable, source)


def _place_label(place: str, dies: int) -> str:
    if _DIE_PLACE.fullmatch(place):
        return f"die {place[1:]}" if dies > 1 else "chip"
    return place


# -- rules --


def _check_memories(memories: dict, links: dict, dies: int) -> None:
    if not any(not spec.caches for spec, _ in memories.values()):
        raise MachineError(("memories",), "no memory to keep tensors in: declare [memory] "
                                          "(each die's off-chip memory) or a [memories.NAME] "
                                          "that is not a cache")
    places = {p for spec, _ in links.values() for p in spec.between}
    for name, (spec, where) in memories.items():
        for key, a, b in (("bandwidth_gbs", spec.bandwidth_gbs, spec.bytes_per_cycle),
                          ("latency_ns", spec.latency_ns, spec.latency_cycles)):
            if (a is None) == (b is None):
                other = "bytes_per_cycle" if key == "bandwidth_gbs" else "latency_cycles"
                raise MachineError(where, f"give exactly one of {key} and {other}")
        for cached in spec.caches:
            target = memories.get(cached)
            if target is None or target[0].caches:
                raise MachineError(where + ("caches",), f"'{cached}' is not a memory declared "
                                   f"here (a cache stands in front of memories: "
                                   f"{', '.join(n for n, (s, _) in memories.items() if not s.caches)})")
        if spec.at != "die":
            _check_place(spec.at, where + ("at",), dies)
            if spec.at not in places and not _DIE_PLACE.fullmatch(spec.at):
                raise MachineError(where + ("at",), f"no link reaches place '{spec.at}': "
                                   "join it to the dies with a [links.NAME] table")


def _check_achievable(spec, where: tuple) -> None:
    if spec.achievable < 1 and not spec.achievable_source.strip():
        raise MachineError(where + ("achievable",), "an achievable fraction below 1 needs its "
                                                    "source (achievable_source): the public "
                                                    "measurement it comes from")


def _check_place(place: str, where: tuple, dies: int) -> None:
    if place in _RESERVED or not _PLACE.fullmatch(place):
        raise MachineError(where, f"'{place}' is not a place name (a name such as cpu or "
                                  f"pool; 'die' means each die)")
    if _DIE_PLACE.fullmatch(place) and int(place[1:]) >= dies:
        raise MachineError(where, f"'{place}' names a die, and the chip has {dies}")


def _check_link(name: str, spec: LinkSpec, where: tuple, target, dies: int) -> None:
    a, b = spec.between
    if (spec.latency_ns is None) == (spec.latency_us is None):
        raise MachineError(where, "give exactly one of latency_ns and latency_us")
    _check_achievable(spec, where)
    for conv in spec.converts:
        parts = conv.split(">")
        if len(parts) != 2 or not all(p in DTYPES for p in parts):
            raise MachineError(where + ("converts",), f"expected FROM>TO dtypes (e.g. "
                                                      f"bf16>fp8_e4m3), got '{conv}'")
    if "device" in (a, b):
        if a != "device" or b not in SCOPES:
            raise MachineError(where + ("between",), "a device link is [\"device\", \"node\"] "
                                                     "or [\"device\", \"network\"]")
        if target.system is None:
            raise MachineError(where + ("between",), "a device link needs a [system] table "
                                                     "(devices_per_node)")
        return
    if a == b == "die" and dies < 2:
        raise MachineError(where + ("between",), "a link between dies needs a chip with "
                                                 "several dies")
    for end in (a, b):
        if end != "die":
            _check_place(end, where + ("between",), dies)
    if a == b != "die":
        raise MachineError(where + ("between",), "a link joins two different places")


def _check_reach(machine: Machine, memories: dict, links: dict, dies: int) -> None:
    """Every die reaches every memory; one device link per scope."""
    seen = {}
    for name, (spec, where) in links.items():
        if spec.between[0] == "device":
            scope = spec.between[1]
            if scope in seen:
                raise MachineError(where + ("between",), f"a second link to the {scope}: "
                                                         f"[{'.'.join(seen[scope])}] is one")
            seen[scope] = where
    for unit in machine.memories:
        for d in range(dies):
            try:
                machine.route(d, unit)
            except ValueError:
                name = unit.family
                if dies > 1 and not any(s.between == ("die", "die") for s, _ in links.values()):
                    raise MachineError(("chip", "dies"), f"a [die_link] table (die-to-die "
                                       f"bandwidth and latency) is required for {dies} dies") \
                        from None
                raise MachineError(memories[name][1], f"die {d}'s cores cannot reach "
                                   f"{unit.label}: no links join d{d} to {unit.place}") from None
