"""A kernel covers its data: every output element is written exactly once, every element a loop
sweeps is consumed exactly once, and no work item or loop iteration falls past the data.

- Outputs. The boxes stored to an output parameter, over the grid and the loops around each
  store, cover every element of the parameter exactly once (an output nothing stores to is
  an error). A grid or loop variable a store
  does not depend on writes the same box again for each of its values.
- Sweeps. A dimension of a loaded tensor whose box start moves with a loop variable (the K of
  a GEMM, the keys of attention) is swept: the loads of that tensor cover each of its elements
  exactly once. A block-scale index (`k*64//128`, the scale block a tile falls in) is read once
  per tile it scales, and a tile index taken modulo the dimension's tiles (`(...)%128*32`, a
  causal attention pair's key order: each of its row blocks reads its own keys) may come back
  to a tile, so there only a gap is an error.
- Surplus. At the last value of each variable a box depends on, some box still reaches the
  tensor: a grid dimension or loop count larger than the data is work that moves nothing.
  (Boxes past the end for *some* values are fine: an evenly split loop's last tiles.)

Not covered: tensors a kernel both stores and loads (a hand-over between the cores of a split
design, or an in-place update), tensors written by gathers, scatters and sends (their rows
depend on data or on other devices), and boxes whose layout would take more than
tiling.ENUMERATION_LIMIT boxes to count (none of the compiler's: its starts are affine).
"""
from __future__ import annotations

import itertools
import math

from isa.lazy_numpy import np

from isa.errors import ProgramError
from isa.expr import Bin, Expr, compile_expr, to_text, variables
from isa.instructions import lookup_any
from isa.listing import fmt_operand
from isa.program import Box, Param, TensorRef
from isa.verify.nest import Nest, Site
from isa.verify.ranges import expr_range
from isa.verify.tiling import ENUMERATION_LIMIT, Layout, lay


def check_coverage(nest: Nest) -> None:
    roles = _Roles(nest)
    for param in nest.kernel.params:
        if param.name in roles.exempt:
            continue
        stores = [(s, b) for s, b in roles.stores if b.tensor == param.name]
        loads = [(s, b) for s, b in roles.loads if b.tensor == param.name]
        if param.output and not stores:
            raise ProgramError(f"kernel {nest.kernel.name}: output parameter {param.name} is "
                               "never written: every element of an output is written exactly "
                               "once")
        if param.output:
            _check_output(nest, param, stores)
        for dim in range(len(param.shape)):
            _check_sweep(nest, param, dim, loads)
    for site, box in roles.stores + roles.loads:
        if box.tensor not in roles.exempt:
            _check_surplus(nest, site, box)


class _Roles:
    """The boxes a kernel loads and stores, and the parameters exempt from coverage."""

    def __init__(self, nest: Nest):
        self.loads: list[tuple[Site, Box]] = []
        self.stores: list[tuple[Site, Box]] = []
        written, read, other = set(), set(), set()
        for site in nest.sites:
            definition = lookup_any(site.ins.op)
            kind = definition.kind if definition else "compute"
            for number, arg in enumerate(site.ins.operands):
                if not isinstance(arg, (Box, TensorRef)):
                    continue
                if kind == "load" and isinstance(arg, Box):
                    self.loads.append((site, arg))
                    read.add(arg.tensor)
                elif kind == "store" and isinstance(arg, Box) and number == 0:
                    self.stores.append((site, arg))
                    written.add(arg.tensor)
                else:                    # gathers, scatters and sends: rows chosen by data
                    other.add(arg.tensor)
        self.exempt = (written & read) | other


def _fail(nest: Nest, site: Site, box: Box, message: str, where=None) -> ProgramError:
    return ProgramError(f"kernel {nest.kernel.name}: {site.ins.op} {fmt_operand(box)}: "
                        f"{message}", where or ("instr", site.index))


def _counts(nest: Nest, site: Site) -> dict[str, int]:
    out = dict(nest.grid)
    out.update(dict(site.loops))
    return out


def _loop_vars(site: Site) -> set[str]:
    return {var for var, _ in site.loops}


def _over(e: Expr, counts: dict[str, int], grid: dict[str, int]) -> str:
    names = sorted(variables(e))
    parts = [f"{v} in 0..{counts[v] - 1} ({'grid' if v in grid else 'loop'} {v}={counts[v]})"
             for v in names]
    return " over " + ", ".join(parts) if parts else ""


# ---- surplus -------------------------------------------------------------------------------

def _check_surplus(nest: Nest, site: Site, box: Box) -> None:
    counts = _counts(nest, site)
    extents = nest.kernel.param(box.tensor).shape
    ranges = {v: (0, n - 1) for v, n in counts.items()}
    for dim, (start, extent) in enumerate(zip(box.starts, extents)):
        for var in sorted(variables(start)):
            if counts[var] <= 1:
                continue
            lo, _ = expr_range(start, {**ranges, var: (counts[var] - 1,) * 2})
            if lo < extent:
                continue
            useful = _useful_values(start, var, counts, extent)
            if var in nest.grid:
                raise _fail(nest, site, box,
                            f"the grid has {var}={counts[var]} but {to_text(start)} reaches "
                            f"dimension {dim} of @{box.tensor} ({extent} elements) only for "
                            f"{var} < {useful}: work items {var}={useful}..{counts[var] - 1} "
                            "move nothing (the grid covers more tiles than the data)",
                            ("grid", None))
            raise _fail(nest, site, box,
                        f"loop {var} runs {counts[var]} times but {to_text(start)} reaches "
                        f"dimension {dim} of @{box.tensor} ({extent} elements) only for "
                        f"{var} < {useful}: iterations {var}={useful}..{counts[var] - 1} move "
                        "nothing (the loop runs past the data)")


def _useful_values(start: Expr, var: str, counts: dict[str, int], extent: int) -> int:
    """How many leading values of `var` still let some box of `start` reach the tensor."""
    ranges = {v: (0, n - 1) for v, n in counts.items()}
    lo, hi = 0, counts[var] - 1                  # the last useful value, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if expr_range(start, {**ranges, var: (mid, mid)})[0] < extent:
            lo = mid
        else:
            hi = mid - 1
    return lo + 1


# ---- outputs -------------------------------------------------------------------------------

def _check_output(nest: Nest, param: Param, stores: list[tuple[Site, Box]]) -> None:
    site, box = stores[0]
    counts = _counts(nest, site)
    if len(stores) == 1 and _separable(box):
        used = set().union(*(variables(s) for s in box.starts))
        for var, n in counts.items():
            if n > 1 and var not in used:
                kind = "grid" if var in nest.grid else "loop"
                raise _fail(nest, site, box,
                            f"the box does not depend on {kind} variable {var} ({var}={n}), "
                            f"so each element it covers is written {n} times: every element "
                            "of an output is written exactly once")
        for dim, (start, size, extent) in enumerate(zip(box.starts, box.sizes, param.shape)):
            layout = lay([(start, size, counts)], extent)
            _report(nest, site, box, dim, start, size, extent, counts, layout, "written",
                    "every element of an output is written exactly once")
        return
    _check_output_cells(nest, param, stores)


def _separable(box: Box) -> bool:
    """Each variable moves one dimension: the boxes are a product of per-dimension layouts."""
    seen: set[str] = set()
    for start in box.starts:
        names = variables(start)
        if names & seen:
            return False
        seen |= names
    return True


def _check_output_cells(nest: Nest, param: Param, stores) -> None:
    """Several stores to one output, or a variable moving two dimensions: count coverage on
    the cells the box edges cut the tensor into (at most ENUMERATION_LIMIT boxes and cells)."""
    boxes = []                                   # (site, box, starts) per stored box
    for site, box in stores:
        counts = _counts(nest, site)
        names = sorted(set(counts) & set().union(*(variables(s) for s in box.starts)))
        repeats = math.prod(n for v, n in counts.items() if v not in names)
        combos = math.prod(counts[v] for v in names)
        if len(boxes) + combos > ENUMERATION_LIMIT:
            return
        starts = [compile_expr(s) for s in box.starts]
        for values in itertools.product(*(range(counts[v]) for v in names)):
            env = dict(zip(names, values))
            boxes += [(site, box, tuple(f(env) for f in starts))] * repeats
    cuts = [sorted({0, extent} | {min(max(s[d] + off, 0), extent) for _, b, s in boxes
                                  for off in (0, b.sizes[d])})
            for d, extent in enumerate(param.shape)]
    if math.prod(len(c) - 1 for c in cuts) > ENUMERATION_LIMIT:
        return
    times = np.zeros([len(c) - 1 for c in cuts], dtype=np.int64)
    for _, box, starts in boxes:
        index = tuple(slice(np.searchsorted(c, min(max(s, 0), c[-1])),
                            np.searchsorted(c, min(max(s + size, 0), c[-1])))
                      for c, s, size in zip(cuts, starts, box.sizes))
        times[index] += 1
    bad = np.argwhere(times != 1)
    if len(bad) == 0:
        return
    cell = tuple(int(i) for i in bad[0])
    first = [cuts[d][i] for d, i in enumerate(cell)]
    count = int(times[cell])
    site, box = stores[0]
    what = "never written" if count == 0 else f"written {count} times"
    raise _fail(nest, site, box, f"element {first} of @{param.name} is {what} by the stores "
                f"of the kernel: every element of an output is written exactly once")


def _report(nest, site, box, dim, start, size, extent, counts, layout: Layout, verb: str,
            rule: str, overlap_ok: bool = False) -> None:
    if layout.gap is None and (layout.overlap is None or overlap_ok):
        return
    covered = f"{to_text(start)}:+{size}{_over(start, counts, nest.grid)}"
    if layout.gap is not None:
        run = layout.gap
        problem = f"elements {run.first}..{run.last} are never {verb}"
    else:
        run = layout.overlap
        problem = f"elements {run.first}..{run.last} are {verb} {run.times} times"
    raise _fail(nest, site, box, f"dimension {dim} of @{box.tensor} has {extent} elements; "
                f"with {covered}, {problem}: {rule}")


# ---- sweeps --------------------------------------------------------------------------------

def _check_sweep(nest: Nest, param: Param, dim: int, loads: list[tuple[Site, Box]]) -> None:
    extent = param.shape[dim]
    pieces = [(site, box, box.starts[dim], box.sizes[dim]) for site, box in loads]
    for site, box, start, size in pieces:
        if not variables(start) & _loop_vars(site):
            continue
        counts = _counts(nest, site)
        block = _is_block_index(start) or _is_revisit(start)
        layout = lay([(start, size, counts)], extent)
        if layout.gap is None and (layout.overlap is None or block):
            continue
        union = lay([(s, z, _counts(nest, t)) for t, _, s, z in pieces], extent)
        if union.known and union.gap is None and (union.overlap is None or block):
            continue                  # a loop and its peeled first or last step, together
        if layout.known:
            _report(nest, site, box, dim, start, size, extent, counts, layout, "read",
                    "a loop must consume every element of the dimension it sweeps exactly "
                    "once", overlap_ok=block)


def _is_revisit(e: Expr) -> bool:
    """`(...) % n * size`: a tile index taken modulo the dimension's n tiles, as a causal
    attention pair writes its key order (each of its two row blocks reads its own keys)."""
    return isinstance(e, Bin) and e.op == "*" and isinstance(e.left, Bin) and e.left.op == "%"


def _is_block_index(e: Expr) -> bool:
    """`x // c`: the block an element falls in, read once per tile of the block."""
    return isinstance(e, Bin) and e.op == "//"
