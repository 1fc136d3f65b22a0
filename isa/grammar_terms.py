"""How a lark grammar's terminals read in an "expected ..." message (listings and IR text)."""
from __future__ import annotations

import lark


def describe_terminal(parser: lark.Lark, known: dict[str, str], name: str) -> str:
    """The terminal's name for people when `known` has one, else its literal text in quotes
    (`'wait('`), else its grammar name."""
    if name in known:
        return known[name]
    pattern = parser.get_terminal(name).pattern
    return f"'{pattern.value}'" if pattern.type == "str" else name
