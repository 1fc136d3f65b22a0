"""Scale encodings (fp32, UE8M0, E4M3) and exact power-of-two exponent arithmetic.

UE8M0 (OCP MX v1.0 "E8M0"): unsigned, 8 exponent bits, no mantissa, bias 127. Code c in 0..254
is 2**(c - 127); 0xFF is NaN; there is no zero and no Inf. Code 0 is 2**-127, a float32
*subnormal*, so it cannot be built as the bit pattern `c << 23` (that gives 0.0); we decode
with `np.ldexp`. Encoding never goes through `astype(float8_e8m0fnu)` (which maps 0 and
negatives to NaN and rounds ties up): scales are powers of two whose exponents we compute with
integer arithmetic from `np.frexp`, so encoding is `exponent + 127`.

E4M3 scales (NVFP4's per-block scale) use the fp8_e4m3 element rules of elements.py.
"""
from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np

from runtime.numerics import elements

UE8M0_BIAS = 127
UE8M0_NAN = 0xFF
UE8M0_MIN_EXPONENT = -127          # code 0
UE8M0_MAX_EXPONENT = 127           # code 254


def floor_log2(x: np.ndarray) -> np.ndarray:
    """floor(log2(x)) for positive finite x, exactly (frexp gives x = m * 2**e, 0.5 <= m < 1)."""
    _, exponent = np.frexp(np.asarray(x, dtype=np.float64))
    return exponent.astype(np.int64) - 1


def ceil_log2_ratio(x: np.ndarray, denominator: float) -> np.ndarray:
    """Smallest integer k with x <= denominator * 2**k, for positive finite x; exact."""
    x = np.asarray(x, dtype=np.float64)
    k = floor_log2(x) - floor_log2(denominator)
    # x / denominator lies in (2**(k-1), 2**(k+1)); ldexp is exact, so one comparison decides.
    return k + (x > np.ldexp(np.float64(denominator), k))


def ue8m0_encode_exponent(exponent: np.ndarray) -> np.ndarray:
    """Exponents in [-127, 127] -> UE8M0 codes (uint8); anything else is an error, not a clamp."""
    exponent = np.asarray(exponent, dtype=np.int64)
    if np.any((exponent < UE8M0_MIN_EXPONENT) | (exponent > UE8M0_MAX_EXPONENT)):
        raise ValueError(f"UE8M0 exponents must lie in [{UE8M0_MIN_EXPONENT}, {UE8M0_MAX_EXPONENT}]")
    return (exponent + UE8M0_BIAS).astype(np.uint8)


def ue8m0_encode(values: np.ndarray) -> np.ndarray:
    """Powers of two (or NaN) -> UE8M0 codes as float8_e8m0fnu. Other values raise ValueError."""
    values = np.asarray(values, dtype=np.float64)
    nan = np.isnan(values)
    safe = np.where(nan, 1.0, values)
    mantissa, exponent = np.frexp(safe)
    if np.any(mantissa != 0.5):
        raise ValueError("UE8M0 can only hold positive powers of two")
    codes = ue8m0_encode_exponent(exponent - 1)
    return np.where(nan, np.uint8(UE8M0_NAN), codes).astype(np.uint8).view(ml_dtypes.float8_e8m0fnu)


def ue8m0_decode(codes: np.ndarray) -> np.ndarray:
    """UE8M0 codes (uint8 or float8_e8m0fnu) -> float32; code 0 is 2**-127, 0xFF is NaN."""
    raw = np.asarray(codes)
    raw = raw.view(np.uint8) if raw.dtype != np.uint8 else raw
    nan = raw == UE8M0_NAN
    exponent = np.where(nan, 0, raw.astype(np.int64) - UE8M0_BIAS)
    values = np.ldexp(np.float64(1.0), exponent).astype(np.float32)   # 2**-127 is exact in float32
    return np.where(nan, np.float32(np.nan), values)


def _fp32_encode(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _fp32_decode(codes: np.ndarray) -> np.ndarray:
    return np.asarray(codes, dtype=np.float32)


def e4m3_encode(values: np.ndarray) -> np.ndarray:
    return elements.encode(values, "fp8_e4m3")


def e4m3_decode(codes: np.ndarray) -> np.ndarray:
    return elements.decode(codes, "fp8_e4m3")


# scale dtype -> (encode, decode). Encoders expect values the format represents exactly
# (the scale rules produce such values); UE8M0 raises otherwise, E4M3 would round.
SCALE_CODECS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "fp32": (_fp32_encode, _fp32_decode),
    "ue8m0": (ue8m0_encode, ue8m0_decode),
    "fp8_e4m3": (e4m3_encode, e4m3_decode),
}


def encode_scales(values: np.ndarray, dtype: str) -> np.ndarray:
    return SCALE_CODECS[dtype][0](values)


def decode_scales(codes: np.ndarray, dtype: str) -> np.ndarray:
    return SCALE_CODECS[dtype][1](codes)
