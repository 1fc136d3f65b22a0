"""Block calls: bind the arguments to the parameters, run the body in a fresh frame.

A tensor parameter `x: [T, d]` binds T and d to the argument's dims; `...` at the front
matches any leading dims; a literal int, or a name already bound (by an earlier parameter or
a file constant), must equal the dim. A number parameter `n` or `n = default` binds whatever
it is given; a default is evaluated in the block, after the parameters before it. Inside the
block only its parameters, its own statements and its file's constants are visible. Blocks
may not recurse. An error inside the body gets a note naming the call.
"""
from __future__ import annotations

from compiler.errors import DscError, Loc
from compiler.frontend import ast, expr, statements
from compiler.frontend.limits import MAX_CALL_DEPTH
from compiler.frontend.loader import BlockRef
from compiler.frontend.scope import Frame
from compiler.frontend.signature import REQUIRED, Arg, Param, Signature
from compiler.frontend.values import Tensor, describe
from compiler.ir.graph import Graph
from compiler.ir.ops import dims

ELLIPSIS = "..."


def signature(defn: ast.BlockDef) -> Signature:
    params = tuple(Param(p.name, REQUIRED if p.default is None else p.default, p.text())
                   for p in defn.params)
    return Signature("block", defn.name, params)


def call_block(b, caller: Frame, ref: BlockRef, args: list[Arg], kwargs: dict[str, Arg],
               loc: Loc):
    defn = ref.defn
    if caller.constant:
        raise DscError(f"a file-level constant cannot call block '{defn.name}'", loc,
                       "a number, a string or a list")
    if any(active is ref for active in b.active):
        chain = " -> ".join([r.defn.name for r in b.active] + [defn.name])
        raise DscError(f"recursion: block '{defn.name}' calls itself ({chain})", loc,
                       "blocks that do not call themselves, directly or indirectly")
    if len(b.active) >= MAX_CALL_DEPTH:
        raise DscError(f"block calls nested more than {MAX_CALL_DEPTH} deep (calling "
                       f"'{defn.name}' from {' -> '.join(r.defn.name for r in b.active)})", loc,
                       "fewer levels of blocks calling blocks")
    sig = signature(defn)
    bound = sig.bind(args, kwargs, loc)
    frame = b.frame(ref.unit, b.namer.block_scope(caller.scope, defn.name), defn.name)
    note = f"in block '{defn.name}' called at {loc}"
    b.graph.where[Graph.call_key(frame.scope)] = loc    # for errors found after the build
    b.active.append(ref)
    try:
        for param in defn.params:
            _bind_param(b, frame, defn, param, bound.get(param.name), note)
        try:
            return statements.run_block(b, frame, defn)
        except DscError as err:
            raise err.with_note(note) from None
    finally:
        b.active.pop()


def _bind_param(b, frame: Frame, defn: ast.BlockDef, param: ast.Param, arg: Arg | None,
                note: str) -> None:
    if arg is None:
        try:
            value = expr.evaluate_single(b, frame, param.default, f"the default of '{param.name}'")
        except DscError as err:
            raise err.with_note(note) from None
        arg = Arg(value, ast.start_loc(param.default))
    if param.pattern is not None:
        _match(frame, defn, param, arg)
    elif param.name in frame.vars and frame.vars[param.name] != arg.value:
        raise DscError(f"shape mismatch: argument '{param.name}' of block '{defn.name}' is "
                       f"{describe(arg.value)}, but an earlier pattern bound it to "
                       f"{frame.vars[param.name]}", arg.loc, signature(defn).text())
    frame.bind(param.name, arg.value, param.loc)


def _match(frame: Frame, defn: ast.BlockDef, param: ast.Param, arg: Arg) -> None:
    """Bind the names of `param`'s pattern to the dims of the tensor `arg`."""
    expected = f"{signature(defn).text()}"
    what = f"argument '{param.name}' of block '{defn.name}'"
    if not isinstance(arg.value, Tensor):
        raise DscError(f"{what} must be a tensor {param.text().split(': ', 1)[1]}, got "
                       f"{describe(arg.value)}", arg.loc, expected)
    pattern = param.pattern
    for extra in pattern[1:]:
        if extra.value == ELLIPSIS:
            raise DscError("'...' may only come first in a pattern", extra.loc,
                           "a pattern like [..., d]")
    leading = bool(pattern) and pattern[0].value == ELLIPSIS
    fixed = pattern[1:] if leading else pattern
    shape = arg.value.shape
    if len(shape) < len(fixed) or (not leading and len(shape) != len(fixed)):
        raise DscError(f"shape mismatch: {what} has rank {len(shape)} {dims(shape)}, but its "
                       f"pattern {param.text()} needs rank {'>= ' if leading else ''}"
                       f"{len(fixed)}", arg.loc, expected)
    for dim, size in zip(fixed, shape[len(shape) - len(fixed):]):
        known = dim.value if isinstance(dim.value, int) else _bound(frame, dim.value)
        if known is not None and known != size:
            need = known if isinstance(dim.value, int) else f"{dim.value} = {known}"
            raise DscError(f"shape mismatch: {what} is {dims(shape)}, but its pattern "
                           f"{param.text()} needs {need} where it has {size}",
                           arg.loc, expected)
        if isinstance(dim.value, str):
            frame.bind(dim.value, size, dim.loc)


def _bound(frame: Frame, name: str):
    if name in frame.vars:
        return frame.vars[name]
    return frame.unit.consts.get(name)
