"""Happens-before between the instruction instances of one work item, from the ISA's rules.

The units of a core run concurrently; what orders two instances is (docs/isa.md, Execution):

- Program order on one unit. A unit issues its instructions in order and completes them in
  order. A compute instruction or a fence holds the unit until it completes, so everything
  after it on the unit starts after it completed; a transfer frees the unit once its bytes
  moved and completes later, so the next instruction may start before it completes.
- Tokens. An instruction starts only after taking one credit of each token it waits on; a
  token starts with its declared credit and gains one when an instruction signalling it
  completes. So when a unit has started w waits of token t, at least w - credit(t) signals of
  t have completed; when every signal of t comes from one unit, those are that unit's first
  w - credit(t) signalling instances, and everything before them on that unit, in order.

`Order.done_before(site, iterations)` applies these rules to a fixed point: for each unit, the
last unrolled position up to which every instance of the unit has completed before the given
instance starts. Every fact it derives holds in every execution that follows these rules,
so a pair it cannot order may really race. (The timing engine follows them except that it
gives each transfer the latency of its own path, so a short L2 hit may complete before a
longer miss issued earlier on the same unit: times shift slightly, docs/isa.md.) The queries are answered by nest.py's
position arithmetic, so the cost grows with the body's text and the number of units and
tokens, not with the loop counts.
"""
from __future__ import annotations

from isa.instructions import InstrDef
from isa.verify.nest import Nest, Site

NONE = -1


class Order:
    def __init__(self, nest: Nest, definitions: list[InstrDef]):
        self.nest = nest
        self.unit = [d.unit for d in definitions]
        self.units = sorted(set(self.unit))
        self.credit = dict(nest.kernel.tokens)
        self.blocking = {u: frozenset(s.index for s, d in zip(nest.sites, definitions)
                                      if d.unit == u and d.kind in ("compute", "fence"))
                         for u in self.units}
        self.waits: dict[str, list[tuple[str, frozenset[int]]]] = {u: [] for u in self.units}
        for token in self.credit:
            for u in self.units:
                sites = frozenset(s.index for s in nest.sites
                                  if self.unit[s.index] == u and token in s.ins.wait)
                if sites:
                    self.waits[u].append((token, sites))
        self.signals: dict[str, tuple[str, frozenset[int], int] | None] = {}
        for token in self.credit:
            sites = frozenset(s.index for s in nest.sites if token in s.ins.signal)
            units = {self.unit[i] for i in sites}
            # Signals from several units arrive in no fixed order: no instance is implied.
            self.signals[token] = ((units.pop(), sites, nest.count(sites))
                                   if len(units) == 1 else None)
        self._memo: dict[tuple[int, tuple[int, ...]], dict[str, int]] = {}

    def done_before(self, site: Site, iterations: tuple[int, ...]) -> dict[str, int]:
        """Per unit, the last unrolled position up to which all of the unit's instances have
        completed when the instance of `site` at `iterations` starts (NONE: none known)."""
        key = (site.index, iterations)
        if key not in self._memo:
            self._memo[key] = self._frontier(site, iterations)
        return self._memo[key]

    def _frontier(self, site: Site, iterations: tuple[int, ...]) -> dict[str, int]:
        nest, own = self.nest, self.unit[site.index]
        start = nest.position(site, iterations)
        done = {u: NONE for u in self.units}
        blocking = nest.count_before(self.blocking[own], start)
        if blocking:
            done[own] = nest.select(self.blocking[own], blocking)
        started = {u: done[u] for u in self.units}
        started[own] = start
        changed = True
        while changed:
            changed = False
            for u in self.units:
                reach = max(started[u], done[u])
                if reach < 0:
                    continue
                for token, sites in self.waits[u]:
                    waited = nest.count_before(sites, reach + 1)
                    needed = waited - self.credit[token]
                    source = self.signals[token]
                    if needed < 1 or source is None or needed > source[2]:
                        continue
                    v, signal_sites, _ = source
                    at = nest.select(signal_sites, needed)
                    if at > done[v]:
                        done[v] = at
                        changed = True
        return done

    def ordered(self, first: Site, first_at: tuple[int, ...], then: Site,
                then_at: tuple[int, ...]) -> bool:
        """Does the instance `first_at` of `first` complete before `then_at` of `then` starts
        (or share its unit, whose instructions touch buffers in program order)?"""
        if self.unit[first.index] == self.unit[then.index]:
            return True
        reached = self.done_before(then, then_at)[self.unit[first.index]]
        return reached >= self.nest.position(first, first_at)
