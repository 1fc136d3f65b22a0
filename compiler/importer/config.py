"""A Hugging Face config.json read field by field, so every field ends up accounted for.

The importer asks for the fields it uses (`get`), states what it requires of others
(`require`), and names the fields that change nothing it models (`ignore`); whatever is left
is a field dsc does not know, reported at its line in the file. Errors point into the JSON
text, with the line and a caret, like errors in a .ds file.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from compiler.errors import DscError, Loc, register_source

MISSING = object()


class HFConfig:
    def __init__(self, path: str):
        self.path = path
        self.text = _read(path)
        register_source(path, self.text)
        try:
            data = json.loads(self.text)
        except json.JSONDecodeError as err:
            raise DscError(f"not valid JSON: {err.msg}", Loc(path, err.lineno, err.colno),
                           expected="a Hugging Face config.json") from None
        if not isinstance(data, dict):
            raise DscError("a config.json holds one JSON object", Loc(path, 1, 1))
        self.data = data
        self.used: set[str] = set()

    def loc(self, field: str) -> Loc:
        """The position of `"field":` at the top level of the file (first occurrence)."""
        match = re.search(r'"' + re.escape(field) + r'"\s*:', self.text)
        if match is None:
            return Loc(self.path, 1, 1)
        line = self.text.count("\n", 0, match.start()) + 1
        col = match.start() - (self.text.rfind("\n", 0, match.start()) + 1) + 1
        return Loc(self.path, line, col)

    def has(self, field: str) -> bool:
        return field in self.data and self.data[field] is not None

    def get(self, field: str, kind: type, default=MISSING, minimum: int = 1):
        """The value of a field the model is built from, checked to be of `kind` (an int at
        least `minimum`)."""
        self.used.add(field)
        value = self.data.get(field)
        if value is None:
            if default is MISSING:
                raise DscError(f"config field '{field}' is missing", Loc(self.path, 1, 1),
                               expected=f"'{field}': {_KIND_TEXT[kind]} (model_type "
                                        f"'{self.data.get('model_type')}' needs it)")
            return default
        if not _is_kind(value, kind):
            raise DscError(f"config field '{field}' must be {_KIND_TEXT[kind]}, got "
                           f"{json.dumps(value)}", self.loc(field))
        if kind is int and value < minimum:
            raise DscError(f"config field '{field}' must be at least {minimum}, got {value}",
                           self.loc(field))
        return float(value) if kind is float else value

    def require(self, field: str, allowed: tuple, why: str) -> None:
        """A field dsc only supports at some values (null/absent counts as None)."""
        self.used.add(field)
        value = self.data.get(field)
        if value not in allowed:
            shown = " or ".join(json.dumps(a) for a in allowed)
            raise DscError(f"unsupported value of config field '{field}': {json.dumps(value)}",
                           self.loc(field), expected=f"{shown} ({why})")

    def ignore(self, fields) -> None:
        self.used.update(fields)

    def check_all_used(self, model_type: str) -> None:
        unknown = [f for f in self.data if f not in self.used]
        if unknown:
            names = ", ".join(f"'{f}'" for f in unknown)
            raise DscError(f"unsupported config field{'s' if len(unknown) > 1 else ''} for "
                           f"model_type '{model_type}': {names}", self.loc(unknown[0]),
                           expected="only fields dsc knows the meaning of (docs/language.md, "
                                    "'Importing a Hugging Face config')")


_KIND_TEXT = {int: "a positive integer", float: "a number", bool: "true or false",
              str: "a string", list: "a list", dict: "an object"}


def _is_kind(value, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _read(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        what = "a directory" if p.is_dir() else "not found"
        raise DscError(f"config file '{path}': {what}", expected="a local config.json file")
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DscError(f"cannot read config file '{path}': {err}") from None
