"""Where routed tokens land in an expert-parallel deployment, and how many rows move.

Every device runs the same program and the interpreter simulates one of them: the hottest,
because every device waits for it at each all-to-all. This module says how hot it is and
what its links carry, from

- the model's routing: E experts, top-k, and DeepSeek's group limit (the experts form G
  groups; a token's k experts come from its best g groups),
- the plan: N devices, P per node, R redundant expert copies placed by a balancing pass,
- the expert load: the share of all routed copies each expert receives (uniform, a Zipf law,
  or a histogram), and the tokens T each device routes per step.

Routing is dropless, as production dispatch kernels are: an expert receives every token routed
to it, whatever the functional layout's capacity.

Sending. A token goes once to each device it reaches, not once per routed copy (DeepEP's
dispatch sends a token to a rank once and expands it into the rank's experts there; the
combine reduces a token's results on a rank before sending them back). With `a2a=node` it
crosses to each node once and is forwarded inside the node over NVLink (DeepEP's normal
kernels). Which devices and nodes a token reaches follows from uniform routing within the
group limit (every choice of g groups alike, every k of their experts alike): a set S of
experts is missed with probability

    sum over group choices U (|U| = g):  C(g m - |S in U|, k) / C(g m, k)  / C(G, g)

(m = E / G experts per group). Under a skewed load a device's copies grow with its load and
its tokens in proportion (the share of its copies that are distinct tokens is taken from
uniform routing: an approximation).

The links of the hottest device carry, per all-to-all, the busier of the two directions: in
the dispatch it receives more than it sends, in the combine it sends more than it receives.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from compiler.errors import DscError

# Expert-parallel placement and traffic are computed expert by expert (a share, a slot and a
# group count each): a million experts (2^20, the largest published MoE designs) is the most
# that stays within the time and memory of one run.
MAX_PLACED_EXPERTS = 1 << 20


@dataclass(frozen=True)
class Routing:
    """The model's routing: `top_k` of `experts`, from the best `topk_groups` of `groups`."""
    experts: int
    top_k: int
    groups: int = 1
    topk_groups: int = 1

    def miss(self, per_group: tuple[int, ...]) -> float:
        """Probability that a token routes to none of a set of experts holding
        `per_group[i]` experts of group i (uniform routing within the group limit)."""
        m, g, k = self.experts // self.groups, self.topk_groups, self.top_k
        # ways[j][s]: choices of j groups among those seen so far holding s experts of the set
        ways = [[0] * (sum(per_group) + 1) for _ in range(g + 1)]
        ways[0][0] = 1
        for count in per_group:
            for j in range(g, 0, -1):
                for s in range(len(ways[j]) - 1, count - 1, -1):
                    ways[j][s] += ways[j - 1][s - count]
        pool = math.comb(g * m, k)
        missed = sum(n * math.comb(g * m - s, k) for s, n in enumerate(ways[g]) if n)
        return missed / (pool * math.comb(self.groups, g))

    def group_counts(self, experts) -> tuple[int, ...]:
        """How many of `experts` (distinct logical experts) each group holds."""
        m = self.experts // self.groups
        counts = [0] * self.groups
        for e in set(experts):
            counts[e // m] += 1
        return tuple(counts)

    def distinct_share(self, experts) -> float:
        """Tokens per routed copy reaching a set of experts under uniform routing: the
        probability a token reaches the set, over the copies it sends there (k |S| / E)."""
        distinct = set(experts)
        if not distinct:
            return 1.0
        hit = 1.0 - self.miss(self.group_counts(distinct))
        return min(1.0, hit * self.experts / (self.top_k * len(distinct)))


# -- the expert load ------------------------------------------------------------------------

def expert_shares(load: str, experts: int, base: Path | None = None) -> tuple[float, ...]:
    """The share of all routed copies each expert receives: `uniform`; `zipf:S` (the expert
    of index e has the (e+1)-th largest load, proportional to (e+1)^-S); or the path of a
    histogram file (one non-negative count per expert, whitespace separated, '#' comments)."""
    if load == "uniform":
        return tuple(1.0 / experts for _ in range(experts))
    if load.startswith("zipf:"):
        try:
            s = float(load[5:])
        except ValueError:
            s = math.nan
        if not math.isfinite(s) or s < 0:
            raise DscError(f"load {load}: the Zipf exponent must be a number >= 0",
                           expected="e.g. load=zipf:0.8")
        weights = [(e + 1) ** -s for e in range(experts)]
    else:
        weights = _histogram(load, experts, base)
    total = sum(weights)
    return tuple(w / total for w in weights)


def _histogram(path: str, experts: int, base: Path | None) -> list[float]:
    where = Path(path) if base is None or Path(path).is_absolute() else base / path
    try:
        text = where.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DscError(f"load {path}: cannot read the expert histogram "
                       f"({getattr(exc, 'strerror', None) or 'not UTF-8 text'})",
                       expected="load=uniform, load=zipf:S or load=FILE (one count per "
                                "expert)") from None
    words = [w for line in text.splitlines() for w in line.split("#")[0].split()]
    try:
        counts = [float(w) for w in words]
    except ValueError:
        counts = []
    if len(counts) != experts or not all(math.isfinite(c) and c >= 0 for c in counts) \
            or not sum(counts) > 0:
        raise DscError(f"load {path}: expected {experts} non-negative counts (one per routed "
                       f"expert, not all zero), found {len(words)} entries",
                       expected="one count per expert, whitespace separated")
    return counts


# -- placing experts on devices -------------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    """Which logical expert each slot of each device holds."""
    devices: tuple[tuple[int, ...], ...]
    replicas: tuple[int, ...]               # copies of each logical expert

    @property
    def slots(self) -> int:
        return max(len(d) for d in self.devices)

    def loads(self, shares: tuple[float, ...]) -> tuple[float, ...]:
        """Each device's share of all routed copies (a copy goes to one of its expert's
        replicas, all alike)."""
        return tuple(sum(shares[e] / self.replicas[e] for e in d) for d in self.devices)


def contiguous(experts: int, devices: int) -> Placement:
    """Consecutive experts, as evenly as they divide: the last E mod N devices hold
    ceil(E / N), the others floor(E / N) (256 experts on 144 devices: 32 hold one, 112 two;
    none is left without an expert while another holds two). The larger share goes last so
    that, when the last node is partly filled, its devices (the most peers across the
    network) are also the most loaded: the device simulated is the slowest on both counts."""
    base, extra = divmod(experts, devices)
    light = devices - extra                       # devices holding floor(E / N)
    starts = [d * base + max(0, d - light) for d in range(devices + 1)]
    return Placement(tuple(tuple(range(starts[d], starts[d + 1])) for d in range(devices)),
                     (1,) * experts)


def balanced(shares: tuple[float, ...], devices: int, redundant: int) -> Placement:
    """DeepSeek's expert-parallel load balancer (EPLB), its global policy: each redundant copy
    goes to the expert with the most load per copy; then the copies, heaviest first, each to
    the least-loaded device with a free slot (ceil((E + R) / N) slots per device)."""
    experts = len(shares)
    replicas = [1] * experts
    for _ in range(redundant):
        hottest = max(range(experts), key=lambda e: (shares[e] / replicas[e], -e))
        replicas[hottest] += 1
    slots = math.ceil((experts + redundant) / devices)
    copies = sorted(((shares[e] / replicas[e], e) for e in range(experts)
                     for _ in range(replicas[e])), key=lambda c: (-c[0], c[1]))
    held: list[list[int]] = [[] for _ in range(devices)]
    load = [0.0] * devices
    for share, e in copies:
        d = min((d for d in range(devices) if len(held[d]) < slots),
                key=lambda d: (load[d], d))
        held[d].append(e)
        load[d] += share
    return Placement(tuple(tuple(sorted(h)) for h in held), tuple(replicas))


# -- the hottest device's traffic -----------------------------------------------------------

@dataclass(frozen=True)
class Traffic:
    """What the hottest device of an expert-parallel all-to-all receives and sends.

    `rows_per_slot`: rows each of its expert slots computes (the copies it receives, spread
    over its slots). `wire`: rows each link carries per all-to-all, the busier direction, by
    scope ("local" for its own tokens, "node", "network"). Loads are relative to the mean
    device (1.0 = perfectly balanced)."""
    slots: int
    rows_per_slot: int
    wire: tuple[tuple[str, float], ...]
    hottest: float
    coldest: float
    hottest_before: float
    coldest_before: float

    def summary(self) -> dict[str, float]:
        """What reports show: loads relative to the mean device, before and after placing."""
        return {"slots": self.slots, "rows_per_slot": self.rows_per_slot,
                "hottest": round(self.hottest, 4), "coldest": round(self.coldest, 4),
                "hottest_in_order": round(self.hottest_before, 4),
                "coldest_in_order": round(self.coldest_before, 4)}


@dataclass(frozen=True)
class ExpertTraffic:
    routing: Routing
    devices: int
    per_node: int
    tokens: int                              # tokens each device routes per step
    shares: tuple[float, ...]
    redundant: int = 0
    by_node: bool = False                    # a2a=node: once per node, forwarded over NVLink

    @cached_property
    def placement(self) -> Placement:
        """Experts in order, unless the plan asks for redundant copies: then the balancer
        places them all."""
        if self.redundant == 0:
            return contiguous(self.routing.experts, self.devices)
        return balanced(self.shares, self.devices, self.redundant)

    def _node_of(self, device: int) -> range:
        first = device // self.per_node * self.per_node
        return range(first, min(self.devices, first + self.per_node))

    def _hottest(self, loads) -> int:
        """The most loaded device; among equals, one with the fewest node-mates (the most
        peers across the network)."""
        return max(range(self.devices), key=lambda d: (round(loads[d], 12),
                                                        -len(self._node_of(d)), -d))

    def _tokens_per_copy(self, devices) -> float:
        experts = [e for d in devices for e in self.placement.devices[d]]
        return self.routing.distinct_share(experts)

    def _reach(self, devices, loads) -> float:
        """Tokens a device's T tokens send to a set of devices, each token once."""
        copies = self.routing.top_k * sum(loads[d] for d in devices)
        return self.tokens * copies * self._tokens_per_copy(devices)

    def traffic(self) -> Traffic:
        place, k, n, t = self.placement, self.routing.top_k, self.devices, self.tokens
        loads = place.loads(self.shares)
        hot = self._hottest(loads)
        node = self._node_of(hot)
        mates = [d for d in node if d != hot]
        others = [d for d in range(n) if d != hot]
        copies_in = n * t * k * loads[hot]
        into_hot = self._reach([hot], loads)                 # from each peer's T tokens
        mean_peer = sum(self._reach([d], loads) for d in others) / max(1, len(others))
        remote = n - len(node)
        wire = {"local": into_hot}
        if self.by_node and remote:
            nodes = math.ceil(n / self.per_node)
            firsts = range(0, n, self.per_node)
            own = node.start
            out_net = sum(self._reach(self._node_of(f), loads) for f in firsts if f != own)
            in_net = (nodes - 1) * self._reach(node, loads)
            wire["network"] = max(out_net, in_net)
            # its own tokens and those arriving for its node, forwarded to each mate reached;
            # and, coming in, the mates' own and forwarded tokens for it
            wire["node"] = nodes * max(len(mates) * mean_peer if mates else 0.0,
                                       len(mates) * into_hot)
        else:
            wire["node"] = len(mates) * max(mean_peer, into_hot)
            wire["network"] = remote * max(mean_peer, into_hot)
        mean = 1.0 / n
        before = contiguous(self.routing.experts, n).loads(self.shares)
        return Traffic(place.slots, max(1, math.ceil(copies_in / place.slots - 1e-9)),
                       tuple((s, round(wire[s], 3)) for s in ("local", "node", "network")),
                       loads[hot] / mean, min(loads) / mean, max(before) / mean,
                       min(before) / mean)
