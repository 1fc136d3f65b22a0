"""Call resolution: `NAME(args)` is, in this order, a block visible in the file, a builtin
composite (`split`, `topk`), a builtin op of the registry, or a scalar function.

`max` is both a reduction op and a scalar function: with no tensor argument it is the scalar
one. The composite `topk` stands for the `topk` op followed by `topk_weights`.
"""
from __future__ import annotations

from compiler.errors import DscError, did_you_mean
from compiler.frontend import ast, blocks
from compiler.frontend.composites import COMPOSITES, call_composite
from compiler.frontend.opcalls import call_op, callable_ops
from compiler.frontend.scalars import SCALARS, call_scalar
from compiler.frontend.signature import Arg
from compiler.frontend.values import Tensor

OPS = callable_ops()


def _has_tensor(args: list[Arg], kwargs: dict[str, Arg]) -> bool:
    values = [a.value for a in args] + [a.value for a in kwargs.values()]
    return any(isinstance(v, Tensor) or (isinstance(v, list) and any(isinstance(x, Tensor)
                                                                      for x in v))
               for v in values)


# (accepts(name, args, kwargs), call) in resolution order, after blocks.
BUILTINS = [
    (lambda name, args, kwargs: name in COMPOSITES, call_composite),
    (lambda name, args, kwargs: name in OPS and (name not in SCALARS
                                                 or _has_tensor(args, kwargs)), call_op),
    (lambda name, args, kwargs: name in SCALARS, call_scalar),
]


def check_callable(frame, e: ast.Call) -> None:
    """An unknown callee is reported before its arguments are evaluated."""
    name = e.name
    if name in frame.unit.blocks or name in COMPOSITES or name in OPS or name in SCALARS:
        return
    known = set(frame.unit.blocks) | set(COMPOSITES) | OPS | set(SCALARS)
    raise DscError(f"unknown name '{name}'{did_you_mean(name, known)}", e.loc,
                   "a block, a builtin op (" + ", ".join(sorted(OPS)[:8]) + ", ...), "
                   "split, topk or sqrt/min/max/ceil_div")


def call(b, frame, e: ast.Call, args: list[Arg], kwargs: dict[str, Arg], hint):
    block = frame.unit.blocks.get(e.name)
    if block is not None:
        return blocks.call_block(b, frame, block, args, kwargs, e.loc)
    for accepts, handler in BUILTINS:
        if accepts(e.name, args, kwargs):
            return handler(b, frame, e.name, args, kwargs, e.loc, hint)
    raise DscError(f"unknown name '{e.name}'", e.loc, "a block or a builtin")
