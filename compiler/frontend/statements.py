"""Statements: each syntax record type has one executor in `EXECUTORS`.

`size` and `precision` belong at the top level of the model (not in a block or a repeat),
`output` in the model (at its top level or in its repeats, where each iteration's output is
named with the iteration: `mtp.0.draft`); `return` only as the last statement of a block. Top-level integers of the model are
recorded in `graph.sizes` and take their `--set` value where they are defined.
"""
from __future__ import annotations

from compiler.errors import DscError
from compiler.frontend import ast, expr, types
from compiler.frontend.layers import LayerNumber
from compiler.frontend.limits import MAX_OPS
from compiler.frontend.policy import format_of
from compiler.frontend.scope import Frame, join
from compiler.frontend.values import Tensor, describe, expect_int, is_int
from compiler.ir.graph import Steady
from compiler.ir.ops import OPS, dims

SOURCE_OPS = {name for name, op in OPS.items() if op.category == "source"}


def run(b, frame: Frame, body) -> None:
    for stmt in body:
        EXECUTORS[type(stmt)](b, frame, stmt)


def run_block(b, frame: Frame, defn: ast.BlockDef):
    """Run a block's body; the value of its final `return` (a tuple for several), or None."""
    body = defn.body
    last = body[-1] if body and isinstance(body[-1], ast.Return) else None
    run(b, frame, body[:-1] if last else body)
    if last is None:
        return None
    values = tuple(expr.evaluate_single(b, frame, v, "a returned value") for v in last.values)
    return values[0] if len(values) == 1 else values


def _top_level_only(frame: Frame, loc, what: str) -> None:
    if not frame.at_model_top:
        where = f"block '{frame.block}'" if frame.block else "a repeat"
        raise DscError(f"{what} cannot appear inside {where}", loc,
                       f"{what} at the top level of the model")


def _define_top(b, frame: Frame, name: str, value, loc):
    """A model-level definition: apply --set at the first definition, record integers."""
    if not frame.at_model_top:
        return value
    if name not in b.top_defined:
        b.top_defined.add(name)
        b.graph.where[name] = loc
        value = b.overrides.apply(name, value, loc)
    if is_int(value):
        b.graph.sizes[name] = value
    return value


def _size(b, frame: Frame, stmt: ast.SizeStmt) -> None:
    _top_level_only(frame, stmt.loc, "a size declaration")
    for item in stmt.items:
        value = expr.evaluate_single(b, frame, item.value, f"size '{item.name}'")
        value = _define_top(b, frame, item.name, value, item.loc)
        expect_int(value, item.loc, f"size '{item.name}'", minimum=0)
        frame.declare(item.name, value, item.loc, "size")


def _assign(b, frame: Frame, stmt: ast.Assign) -> None:
    value = expr.evaluate_single(b, frame, stmt.value, f"the value of '{stmt.name}'",
                                 hint=stmt.name)
    frame.bind(stmt.name, _define_top(b, frame, stmt.name, value, stmt.loc), stmt.loc)


def _destructure(b, frame: Frame, stmt: ast.Destructure) -> None:
    value = expr.evaluate(b, frame, stmt.value, hint=stmt.names)
    count = len(value) if isinstance(value, tuple) else 1
    if count != len(stmt.names):
        raise DscError(f"cannot unpack {count} value{'s' if count != 1 else ''} into "
                       f"{len(stmt.names)} names ({', '.join(stmt.names)})",
                       ast.start_loc(stmt.value), f"an expression giving {len(stmt.names)} values")
    for name, item in zip(stmt.names, value):
        frame.bind(name, item, stmt.loc)


def _precision(b, frame: Frame, stmt: ast.Precision) -> None:
    _top_level_only(frame, stmt.loc, "a precision block")   # read before the body runs


def _deploy(b, frame: Frame, stmt: ast.Deploy) -> None:
    _top_level_only(frame, stmt.loc, "a deploy block")      # read before the body runs


def _decl(b, frame: Frame, stmt: ast.Decl) -> None:
    frame.check_new(stmt.name, stmt.loc, stmt.kind)
    type_ = types.evaluate_type(b, frame, stmt.type, stmt.kind, stmt.name)
    if stmt.kind == "cache" and type_.rank < 3:
        raise DscError(f"cache '{stmt.name}' has rank {type_.rank} {dims(type_.shape)}",
                       stmt.type.loc, "a cache shape [sequences, positions, features...]")
    frame.declare(stmt.name, b.source(frame, stmt.kind, stmt.name, type_, stmt.loc), stmt.loc,
                  stmt.kind)


def _output(b, frame: Frame, stmt: ast.Output) -> None:
    if frame.block is not None:
        raise DscError(f"an output declaration cannot appear inside block '{frame.block}'",
                       stmt.loc, "an output in the model, at its top level or in a repeat")
    frame.check_new(stmt.name, stmt.loc, "output")
    value = expr.evaluate_single(b, frame, stmt.value, f"output '{stmt.name}'", hint=stmt.name)
    where = ast.start_loc(stmt.value)
    if not isinstance(value, Tensor):
        raise DscError(f"output '{stmt.name}' must be a tensor, got {describe(value)}", where,
                       "a tensor expression")
    node = b.graph.node(value.id)
    if node.op in SOURCE_OPS:
        raise DscError(f"output '{stmt.name}' is the {node.op} '{node.name}' itself", where,
                       "a computed value")
    if node.id in b.graph.outputs:
        raise DscError(f"output '{stmt.name}' is the same value as an earlier output", where,
                       "a value not already output")
    out = b.rename(value, join(frame.scope, stmt.name), _declared(b, frame, stmt, node.type))
    b.graph.outputs.append(out.id)
    for name, held in list(frame.vars.items()):
        if isinstance(held, Tensor) and held.id == out.id:
            frame.vars[name] = out
    frame.declare(stmt.name, out, stmt.loc, "output")


def _declared(b, frame: Frame, stmt: ast.Output, actual):
    """The output's type: the declared format on the computed shape (which must match)."""
    if stmt.type is None:
        return None
    shape = types.evaluate_shape(b, frame, stmt.type, stmt.name)
    if shape != actual.shape:
        raise DscError(f"shape mismatch: output '{stmt.name}' is declared {dims(shape)} but "
                       f"its value has shape {dims(actual.shape)}", stmt.type.loc,
                       f"a declared shape {dims(actual.shape)}")
    return actual.with_format(format_of(stmt.type.format)) if stmt.type.format else None


def _repeat(b, frame: Frame, stmt: ast.Repeat) -> None:
    count = expr.evaluate_single(b, frame, stmt.count, "the repeat count")
    loc = ast.start_loc(stmt.count)
    expect_int(count, loc, "the repeat count", minimum=0)
    if count > MAX_OPS:
        raise DscError(f"the repeat count {count:,} is more than {MAX_OPS:,} iterations", loc,
                       _TOO_LARGE)
    outer, name = frame.scope, stmt.name or "layer"
    # a repeat that declares outputs is built whole: each iteration's are the model's
    windowed = b.windows and frame.at_model_top and not _declares_output(stmt.body)
    number = LayerNumber(b, frame, outer, name, count)
    frame.loops += 1
    try:
        if windowed:
            _repeat_window(b, frame, stmt, count, name, number)
        else:
            start = len(b.graph)
            for i in range(count):
                frame.scope = b.namer.iteration_scope(outer, name)
                number.enter(i)
                run(b, frame, stmt.body)
                number.after_first()
                if i == 0:
                    _check_unrolled(b, loc, count, len(b.graph) - start)
    finally:
        frame.scope = outer
        frame.loops -= 1
        number.leave()


def _declares_output(body) -> bool:
    return any(isinstance(s, ast.Output) or isinstance(s, ast.Repeat) and
               _declares_output(s.body) for s in body)


_TOO_LARGE = (f"a model of at most {MAX_OPS:,} operations with its repeats unrolled "
              "(compiler/frontend/limits.py); use smaller repeat counts")


def _check_unrolled(b, loc, count: int, per_iteration: int) -> None:
    """Refuse a repeat whose iterations would take the model past MAX_OPS operations, once
    its first iteration showed how many one adds."""
    total = len(b.graph) + b.unbuilt_ops + per_iteration * (count - 1)
    if total > MAX_OPS:
        raise DscError(f"this repeat unrolls to {count:,} x {per_iteration:,} operations, "
                       f"{total:,} in the model, more than {MAX_OPS:,}", loc, _TOO_LARGE)


def _repeat_window(b, frame: Frame, stmt: ast.Repeat, count: int, name: str,
                   number: LayerNumber) -> None:
    """A model-level repeat, built as a window once its iterations repeat.

    An iteration's body depends only on what the variables it can read hold when it starts:
    the names bound before the repeat, and names bound in the body that hide a constant (any
    other name must be written before it is read, or the first iteration fails), and on the
    entries of per-layer lists it reads by its number (layers.py). When the variables are
    the same before iteration t and before t+p, and the entries read repeat every p
    iterations from t on, iterations t+p, t+p+1, ... build the nodes of t, t+1, ... under
    other names: a cycle of p layers (p = 1 for identical layers; 2 for layers alternating
    between two kinds, as DeepSeek-V4's compression ratios do). The window builds three
    cycles from t, the third standing for the cycles left out (compiler.ir.graph.Steady), then
    the run's last cycle and what is left of it. Where the entries stop repeating, the run
    ends and the next one starts over: a per-layer list splits the repeat into runs, each
    windowed when it is long enough."""
    entry = set(frame.vars) - {name}
    watched = lambda: sorted(entry | (set(frame.vars) & set(frame.unit.consts)) - {name})
    seen = {0: _signature(frame, watched())}     # the state before iteration k, this run
    k = built = 0
    first = None                                 # the window number of this run's first
    start, loc = len(b.graph), ast.start_loc(stmt.count)
    while k < count:
        found = _steady(seen, number, k, count)
        if found is not None:
            t, period, times, tail = found
            index = int(frame.scope.rsplit(".", 1)[1]) - period + 1   # the third cycle's
            b.graph.steady += (Steady(name, first, index, times, period),)
            k = t + (2 + times) * period                       # the run's last cycles
            seen, first = {}, None
        frame.scope = b.namer.iteration_scope("", name)
        first = int(frame.scope.rsplit(".", 1)[1]) if first is None else first
        number.enter(k)
        run(b, frame, stmt.body)
        number.after_first()
        k, built = k + 1, built + 1
        if built == 1:
            per_iteration = len(b.graph) - start
            _check_unrolled(b, loc, count, per_iteration)
        seen[k] = _signature(frame, watched())
    if built:
        b.unbuilt_ops += (count - built) * per_iteration


# The longest cycle of different layers a window looks for (compiler/kernels/schedule.py
# folds the same cycles in the lowered program).
MAX_PERIOD = 4


def _steady(seen: dict, number: LayerNumber, k: int, count: int):
    """(t, period, times, tail) when the three cycles before iteration k, from t, started in
    the same state and a run of iterations repeating every `period` goes on from t long
    enough to leave at least one cycle out: the third cycle stands for `times`, and `tail`
    iterations of the run (its last cycle and what is left) are built after. None if not."""
    for period in range(1, MAX_PERIOD + 1):
        t = k - 3 * period
        if t not in seen or seen[t] != seen.get(t + period):
            continue
        end = _run_end(number, t, period, count)
        tail = period + (end - t) % period
        left = end - t - 3 * period - tail             # iterations the window leaves out
        if left >= period:
            return t, period, left // period + 1, tail
    return None


def _run_end(number: LayerNumber, t: int, period: int, count: int) -> int:
    """The first iteration from t + period that reads other entries of the per-layer lists
    than the iteration a period before it (count if none does)."""
    return next((j for j in range(t + period, count)
                 if number.key(j) != number.key(j - period)), count)


def _signature(frame: Frame, names: list[str]) -> tuple:
    """What an iteration's body can depend on: each name's value, tensors by their type and
    by which of them are the same node (a body reading one node twice differs from one
    reading two nodes)."""
    nodes: dict[int, int] = {}

    def of(value):
        if isinstance(value, Tensor):
            return ("tensor", value.type, nodes.setdefault(value.id, len(nodes)))
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, tuple(of(v) for v in value))
        return (type(value).__name__, value)
    return tuple((n, of(frame.vars[n])) for n in names if n in frame.vars)


def _return(b, frame: Frame, stmt: ast.Return) -> None:
    if frame.block is None:
        raise DscError("return outside a block", stmt.loc,
                       "'return' as the last statement of a block; a model has outputs")
    raise DscError(f"return must be the last statement of block '{frame.block}'", stmt.loc,
                   "'return' as the block's last statement")


EXECUTORS = {
    ast.SizeStmt: _size,
    ast.Assign: _assign,
    ast.Destructure: _destructure,
    ast.Precision: _precision,
    ast.Deploy: _deploy,
    ast.Decl: _decl,
    ast.Output: _output,
    ast.Repeat: _repeat,
    ast.Return: _return,
}
