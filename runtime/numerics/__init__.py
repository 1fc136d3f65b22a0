"""Numerics of the low-precision storage formats: element rounding, block scales, scaled matmul.

    elements     float <-> element codes (fp32, bf16, fp16, fp8, fp6, fp4, MXINT8), RNE, saturating
    scales       scale encodings (fp32, UE8M0, E4M3) and exact power-of-two exponents
    blocks       block geometry over the last two dimensions
    scale_rules  amax / pow2_ceil / ocp_mx / nvfp4 scale choice
    blockscale   quantize / dequantize and the default rule per format
    matmul       scaled_matmul with exact, promote (DeepSeek-V3) and truncate accumulators

See docs/numerics.md.
"""
from runtime.numerics.blockscale import DEFAULT_RULES, Quantized, default_rule, dequantize, quantize
from runtime.numerics.elements import ELEMENTS, ElementSpec, decode, element_spec, encode, round_to_element
from runtime.numerics.matmul import round_to_mantissa_bits, scaled_matmul
from runtime.numerics.scale_rules import RULES

__all__ = [
    "DEFAULT_RULES", "ELEMENTS", "ElementSpec", "Quantized", "RULES", "decode", "default_rule",
    "dequantize", "element_spec", "encode", "quantize", "round_to_element", "round_to_mantissa_bits",
    "scaled_matmul",
]
