"""A kernel body as the verifier sees it: its instructions (sites) in program order, the loops
around each, and positions in the unrolled order computed without unrolling.

A work item executes the body with every loop unrolled; that sequence can be long (a K loop of
thousands of steps), so it is never built. Positions in it are integers computed from the
loop counts, and the questions the ordering analysis asks of it -- how many instances of some
set of instructions come before a position, where the m-th of them is -- are answered by
walking the loop tree, in time proportional to the body's text, not its execution.
"""
from __future__ import annotations

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
    __slots__ = ("items", "size")

    def __init__(self, items: list):
        self.items = items
        self.size = sum(_size_of(item) for item in items)


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
            for item in node.items[:number]:
                pos += _size_of(item)
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
        node = node or self.tree
        key = (id(node), sites)
        if key not in self._counts:
            self._counts[key] = sum(self._count_of(item, sites) for item in node.items)
        return self._counts[key]

    def _count_of(self, item, sites) -> int:
        return int(item in sites) if isinstance(item, int) else item[0] * self.count(sites, item[1])

    def count_before(self, sites: frozenset[int], pos: int) -> int:
        """Instances of `sites` at unrolled positions below `pos`."""
        total, node = 0, self.tree
        while True:
            for item in node.items:
                if pos <= 0:
                    return total
                size = _size_of(item)
                if pos >= size:
                    total += self._count_of(item, sites)
                    pos -= size
                    continue
                count, body = item                 # a loop entered part way
                done, pos = divmod(pos, body.size)
                total += done * self.count(sites, body)
                node = body
                break
            else:
                return total

    def select(self, sites: frozenset[int], m: int) -> int:
        """The position of the m-th (from 1) instance of `sites` in the unrolled order."""
        base, node = 0, self.tree
        while True:
            for item in node.items:
                c = self._count_of(item, sites)
                if m > c:
                    m -= c
                    base += _size_of(item)
                    continue
                if isinstance(item, int):
                    return base
                count, body = item
                per = self.count(sites, body)
                done = (m - 1) // per
                base += done * body.size
                m -= done * per
                node = body
                break
            else:
                raise ValueError("fewer instances than asked for")
