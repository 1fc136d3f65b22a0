"""Every index a kernel computes stays inside what it indexes: slots inside their buffer, boxes
inside their tensor, no division by zero.

The bounds come from isa/verify/ranges.py over the grid and loop variables in scope, so one
check per instruction covers every work item and every iteration.

- A slot `b[e]` lies in 0 .. slots-1 of buffer b (a buffer without `[e]` is its slot 0).
- A box dimension `start:+size` on a tensor dimension of extent D starts at 0 or after, and
  runs past D only by the padding of a last, partial tile: start + size <= D rounded up to a
  multiple of size. (Loads read zeros there and stores drop it; a box further out reads or
  writes data that is not the tile's.) When every start is a multiple of the size (`m*128`,
  `(w*5+t)*32`), a box may also lie wholly past the end, as the last tiles of a loop split
  evenly over the cores do; the first box must still start inside. coverage.py refuses a
  grid or loop whose last value only moves such empty boxes.
"""
from __future__ import annotations

import math

from isa.errors import ProgramError
from isa.expr import Bin, Const, Var, to_text, variables
from isa.listing import fmt_operand
from isa.program import Attr, Box, Buf
from isa.verify.nest import Nest, Site
from isa.verify.ranges import RangeError, affine, expr_range


def check_bounds(nest: Nest) -> None:
    buffers = {b.name: b for b in nest.kernel.buffers}
    params = {p.name: p for p in nest.kernel.params}
    for site in nest.sites:
        ranges = nest.ranges(site)
        for arg in site.ins.args:
            if isinstance(arg, Buf) and arg.slot is not None:
                _check_slot(nest, site, arg, buffers[arg.name].slots, ranges)
            elif isinstance(arg, Box):
                _check_box(nest, site, arg, params[arg.tensor].shape, ranges)
            elif isinstance(arg, Attr):
                for e in _expressions(arg.value):
                    _range(nest, site, e, ranges, f"attribute {arg.key}")


def _fail(nest: Nest, site: Site, message: str) -> ProgramError:
    return ProgramError(f"kernel {nest.kernel.name}: {site.ins.op} {message}",
                        ("instr", site.index))


def _range(nest, site, e, ranges, what: str) -> tuple[int, int]:
    try:
        return expr_range(e, ranges)
    except RangeError as err:
        raise _fail(nest, site, f"{what}: {err}") from None


def _check_slot(nest, site, buf: Buf, slots: int, ranges) -> None:
    lo, hi = _range(nest, site, buf.slot, ranges, f"slot of {buf.name}")
    if lo < 0 or hi >= slots:
        raise _fail(nest, site, f"{fmt_operand(buf)}: the slot index {to_text(buf.slot)} takes "
                    f"values {lo}..{hi}{_over(buf.slot, ranges)}, but buffer {buf.name} has "
                    f"{slots} slot{'s' if slots > 1 else ''} (0..{slots - 1})")


def _check_box(nest, site, box: Box, shape, ranges) -> None:
    for dim, (start, size, extent) in enumerate(zip(box.starts, box.sizes, shape)):
        lo, hi = _range(nest, site, start, ranges, f"box on @{box.tensor}")
        limit = math.ceil(extent / size) * size if size > 0 else extent
        if _aligned(start, size):
            # Every start is a multiple of the size: each box lies inside the padded extent
            # or wholly past the end (the surplus of an evenly split loop, which moves
            # nothing; coverage.py refuses work items and iterations that only do that).
            if 0 <= lo < extent:
                continue
        elif lo >= 0 and hi + size <= limit:
            continue
        where = (f"starts at {lo}" if lo < 0 else f"starts at {lo}, past the end" if lo >= extent
                 else f"reaches {hi + size - 1}")
        pad = f" (a partial last tile may pad it to {limit})" if limit > extent else ""
        raise _fail(nest, site, f"{fmt_operand(box)}: dimension {dim} "
                    f"({to_text(start)}:+{size}{_over(start, ranges)}) {where}, outside the "
                    f"{extent} elements of @{box.tensor}'s dimension {dim}{pad}: a box must "
                    "lie inside its tensor")


def _aligned(start, size: int) -> bool:
    """An affine start whose constant and coefficients are all multiples of the size."""
    form = affine(start)
    return form is not None and size > 0 and form[0] % size == 0 and \
        all(c % size == 0 for c in form[1].values())


def _over(e, ranges) -> str:
    """`for m < 64` style note of the variables an expression runs over."""
    names = sorted(variables(e))
    return (" over " + ", ".join(f"{v} in 0..{ranges[v][1]}" for v in names)) if names else ""


def _expressions(value) -> list:
    if isinstance(value, (Const, Var, Bin)):
        return [value]
    if isinstance(value, tuple):
        return [e for item in value for e in _expressions(item)]
    return []
