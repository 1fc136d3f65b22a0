"""Where a tensor's bytes live on a multi-die chip, and which die holds a given box.

A tensor's `home` is None (interleaved over every die's memory: UMA), "replicate" (a copy on
each die), or "split:A" (equal parts of base axis A on successive dies). Views inherit their
base's home; a box of a view is placed by mapping its first element back to base coordinates.
"""
from __future__ import annotations

import math

from isa.program import TensorDecl, ViewStep
from isa.views import apply_step


def _step_shapes(base_shape, steps) -> list[tuple[int, ...]]:
    shapes = [tuple(base_shape)]
    for step in steps:
        shapes.append(apply_step(shapes[-1], step))
    return shapes


def to_base(coords, base_shape, steps: tuple[ViewStep, ...]) -> tuple[int, ...]:
    """The base coordinates of a view element (steps undone from last to first)."""
    shapes = _step_shapes(base_shape, steps)
    coords = list(coords)
    for step, before, after in reversed(list(zip(steps, shapes, shapes[1:]))):
        if step.op == "reshape":
            flat = 0
            for c, d in zip(coords, after):
                flat = flat * d + c
            coords = []
            for d in reversed(before):
                coords.append(flat % d)
                flat //= d
            coords.reverse()
        elif step.op == "transpose":
            back = [0] * len(coords)
            for i, p in enumerate(step.arg):
                back[p] = coords[i]
            coords = back
        else:
            axis, start, _ = step.arg
            coords[axis] += start
    return tuple(coords)


def view_axis_to_base(base_shape, steps, axis: int) -> int | None:
    """The base axis that a view axis walks along (its outermost, when a reshape merged
    several); None when the view axis is not a whole base axis or a merge of whole ones."""
    shapes = _step_shapes(base_shape, steps)
    for step, before, after in reversed(list(zip(steps, shapes, shapes[1:]))):
        if step.op == "transpose":
            axis = step.arg[axis]
        elif step.op == "reshape":
            axis = _reshape_axis(before, after, axis)
            if axis is None:
                return None
    return axis


def _reshape_axis(before, after, axis: int) -> int | None:
    """The outermost `before` axis that starts where `after` axis does, if boundaries align."""
    lead = math.prod(after[:axis])
    acc = 1
    for i, d in enumerate(before):
        if acc == lead:
            return i if d > 1 or i == len(before) - 1 else _skip_ones(before, i)
        acc *= d
    return None


def _skip_ones(shape, i: int) -> int:
    while i < len(shape) - 1 and shape[i] == 1:
        i += 1
    return i


def home_die(decl: TensorDecl, base: TensorDecl | None, starts, requester: int,
             dies: int) -> int | None:
    """The die holding a box that starts at `starts` of `decl`; None when interleaved."""
    home = (base or decl).home
    if home is None:
        return None
    if home == "replicate":
        return requester
    if home.startswith("die:"):
        return int(home[4:])
    axis = int(home.split(":")[1])
    root = base or decl
    coords = to_base(starts, root.shape, decl.steps) if base is not None else tuple(starts)
    return min(dies - 1, coords[axis] * dies // root.shape[axis])
