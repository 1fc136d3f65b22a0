"""Link traffic beside compute: what a deployment's collectives take of the memory the cores
use while both run.

A link's kernel reads what it sends (its simulated memory bytes: the misses of its chunks in
L2) and, the collectives being symmetric (each device receives as much as it sends), has as
many bytes written into its memory by the peers: its link bytes, spread over the memory's
instances. It moves them at its wire's pace, far below the memory's, so the memory serves it
at that pace and the cores share what is left: a compute launch that overlaps link launches
is simulated with the memory's capacity less the links' mean rate over its window
(runtime/kernel_sim.py `background`, which the bandwidth sharing of runtime/bandwidth.py then
divides among the kernel's own transfers).

The window is the launch's own, as simulated alone; its slowed time is not fed back into a
second pass (the links' rate over a slightly longer window differs little). Only link
launches scheduled before it (earlier in launch order) are seen: the schedules the passes
build list a transfer before the compute it runs beside. A link's own time is not slowed by
the cores' traffic (its wire, not the memory, sets its pace).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from isa.target_schema import Target

DIGITS = 4     # a rate's significant digits: equal layers' launches see the same background


@dataclass
class LinkTraffic:
    target: Target
    spans: list[tuple[float, float, dict[str, float]]] = field(default_factory=list)

    def add(self, start: float, end: float, resource_bytes: dict[str, float]) -> None:
        """A link launch's span and the bytes it moves through each memory instance."""
        machine = self.target.machine
        memories = [m.id for m in machine.families[machine.default_memory]]
        link_ids = {link.id for link in machine.device_links}
        received = sum(b for r, b in resource_bytes.items() if r in link_ids)
        moved = {m: resource_bytes.get(m, 0.0) + received / len(memories) for m in memories}
        if end > start and any(moved.values()):
            self.spans.append((start, end, moved))

    def background(self, start: float, end: float) -> dict[str, float]:
        """Mean bytes per cycle the links move through each memory instance over
        [start, end), rounded to DIGITS significant digits; {} when none overlap. Asked for
        windows in the order of their starts."""
        if end <= start:
            return {}
        # compute launches start in order: spans over before this one starts matter no more
        self.spans = [span for span in self.spans if span[1] > start]
        out: dict[str, float] = {}
        for s, e, moved in self.spans:
            overlap = min(e, end) - max(s, start)
            if overlap <= 0:
                continue
            for memory, nbytes in moved.items():
                out[memory] = out.get(memory, 0.0) + nbytes * overlap / (e - s)
        return {m: float(f"{b / (end - start):.{DIGITS}g}") for m, b in sorted(out.items()) if b}
