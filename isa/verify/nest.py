"""A kernel body as the verifier sees it: its instructions (sites) in program order, the loops
around each, and positions in the unrolled order computed without unrolling.

A work item executes the body with every loop unrolled; that sequence can be long (a K loop of
thousands of steps), so it is never built. Positions in it are integers computed from the
loop counts, and the questions the ordering analysis asks of it -- how many instances of some
set of instructions come before a position, where the m-th of them is -- are answered by
walking the loop tree, in time proportional to the body's text, not its execution.
"""
from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from isa.program import Instr, Kernel, Loop


@dataclass(frozen=True)
class Site:
    """One instruction of a kernel body: its index in program order (as `walk` lists them) and
    the loops around it, outermost first, as (variable, count)."""
    index: int
    ins: Instr
    loops: tuple[tuple[str, int], ...]
    path: tuple[int, ...]            # the statement index at each nesting level

    @property
    def instances(self) -> int:
        n = 1
        for _, count in self.loops:
            n *= count
        return n


class _Body:
    """A statement list: site indices, and (count, _Body) for loops; `size` is the number of
    instances one pass over it executes."""
    __slots__ = ("items", "size", "starts")

    def __init__(self, items: list):
        self.items = items
        self.starts = list(itertools.accumulate((_size_of(item) for item in items), initial=0))
        self.size = self.starts[-1]              # starts[i]: instances before item i


def _size_of(item) -> int:
    return 1 if isinstance(item, int) else item[0] * item[1].size


class Nest:
    """The sites of a kernel and arithmetic on positions in its unrolled order."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.sites: list[Site] = []
        self.tree = self._build(kernel.body, (), ())
        self.grid = dict(kernel.grid)
        self._counts: dict[tuple[int, frozenset], int] = {}

    def _build(self, body, loops, path) -> _Body:
        items = []
        for number, stmt in enumerate(body):
            if isinstance(stmt, Loop):
                items.append((stmt.count,
                              self._build(stmt.body, loops + ((stmt.var, stmt.count),),
                                          path + (number,))))
            else:
                items.append(len(self.sites))
                self.sites.append(Site(len(self.sites), stmt, loops, path + (number,)))
        return _Body(items)

    @property
    def length(self) -> int:
        """Instructions one work item executes."""
        return self.tree.size

    def ranges(self, site: Site) -> dict[str, tuple[int, int]]:
        """The interval of every variable visible at a site: grid and enclosing loops."""
        out = {var: (0, size - 1) for var, size in self.grid.items()}
        out.update({var: (0, count - 1) for var, count in site.loops})
        return out

    def position(self, site: Site, iterations: tuple[int, ...]) -> int:
        """The index in the unrolled order of the site's instance at `iterations` (one value
        per enclosing loop)."""
        pos, node = 0, self.tree
        for depth, number in enumerate(site.path):
            pos += node.starts[number]
            if depth == len(site.loops):
                return pos
            count, body = node.items[number]
            pos += iterations[depth] * body.size
            node = body
        raise AssertionError("a site's path ends at the site")

    def rank(self, site: Site, r: int) -> tuple[int, ...]:
        """The iterations of the site's r-th instance (from 0)."""
        out = []
        for _, count in reversed(site.loops):
            r, i = divmod(r, count)
            out.append(i)
        return tuple(reversed(out))

    def count(self, sites: frozenset[int], node: _Body | None = None) -> int:
        """Instances of `sites` in one pass over `node` (default: the whole body)."""
        return self._prefix(sites, node or self.tree)[-1]

    def _prefix(self, sites: frozenset[int], node: _Body) -> list[int]:
        """prefix[i]: instances of `sites` in the items of `node` before item i."""
        key = (id(node), sites)
        if key not in self._counts:
            self._counts[key] = list(itertools.accumulate(
                (int(item in sites) if isinstance(item, int) else item[0] * self.count(sites, item[1])
                 for item in node.items), initial=0))
        return self._counts[key]

    def count_before(self, sites: frozenset[int], pos: int) -> int:
        """Instances of `sites` at unrolled positions below `pos`."""
        total, node = 0, self.tree
        while 0 < pos < node.size:
            i = bisect_right(node.starts, pos) - 1          # the item holding position pos
            total += self._prefix(sites, node)[i]
            pos -= node.starts[i]
            item = node.items[i]
            if isinstance(item, int) or pos == 0:
                return total
            body = item[1]                                  # a loop entered part way
            done, pos = divmod(pos, body.size)
            total += done * self.count(sites, body)
            node = body
        return total + (self.count(sites, node) if pos >= node.size else 0)

    def select(self, sites: frozenset[int], m: int) -> int:
        """The position of the m-th (from 1) instance of `sites` in the unrolled order."""
        base, node = 0, self.tree
        if m > self.count(sites):
            raise ValueError("fewer instances than asked for")
        while True:
            prefix = self._prefix(sites, node)
            i = bisect_left(prefix, m) - 1                  # the item holding the m-th
            m -= prefix[i]
            base += node.starts[i]
            item = node.items[i]
            if isinstance(item, int):
                return base
            body = item[1]
            per = self.count(sites, body)
            done = (m - 1) // per
            base += done * body.size
            m -= done * per
            node = body
