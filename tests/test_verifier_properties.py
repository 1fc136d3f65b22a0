"""Properties of the verifier: its arithmetic agrees with brute force, its ordering with
hand-computed cases, and a mutated listing either verifies (and then runs) or is refused at a
line of the listing, never with a traceback."""
import itertools
import re
from functools import lru_cache

from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.driver import compile_model
from isa.assembler import ListingError, parse_listing
from isa.expr import Bin, Const, Var, compile_expr
from isa.instructions import lookup_any
from isa.listing import render
from isa.program import Buf, Instr, Kernel, Loop, walk
from isa.target_loader import load_target
from isa.verify.nest import Nest
from isa.verify.order import Order
from isa.verify.ranges import RangeError, affine, expr_range
from isa.verify.tiling import lay
from runtime.interpreter import run_program

VARS = {"m": 4, "k": 6, "t": 3}


def _exprs():
    leaves = st.one_of(st.builds(Const, st.integers(-20, 40)),
                       st.builds(Var, st.sampled_from(sorted(VARS))))
    ops = st.sampled_from(["+", "-", "*", "//", "%", "=="])
    return st.recursive(leaves, lambda sub: st.builds(Bin, ops, sub, sub), max_leaves=6)


def _values(e):
    """Every value `e` takes over VARS, or None if some division is by zero."""
    f, names = compile_expr(e), sorted(VARS)
    try:
        return {f(dict(zip(names, v))) for v in itertools.product(*(range(VARS[n])
                                                                   for n in names))}
    except ZeroDivisionError:
        return None


@settings(max_examples=300, deadline=None)
@given(_exprs())
def test_intervals_hold_every_value_and_are_exact_for_affine_forms(e):
    values = _values(e)
    try:
        lo, hi = expr_range(e, {v: (0, n - 1) for v, n in VARS.items()})
    except RangeError:
        return                                  # refused: a divisor interval holds 0
    assert values is not None
    assert lo <= min(values) and max(values) <= hi
    names = _names(e)
    if affine(e) is not None and len(names) == len(set(names)):   # each variable once
        assert (lo, hi) == (min(values), max(values))


def _names(e):
    if isinstance(e, Var):
        return [e.name]
    return _names(e.left) + _names(e.right) if isinstance(e, Bin) else []


@settings(max_examples=300, deadline=None)
@given(_exprs(), st.integers(1, 12), st.integers(1, 60))
def test_layouts_agree_with_counting_elements(start, size, extent):
    if _values(start) is None:
        return
    layout = lay([(start, size, VARS)], extent)
    counts = [0] * extent                       # one box per value of the start's variables
    f, names = compile_expr(start), sorted(set(_names(start)))
    for values in itertools.product(*(range(VARS[n]) for n in names)):
        s = f(dict(zip(names, values)))
        for i in range(max(s, 0), min(s + size, extent)):
            counts[i] += 1
    first_gap = next((i for i, c in enumerate(counts) if c == 0), None)
    first_over = next((i for i, c in enumerate(counts) if c > 1), None)
    assert (layout.gap.first if layout.gap else None) == first_gap
    if layout.gap is None:                      # the closed form reports gaps only
        assert (layout.overlap.first if layout.overlap else None) == first_over


def _trees(depth=2):
    leaf = st.just("i")
    return st.recursive(leaf, lambda sub: st.tuples(st.integers(1, 4), st.lists(
        sub, min_size=1, max_size=3)), max_leaves=8)


def _kernel(tree) -> Kernel:
    """A kernel whose body is the loop tree (numbered vec.neg instructions)."""
    count = itertools.count()

    def body(node, depth):
        if node == "i":
            return Instr("vec.neg", (Buf(f"b{next(count)}"), Buf("x")))
        n, items = node
        return Loop(f"l{depth}", n, tuple(body(i, depth + 1) for i in items))
    stmts = tuple(body(node, 0) for node in (tree[1] if tree != "i" else ["i"]))
    return Kernel("k", (), (), (), (), stmts)


@settings(max_examples=150, deadline=None)
@given(_trees(), st.data())
def test_positions_and_counts_agree_with_the_unrolled_body(tree, data):
    nest = Nest(_kernel(tree))
    order = []                                   # (site, iterations) in unrolled order

    def unroll(node, iterations):
        for item in node.items:
            if isinstance(item, int):
                order.append((item, tuple(iterations)))
            else:
                for i in range(item[0]):
                    unroll(item[1], iterations + [i])
    unroll(nest.tree, [])
    assert nest.length == len(order)
    for pos, (index, iterations) in enumerate(order):
        assert nest.position(nest.sites[index], iterations) == pos
    chosen = frozenset(data.draw(st.sets(st.integers(0, len(nest.sites) - 1), min_size=1)))
    where = data.draw(st.integers(0, len(order)))
    assert nest.count_before(chosen, where) == sum(i in chosen for i, _ in order[:where])
    hits = [pos for pos, (i, _) in enumerate(order) if i in chosen]
    for m, pos in enumerate(hits, 1):
        assert nest.select(chosen, m) == pos


# ---- ordering, by hand ------------------------------------------------------------------

def _ring(credit: int, slots: int) -> Kernel:
    """loop k 8: a load into a ring of `slots` slots, the matrix unit reading it; `free` starts
    with `credit` credits. Body positions: ld.tile at 2k, mm.mma at 2k+1."""
    from isa.program import Box, BufferDecl, Param, Attr
    k = Var("k")
    slot = Bin("%", k, Const(slots))
    body = (Loop("k", 8, (
        Instr("ld.tile", (Buf("s", slot), Box("x", (Bin("*", k, Const(4)),), (4,))),
              wait=("free",), signal=("full",)),
        Instr("mm.mma", (Buf("acc"), Buf("s", slot), Buf("s", slot), Attr("shape", (2, 2, 2)),
                         Attr("fmt", "bf16"), Attr("first", Bin("==", k, Const(0)))),
              wait=("full",), signal=("free",)),
    )),)
    return Kernel("ring", (Param("x", "bf16", (32,)),), (),
                  (BufferDecl("s", "bf16", (2, 2), slots, "smem"),
                   BufferDecl("acc", "fp32", (2, 2), 1, "registers")),
                  (("free", credit), ("full", 0)), body)


def _order(kernel):
    nest = Nest(kernel)
    return nest, Order(nest, [lookup_any(s.ins.op) for s in nest.sites])


def test_a_wait_is_ordered_after_the_signal_that_credits_it():
    nest, order = _order(_ring(credit=2, slots=2))
    ld, mm = nest.sites
    # ld.tile at k=5 takes the 6th credit of `free`: 2 came at the start, so the 4th signal,
    # mm.mma at k=3 (position 7), has completed; nothing later on the mm unit is known to have.
    assert order.done_before(ld, (5,))["mm"] == 7
    # mm.mma at k=5 takes the 6th credit of `full`, the 6th signal: ld.tile at k=5 (position 10)
    assert order.done_before(mm, (5,))["ld"] == 10
    assert order.ordered(mm, (3,), ld, (5,)) and not order.ordered(mm, (4,), ld, (5,))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4))
def test_a_ring_races_exactly_when_its_credit_exceeds_its_slots(credit, slots):
    from isa.errors import ProgramError
    from isa.verify.hazards import check_hazards
    nest, _ = _order(_ring(credit, slots))
    try:
        check_hazards(nest, [lookup_any(s.ins.op) for s in nest.sites])
        raced = False
    except ProgramError as err:
        raced = True
        assert err.where == ("token", "free")
        assert f"token 'free' starts with {credit} credits, more than the {slots}" in str(err)
    assert raced == (credit > slots)


# ---- mutated listings -------------------------------------------------------------------

SMALL = {"M": "128", "N": "256", "K": "512"}


@lru_cache(maxsize=None)
def _listing(target: str) -> tuple[str, ...]:
    return tuple(render(compile_model("examples/gemm.ds", target, SMALL).program).splitlines())


_INT = re.compile(r"(?<![A-Za-z_.\d])\d+")


@st.composite
def _mutants(draw):
    target = draw(st.sampled_from(["h800", "ascend910b"]))
    lines = list(_listing(target))
    for _ in range(draw(st.integers(1, 2))):
        body = [i for i, line in enumerate(lines) if line.startswith("  ")]
        i = draw(st.sampled_from(body))
        kind = draw(st.sampled_from(["number", "tokens", "swap", "drop", "repeat", "slot"]))
        line = lines[i]
        if kind == "number" and _INT.search(line):
            found = draw(st.sampled_from(list(_INT.finditer(line))))
            value = draw(st.sampled_from([0, 1, 2, 3, 5, 8, 31, 64, 127, 128, 129, 4096,
                                          int(found.group()) + 1, int(found.group()) * 2]))
            lines[i] = line[:found.start()] + str(value) + line[found.end():]
        elif kind == "tokens" and "(" in line:
            lines[i] = re.sub(r" *(wait|signal)\([^)]*\)", "", line, count=1)
        elif kind == "swap":
            j = draw(st.sampled_from(body))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "drop":
            del lines[i]
        elif kind == "repeat":
            lines.insert(i, line)
        elif kind == "slot":
            lines[i] = re.sub(r"%\d+\]", f"%{draw(st.integers(1, 6))}]", line, count=1)
    return target, lines


@settings(max_examples=200, deadline=None)
@given(_mutants())
def test_a_mutated_listing_verifies_and_runs_or_is_refused_at_a_line(mutant):
    target_name, lines = mutant
    target = load_target(target_name)
    try:
        program = parse_listing("\n".join(lines) + "\n", "m.lst", target)
    except ListingError as err:
        assert 1 <= err.line <= len(lines) + 1 and err.message
        assert str(err).startswith(f"m.lst:{err.line}: error: ")
        return
    run_program(program, target)               # verified: it runs, without a deadlock
    assert all(walk(k.body) for k in program.kernels)
