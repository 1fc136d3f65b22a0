"""The syntax tree of a .ds file: frozen records, each with the source position it came from.

The parser produces these from the lark parse tree; the builder walks them. Expressions are
evaluated dynamically (an expression is an int, a float, a string, a list or a tensor depending
on what its names hold), so there is one expression tree for all of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from compiler.errors import Loc


# ---- expressions -------------------------------------------------------------------------

@dataclass(frozen=True)
class Num:
    value: int | float
    loc: Loc


@dataclass(frozen=True)
class Str:
    value: str
    loc: Loc


@dataclass(frozen=True)
class Bool:
    value: bool
    loc: Loc


@dataclass(frozen=True)
class Name:
    name: str
    loc: Loc


@dataclass(frozen=True)
class ListExpr:
    items: tuple["Expr", ...]
    loc: Loc


@dataclass(frozen=True)
class Index:
    """`NAME[index]`: an entry of a list; `loc` is the name's position."""
    name: str
    index: "Expr"
    loc: Loc


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    loc: Loc


@dataclass(frozen=True)
class BinOp:
    """`left OP right`; `loc` is the operator's position, where shape errors point."""
    op: str
    left: "Expr"
    right: "Expr"
    loc: Loc


@dataclass(frozen=True)
class KwArg:
    name: str
    value: "Expr"
    loc: Loc


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple["Expr", ...]
    kwargs: tuple[KwArg, ...]
    loc: Loc


Expr = Union[Num, Str, Bool, Name, Index, ListExpr, Neg, BinOp, Call]


# ---- types ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScalingExpr:
    dtype: str
    block: tuple[int, int]
    tensor_dtype: str | None
    loc: Loc

    def text(self) -> str:
        extra = f", {self.tensor_dtype}" if self.tensor_dtype else ""
        return f"scaled({self.dtype}, {self.block[0]}x{self.block[1]}{extra})"


@dataclass(frozen=True)
class FormatExpr:
    """`DTYPE [scaled(...)]` as written; `loc` is the dtype's position."""
    dtype: str
    scaling: ScalingExpr | None
    loc: Loc

    def text(self) -> str:
        return self.dtype if self.scaling is None else f"{self.dtype} {self.scaling.text()}"


@dataclass(frozen=True)
class TypeExpr:
    """`FORMAT[dims]`, or `[dims]` (format=None: the declaration's role decides)."""
    format: FormatExpr | None
    dims: tuple[Expr, ...]
    loc: Loc


# ---- statements ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SizeItem:
    name: str
    value: Expr
    loc: Loc


@dataclass(frozen=True)
class SizeStmt:
    items: tuple[SizeItem, ...]
    loc: Loc


@dataclass(frozen=True)
class Assign:
    name: str
    value: Expr
    loc: Loc


@dataclass(frozen=True)
class Destructure:
    names: tuple[str, ...]
    value: Expr
    loc: Loc


@dataclass(frozen=True)
class PrecisionEntry:
    role: str
    format: FormatExpr
    loc: Loc


@dataclass(frozen=True)
class Precision:
    entries: tuple[PrecisionEntry, ...]
    loc: Loc


@dataclass(frozen=True)
class DeployEntry:
    key: str
    value: int | str
    loc: Loc


@dataclass(frozen=True)
class Deploy:
    entries: tuple[DeployEntry, ...]
    loc: Loc


@dataclass(frozen=True)
class Decl:
    kind: str           # input | weight | cache
    name: str
    type: TypeExpr
    loc: Loc


@dataclass(frozen=True)
class Output:
    name: str
    type: TypeExpr | None
    value: Expr
    loc: Loc


@dataclass(frozen=True)
class Repeat:
    count: Expr
    name: str | None
    body: tuple["Stmt", ...]
    loc: Loc


@dataclass(frozen=True)
class Return:
    values: tuple[Expr, ...]
    loc: Loc


Stmt = Union[SizeStmt, Assign, Destructure, Precision, Decl, Output, Repeat, Return]


# ---- file items ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PatDim:
    """One dim of a parameter pattern: a name to bind, a literal int, or `...`."""
    value: str | int
    loc: Loc


@dataclass(frozen=True)
class Param:
    name: str
    pattern: tuple[PatDim, ...] | None     # tensor param `x: [T, d]`
    default: Expr | None                   # number param `n = 4`
    loc: Loc

    def text(self) -> str:
        if self.pattern is not None:
            return f"{self.name}: [{', '.join(str(d.value) for d in self.pattern)}]"
        return self.name if self.default is None else f"{self.name} = {show(self.default)}"


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    loc: Loc

    def signature(self) -> str:
        return f"{self.name}({', '.join(p.text() for p in self.params)})"


@dataclass(frozen=True)
class Import:
    path: str
    loc: Loc


@dataclass(frozen=True)
class ConstDef:
    name: str
    value: Expr
    loc: Loc


@dataclass(frozen=True)
class ModelDef:
    name: str
    body: tuple[Stmt, ...]
    loc: Loc


@dataclass(frozen=True)
class ServePhase:
    """`prefill "MODEL.ds" { ... }`: a cluster running one phase of a service."""
    phase: str
    model: str
    entries: tuple[DeployEntry, ...]
    loc: Loc
    model_loc: Loc


@dataclass(frozen=True)
class ServeSetting:
    key: str
    value: int | float | str
    loc: Loc


@dataclass(frozen=True)
class ServeDef:
    name: str
    items: tuple[ServePhase | ServeSetting, ...]
    loc: Loc


Item = Union[Import, BlockDef, ConstDef, ModelDef, ServeDef]


@dataclass(frozen=True)
class Module:
    file: str                  # the displayed file name
    items: tuple[Item, ...]


def show(expr: Expr) -> str:
    """An expression as source text (for signatures in messages)."""
    render = _SHOW.get(type(expr))
    return render(expr) if render else "..."


def _show_call(expr: Call) -> str:
    args = [show(a) for a in expr.args] + [f"{k.name}={show(k.value)}" for k in expr.kwargs]
    return f"{expr.name}({', '.join(args)})"


_SHOW = {
    Num: lambda e: repr(e.value),
    Str: lambda e: f'"{e.value}"',
    Bool: lambda e: "true" if e.value else "false",
    Name: lambda e: e.name,
    Neg: lambda e: f"-{show(e.operand)}",
    BinOp: lambda e: f"{show(e.left)} {e.op} {show(e.right)}",
    ListExpr: lambda e: "[" + ", ".join(show(x) for x in e.items) + "]",
    Call: _show_call,
}


def start_loc(expr: Expr) -> Loc:
    """Where an expression's text starts (a binary operation's own loc is its operator)."""
    while isinstance(expr, BinOp):
        expr = expr.left
    return expr.loc


_CHILDREN = {
    Neg: lambda e: (e.operand,),
    BinOp: lambda e: (e.left, e.right),
    ListExpr: lambda e: e.items,
    Index: lambda e: (Name(e.name, e.loc), e.index),
    Call: lambda e: e.args + tuple(k.value for k in e.kwargs),
}


def names_in(expr: Expr):
    """Every variable reference in an expression (call names are not variables)."""
    if isinstance(expr, Name):
        yield expr
    for child in _CHILDREN.get(type(expr), lambda e: ())(expr):
        yield from names_in(child)
