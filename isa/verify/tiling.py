"""How the boxes of one instruction lay over one dimension of a tensor.

A box dimension `e:+size` over the variables of `e` (each running 0 .. n-1) puts one interval
[e, e+size) per combination of their values. `lay` counts, for every element of the
dimension, how many of those intervals hold it, and reports the first stretch held by none
(a gap) or by more than one (an overlap). It is exact and costs little in the common case,
an affine `e` = c0 + sum(c_v * v) whose coefficients are a mixed radix of the size (`k*128`,
`(w*32+t)*4`); otherwise it enumerates the combinations, at most ENUMERATION_LIMIT of them,
and says so when there are more (the dimension is then not checked).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from isa.expr import Expr, compile_expr, variables
from isa.verify.ranges import affine

ENUMERATION_LIMIT = 1 << 16


@dataclass(frozen=True)
class Run:
    """A stretch [first, last] of a dimension's elements held `times` times."""
    first: int
    last: int
    times: int


@dataclass(frozen=True)
class Layout:
    """The first gap and first overlap of a dimension's elements (None: there is none); `known`
    is False when there were too many boxes to count."""
    gap: Run | None = None
    overlap: Run | None = None
    known: bool = True


def lay(pieces: list[tuple[Expr, int, dict[str, int]]], extent: int) -> Layout:
    """How the boxes `(start, size, {var: count})` of one or more instructions cover
    0 .. extent-1."""
    if len(pieces) == 1:
        closed = _affine_layout(*pieces[0], extent)
        if closed is not None:
            return closed
    starts: list[tuple[int, int]] = []
    for start, size, counts in pieces:
        names = sorted(variables(start))
        combos = 1
        for v in names:
            combos *= counts[v]
        if combos + len(starts) > ENUMERATION_LIMIT:
            return Layout(known=False)
        f = compile_expr(start)
        for values in itertools.product(*(range(counts[v]) for v in names)):
            starts.append((f(dict(zip(names, values))), size))
    return _count(starts, extent)


def _affine_layout(start: Expr, size: int, counts: dict[str, int], extent: int):
    """The layout of an affine start whose terms nest like digits, without enumerating: with
    coefficients c_1 < c_2 < ... of variables counting n_1, n_2, ..., the starts are
    c0 + size * (0 .. N-1) exactly when c_1 = size and c_{i+1} = c_i * n_i."""
    form = affine(start)
    if form is None:
        return None
    c0, coefs = form
    if any(counts[v] > 1 and v not in coefs for v in variables(start)):
        return None                    # a variable that cancels out repeats every box
    terms = sorted((c, counts[v]) for v, c in coefs.items() if counts[v] > 1)
    step = size
    for c, n in terms:
        if c != step:
            return None
        step *= n
    tiles = step // size                       # the starts c0, c0+size, ..., one box each
    first, end = c0, c0 + tiles * size         # covered: [first, end)
    gap = None
    if first > 0:
        gap = Run(0, min(first, extent) - 1, 0)
    elif end < extent:
        gap = Run(max(end, 0), extent - 1, 0)
    return Layout(gap=gap)


def _count(starts: list[tuple[int, int]], extent: int) -> Layout:
    """Sweep the intervals [s, s+size) over 0 .. extent-1."""
    events: dict[int, int] = {}
    for s, size in starts:
        lo, hi = max(s, 0), min(s + size, extent)
        if lo < hi:
            events[lo] = events.get(lo, 0) + 1
            events[hi] = events.get(hi, 0) - 1
    events.setdefault(0, 0)
    events.setdefault(extent, 0)
    gap = overlap = None
    depth = 0
    points = sorted(events)
    for here, there in zip(points, points[1:]):
        depth += events[here]
        if here >= extent:
            break
        if depth == 0 and gap is None:
            gap = Run(here, there - 1, 0)
        if depth > 1 and overlap is None:
            overlap = Run(here, there - 1, depth)
    return Layout(gap, overlap)
