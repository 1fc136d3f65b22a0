"""Scalar functions on compile-time numbers: sqrt, min, max, ceil_div."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from compiler.errors import DscError
from compiler.frontend.signature import Param, Signature
from compiler.frontend.values import describe, expect_int, is_number


@dataclass(frozen=True)
class ScalarFunction:
    signature: Signature
    apply: Callable        # (list of Arg) -> number


def _numbers(args, name: str) -> list:
    for arg in args:
        if not is_number(arg.value):
            raise DscError(f"'{name}' takes numbers, got {describe(arg.value)}", arg.loc,
                           "a number")
    return [arg.value for arg in args]


def _sqrt(args):
    (x,) = _numbers(args, "sqrt")
    if x < 0:
        raise DscError(f"sqrt of a negative number ({x})", args[0].loc, "a number >= 0")
    return math.sqrt(x)


def _ceil_div(args):
    a, b = (expect_int(arg.value, arg.loc, f"argument {i + 1} of 'ceil_div'")
            for i, arg in enumerate(args))
    if b == 0:
        raise DscError("ceil_div by zero", args[1].loc, "a non-zero divisor")
    return -(-a // b)


def _sig(name: str, *params: str, variadic: bool = False) -> Signature:
    return Signature("function", name, tuple(Param(p) for p in params), variadic)


SCALARS: dict[str, ScalarFunction] = {
    "sqrt": ScalarFunction(_sig("sqrt", "x"), _sqrt),
    "ceil_div": ScalarFunction(_sig("ceil_div", "a", "b"), _ceil_div),
    "min": ScalarFunction(_sig("min", variadic=True), lambda args: min(_numbers(args, "min"))),
    "max": ScalarFunction(_sig("max", variadic=True), lambda args: max(_numbers(args, "max"))),
}


def call_scalar(b, frame, name: str, args, kwargs, loc, hint):
    function = SCALARS[name]
    sig = function.signature
    bound = sig.bind(args, kwargs, loc)
    ordered = list(bound.values()) if sig.variadic else [bound[p.name] for p in sig.params]
    try:
        return function.apply(ordered)
    except (OverflowError, ValueError) as err:
        raise DscError(f"'{name}' failed: {err}", loc, "arguments in range") from None
