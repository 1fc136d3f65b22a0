"""What an instruction says it moves or computes fits the buffers it names.

Costs are computed from attributes and boxes (`n` elements, an MxNxK `shape`, a box's
bytes), so an attribute larger than its buffers would time work that is not there:

- a load's or store's box fits one slot of its buffer: its sizes, leading unit dimensions
  dropped, are no larger than the buffer's dimensions (or it holds exactly as many elements);
- `n`, the elements an instruction processes, is at most the elements of its largest buffer
  operand (reductions such as top-k write fewer than they read);
- `mm.mma`'s M x K, K x N (N x K with trans_b) and M x N fit its a, b and accumulator
  buffers, seen as matrices (leading unit dimensions dropped).
"""
from __future__ import annotations

import math

from isa.errors import ProgramError
from isa.instructions import InstrDef
from isa.listing import fmt_operand
from isa.program import Box, Buf
from isa.verify.nest import Nest, Site


def check_shapes(nest: Nest, definitions: list[InstrDef]) -> None:
    buffers = {b.name: b for b in nest.kernel.buffers}
    for site, definition in zip(nest.sites, definitions):
        bufs = [a for a in site.ins.operands if isinstance(a, Buf)]
        boxes = [a for a in site.ins.operands if isinstance(a, Box)]
        if definition.kind in ("load", "store") and boxes and bufs:
            _check_box_fits(nest, site, boxes[0], bufs[0], buffers[bufs[0].name].shape)
        n = site.ins.attr("n")
        if isinstance(n, int) and bufs:
            largest = max(bufs, key=lambda b: math.prod(buffers[b.name].shape))
            room = math.prod(buffers[largest.name].shape)
            if n > room:
                raise _fail(nest, site, f"n={n}: the instruction processes more elements than "
                            f"its largest buffer {largest.name} {list(buffers[largest.name].shape)} "
                            f"holds ({room})")
        if definition.semantics == "mma" and len(bufs) >= 3:
            _check_mma(nest, site, bufs, buffers)


def _fail(nest: Nest, site: Site, message: str) -> ProgramError:
    return ProgramError(f"kernel {nest.kernel.name}: {site.ins.op} {message}",
                        ("instr", site.index))


def _check_box_fits(nest, site, box: Box, buf: Buf, shape: tuple[int, ...]) -> None:
    sizes = list(box.sizes)
    while len(sizes) > len(shape) and sizes[0] == 1:
        sizes.pop(0)
    sizes = [1] * (len(shape) - len(sizes)) + sizes
    if all(s <= d for s, d in zip(sizes, shape)) and len(sizes) == len(shape):
        return
    if math.prod(box.sizes) == math.prod(shape):
        return
    raise _fail(nest, site, f"{fmt_operand(box)}: a box of {list(box.sizes)} does not fit a "
                f"slot of buffer {buf.name} {list(shape)}")


def _matrix(shape: tuple[int, ...]) -> tuple[int, ...]:
    dims = list(shape)
    while len(dims) > 2 and dims[0] == 1:
        dims.pop(0)
    return tuple(dims)


def _check_mma(nest, site, bufs, buffers) -> None:
    shape = site.ins.attr("shape")
    if not (isinstance(shape, tuple) and len(shape) == 3):
        return                    # the operand checks report a malformed shape
    m, n, k = shape
    dst, a, b = bufs[:3]
    needs = [(dst, (m, n)), (a, (m, k)), (b, (n, k) if site.ins.attr("trans_b") else (k, n))]
    for buf, (rows, cols) in needs:
        have = _matrix(buffers[buf.name].shape)
        if len(have) != 2 or have[0] < rows or have[1] < cols:
            raise _fail(nest, site, f"shape={m}x{n}x{k}: operand {buf.name} "
                        f"{list(buffers[buf.name].shape)} cannot hold the {rows} x {cols} "
                        "matrix the shape needs")
