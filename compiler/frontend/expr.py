"""Expression evaluation: each syntax record type has one evaluator in `EVALUATORS`.

`hint` is the name an assignment gives the node its expression produces (`v = a @ b` names
the matmul `scope.v`); it reaches only the outermost operation of the expression, and a block
call ignores it (its result was named inside the block).
"""
from __future__ import annotations

from compiler.errors import DscError
from compiler.frontend import arith, ast, calls
from compiler.frontend.signature import Arg
from compiler.frontend.values import describe, expect_int, expect_single


def evaluate(b, frame, expr: ast.Expr, hint=None):
    return EVALUATORS[type(expr)](b, frame, expr, hint)


def evaluate_single(b, frame, expr: ast.Expr, what: str = "this expression", hint=None):
    return expect_single(evaluate(b, frame, expr, hint), ast.start_loc(expr), what)


def _list(b, frame, e: ast.ListExpr, hint):
    return [evaluate_single(b, frame, item, "a list item") for item in e.items]


def _name(b, frame, e: ast.Name, hint):
    value = frame.lookup(e.name, e.loc)
    frame.loop_read(e.name)
    return value


def _index(b, frame, e: ast.Index, hint):
    """`NAME[i]`: entry i (0 first) of a list. A repeat's layer number as the index is
    recorded, so the repeat knows its iterations differ only by the entries they read."""
    table = frame.lookup(e.name, e.loc)
    if not isinstance(table, list):
        raise DscError(f"'{e.name}' is {describe(table)}, not a list: only a list is indexed",
                       e.loc, "the name of a list")
    if isinstance(e.index, ast.Name) and e.index.name in frame.loop_lists:
        i = frame.lookup(e.index.name, e.index.loc)
        frame.loop_lists[e.index.name].setdefault(e.name, e.index.loc)
    else:
        i = evaluate_single(b, frame, e.index, "a list index")
    where = ast.start_loc(e.index)
    expect_int(i, where, f"the index of '{e.name}'")
    if not 0 <= i < len(table):
        raise DscError(f"index {i} is out of range for list '{e.name}' of {len(table)} "
                       f"entries", where, f"an index from 0 to {len(table) - 1}")
    return table[i]


def _binop(b, frame, e: ast.BinOp, hint):
    left = evaluate_single(b, frame, e.left, f"the left operand of '{e.op}'")
    right = evaluate_single(b, frame, e.right, f"the right operand of '{e.op}'")
    return arith.binary(b, frame, e, left, right, hint)


def _neg(b, frame, e: ast.Neg, hint):
    value = evaluate_single(b, frame, e.operand, "the operand of '-'")
    return arith.negate(b, frame, e, value, hint)


def _call(b, frame, e: ast.Call, hint):
    calls.check_callable(frame, e)
    args = [Arg(evaluate_single(b, frame, a, "an argument"), ast.start_loc(a)) for a in e.args]
    kwargs: dict[str, Arg] = {}
    for k in e.kwargs:
        if k.name in kwargs:
            raise DscError(f"argument '{k.name}' is given twice", k.loc, "each argument once")
        kwargs[k.name] = Arg(evaluate_single(b, frame, k.value, "an argument"), k.loc)
    return calls.call(b, frame, e, args, kwargs, hint)


EVALUATORS = {
    ast.Num: lambda b, frame, e, hint: e.value,
    ast.Str: lambda b, frame, e, hint: e.value,
    ast.Bool: lambda b, frame, e, hint: e.value,
    ast.Name: _name,
    ast.Index: _index,
    ast.ListExpr: _list,
    ast.Neg: _neg,
    ast.BinOp: _binop,
    ast.Call: _call,
}
