"""Persistent kernels: one worker per core walks the work items in grid order.

Worker w takes items w, w + P, w + 2P, ... (P workers, one per core), so its k-th item belongs
to the k-th wave of the lock-step model (kernel_sim.py), and the last partial wave is the
workers that have one item more. What persistence changes is the hand-over between a worker's
consecutive items: the next item's loads and main loop start as soon as the units and tokens
allow, while the previous item's epilogue drains its other accumulator. That overlap is
measured, not assumed: the wave that occurs most often is simulated once with every core
running two of its items back to back, and

    overlap = 2 x (one item's wave) - (two items back to back)

is what each hand-over saves. The kernel takes the lock-step waves' sum minus one overlap
per hand-over on the longest worker (waves - 1 of them).
"""
from __future__ import annotations

from runtime import paths
from runtime.engine import Engine, Group


def overlap_per_handover(comp, streams, fractions, target, tokens, capacity,
                         single: float) -> float:
    """Cycles one hand-over between consecutive items of a worker saves, measured on the
    wave composition `comp` (((class, die), count), ...) whose one-item time is `single`."""
    groups = [Group(f"class{cls}.d{die}.x2", count,
                    paths.ops_for(streams[cls] + streams[cls], fractions, target, die))
              for (cls, die), count in comp]
    double = Engine(groups, tokens, capacity, False).run().cycles
    return max(0.0, 2 * single - double)
