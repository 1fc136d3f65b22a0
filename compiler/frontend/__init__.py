"""The front end: `.ds` text -> IR Graph.

    load_model(path, overrides) -> Graph

`overrides` are the raw `--set NAME=VALUE` pairs: a precision role (default, weights,
activations, kv_cache) with a FORMAT, or a top-level integer of the model with an integer.
Pipeline: parser.py (ds.lark -> ast.py records) -> loader.py (imports) -> builder.py
(policy.py, overrides.py, statements.py, expr.py, calls.py ...) -> compiler.ir.graph.Graph.
Every user mistake is a DscError with a position.
"""
from __future__ import annotations

from compiler.ir.graph import Graph


def load_model(path: str, overrides: dict[str, str] | None = None,
               unroll: bool = False) -> Graph:
    """Parse, import and build the model in the .ds file at `path`. A model-level repeat
    whose iterations become identical is built as a window of them (`graph.steady`), unless
    `unroll` asks for every iteration."""
    from compiler.frontend.builder import build
    return build(path, overrides, unroll)


__all__ = ["load_model"]
