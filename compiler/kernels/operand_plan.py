"""How a GEMM feeds its operands to the matrix unit: format, conversions, scales, promotion.

The matrix unit multiplies two operands of one input format it supports. The format is the
fastest one that takes each operand natively or holds its elements exactly (FP4 E2M1 fits in
FP8 E4M3, FP8 in BF16). A format takes natively its own dtype and the dtypes its target lists
as its `native_operands` (Blackwell's kind::f8f6f4 reads E2M1 beside E4M3 at the 8-bit rate):
such an operand is loaded and held on chip as it is. Operands in another format are widened on
the vector unit after loading (`cvt`), which changes no value. Block scales then stay separate
from the elements: the matrix unit applies them itself (formats listed in the target's
`block_scales`), or partial sums are promoted to FP32 on the vector unit once per K block,
multiplied by both operands' scales — promotion is also needed, with unit scales, when the
unit keeps fewer accumulator bits than FP32.

How often partial sums are promoted is `promote_every` elements of K, independent of the K
tile the tile pass picks (which divides it): the target's `promotion_interval` for a limited
accumulator (0: never, once after all of K), or one scale block when the promotion applies
block scales (their scale differs from block to block, whatever the interval).

A scale block that spans all of K (one scale per token of A, or per channel of B: W8A8)
multiplies whole dot products, so it factors out of the sum. When every scaled operand's does
and a format holds both operands exactly, the matrix unit multiplies the raw elements (int8 x
int8 into int32, FP8 x FP8, FP8 widened to BF16 where there is no FP8), and the product's tile
is multiplied by A's row scales and B's column scales once, in the epilogue (`epilogue_scales`;
compiler/kernels/epilogue.py decides the unit). Where a limited accumulator is promoted anyway,
a promotion with the scales is kept when it costs the vector unit less (K of one promotion).

Otherwise (one operand block-scaled and the other not, no format holding both, scale
blocks finer than one instruction's K, or split cube/vector cores, whose vector unit never
sees the accumulator) the scaled operands are dequantised (`dequant`:
elements x scales) into a 16-bit or wider format, since a scaled value may lie outside the
element format's own range.

Split cube/vector cores cannot promote partial sums either, so there a format whose
accumulator keeps fewer bits than FP32 is not used, unless the target never promotes. Floating-point operands that no format
holds are rounded into BF16, else the widest floating-point format; a target with no
floating-point format left cannot run them, and the error says so.
"""
from __future__ import annotations

from dataclasses import dataclass

from compiler.kernels.epilogue import OUTPUT_SCALE_OPS
from isa.formats import DTYPES, Scaling, holds_exactly
from isa.program import TensorDecl
from isa.target_schema import Target
from isa.vector_ops import VECTOR_OPS


@dataclass(frozen=True)
class OperandPlan:
    fmt: str                     # matrix input format
    a_conv: str | None           # None, "cvt" or "dequant"
    b_conv: str | None
    promote: bool                # partial sums promoted on the vector unit
    scaled: bool                 # promotion applies the operands' block scales
    k_step: int                  # K tiles are multiples of this
    promote_every: int = 0       # K summed per promotion (K tiles divide it); 0: all of K
    hw_scaled: bool = False      # the matrix unit applies the block scales itself
    epilogue_scales: tuple[str, ...] = ()   # operands ("a", "b") whose scales, constant
                                            # along K, multiply the finished product's tile


def _k_block(scaling: Scaling, operand: str) -> int:
    """Elements of K per scale block: the columns of A's block, the rows of B's."""
    return scaling.block[1] if operand == "a" else scaling.block[0]


def factors_out(t: TensorDecl, operand: str, k: int) -> bool:
    """Unscaled, or one scale per block spanning all `k` elements of the reduction (and no
    per-tensor scale on top): the scale multiplies whole dot products."""
    return t.scaling is None or (t.scaling.tensor_dtype is None
                                 and _k_block(t.scaling, operand) >= k)


def _fastest(target: Target, candidates, dtypes=()) -> str | None:
    """The fastest candidate; among equals the one widening fewest of `dtypes` on the vector
    unit, then one of the dtypes themselves (a mixed instruction is named after its wider
    operand, not after a third format that would also take both), then the narrowest."""
    matrix = target.matrix
    widened = lambda f: sum(not matrix.takes(f, d) for d in dtypes)
    return min(candidates, default=None,
               key=lambda f: (-matrix.formats[f].flops_per_cycle, widened(f), f not in dtypes,
                              DTYPES[f].bits, f))


def usable_formats(target: Target) -> list[str]:
    """The matrix formats a GEMM may use: on split cube/vector cores, not those whose
    limited accumulator would need promotion on the vector unit, which cannot reach it (a
    target that never promotes uses them: the cube hands over the limited sums of all K)."""
    split = target.matrix.results_to_vector == "memory"
    return [f for f in target.matrix.formats if not (split and _promotes(target, f))]


def unusable(target: Target, dtype: str) -> str | None:
    """Why the matrix unit cannot multiply in `dtype` (None when it can)."""
    if dtype not in target.matrix.formats:
        return f"{target.name}'s matrix unit has no {dtype}"
    if dtype not in usable_formats(target):
        return (f"{target.name}'s matrix unit keeps fewer accumulator bits than FP32 in "
                f"{dtype}, and its split vector cores cannot promote partial sums")
    return None


def read_natively(target: Target, dtype: str) -> bool:
    """Whether a usable format's instruction reads `dtype` operands as they are (beside its
    own), though the unit may have no format of that dtype."""
    return any(target.matrix.takes(f, dtype) for f in usable_formats(target))


def _holding(target: Target, dtypes, min_bits: int = 0) -> str | None:
    """The fastest usable matrix format that takes every dtype natively or holds it exactly."""
    fits = lambda f, d: target.matrix.takes(f, d) or holds_exactly(f, d)
    return _fastest(target, [f for f in usable_formats(target)
                             if DTYPES[f].bits >= min_bits
                             and all(fits(f, d) for d in dtypes)], dtypes)


def _rounding_fallback(target: Target, dtypes) -> str:
    """No usable format holds the operands: bf16 if there is one, else the widest format of
    the operands' kind (a floating-point operand is never rounded into integers)."""
    kind = "float" if any(DTYPES[d].kind == "float" for d in dtypes) else "int"
    usable = [f for f in usable_formats(target) if DTYPES[f].kind == kind]
    if "bf16" in usable:
        return "bf16"
    if usable:
        return max(usable, key=lambda d: (DTYPES[d].bits, d))
    formats = target.matrix.formats
    limited = [f for f in formats if _promotes(target, f)]
    why = (f"; {', '.join(limited)} keep fewer accumulator bits than FP32, and its split "
           "vector cores cannot promote partial sums") if limited else ""
    raise ValueError(f"the matrix unit has no format for "
                     f"{' x '.join(dtypes)} operands (it has {', '.join(formats)}{why})")


def matrix_format(target: Target, dtypes) -> str:
    """The format products of these operand dtypes run in: the fastest usable one that holds
    them all exactly, else the rounding fallback."""
    return _holding(target, dtypes) or _rounding_fallback(target, tuple(dtypes))


def _limited(target: Target, fmt: str) -> bool:
    return target.matrix.formats[fmt].accumulator_bits is not None


def _step(target: Target, fmt: str) -> int:
    """The K tile's granule: the instruction's K (the promotion interval, a multiple of it,
    is kept by promoting every few K steps, not by the tile)."""
    return target.matrix.formats[fmt].shape[2]


def _every(target: Target, fmt: str) -> int:
    """K per promotion of an unscaled partial sum: the interval of a limited accumulator."""
    return target.matrix.promotion_interval if _limited(target, fmt) else 0


def _promotes(target: Target, fmt: str) -> bool:
    """Unscaled partial sums are promoted when the accumulator is limited and the interval is
    not 0 (never: the MMAs accumulate into the limited accumulator over all of K, converted
    once by the epilogue, as a naive FP8 kernel does)."""
    return _every(target, fmt) > 0


def promotions(plan: OperandPlan, k: int) -> int:
    """Promotions of one output tile's partial sums over a reduction of `k`."""
    if not plan.promote:
        return 0
    return -(-k // plan.promote_every) if plan.promote_every else 1


def _widen(target: Target, t: TensorDecl, fmt: str) -> str | None:
    """None when the format's instruction reads the operand as it is, else widen it."""
    return None if target.matrix.takes(fmt, t.dtype) else "cvt"


def plan_operands(a: TensorDecl, b: TensorDecl, target: Target,
                  epilogue: bool = True) -> OperandPlan:
    """How A [.., M, K] and B feed the matrix unit. `epilogue=False` for a kernel that has no
    GEMM epilogue to apply scales in (it promotes with them instead)."""
    if a.scaling is None and b.scaling is None:
        fmt = matrix_format(target, (a.dtype, b.dtype))
        return OperandPlan(fmt, _widen(target, a, fmt), _widen(target, b, fmt),
                           _promotes(target, fmt), False, _step(target, fmt), _every(target, fmt))
    promoted = _promoted_plan(a, b, target)
    outside = _epilogue_plan(a, b, target) if epilogue else None
    if outside is not None and (promoted is None or _vector_ops(outside, a) <=
                                _vector_ops(promoted, a)):
        return outside
    if promoted is not None:
        return promoted
    fmt = dequantised_format(target, [t.dtype for t in (a, b) if t.scaling is None],
                             (a.dtype, b.dtype))
    conv = lambda t: "dequant" if t.scaling else _widen(target, t, fmt)
    return OperandPlan(fmt, conv(a), conv(b), _promotes(target, fmt), False, _step(target, fmt),
                       _every(target, fmt))


def _epilogue_plan(a: TensorDecl, b: TensorDecl, target: Target) -> OperandPlan | None:
    """Raw elements into the matrix unit, the scales once on the output tile: when every
    scale factors out of K and a format takes both operands (natively, or holding them
    exactly)."""
    fmt = _holding(target, (a.dtype, b.dtype))
    k = a.shape[-1]
    if fmt is None or not (factors_out(a, "a", k) and factors_out(b, "b", k)):
        return None
    return OperandPlan(fmt, _widen(target, a, fmt), _widen(target, b, fmt),
                       _promotes(target, fmt), False, _step(target, fmt), _every(target, fmt),
                       epilogue_scales=tuple(o for o, t in (("a", a), ("b", b)) if t.scaling))


def _promoted_plan(a: TensorDecl, b: TensorDecl, target: Target) -> OperandPlan | None:
    """Both operands block-scaled, in a format holding them: the matrix unit applies the
    scales itself, or partial sums are promoted once per scale block with them."""
    fmt = _holding(target, (a.dtype, b.dtype)) if a.scaling and b.scaling else None
    if fmt is None:
        return None
    shape = target.matrix.formats[fmt].shape
    blocks = (_k_block(a.scaling, "a"), _k_block(b.scaling, "b"))
    if (target.matrix.applies_scales(fmt, a.scaling, "a")
            and target.matrix.applies_scales(fmt, b.scaling, "b")):
        return OperandPlan(fmt, _widen(target, a, fmt), _widen(target, b, fmt),
                           _promotes(target, fmt), False, max(*blocks, _step(target, fmt)),
                           _every(target, fmt), hw_scaled=True)
    step = min(*blocks, *((_every(target, fmt),) if _promotes(target, fmt) else ()))
    # One promotion per scale block (the scales differ from block to block, so even a
    # limited accumulator that is never promoted is promoted once per block here) needs K
    # tiles of exactly one block, made of whole instructions: an NVFP4 block of 16 under a
    # K-32 instruction cannot be promoted.
    # Split cube/vector cores cannot promote: the vector unit never sees the accumulator.
    if (step % shape[2] == 0 and all(blk % step == 0 for blk in blocks)
            and target.matrix.results_to_vector != "memory"):
        return OperandPlan(fmt, _widen(target, a, fmt), _widen(target, b, fmt), True, True, step,
                           step)
    return None


def _vector_ops(plan: OperandPlan, a: TensorDecl) -> float:
    """Vector-unit operations per output element a plan spends on promotion and scales (the
    operand conversions are the same either way): a promotion that applies the scales anyway
    is cheaper than plain promotions plus the epilogue's multiplies when K is one or two
    promotion steps."""
    per = lambda op: VECTOR_OPS[op].per_element({})[0]
    promotion = promotions(plan, a.shape[-1]) * per("promote" if plan.scaled else "accumulate")
    scales = sum(per(OUTPUT_SCALE_OPS[o][1]) for o in plan.epilogue_scales)
    return promotion + scales


def dequantised_format(target: Target, unscaled, dtypes) -> str:
    """The format products run in when the block-scaled operands are dequantised: 16 bits or
    wider (a scaled value may lie outside its element format's range), holding the unscaled
    operands exactly, else the rounding fallback."""
    return _holding(target, unscaled, min_bits=16) or _rounding_fallback(target, tuple(dtypes))
