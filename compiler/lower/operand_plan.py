"""How a GEMM feeds its operands to the matrix unit: format, conversions, scales, promotion.

The matrix unit multiplies two operands of one input format it supports. Operands already in
that format go straight in; others are converted on the vector unit after loading (`cvt`, or
`dequant` for block-scaled ones). When both operands are block-scaled in the MMA format, their
scales are applied either by the matrix unit itself (formats listed in the target's
`block_scales`) or by promoting partial sums to FP32 on the vector unit once per K block —
which is also needed, with unit scales, when the unit keeps fewer accumulator bits than FP32.
"""
from __future__ import annotations

from dataclasses import dataclass

from isa.formats import DTYPES, Scaling
from isa.program import TensorDecl
from isa.target_schema import Target


@dataclass(frozen=True)
class OperandPlan:
    fmt: str                     # matrix input format
    a_conv: str | None           # None, "cvt" or "dequant"
    b_conv: str | None
    promote: bool                # partial sums promoted on the vector unit every k_step
    scaled: bool                 # promotion applies the operands' block scales
    k_step: int                  # K tiles are multiples of this


def _k_block(scaling: Scaling, operand: str) -> int:
    """Elements of K per scale block: the columns of A's block, the rows of B's."""
    return scaling.block[1] if operand == "a" else scaling.block[0]


def _hardware_applies(target: Target, fmt: str, scaling: Scaling, operand: str) -> bool:
    """Block-scale specs are written as for A ([tokens, K]); B's block is the transpose."""
    rows, cols = scaling.block if operand == "a" else scaling.block[::-1]
    return f"{scaling.dtype}:{rows}x{cols}" in target.matrix.formats[fmt].block_scales


def _widest_supported(target: Target, dtypes) -> str:
    supported = target.matrix.formats
    by_bits = sorted(dtypes, key=lambda d: -DTYPES[d].bits)
    for d in by_bits:
        if d in supported and DTYPES[d].kind == "float":
            return d
    if "bf16" in supported:
        return "bf16"
    return max(supported, key=lambda d: (DTYPES[d].bits, d))


def plan_operands(a: TensorDecl, b: TensorDecl, target: Target) -> OperandPlan:
    formats = target.matrix.formats
    limited = lambda fmt: formats[fmt].accumulator_bits is not None
    interval = target.matrix.promotion_interval
    if a.dtype == b.dtype and a.dtype in formats and (a.scaling is None) == (b.scaling is None):
        fmt = a.dtype
        k_step = formats[fmt].shape[2]
        if a.scaling is None:
            return OperandPlan(fmt, None, None, limited(fmt), False,
                               interval if limited(fmt) else k_step)
        if (_hardware_applies(target, fmt, a.scaling, "a")
                and _hardware_applies(target, fmt, b.scaling, "b")):
            return OperandPlan(fmt, None, None, limited(fmt), False,
                               max(_k_block(a.scaling, "a"), _k_block(b.scaling, "b"),
                                   interval if limited(fmt) else k_step))
        step = min(_k_block(a.scaling, "a"), _k_block(b.scaling, "b"))
        if limited(fmt):
            step = min(step, interval)
        return OperandPlan(fmt, None, None, True, True, step)
    fmt = _widest_supported(target, [a.dtype, b.dtype])
    conv = lambda t: None if (t.dtype == fmt and t.scaling is None) else (
        "dequant" if t.scaling else "cvt")
    return OperandPlan(fmt, conv(a), conv(b), limited(fmt), False,
                       interval if limited(fmt) else formats[fmt].shape[2])
