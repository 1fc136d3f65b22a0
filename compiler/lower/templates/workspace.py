"""Per-core scratch regions in global memory, for tiles that cross between split cores.

A work item owns region `(item % cores) * slots + slot`: the items of one wave run on distinct
cores, so concurrent items never share a region, and the next wave's items reuse the same
addresses, as a real per-core workspace does. The workspace is small, so the interpreter's L2
model keeps it resident: what crosses through it costs L2 bandwidth, not off-chip memory.
"""
from __future__ import annotations

from isa.expr import Bin, Const, Expr, add, mul
from isa.program import Box


class Workspace:
    def __init__(self, kb, tmap, name: str, dtype: str, rows: int, cols: int, slots: int,
                 param: str):
        cores = kb.target.cores
        self.rows, self.cols, self.slots = rows, cols, slots
        decl = tmap.scratch(name, dtype, (cores * slots, rows, cols))
        self.param = kb.param(param, decl, output=True)
        item = kb.item_index()
        core = Const(item.value % cores) if isinstance(item, Const) else \
            Bin("%", item, Const(cores))
        self.base = mul(core, Const(slots))

    def box(self, slot: Expr) -> Box:
        return Box(self.param, (add(self.base, slot), Const(0), Const(0)),
                   (1, self.rows, self.cols))
