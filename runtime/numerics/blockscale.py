"""Block-scaled quantisation: `quantize(x, fmt, rule) -> Quantized` and `dequantize(q)`.

A format `dtype scaled(sdtype, RxC[, fp32])` stores one `sdtype` scale per R x C block of the
last two dimensions (see blocks.py for 0-D/1-D inputs and partial edge blocks); the decoded value
of an element is `element * block_scale [* tensor_scale]`. How a block's scale is chosen is a
*rule* (scale_rules.py). `rule=None` picks the default from the scale dtype, whether there is a
per-tensor scale, and the block size:

    | block scale dtype | per-tensor fp32 | block elements | default rule | used by                   |
    |-------------------|-----------------|----------------|--------------|---------------------------|
    | fp32              | no              | any            | amax         | DeepSeek-V3 FP8 (1x128)   |
    | ue8m0             | no              | <= 32          | ocp_mx       | mxfp8/mxfp6/mxfp4/mxint8  |
    | ue8m0             | no              | > 32           | pow2_ceil    | DeepSeek-V3.1 UE8M0       |
    | fp8_e4m3          | yes             | any            | nvfp4        | nvfp4                     |

Other combinations (e.g. E4M3 scales without a per-tensor scale) have no default: pass a rule.
A rule must suit the scale dtype (scale_rules.RULES[rule].scale_dtypes), or ValueError.

Numerics, stated once:

* The input is first converted to float32 with the fp32 element rule (RNE, saturating, Inf and
  NaN kept). That is the only rounding of the input: a float64 array quantises exactly as its
  float32 image does. Quantisation is defined on float32 data, as on the accelerator.
* Element code = nearest element value to the exact quotient x / (block_scale * tensor_scale),
  ties to even, saturating to +-max_elem (elements.encode). The divisor is the float32 product
  that dequantize multiplies by, so the stored scale is exactly the one the codes were made with.
* dequantize returns float32(element * divisor), rounded to nearest even and saturating at the
  float32 limit: exact for power-of-two scales, one rounding for fp32 and NVFP4 scales.
* A block holding NaN or +-Inf has a NaN scale (fp32 NaN, UE8M0 0xFF, E4M3 NaN), so every value
  of that block dequantises to NaN, as OCP MX specifies for a NaN scale; the other blocks are
  unaffected (amax and the NVFP4 tensor amax ignore non-finite values). The element codes of such
  a block are still those of its finite values; NaN/Inf elements follow the element rules.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isa.formats import Format, Scaling
from runtime.numerics import blocks, elements, scales
from runtime.numerics.scale_rules import RULES, ScaleRule

OCP_MX_BLOCK_ELEMENTS = 32

# (block scale dtype, has per-tensor scale, block has <= 32 elements) -> default rule
DEFAULT_RULES: dict[tuple[str, bool, bool], str] = {
    ("fp32", False, True): "amax",
    ("fp32", False, False): "amax",
    ("ue8m0", False, True): "ocp_mx",
    ("ue8m0", False, False): "pow2_ceil",
    ("fp8_e4m3", True, True): "nvfp4",
    ("fp8_e4m3", True, False): "nvfp4",
}


@dataclass(frozen=True, eq=False)
class Quantized:
    """A quantised tensor. Arrays are read-only; `scales` are decoded from `scale_codes`."""
    codes: np.ndarray                 # element codes, shape of the input (ml_dtypes float or int8)
    scales: np.ndarray | None         # float32 block scales, shape fmt.scaling.scale_shape(shape)
    scale_codes: np.ndarray | None    # encoded scales: float32 / float8_e8m0fnu / float8_e4m3fn
    tensor_scale: np.float32 | None   # per-tensor decode scale (NVFP4: 1 / s_t), else None
    fmt: Format
    rule: str | None                  # scale rule used; None for unscaled formats

    @property
    def shape(self) -> tuple[int, ...]:
        return self.codes.shape


def default_rule(scaling: Scaling) -> str:
    small = scaling.block[0] * scaling.block[1] <= OCP_MX_BLOCK_ELEMENTS
    key = (scaling.dtype, scaling.tensor_dtype is not None, small)
    if key not in DEFAULT_RULES:
        raise ValueError(f"no default scale rule for {scaling}; pass rule= one of {', '.join(RULES)}")
    return DEFAULT_RULES[key]


def _checked_rule(fmt: Format, rule: str | None) -> ScaleRule:
    scaling = fmt.scaling
    name = rule or default_rule(scaling)
    if name not in RULES:
        raise ValueError(f"unknown scale rule '{name}' (expected one of {', '.join(RULES)})")
    chosen = RULES[name]
    if scaling.dtype not in chosen.scale_dtypes:
        raise ValueError(f"rule '{name}' makes scales that {scaling.dtype} cannot hold "
                         f"(expected {' or '.join(chosen.scale_dtypes)})")
    if chosen.tensor_scale != (scaling.tensor_dtype is not None):
        need = "needs" if chosen.tensor_scale else "does not use"
        raise ValueError(f"rule '{name}' {need} a per-tensor fp32 scale; format has {scaling}")
    if chosen.element_dtypes is not None and fmt.dtype not in chosen.element_dtypes:
        raise ValueError(f"rule '{name}' does not support {fmt.dtype} elements "
                         f"(expected one of {', '.join(chosen.element_dtypes)})")
    return chosen


def _read_only(*arrays: np.ndarray | None) -> None:
    for array in arrays:
        if array is not None:
            array.setflags(write=False)


def _divisor(block_scales: np.ndarray, tensor_scale: np.float32 | None) -> np.ndarray:
    """The float32 number each element of a block is divided by (and multiplied by on decode)."""
    return block_scales if tensor_scale is None else (block_scales * tensor_scale).astype(np.float32)


def quantize(x: np.ndarray, fmt: Format, rule: str | None = None) -> Quantized:
    """Quantise `x` to `fmt`; `rule` picks the block scales (None: the default in the table above)."""
    x32 = elements.encode(np.asarray(x), "fp32")
    if fmt.scaling is None:
        if rule is not None:
            raise ValueError(f"unscaled format {fmt} takes no scale rule")
        codes = elements.encode(x32, fmt.dtype)
        _read_only(codes)
        return Quantized(codes, None, None, None, fmt, None)
    scaling, chosen = fmt.scaling, _checked_rule(fmt, rule)
    spec = elements.element_spec(fmt.dtype)

    stack = blocks.as_matrix_stack(x32)
    finite_abs = np.where(np.isfinite(stack), np.abs(stack), np.float32(0))
    block_amax = blocks.block_max(finite_abs, scaling.block)
    non_finite = blocks.block_any(~np.isfinite(stack), scaling.block)
    block_scales, tensor_scale = chosen.compute(block_amax, finite_abs.max(initial=0), spec)

    divisor = blocks.expand_blocks(_divisor(block_scales, tensor_scale), scaling.block, stack.shape)
    # x and the divisor are float32, so a quotient that is not itself a float32 lies at least
    # ~2**-48 (relative) away from every float32, beyond float64's rounding error: the float64
    # quotient sits between the same two float32 neighbours, and encode's round-to-odd followed
    # by one round-to-nearest-even yields the element nearest to the exact quotient.
    quotient = stack.astype(np.float64) / divisor.astype(np.float64)
    codes = elements.encode(quotient, fmt.dtype).reshape(x32.shape)

    stored = np.where(non_finite, np.float32(np.nan), block_scales).reshape(scaling.scale_shape(x32.shape))
    scale_codes = scales.encode_scales(stored, scaling.dtype)
    decoded = scales.decode_scales(scale_codes, scaling.dtype)
    _read_only(codes, scale_codes, decoded)
    return Quantized(codes, decoded, scale_codes, tensor_scale, fmt, chosen.name)


def dequantize(q: Quantized) -> np.ndarray:
    """Float32 values of `q`: element * block scale [* tensor scale], NaN for NaN-scaled blocks."""
    values = elements.decode(q.codes, q.fmt.dtype)
    if q.fmt.scaling is None:
        return values
    stack = blocks.as_matrix_stack(values)
    grid = stack.shape[:-2] + blocks.block_grid(stack.shape, q.fmt.scaling.block)
    per_block = _divisor(q.scales.reshape(grid), q.tensor_scale)
    divisor = blocks.expand_blocks(per_block, q.fmt.scaling.block, stack.shape)
    # The float64 product of two float32 values is exact; rounding it with the fp32 element rule
    # is the float32 product, except that overflow saturates (an amax-scaled block whose max
    # lies near the float32 limit would otherwise decode to Inf).
    return elements.encode(stack.astype(np.float64) * divisor, "fp32").reshape(q.shape)
