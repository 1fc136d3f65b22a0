"""Sharing bandwidth among concurrent transfers: weighted max-min fairness.

Each active transfer (a flow) moves bytes at one rate. It loads each resource on its path with
`coefficient x rate` (e.g. a load whose bytes are 30% L2 misses puts 1.0 x rate on L2 and
0.3 x rate on off-chip memory), and its own port caps its rate. A flow stands for `weight`
identical transfers (the same instruction on identical cores), each at that rate.

Progressive filling: raise the rate of every unfrozen flow together until a resource saturates
or a flow reaches its cap; freeze those flows; repeat. The result is the unique max-min fair
allocation, recomputed whenever a transfer starts or finishes.
"""
from __future__ import annotations

from dataclasses import dataclass

EPS = 1e-12


@dataclass
class Flow:
    weight: int
    cap: float                                  # bytes per cycle one transfer can reach alone
    path: tuple[tuple[str, float], ...]         # (resource, coefficient)
    remaining: float                            # bytes still to move
    rate: float = 0.0
    bottleneck: str = ""                        # what limited the rate at the last recompute


def share(flows: list[Flow], capacity: dict[str, float]) -> None:
    """Set each flow's `rate` and `bottleneck` by weighted max-min fairness."""
    spare = dict(capacity)
    level = 0.0
    active = list(flows)
    for f in flows:
        f.rate, f.bottleneck = 0.0, ""
    while active:
        demand: dict[str, float] = {}
        for f in active:
            for resource, coef in f.path:
                demand[resource] = demand.get(resource, 0.0) + f.weight * coef
        step, limiter = min(((f.cap - level, "port") for f in active), key=lambda t: t[0])
        for resource, d in demand.items():
            if d > EPS and spare[resource] / d < step:
                step, limiter = spare[resource] / d, resource
        step = max(step, 0.0)
        level += step
        for resource, d in demand.items():
            spare[resource] -= step * d
        saturated = {r for r, d in demand.items() if d > EPS and spare[r] <= EPS * max(1.0, capacity[r])}
        still = []
        for f in active:
            hit = f.cap - level <= EPS * max(1.0, f.cap)
            blocked = [r for r, c in f.path if r in saturated and c > 0]
            if hit or blocked:
                f.rate = level
                f.bottleneck = "port" if hit and not blocked else blocked[0]
            else:
                still.append(f)
        if len(still) == len(active):       # numerical corner: nothing froze; stop here
            for f in still:
                f.rate, f.bottleneck = level, limiter
            break
        active = still
