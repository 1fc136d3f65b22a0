"""No two units touch the same on-chip bytes at once: races on a buffer's slots, buffers that
share memory while both are live, and tokens that can never be credited.

An instruction writes its first `writes` buffer operands and reads the others
(isa/instructions.py). Two accesses conflict when they touch the same bytes and one writes.

- Races. Two conflicting accesses to a buffer slot by different units must be ordered in
  program order: the earlier one completes before the later one starts (isa/verify/order.py
  says when that is proven). For each instance of an access, the latest earlier conflicting
  instance of each other instruction is checked (earlier ones complete before it). Loops are
  sampled: their first W iterations, W = 2 + the largest token credit or slot count of the
  kernel, and their last two; a pipeline's pattern settles within those and repeats. A token
  that starts with more credit than the slots of the ring it guards shows up here, as the
  overwrite of a slot still being read.
- Shared memory. Two buffers placed at overlapping bytes of one space (the plan pass reuses
  memory) must have disjoint lifetimes: every access to the buffer used first completes before
  the first access to the other starts.
- Progress. A token waited more times per work item than its initial credit plus its
  signals can never let the last waiter start; and an instance whose wait can only be
  credited by work that itself comes after it (a cycle of waits through tokens and unit
  order) never starts. Both deadlock.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

from isa.errors import ProgramError
from isa.expr import compile_expr
from isa.instructions import InstrDef
from isa.listing import fmt_operand
from isa.program import Buf, BufferDecl
from isa.verify.nest import Nest, Site
from isa.verify.order import Order

SEARCH_LIMIT = 64          # earlier instances examined for the latest conflicting one


def check_hazards(nest: Nest, definitions: list[InstrDef]) -> None:
    _check_credits(nest)
    order = Order(nest, definitions)
    _check_progress(nest, order)
    accesses = _Accesses(nest, definitions)
    _check_races(nest, order, accesses)
    _check_sharing(nest, order, accesses)


# ---- accesses ------------------------------------------------------------------------------

class _Accesses:
    """Per site, its buffer operands as (Buf, writes?)."""

    def __init__(self, nest: Nest, definitions: list[InstrDef]):
        self.buffers: dict[str, BufferDecl] = {b.name: b for b in nest.kernel.buffers}
        self.of: list[list[tuple[Buf, bool]]] = []
        for site, definition in zip(nest.sites, definitions):
            bufs = [a for a in site.ins.operands if isinstance(a, Buf)]
            self.of.append([(b, n < definition.writes) for n, b in enumerate(bufs)])
        self.sites_of: dict[str, list[int]] = {}
        for index, accesses in enumerate(self.of):
            for buf, _ in accesses:
                sites = self.sites_of.setdefault(buf.name, [])
                if index not in sites:
                    sites.append(index)


def _slot(buf: Buf, env: dict[str, int]) -> int:
    return 0 if buf.slot is None else _compiled(buf.slot)(env)


@lru_cache(maxsize=None)
def _compiled(e):
    return compile_expr(e)


def _env(site: Site, iterations: tuple[int, ...], grid: dict[str, int]) -> dict:
    return {**grid, **{var: i for (var, _), i in zip(site.loops, iterations)}}


# ---- races ---------------------------------------------------------------------------------

def _check_races(nest: Nest, order: Order, accesses: _Accesses) -> None:
    width = 2 + max([n for _, n in nest.kernel.tokens] +
                    [b.slots for b in nest.kernel.buffers] + [0])
    grids = _grid_samples(nest)
    for name, sites in accesses.sites_of.items():
        for x, y in itertools.permutations(sites, 2):
            if order.unit[x] == order.unit[y]:
                continue
            pairs = [(a, b) for a, wa in accesses.of[x] if a.name == name
                     for b, wb in accesses.of[y] if b.name == name and (wa or wb)]
            if not pairs:
                continue
            for grid in grids:
                for then_at in _samples(nest.sites[y], width):
                    _check_pair(nest, order, nest.sites[x], nest.sites[y], then_at, pairs,
                                grid, accesses)


def _grid_samples(nest: Nest) -> list[dict[str, int]]:
    """Work items whose slots are checked: slots rarely depend on the grid; when they do, the
    first and the last item."""
    first = {v: 0 for v in nest.grid}
    last = {v: n - 1 for v, n in nest.grid.items()}
    return [first] if first == last else [first, last]


def _samples(site: Site, width: int):
    """Iterations of a site checked: per loop, the first `width` values (where the initial
    credits run out and the pipeline fills; then it repeats) and the last two."""
    per_loop = [sorted(set(range(min(n, width))) | set(range(max(n - 2, 0), n)))
                for _, n in site.loops]
    return itertools.product(*per_loop)


def _check_pair(nest, order, first: Site, then: Site, then_at, pairs, grid, accesses) -> None:
    """The latest instance of `first` before `then_at` of `then` that conflicts with it
    completes before it starts."""
    then_env = _env(then, then_at, grid)
    wanted = {(_slot(b, then_env), a) for a, b in pairs}
    before = nest.count_before(frozenset({first.index}), nest.position(then, then_at))
    for rank in range(before - 1, max(before - 1 - SEARCH_LIMIT, -1), -1):
        first_at = nest.rank(first, rank)
        env = _env(first, first_at, grid)
        hit = next((a for slot, a in wanted if _slot(a, env) == slot), None)
        if hit is None:
            continue
        if not order.ordered(first, first_at, then, then_at):
            raise _race(nest, order, first, first_at, hit, then, then_at, pairs, accesses)
        return


def _race(nest, order, first, first_at, hit: Buf, then, then_at, pairs, accesses):
    mine = next(b for a, b in pairs if a == hit)
    verb = "writes" if dict(accesses.of[then.index]).get(mine) else "reads"
    other = "writing" if dict(accesses.of[first.index]).get(hit) else "reading"
    slots = accesses.buffers[hit.name].slots
    token = _guard(nest, order, then, slots)
    if token is not None:
        credit = dict(nest.kernel.tokens)[token]
        return ProgramError(
            f"kernel {nest.kernel.name}: token '{token}' starts with {credit} credits, more "
            f"than the {slots} slot{'s' if slots > 1 else ''} of buffer {hit.name} it guards: "
            f"{then.ins.op}{_at(then, then_at)} can overwrite {fmt_operand(mine)} while "
            f"{first.ins.op}{_at(first, first_at)} is still {other} it, a data race (a ring "
            f"of N slots takes at most N credits)", ("token", token))
    return ProgramError(
        f"kernel {nest.kernel.name}: {then.ins.op} {verb} {fmt_operand(mine)}"
        f"{_at(then, then_at)} while {first.ins.op}{_at(first, first_at)} may still be "
        f"{other} the same slot: nothing orders them (program order on one unit, or a token "
        "signalled after the one and waited for before the other), a data race",
        ("instr", then.index))


def _guard(nest: Nest, order: Order, then: Site, slots: int) -> str | None:
    """A token with more credit than `slots`, waited for by `then` or by an instruction of its
    unit before it in the same loop body: the credit that let it run ahead."""
    credit = dict(nest.kernel.tokens)
    for site in reversed(nest.sites[:then.index + 1]):
        if site.loops != then.loops or site.path[:-1] != then.path[:-1]:
            break
        if order.unit[site.index] != order.unit[then.index]:
            continue
        for token in site.ins.wait:
            if credit[token] > slots:
                return token
    return None


def _at(site: Site, iterations) -> str:
    if not site.loops:
        return ""
    return " (" + ", ".join(f"{v}={i}" for (v, _), i in zip(site.loops, iterations)) + ")"


# ---- buffers sharing memory ----------------------------------------------------------------

def _check_sharing(nest: Nest, order: Order, accesses: _Accesses) -> None:
    placed = [b for b in nest.kernel.buffers if b.offset is not None and b.name in
              accesses.sites_of]
    for a, b in itertools.combinations(placed, 2):
        if a.space != b.space or a.offset + a.nbytes <= b.offset or \
                b.offset + b.nbytes <= a.offset:
            continue
        first_a = min(accesses.sites_of[a.name])
        first_b = min(accesses.sites_of[b.name])
        early, late = (a, b) if first_a <= first_b else (b, a)
        _check_lifetimes(nest, order, accesses, early, late)


def _unordered(nest, order, accesses, early: str, late: str):
    """The first access to `early` (at its last iteration) that is not ordered before an
    access to `late` (at its first), as (first, first_at, then, then_at); None if every
    access to `early` completes before any access to `late` starts. One instruction that
    touches both orders nothing: it reads the one while it writes the other."""
    for y in accesses.sites_of.get(late, ()):
        then = nest.sites[y]
        then_at = tuple(0 for _ in then.loops)
        for x in accesses.sites_of.get(early, ()):
            first = nest.sites[x]
            first_at = tuple(n - 1 for _, n in first.loops)
            if x >= y or not order.ordered(first, first_at, then, then_at):
                return first, first_at, then, then_at
    return None


class Lifetimes:
    """Which buffers of a kernel may share memory, by the rule _check_sharing enforces: the
    plan pass asks it, so what it places the verifier accepts."""

    def __init__(self, kernel, definitions: list[InstrDef]):
        self.nest = Nest(kernel)
        self.order = Order(self.nest, definitions)
        self.accesses = _Accesses(self.nest, definitions)

    def before(self, early: str, late: str) -> bool:
        """Every access to buffer `early` completes before any access to `late` starts."""
        return _unordered(self.nest, self.order, self.accesses, early, late) is None


def _check_lifetimes(nest, order, accesses, early: BufferDecl, late: BufferDecl) -> None:
    """Every access to `early` completes before any access to `late` starts."""
    clash = _unordered(nest, order, accesses, early.name, late.name)
    if clash is None:
        return
    first, first_at, then, then_at = clash
    lo = max(early.offset, late.offset)
    hi = min(early.offset + early.nbytes, late.offset + late.nbytes) - 1
    raise ProgramError(
        f"kernel {nest.kernel.name}: buffers {early.name} and {late.name} share "
        f"bytes {lo}..{hi} of {late.space} while both are live: "
        f"{first.ins.op} on {early.name}{_at(first, first_at)} is not ordered "
        f"before {then.ins.op} on {late.name}{_at(then, then_at)}; buffers may "
        "share memory only when every access to one completes before the other's "
        "first", ("buffer", late.name))


# ---- credits -------------------------------------------------------------------------------

def _check_progress(nest: Nest, order: Order) -> None:
    """No instance needs itself to have completed before it starts."""
    width = 2 + max([n for _, n in nest.kernel.tokens] + [0])
    for site in nest.sites:
        if not site.ins.wait:
            continue
        unit = order.unit[site.index]
        for at in _samples(site, width):
            if order.done_before(site, at)[unit] >= nest.position(site, at):
                tokens = ", ".join(f"'{t}'" for t in site.ins.wait)
                raise ProgramError(
                    f"kernel {nest.kernel.name}: {site.ins.op}{_at(site, at)} can never start: "
                    f"the credit it waits for ({tokens}) comes only from work that waits, "
                    "through tokens and unit order, for this instruction: the kernel deadlocks",
                    ("instr", site.index))


def _check_credits(nest: Nest) -> None:
    for token, credit in nest.kernel.tokens:
        waits = nest.count(frozenset(s.index for s in nest.sites if token in s.ins.wait))
        signals = nest.count(frozenset(s.index for s in nest.sites if token in s.ins.signal))
        if waits > credit + signals:
            raise ProgramError(
                f"kernel {nest.kernel.name}: token '{token}' is waited for {waits} times per "
                f"work item but gets only {credit + signals} credits ({credit} at the start, "
                f"{signals} signals): the work item can never finish", ("token", token))
