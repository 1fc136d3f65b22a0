"""What the caches hold from one kernel to the next.

A cache the target declares to keep data (`keeps = "lru"`, the default) keeps what kernels
read and wrote, up to its capacity (all its instances together: each die's L2 holds its own
die's share), and drops the least recently used first. The next kernel that reads a tensor
finds that share of its bytes in the cache: its first touch of them hits (runtime/kernel_sim.py).

The model is per tensor, in launch order: after each launch, what it read (its largest
operand first: a streamed weight is read once early in each tile's sweep, small operands are
reread throughout) and then what it wrote become the most recently used, each with the
distinct bytes the launch touched (no less than was already held), and tensors are dropped
from the least recently used end until the capacity holds; the last one dropped keeps what
still fits. A tensor partly held is taken as evenly held: a read of any part of it finds that
share. Launches on a link's stream count in launch order too.
"""
from __future__ import annotations

from collections import OrderedDict

from isa.program import TensorDecl
from isa.target_schema import Target
from runtime.streams import home_memory


class Residency:
    def __init__(self, target: Target):
        self.machine = target.machine
        self.capacity: dict[str, int] = {}                # cache family -> bytes, all instances
        for unit in self.machine.memories:
            if unit.is_cache and unit.keeps:
                self.capacity[unit.family] = self.capacity.get(unit.family, 0) + unit.bytes
        self.held: dict[str, OrderedDict[str, float]] = {f: OrderedDict() for f in self.capacity}
        self._family: dict[str, str | None] = {}          # tensor name -> _cache, once

    def _cache(self, decl: TensorDecl, base: TensorDecl | None) -> str | None:
        if decl.name not in self._family:
            cache = self.machine.reach(0, home_memory(decl, base)).cache
            self._family[decl.name] = cache.family if cache is not None \
                and cache.family in self.capacity else None
        return self._family[decl.name]

    def shares(self, params: dict[str, TensorDecl], tensors: dict[str, TensorDecl]
               ) -> dict[str, float]:
        """Per parameter, the share of its tensor's bytes the caches hold now."""
        out = {}
        for p, decl in params.items():
            base = tensors.get(decl.base) if decl.base else None
            family = self._cache(decl, base)
            root = base or decl
            held = self.held[family].get(root.name, 0.0) if family else 0.0
            if held > 0:
                out[p] = min(1.0, held / root.nbytes)
        return out

    def update(self, touched: dict[str, tuple[float, float]], params: dict[str, TensorDecl],
               tensors: dict[str, TensorDecl]) -> None:
        """After a launch: what it read, then what it wrote, become the most recent."""
        reads = sorted(((r, p) for p, (r, _) in touched.items() if r > 0), key=lambda rp: -rp[0])
        writes = [(w, p) for p, (_, w) in touched.items() if w > 0]
        for nbytes, p in reads + writes:
            decl = params[p]
            base = tensors.get(decl.base) if decl.base else None
            family = self._cache(decl, base)
            if family is None:
                continue
            root = base or decl
            held = self.held[family]
            before = held.pop(root.name, 0.0)
            held[root.name] = min(float(root.nbytes), max(before, nbytes))
        for family, held in self.held.items():
            excess = sum(held.values()) - self.capacity[family]
            while excess > 0 and held:
                name, nbytes = next(iter(held.items()))
                if nbytes <= excess:
                    held.pop(name)
                    excess -= nbytes
                else:
                    held[name] = nbytes - excess
                    excess = 0
