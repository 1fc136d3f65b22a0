"""Name scopes: what code can see (Frame) and what graph nodes are called (Namer).

Visibility: a Frame is one activation of the model body or of a block. It sees its own
variables and then the constants of the file it is written in; a block does not see its
caller's variables. `repeat` runs in the enclosing frame (assignments update the enclosing
variables, as in a Python loop); only the naming scope changes.

Naming: a node's name is its scope path and a base joined by '.'. The model body is the empty
scope; a block call adds the block's name (`moe`, then `moe_1`, `moe_2` for later calls in the
same scope); a repeat iteration adds `NAME.i`, one counter per NAME and scope that continues
across repeats. Names are made unique with `_1`, `_2` suffixes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compiler.errors import DscError, Loc, did_you_mean


def join(scope: str, name: str) -> str:
    return f"{scope}.{name}" if scope else name


class Namer:
    def __init__(self):
        self.used: set[str] = set()
        self._suffix: dict[str, int] = {}
        self._scopes: set[str] = set()
        self._iterations: dict[tuple[str, str], int] = {}

    def unique(self, base: str) -> str:
        """`base` itself if unused, else the first free `base_N`."""
        name = base
        if name in self.used:
            n = self._suffix.get(base, 1)
            while f"{base}_{n}" in self.used:
                n += 1
            self._suffix[base] = n + 1
            name = f"{base}_{n}"
        self.used.add(name)
        return name

    def block_scope(self, parent: str, block: str) -> str:
        base = join(parent, block)
        scope, n = base, 1
        while scope in self._scopes:
            scope, n = f"{base}_{n}", n + 1
        self._scopes.add(scope)
        return scope

    def next_iteration(self, parent: str, name: str) -> int:
        """The number the next iteration of NAME in `parent` will get."""
        return self._iterations.get((parent, name), 0)

    def iteration_scope(self, parent: str, name: str) -> str:
        i = self._iterations.get((parent, name), 0)
        self._iterations[(parent, name)] = i + 1
        return join(parent, f"{name}.{i}")


@dataclass
class Frame:
    """One activation of the model body or a block.

    `unit` is the loaded file the code is written in (its constants and visible blocks),
    `scope` the current naming scope, `block` the block's name (None for the model body),
    `loops` how many repeats deep the current statement is; a `constant` frame evaluates
    file-level constants and may not create graph nodes.
    """
    unit: Any
    scope: str
    block: str | None = None
    constant: bool = False
    loops: int = 0
    vars: dict[str, Any] = field(default_factory=dict)
    bound_at: dict[tuple[str, str], Loc] = field(default_factory=dict)
    # a running repeat's layer number, by its name: the lists the body indexes with it (and
    # where), and whether the body read the number any other way (`loop_raw`)
    loop_lists: dict[str, dict[str, Loc]] = field(default_factory=dict)
    loop_raw: set[str] = field(default_factory=set)

    def loop_read(self, name: str) -> None:
        if name in self.loop_lists:
            self.loop_raw.add(name)

    @property
    def at_model_top(self) -> bool:
        return self.block is None and self.loops == 0

    def lookup(self, name: str, loc: Loc, what: str = "name"):
        if name in self.vars:
            return self.vars[name]
        consts = self.unit.consts
        if name in consts:
            return consts[name]
        raise DscError(f"unknown {what} '{name}'"
                       f"{did_you_mean(name, set(self.vars) | set(consts))}",
                       loc, self.visible_hint())

    def visible_hint(self) -> str:
        names = sorted(set(self.vars) | set(self.unit.consts))
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        return f"a defined name ({shown})" if names else "a defined name"

    def bind(self, name: str, value, loc: Loc) -> None:
        """Assignment: rebinding is allowed, as in Python."""
        self.vars[name] = value
        self.bound_at.setdefault((self.scope, name), loc)

    def check_new(self, name: str, loc: Loc, what: str) -> None:
        earlier = self.bound_at.get((self.scope, name))
        if earlier is not None:
            raise DscError(f"duplicate declaration: '{name}' is already defined at {earlier}",
                           loc, f"a new name for this {what}")

    def declare(self, name: str, value, loc: Loc, what: str) -> None:
        """A declaration: its name must be new in the current scope."""
        self.check_new(name, loc, what)
        self.vars[name] = value
        self.bound_at[(self.scope, name)] = loc
