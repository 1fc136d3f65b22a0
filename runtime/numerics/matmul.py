"""Matrix products of (block-scaled) operands with a choice of accumulator model.

`scaled_matmul(a, b, acc)` returns the float32 product and a sentence naming the model used:

* "exact": operands are dequantised to float32; products are exact (float64 holds the product
  of two float32 values) and are summed in float64, then rounded once to float32. Apart from
  float64 rounding in the sum (relative 2**-53 per addition) this is the correctly rounded
  float32 result of the dequantised operands.
* "promote": DeepSeek-V3's FP8 GEMM (arXiv:2412.19437 sec. 3.3.2). Hopper tensor cores keep a
  limited accumulator (about 14 bits: 1 sign, 8 exponent, 13 mantissa bits); the partial sum
  over each `interval` (128) of K is moved ("promoted") into an fp32 accumulator. We model one
  MMA instruction as a group of MMA_K = 32 products: the group is summed in float64, added to the
  limited accumulator, and the sum is rounded to `mantissa_bits` mantissa bits (round to nearest
  even; the exponent range is not limited). At each interval boundary the limited accumulator
  is added into the float32 accumulator (one float32 rounding) and reset to zero. A group
  never straddles an interval boundary (an interval that is not a multiple of 32 ends in a
  shorter group).
* "truncate": the same limited accumulator over the whole K, never promoted; the result is
  rounded to float32 at the end.

The bit-level behaviour of the hardware accumulator is not published; these are models. The
limited accumulator sees dequantised products (scales already applied). With power-of-two scales
that equals accumulating raw element products and scaling at promotion; with fp32 or E4M3 scales
the rounding order differs slightly from a kernel that scales at promotion.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from runtime.numerics.blockscale import Quantized, dequantize

MMA_K = 32        # products per modelled MMA instruction (one rounding of the limited accumulator)


def round_to_mantissa_bits(x: np.ndarray, mantissa_bits: int) -> np.ndarray:
    """Round float64 `x` to `mantissa_bits` explicit mantissa bits, ties to even; unbounded exponent.

    frexp gives x = m * 2**e with 0.5 <= |m| < 1, so m * 2**(mantissa_bits + 1) holds the
    significand (1 implicit + mantissa_bits bits) in its integer part; np.rint rounds it half to
    even. 0, Inf and NaN pass through unchanged.
    """
    if not 0 <= mantissa_bits <= 51:
        raise ValueError(f"mantissa_bits must be in [0, 51], got {mantissa_bits}")
    x = np.asarray(x, dtype=np.float64)
    mantissa, exponent = np.frexp(x)
    significand = np.rint(np.ldexp(mantissa, mantissa_bits + 1))
    rounded = np.ldexp(significand, exponent - (mantissa_bits + 1))
    return np.where(np.isfinite(x), rounded, x)


def _as_float32(operand: Quantized | np.ndarray) -> np.ndarray:
    """Dequantise a Quantized operand; round a plain array to float32 (RNE)."""
    if isinstance(operand, Quantized):
        return dequantize(operand)
    return np.asarray(operand, dtype=np.float32)


def _exact(a: np.ndarray, b: np.ndarray, interval: int, mantissa_bits: int) -> np.ndarray:
    return np.matmul(a, b).astype(np.float32)


def _limited(a: np.ndarray, b: np.ndarray, interval: int, mantissa_bits: int) -> np.ndarray:
    """Limited accumulator rounded after every MMA_K group, promoted to float32 every `interval`."""
    k_total = a.shape[-1]
    result = np.zeros(np.broadcast_shapes(a.shape[:-1] + (1,), b.shape[:-2] + (1, b.shape[-1])), np.float32)
    for start in range(0, k_total, interval):
        stop = min(start + interval, k_total)
        partial = np.zeros(result.shape, np.float64)
        for group in range(start, stop, MMA_K):
            end = min(group + MMA_K, stop)
            partial = round_to_mantissa_bits(partial + np.matmul(a[..., group:end], b[..., group:end, :]),
                                             mantissa_bits)
        result = (result + partial.astype(np.float32)).astype(np.float32)
    return result


def _truncate(a: np.ndarray, b: np.ndarray, interval: int, mantissa_bits: int) -> np.ndarray:
    return _limited(a, b, max(a.shape[-1], 1), mantissa_bits)


ACCUMULATORS: dict[str, Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]] = {
    "exact": _exact,
    "promote": _limited,
    "truncate": _truncate,
}

DESCRIPTIONS: dict[str, str] = {
    "exact": "exact: float32 operands, exact products, float64 sum rounded once to float32",
    "promote": ("promote: {m}-bit-mantissa accumulator rounded per {g}-product MMA group, "
                "promoted to float32 every {i} of K={k}"),
    "truncate": "truncate: {m}-bit-mantissa accumulator rounded per {g}-product MMA group over all K={k}",
}


def scaled_matmul(a: Quantized | np.ndarray, b: Quantized | np.ndarray, acc: str = "exact",
                  interval: int = 128, mantissa_bits: int = 13) -> tuple[np.ndarray, str]:
    """a [..., M, K] @ b [..., K, N] -> (float32 [..., M, N], description of the accumulator)."""
    if acc not in ACCUMULATORS:
        raise ValueError(f"unknown accumulation '{acc}' (expected one of {', '.join(ACCUMULATORS)})")
    if interval < 1:
        raise ValueError(f"interval must be positive, got {interval}")
    a64, b64 = _as_float32(a).astype(np.float64), _as_float32(b).astype(np.float64)
    if a64.ndim < 2 or b64.ndim < 2 or a64.shape[-1] != b64.shape[-2]:
        raise ValueError(f"cannot multiply shapes {a64.shape} and {b64.shape} (expected [..., M, K] @ [..., K, N])")
    out = ACCUMULATORS[acc](a64, b64, interval, mantissa_bits)
    return out, DESCRIPTIONS[acc].format(m=mantissa_bits, g=MMA_K, i=interval, k=a64.shape[-1])
