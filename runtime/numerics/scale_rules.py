"""Scale rules: how a block's amax becomes its scale (the value that multiplies its elements).

Every rule maps per-block amax (float32, the largest finite |x| in the block) and the tensor's
amax to decoded float32 block scales, plus an optional per-tensor decode scale. Arithmetic is
float32, as a quantisation kernel would do it; powers of two are computed exactly from
`np.frexp` exponents. An all-zero block gets scale 1.0 under every rule (any positive scale
represents zeros exactly; 1.0 keeps the scale finite and easy to recognise).

* "amax" (DeepSeek-V3 FP8 training, arXiv:2412.19437 sec. 3.3.2): scale = amax / max_elem,
  rounded once to float32. If that underflows to 0 (amax below ~2**-140) the scale is the
  smallest float32 subnormal, 2**-149, so division stays finite.
* "pow2_ceil" (DeepSeek-V3.1 UE8M0 scales): scale = 2**ceil(log2(amax / max_elem)), the
  smallest power of two that does not clip the block max.
* "ocp_mx" (OCP Microscaling Formats (MX) v1.0, sec. 6.3): scale = 2**(floor(log2(amax)) -
  emax_elem); the block max may exceed max_elem and is then clamped (amax 511 -> 448 in MXFP8).
* "nvfp4" (NVIDIA NVFP4, Blackwell / Transformer Engine): per-tensor encode scale
  s_t = (448 * max_elem) / amax_tensor (6 * 448 = 2688 for FP4), capped at 2**126 so that its
  reciprocal stays a normal float32 (and 1.0 for an all-zero tensor); block scale =
  E4M3(amax_block / max_elem * s_t), clamped to [2**-9, 448] first so it is never 0 (which would
  flush a small block to zero) nor NaN. The per-tensor *decode* scale stored is 1 / s_t.

Power-of-two exponents are clamped to UE8M0's range [-127, 127]. Only extreme amax reach the
clamp: below it elements round towards zero, above it (int8 with amax near 2**128) they saturate.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtime.numerics import scales
from runtime.numerics.elements import ElementSpec, element_spec

SMALLEST_FP32 = np.float32(2.0 ** -149)
E4M3 = element_spec("fp8_e4m3")
NVFP4_MAX_TENSOR_SCALE = np.float32(2.0 ** 126)
NVFP4_ELEMENTS = ("fp4_e2m1", "fp6_e2m3", "fp6_e3m2", "fp8_e4m3", "fp8_e5m2", "fp16", "int8")

# (block amax, tensor amax, element spec) -> (block scales, per-tensor decode scale or None)
RuleFunction = Callable[[np.ndarray, np.float32, ElementSpec], tuple[np.ndarray, np.float32 | None]]


def _where_zero_one(amax: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.where(amax == 0, np.float32(1.0), scale).astype(np.float32)


def _power_of_two(amax: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    exponent = np.clip(np.where(amax == 0, 0, exponent), scales.UE8M0_MIN_EXPONENT, scales.UE8M0_MAX_EXPONENT)
    return np.ldexp(np.float64(1.0), exponent).astype(np.float32)


def _positive(amax: np.ndarray) -> np.ndarray:
    """amax with zeros replaced by 1 so that logarithms are defined (zero blocks are fixed later)."""
    return np.where(amax == 0, np.float32(1.0), amax)


def amax_rule(amax: np.ndarray, tensor_amax: np.float32, spec: ElementSpec) -> tuple[np.ndarray, None]:
    with np.errstate(under="ignore"):
        scale = amax / np.float32(spec.max_normal)
    return _where_zero_one(amax, np.maximum(scale, SMALLEST_FP32)), None


def pow2_ceil_rule(amax: np.ndarray, tensor_amax: np.float32, spec: ElementSpec) -> tuple[np.ndarray, None]:
    return _power_of_two(amax, scales.ceil_log2_ratio(_positive(amax), spec.max_normal)), None


def ocp_mx_rule(amax: np.ndarray, tensor_amax: np.float32, spec: ElementSpec) -> tuple[np.ndarray, None]:
    return _power_of_two(amax, scales.floor_log2(_positive(amax)) - spec.emax), None


def nvfp4_tensor_encode_scale(tensor_amax: np.float32, spec: ElementSpec) -> np.float32:
    if tensor_amax == 0:
        return np.float32(1.0)
    with np.errstate(over="ignore"):
        wanted = np.float32(E4M3.max_normal * spec.max_normal) / np.float32(tensor_amax)
    return np.minimum(wanted, NVFP4_MAX_TENSOR_SCALE)


def nvfp4_rule(amax: np.ndarray, tensor_amax: np.float32, spec: ElementSpec) -> tuple[np.ndarray, np.float32]:
    encode_scale = nvfp4_tensor_encode_scale(tensor_amax, spec)
    with np.errstate(under="ignore", over="ignore"):
        wanted = (amax / np.float32(spec.max_normal)) * encode_scale
    clamped = np.clip(wanted, np.float32(E4M3.smallest_subnormal), np.float32(E4M3.max_normal))
    block = scales.e4m3_decode(scales.e4m3_encode(clamped))
    return _where_zero_one(amax, block), np.float32(1.0) / encode_scale


@dataclass(frozen=True)
class ScaleRule:
    name: str
    compute: RuleFunction
    scale_dtypes: tuple[str, ...]     # block-scale dtypes that hold this rule's scales exactly
    tensor_scale: bool                # needs (and fills) the per-tensor fp32 scale
    element_dtypes: tuple[str, ...] | None = None   # None: any element dtype


RULES: dict[str, ScaleRule] = {r.name: r for r in [
    ScaleRule("amax", amax_rule, ("fp32",), tensor_scale=False),
    ScaleRule("pow2_ceil", pow2_ceil_rule, ("ue8m0", "fp32"), tensor_scale=False),
    ScaleRule("ocp_mx", ocp_mx_rule, ("ue8m0", "fp32"), tensor_scale=False),
    # 448 * max_elem must be a finite float32 with few bits: not bf16 or fp32 elements.
    ScaleRule("nvfp4", nvfp4_rule, ("fp8_e4m3",), tensor_scale=True, element_dtypes=NVFP4_ELEMENTS),
]}
