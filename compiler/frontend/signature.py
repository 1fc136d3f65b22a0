"""Argument binding, shared by blocks, builtin ops, composites and scalar functions.

A call gives positional arguments and then `name=value` keywords; a `Signature` maps them to
its parameters in order and reports, naming the callee and showing its signature, too many
arguments, unknown or repeated keywords, and missing ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compiler.errors import DscError, Loc, did_you_mean
from compiler.ir.ops import REQUIRED       # one sentinel for "no default", shared with OpDef


@dataclass(frozen=True)
class Arg:
    value: Any
    loc: Loc


@dataclass(frozen=True)
class Param:
    name: str
    default: Any = REQUIRED       # REQUIRED, or a default (kept as given: a value or an Expr)
    shown: str | None = None      # how the signature shows it, e.g. `x: [T, d]` or `eps=1e-06`

    def text(self) -> str:
        if self.shown is not None:
            return self.shown
        return self.name if self.default is REQUIRED else f"{self.name}={_show(self.default)}"


@dataclass(frozen=True)
class Signature:
    kind: str                     # "block", "op", "composite" or "function": for messages
    name: str
    params: tuple[Param, ...]
    variadic: bool = False        # takes one or more positional values (min, max)

    def text(self) -> str:
        inner = "..." if self.variadic else ", ".join(p.text() for p in self.params)
        return f"{self.name}({inner})"

    def bind(self, args: list[Arg], kwargs: dict[str, Arg], loc: Loc) -> dict[str, Arg]:
        """Parameter name -> Arg for every given argument; missing defaults are left out."""
        expected = self.text()
        if self.variadic:
            return self._bind_variadic(args, kwargs, loc, expected)
        if len(args) > len(self.params):
            raise DscError(f"wrong number of arguments: {self.kind} '{self.name}' takes "
                           f"{_count(self.params)}, got {len(args)}",
                           args[len(self.params)].loc, expected)
        bound = {p.name: a for p, a in zip(self.params, args)}
        names = [p.name for p in self.params]
        for key, arg in kwargs.items():
            if key not in names:
                raise DscError(f"{self.kind} '{self.name}' has no argument '{key}'"
                               f"{did_you_mean(key, names)}", arg.loc, expected)
            if key in bound:
                raise DscError(f"argument '{key}' of {self.kind} '{self.name}' is given twice",
                               arg.loc, expected)
            bound[key] = arg
        missing = [p.name for p in self.params if p.default is REQUIRED and p.name not in bound]
        if missing:
            raise DscError(f"wrong number of arguments: {self.kind} '{self.name}' needs "
                           f"argument '{missing[0]}' ({len(args) + len(kwargs)} given)",
                           loc, expected)
        return bound

    def _bind_variadic(self, args, kwargs, loc, expected):
        if kwargs:
            key, arg = next(iter(kwargs.items()))
            raise DscError(f"{self.kind} '{self.name}' takes no keyword arguments", arg.loc,
                           expected)
        if not args:
            raise DscError(f"wrong number of arguments: {self.kind} '{self.name}' needs at "
                           "least one argument", loc, expected)
        return {str(i): a for i, a in enumerate(args)}


def _count(params) -> str:
    required = sum(p.default is REQUIRED for p in params)
    total = len(params)
    if required == total:
        return f"{total} argument{'s' if total != 1 else ''}"
    return f"{required} to {total} arguments"


def _show(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(none)"
    return str(value)
