"""`--set NAME=VALUE`: override a precision role or a top-level integer of the model.

A role (`default`, `weights`, `activations`, `kv_cache`) takes a FORMAT. Any other name must be
a top-level integer of the model, a `size` item or a `NAME = expr` directly in the model body,
and VALUE an integer literal as the model writes one (`-3`, not `+3`); it replaces the value
where the name is defined, so every later use sees it. Errors point at the definition (or at the `model` line for an unknown name).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from compiler.errors import DscError, Loc, did_you_mean
from compiler.frontend import ast
from compiler.frontend.limits import MAX_INT
from compiler.frontend.policy import ROLES
from compiler.frontend.values import describe, is_int

# An integer as the model writes one: .ds has no unary plus, and `+5` reads as "5 more", which
# --set does not do (the value replaces the model's), so it is refused rather than read as 5.
INTEGER = re.compile(r"\s*-?[0-9]+\s*", re.ASCII)
PLUS_INTEGER = re.compile(r"\s*\+[0-9]+\s*", re.ASCII)


@dataclass(frozen=True)
class Overrides:
    roles: dict[str, str]          # role -> FORMAT text
    ints: dict[str, int]           # top-level integer -> new value

    def apply(self, name: str, value, loc: Loc):
        """The value a top-level definition takes: the override if there is one."""
        if name not in self.ints:
            return value
        if not is_int(value):
            raise DscError(f"cannot --set '{name}': it is {describe(value)}, not a top-level "
                           "integer", loc, "--set on a size or a top-level integer")
        return self.ints[name]


def top_level_ints(model: ast.ModelDef) -> dict[str, Loc]:
    """Names that may be integers set with --set: size items and direct assignments."""
    found: dict[str, Loc] = {}
    for stmt in model.body:
        items = stmt.items if isinstance(stmt, ast.SizeStmt) else (stmt,)
        for item in items:
            if isinstance(item, (ast.SizeItem, ast.Assign)):
                found.setdefault(item.name, item.loc)
    return found


def read_overrides(model: ast.ModelDef, given: dict[str, str] | None) -> Overrides:
    candidates = top_level_ints(model)
    roles: dict[str, str] = {}
    ints: dict[str, int] = {}
    for name, text in (given or {}).items():
        if name in ROLES:
            roles[name] = text
        elif name in candidates:
            if PLUS_INTEGER.fullmatch(str(text)):
                raise DscError(f"bad --set {name}={text}: --set replaces the value, it does "
                               "not add to it", candidates[name],
                               f"the new value itself, e.g. --set {name}={text.strip()[1:]}")
            if not INTEGER.fullmatch(str(text)):
                raise DscError(f"bad --set {name}={text}: '{text}' is not an integer",
                               candidates[name], f"an integer value for '{name}'")
            digits = text.strip().lstrip("-")
            if len(digits) > 16 or int(digits) > MAX_INT:      # int() of a huge text is slow
                raise DscError(f"bad --set {name}={text}: the value is beyond 2^53",
                               candidates[name], f"an integer value for '{name}' of at most "
                               "2^53 (exact in the float arithmetic of FLOPs and bytes)")
            ints[name] = int(text)
        else:
            known = sorted(candidates) + list(ROLES)
            raise DscError(f"bad --set: unknown name '{name}'{did_you_mean(name, known)} in "
                           f"model '{model.name}'", model.loc,
                           f"a role ({', '.join(ROLES)}) or a top-level integer "
                           f"({', '.join(sorted(candidates)) or 'none'})")
    return Overrides(roles, ints)
