"""Persistent kernels: one worker per core walks the work items in grid order.

Worker w takes items w, w + P, w + 2P, ... (P workers, one per core), so its k-th item belongs
to the k-th wave of the lock-step model (kernel_sim.py), and the last partial wave is the
workers that have one item more. What persistence changes is the hand-over between a worker's
consecutive items: the next item's loads and main loop start as soon as the units and tokens
allow, while the previous item's epilogue drains its other accumulator.

The hand-over is measured, not assumed: the wave that occurs most often is simulated once
more with every core running its items back to back, two and three of them (R2, R3; R1 is
one item's wave), and a worker of W items is taken as

    W <= 3:  its W items simulated back to back (R_W)
    W > 3:   R2 or R3, whichever has W's parity, + one (R3 - R1) per further two items

A pair of items alone would not do. Both items of a pair start on the kernel's initial
credit of free buffer slots, so the second one's loads can run wholly under the first one's
latency; further on, an item finds the slots held by the item before it. And with two
accumulators item k + 2 waits for item k's, so a worker's items may alternate between two
durations. R3 - R1 is the second and third items' cost, one of each phase, after the first
hand-over has spent the initial credit.
"""
from __future__ import annotations

from runtime import paths
from runtime.engine import Engine, Group


def worker_cycles(comp, streams, fractions, target, tokens, capacity, single: float,
                  items: int) -> float:
    """Cycles a worker takes for `items` items of the wave composition `comp` (((class, die),
    count), ...), every core of the wave running as many, when one item's wave takes
    `single`."""
    if items <= 1:
        return single
    if items == 2:
        return _back_to_back(comp, streams, fractions, target, tokens, capacity, 2)
    three = _back_to_back(comp, streams, fractions, target, tokens, capacity, 3)
    start = 3 if items % 2 else 2
    first = three if start == 3 else \
        _back_to_back(comp, streams, fractions, target, tokens, capacity, 2)
    return first + (items - start) // 2 * (three - single)


def _back_to_back(comp, streams, fractions, target, tokens, capacity, items: int) -> float:
    groups = [Group(f"class{cls}.d{die}.x{items}", count,
                    paths.ops_for(streams[cls] * items, fractions, target, die))
              for (cls, die), count in comp]
    return Engine(groups, tokens, capacity, False).run().cycles
