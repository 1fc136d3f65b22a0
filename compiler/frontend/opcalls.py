"""Calls of builtin ops: `softmax(x)`, `rmsnorm(x, w, eps=1e-5)`, `einsum("spec", a, b)`, ...

Each op's call signature comes from its registry record: its tensors first (positional), then
its attributes, positionally in the record's order or by keyword. Attribute values are
checked and converted by kind (`ATTR_KINDS`); the record's `full_attrs`, `infer` and
`result_format` do the rest (in `Builder.emit`).
"""
from __future__ import annotations

from functools import lru_cache

from compiler.errors import DscError
from compiler.frontend.policy import parse_text
from compiler.frontend.signature import REQUIRED, Arg, Param, Signature
from compiler.frontend.values import Tensor, describe, expect_int, expect_tensor, is_number
from compiler.ir.ops import OPS
from compiler.ir.ops.routing import balanced_capacity

# Names of each op's tensor operands (default by arity: x / a, b / a, b, c).
TENSOR_PARAMS = {
    "rmsnorm": ("x", "w"), "cache_write": ("cache", "new"), "dispatch": ("x", "idx"),
    "combine": ("y", "idx", "w"), "embedding": ("ids", "table"), "topk_weights": ("s", "idx"),
    "concat": ("xs",), "topk": ("s",),
}
BY_ARITY = {1: ("x",), 2: ("a", "b"), 3: ("a", "b", "c")}
LEADING_ATTRS = {"einsum": ("spec",)}             # attributes written before the tensors
LIST_OPERAND = {"concat"}                         # the tensors come as one list
# Attributes that may be omitted although the registry has no default: the op or
# DERIVED_DEFAULTS decide; the text is how signatures show the default.
OPTIONAL = {"perm": "(last two swapped)", "capacity": "(balanced)"}

ATTR_KINDS = {
    "axis": "int", "keepdims": "bool", "offset": "int", "theta": "float", "eps": "float",
    "start": "int", "stop": "int", "k": "int", "groups": "int", "topk_groups": "int", "group_best": "int",
    "experts": "int", "capacity": "int", "norm": "bool", "scale": "float", "spec": "string",
    "shape": "ints", "perm": "ints", "format": "format", "value": "float",
}


def _int(arg: Arg, what: str):
    return expect_int(arg.value, arg.loc, what)


def _float(arg: Arg, what: str):
    if not is_number(arg.value):
        raise DscError(f"{what} must be a number, got {describe(arg.value)}", arg.loc,
                       "a number")
    return float(arg.value)


def _bool(arg: Arg, what: str):
    if not isinstance(arg.value, bool):
        raise DscError(f"{what} must be true or false, got {describe(arg.value)}", arg.loc,
                       "true or false")
    return arg.value


def _string(arg: Arg, what: str):
    if not isinstance(arg.value, str):
        raise DscError(f"{what} must be a string, got {describe(arg.value)}", arg.loc,
                       'a string like "bshd,hdk->bshk"')
    return arg.value


def _ints(arg: Arg, what: str):
    if not isinstance(arg.value, list):
        raise DscError(f"{what} must be a list of integers, got {describe(arg.value)}",
                       arg.loc, "a list like [4, -1]")
    return tuple(expect_int(v, arg.loc, f"each item of {what}") for v in arg.value)


def _format(arg: Arg, what: str):
    return parse_text(_string(arg, what), arg.loc)


def _any(arg: Arg, what: str):
    if isinstance(arg.value, Tensor):
        raise DscError(f"{what} must be a constant, got {describe(arg.value)}", arg.loc,
                       "a number, a string, true/false or a list")
    return tuple(arg.value) if isinstance(arg.value, list) else arg.value


CONVERT = {"int": _int, "float": _float, "bool": _bool, "string": _string, "ints": _ints,
           "format": _format}
KIND_OF_DEFAULT = {bool: "bool", int: "int", float: "float", str: "string"}


def attr_kind(name: str, default) -> str:
    return ATTR_KINDS.get(name) or KIND_OF_DEFAULT.get(type(default), "any")


def callable_ops() -> set[str]:
    return {name for name, op in OPS.items() if op.category != "source"}


def tensor_params(name: str) -> tuple[str, ...]:
    return TENSOR_PARAMS.get(name) or BY_ARITY.get(OPS[name].arity, ("x",))


@lru_cache(maxsize=None)
def signature(name: str) -> Signature:
    op = OPS[name]
    tensors = tensor_params(name)
    attrs = {k: _attr_default(k, v) for k, v in op.attrs.items()}
    leading = LEADING_ATTRS.get(name, ())
    order = list(leading) + list(tensors) + [k for k in attrs if k not in leading]
    return Signature("op", name, tuple(_param(p, attrs.get(p, REQUIRED)) for p in order))


def _param(name: str, default) -> Param:
    shown = f"{name}={OPTIONAL[name]}" if name in OPTIONAL else None
    return Param(name, default, shown)


def _attr_default(name: str, default):
    """A call's default: None-default attributes are required unless listed in OPTIONAL."""
    if name in OPTIONAL:
        return None
    return REQUIRED if default is None else default


def call_op(b, frame, name: str, args: list[Arg], kwargs: dict[str, Arg], loc, hint):
    op = OPS[name]
    sig = signature(name)
    bound = sig.bind(args, kwargs, loc)
    tensor_names = tensor_params(name)
    tensors = _tensors(name, [(t, bound[t]) for t in tensor_names])
    attrs = {k: CONVERT.get(attr_kind(k, op.attrs[k]), _any)(arg, f"'{k}' of '{name}'")
             for k, arg in bound.items() if k not in tensor_names}
    DERIVED_DEFAULTS.get(name, lambda tensors, attrs: None)(tensors, attrs)
    return b.emit(frame, name, tensors, attrs, loc, hint, sig.text())


def _tensors(name: str, args: list[tuple[str, Arg]]) -> list[Tensor]:
    if name not in LIST_OPERAND:
        return [expect_tensor(a.value, a.loc, f"operand '{p}' of '{name}'") for p, a in args]
    items = args[0][1]
    if not isinstance(items.value, list) or not items.value:
        raise DscError(f"'{name}' takes a list of tensors, got {describe(items.value)}",
                       items.loc, "a list like [a, b]")
    return [expect_tensor(v, items.loc, f"each item of the '{name}' list") for v in items.value]


def _balanced_capacity(tensors: list[Tensor], attrs: dict) -> None:
    """dispatch: no capacity (or 0) means the balanced ceil(tokens * k / experts)."""
    x, idx = tensors
    if not attrs.get("capacity") and attrs["experts"] > 0 and x.shape and len(idx.shape) == 2:
        attrs["capacity"] = balanced_capacity(x.shape[0], idx.shape[1], attrs["experts"])


# Attributes whose default depends on the operands, filled in before the registry checks.
DERIVED_DEFAULTS = {"dispatch": _balanced_capacity}
