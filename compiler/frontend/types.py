"""Tensor types in declarations: `DTYPE[dims] [scaled(...)]`, an alias, or `[dims]`.

Dims are integer expressions over the names in scope; a name that is not defined is an
"undefined size", and a dim must be a positive integer. `[dims]` alone takes the format of the
declaration's role from the precision policy (see policy.py for the orientation rule).
"""
from __future__ import annotations

from compiler.errors import DscError, did_you_mean
from compiler.frontend import ast, expr
from compiler.frontend.policy import format_of, role_format
from compiler.frontend.scope import Frame
from compiler.frontend.values import expect_int
from compiler.ir.graph import TensorType


def evaluate_shape(b, frame: Frame, texpr: ast.TypeExpr, name: str) -> tuple[int, ...]:
    return tuple(_dim(b, frame, d, i, name) for i, d in enumerate(texpr.dims))


def evaluate_type(b, frame: Frame, texpr: ast.TypeExpr, kind: str, name: str) -> TensorType:
    """The type of a declaration of `kind` (input, weight, cache) named `name`."""
    shape = evaluate_shape(b, frame, texpr, name)
    fmt = format_of(texpr.format) if texpr.format else role_format(b.policy, kind, len(shape))
    return TensorType(shape, fmt)


def _dim(b, frame: Frame, dim: ast.Expr, index: int, name: str) -> int:
    known = frame.vars.keys() | frame.unit.consts.keys()
    for ref in ast.names_in(dim):
        if ref.name not in known:
            raise DscError(f"undefined size '{ref.name}' in the type of '{name}'"
                           f"{did_you_mean(ref.name, known)}", ref.loc, frame.visible_hint())
    value = expr.evaluate_single(b, frame, dim, f"dim {index} of '{name}'")
    return expect_int(value, ast.start_loc(dim), f"dim {index} of '{name}'", minimum=1)

