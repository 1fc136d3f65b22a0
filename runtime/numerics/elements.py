"""Element formats: float -> code (round to nearest, ties to even, saturating) and code -> float32.

Every element dtype of `isa.formats` that holds numbers has an `ElementSpec` here. Codes are
numpy arrays in the dtype's storage type (ml_dtypes for the small floats, `np.int8` for int8).

Conversion rules (the same for every dtype, so they are stated once):

* Rounding is round-to-nearest, ties to the even code, computed from the exact input value.
  ml_dtypes releases before 0.7 cast float64 through float32, which rounds twice. Whether the
  installed release does is probed once at import (`CASTS_FLOAT64_DIRECTLY`); where it does,
  `encode` rounds float64 to float32 *to odd* first, which makes the second (RNE) rounding
  exact for any target with at most 22 mantissa bits (all of ours but fp32, which is cast from
  float64 directly).
* Saturation: a finite value beyond +-max_normal becomes +-max_normal. We clip *before* casting
  because ml_dtypes does not saturate everywhere: float8_e4m3fn turns anything above 464 into
  NaN and float8_e5m2 / float16 / bfloat16 turn overflow into Inf.
* Infinity stays infinite in dtypes that have Inf (fp8_e5m2, fp16, bf16, fp32) and saturates to
  +-max_normal in the others.
* NaN stays NaN in dtypes that have NaN (fp8_e4m3, fp8_e5m2, fp16, bf16, fp32). fp6, fp4 and
  int8 have no NaN encoding: NaN becomes code 0 (+0). Block-scaled formats carry NaN in the
  scale instead (see blockscale.py); this rule only matters for unscaled fp6/fp4/int8.
* int8 is the OCP MX "MXINT8" element: code k means k/64 (a two's-complement fixed-point number
  with 6 fraction bits), so the range is [-127/64, 127/64]; code -128 is never produced.
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class ElementSpec:
    name: str
    storage: np.dtype          # dtype of the code array
    mantissa_bits: int         # explicit fraction bits (int8: the 6 fraction bits of k/64)
    max_normal: float          # largest finite magnitude
    emax: int                  # exponent of the largest normal (OCP MX "emax_elem")
    smallest_subnormal: float  # smallest positive value (int8: 1/64)
    has_inf: bool
    has_nan: bool

    @property
    def is_integer(self) -> bool:
        return self.storage == np.int8


INT8_FRACTION_BITS = 6            # MXINT8: value = code / 2**6
INT8_MAX_CODE = 127               # -128 is unused so the range is symmetric


def _float_spec(name: str, dtype, has_inf: bool, has_nan: bool) -> ElementSpec:
    info = ml_dtypes.finfo(dtype)
    return ElementSpec(name, np.dtype(dtype), int(info.nmant), float(info.max),
                       int(info.maxexp) - 1, float(info.smallest_subnormal), has_inf, has_nan)


ELEMENTS: dict[str, ElementSpec] = {s.name: s for s in [
    _float_spec("fp32", np.float32, has_inf=True, has_nan=True),
    _float_spec("bf16", ml_dtypes.bfloat16, has_inf=True, has_nan=True),
    _float_spec("fp16", np.float16, has_inf=True, has_nan=True),
    _float_spec("fp8_e4m3", ml_dtypes.float8_e4m3fn, has_inf=False, has_nan=True),
    _float_spec("fp8_e5m2", ml_dtypes.float8_e5m2, has_inf=True, has_nan=True),
    _float_spec("fp6_e2m3", ml_dtypes.float6_e2m3fn, has_inf=False, has_nan=False),
    _float_spec("fp6_e3m2", ml_dtypes.float6_e3m2fn, has_inf=False, has_nan=False),
    _float_spec("fp4_e2m1", ml_dtypes.float4_e2m1fn, has_inf=False, has_nan=False),
    ElementSpec("int8", np.dtype(np.int8), INT8_FRACTION_BITS, INT8_MAX_CODE / 64, 0, 1 / 64,
                has_inf=False, has_nan=False),
]}


def element_spec(dtype: str) -> ElementSpec:
    try:
        return ELEMENTS[dtype]
    except KeyError:
        raise ValueError(f"no element encoding for '{dtype}' (expected one of {', '.join(ELEMENTS)})") from None


def round_to_odd_float32(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounding to odd: an inexact result gets an odd last mantissa bit.

    Rounding to odd at 24 bits and then to nearest-even at p <= 22 bits equals rounding the
    original value to nearest-even at p bits: no double-rounding error.
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        nearest = x.astype(np.float32)
    inexact = nearest.astype(np.float64) != x
    even = (nearest.view(np.uint32) & 1) == 0
    towards_x = np.where(x > nearest, np.float32(np.inf), np.float32(-np.inf))
    return np.where(inexact & even & np.isfinite(x), np.nextafter(nearest, towards_x), nearest)


def _rounds_float64_once() -> bool:
    """Whether ml_dtypes rounds float64 to its small floats in one step. 1.0625 + 2**-30 lies
    just above the midpoint of the fp8_e4m3 neighbours 1.0 and 1.125: one correct rounding
    gives 1.125; a detour through float32 lands exactly on the midpoint and ties to 1.0. Every
    small float is cast by the same routine, so one probe tells for all of them."""
    probe = np.array([1.0625 + 2.0 ** -30]).astype(ml_dtypes.float8_e4m3fn)
    return float(probe[0]) == 1.125


CASTS_FLOAT64_DIRECTLY = _rounds_float64_once()


def _saturate(x: np.ndarray, spec: ElementSpec) -> np.ndarray:
    """Clip finite values (and Inf, where the dtype has no Inf) to +-max_normal."""
    clipped = np.clip(x, -spec.max_normal, spec.max_normal)
    keep_inf = np.isinf(x) if spec.has_inf else np.zeros(x.shape, dtype=bool)
    return np.where(keep_inf, x, clipped)


def _round_float(x: np.ndarray, spec: ElementSpec) -> np.ndarray:
    if spec.storage == np.float32 or CASTS_FLOAT64_DIRECTLY:
        return x.astype(spec.storage)      # a single RNE from float64
    return round_to_odd_float32(x).astype(spec.storage)


def _round_int8(x: np.ndarray, spec: ElementSpec) -> np.ndarray:
    # x * 64 is exact in float64 and np.rint rounds half to even; NaN is mapped to 0 below.
    codes = np.rint(np.nan_to_num(x, nan=0.0) * 2.0 ** INT8_FRACTION_BITS)
    return np.clip(codes, -INT8_MAX_CODE, INT8_MAX_CODE).astype(np.int8)


def encode(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round `x` (any float array) to `dtype` codes: RNE from the exact value, saturating."""
    spec = element_spec(dtype)
    x = np.asarray(x, dtype=np.float64)
    saturated = _saturate(x, spec)
    codes = (_round_int8 if spec.is_integer else _round_float)(saturated, spec)
    if not spec.has_nan:
        codes = np.where(np.isnan(x), np.zeros((), spec.storage), codes).astype(spec.storage)
    return codes


def decode(codes: np.ndarray, dtype: str) -> np.ndarray:
    """Codes -> float32 values (exact: every element value is a float32)."""
    spec = element_spec(dtype)
    values = np.asarray(codes).astype(np.float32)
    return values / np.float32(2 ** INT8_FRACTION_BITS) if spec.is_integer else values


def round_to_element(x: np.ndarray, dtype: str) -> np.ndarray:
    """`decode(encode(x))`: the nearest `dtype` value of each element, as float32."""
    return decode(encode(x, dtype), dtype)
