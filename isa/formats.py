"""Storage formats: element dtypes, block scaling, and the bytes they imply.

A *format* is what a tensor is stored as: an element dtype plus, optionally, a block
scaling (one scale per `rows x cols` block of the last two dimensions, in a scale dtype,
and for NVFP4 one extra per-tensor scale). Every byte count in dsc comes from here, so
that parameter bytes, listing operand sizes and simulated traffic agree exactly.

Text form, shared by the .ds language, the IR text, listings and `--set`:

    bf16
    fp8_e4m3 scaled(fp32, 1x128)
    fp4_e2m1 scaled(fp8_e4m3, 1x16, fp32)      # per-tensor fp32 scale as third argument
    mxfp4                                      # alias, see ALIASES
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class DType:
    name: str
    bits: int
    kind: str          # "float", "int" or "scale" (exponent-only)
    description: str


DTYPES: dict[str, DType] = {d.name: d for d in [
    DType("fp32", 32, "float", "IEEE binary32"),
    DType("bf16", 16, "float", "bfloat16: 8 exponent, 7 mantissa bits"),
    DType("fp16", 16, "float", "IEEE binary16"),
    DType("fp8_e4m3", 8, "float", "OCP FP8 E4M3 (no Inf, max 448)"),
    DType("fp8_e5m2", 8, "float", "OCP FP8 E5M2 (IEEE-like, max 57344)"),
    DType("fp6_e2m3", 6, "float", "OCP MX FP6 E2M3 (max 7.5)"),
    DType("fp6_e3m2", 6, "float", "OCP MX FP6 E3M2 (max 28)"),
    DType("fp4_e2m1", 4, "float", "OCP MX FP4 E2M1 (max 6)"),
    DType("int8", 8, "int", "8-bit signed integer"),
    DType("i32", 32, "int", "32-bit signed integer (indices)"),
    DType("ue8m0", 8, "scale", "OCP E8M0 scale: power of two, bias 127"),
]}

ELEMENT_DTYPES = tuple(n for n, d in DTYPES.items() if d.kind != "scale")

# The value grid of each float element format: explicit mantissa bits, the exponent of its
# smallest subnormal, and its largest finite value (IEEE 754, the OCP FP8 and MX
# specifications). A format holds another exactly when it has at least its mantissa bits,
# reaches down to its smallest subnormal and up to its largest value.
_FLOAT_GRID: dict[str, tuple[int, int, float]] = {
    "fp32": (23, -149, 3.4028234663852886e38),
    "bf16": (7, -133, 3.3895313892515355e38),
    "fp16": (10, -24, 65504.0),
    "fp8_e4m3": (3, -9, 448.0),
    "fp8_e5m2": (2, -16, 57344.0),
    "fp6_e2m3": (3, -3, 7.5),
    "fp6_e3m2": (2, -4, 28.0),
    "fp4_e2m1": (1, -1, 6.0),
}


def holds_exactly(wide: str, narrow: str) -> bool:
    """Every value of element dtype `narrow` is a value of `wide` (a conversion is exact)."""
    if wide == narrow:
        return True
    if wide not in _FLOAT_GRID or narrow not in _FLOAT_GRID:
        return False
    (wm, wsub, wmax), (nm, nsub, nmax) = _FLOAT_GRID[wide], _FLOAT_GRID[narrow]
    return nm <= wm and nsub >= wsub and nmax <= wmax
SCALE_DTYPES = ("fp32", "ue8m0", "fp8_e4m3")


class FormatError(ValueError):
    """A format string or combination that is not valid; the message says what was expected."""


@dataclass(frozen=True)
class Scaling:
    """One `dtype` scale per block of `block[0]` rows x `block[1]` columns of the last two dims."""
    dtype: str
    block: tuple[int, int]
    tensor_dtype: str | None = None   # an extra per-tensor scale (NVFP4 uses fp32)

    def __post_init__(self):
        if self.dtype not in SCALE_DTYPES:
            raise FormatError(f"unknown scale dtype '{self.dtype}' (expected one of {', '.join(SCALE_DTYPES)})")
        if self.tensor_dtype is not None and self.tensor_dtype != "fp32":
            raise FormatError(f"per-tensor scale must be fp32, got '{self.tensor_dtype}'")
        if len(self.block) != 2 or min(self.block) < 1:
            raise FormatError(f"block must be ROWSxCOLS with positive sizes, got {self.block}")

    def transposed(self) -> "Scaling":
        return Scaling(self.dtype, (self.block[1], self.block[0]), self.tensor_dtype)

    def scale_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the scale tensor that goes with a tensor of `shape`."""
        rows, cols = _last_two(shape)
        lead = shape[:-2] if len(shape) >= 2 else ()
        return (*lead, math.ceil(rows / self.block[0]), math.ceil(cols / self.block[1]))

    def __str__(self) -> str:
        extra = f", {self.tensor_dtype}" if self.tensor_dtype else ""
        return f"scaled({self.dtype}, {self.block[0]}x{self.block[1]}{extra})"


@dataclass(frozen=True)
class Format:
    dtype: str
    scaling: Scaling | None = None

    def __post_init__(self):
        if self.dtype not in ELEMENT_DTYPES:
            raise FormatError(f"unknown dtype '{self.dtype}' (expected one of {', '.join(ELEMENT_DTYPES)})")

    @property
    def bits(self) -> int:
        return DTYPES[self.dtype].bits

    @property
    def is_float(self) -> bool:
        return DTYPES[self.dtype].kind == "float"

    def element_bytes(self, shape: tuple[int, ...]) -> int:
        """Bytes of the elements alone, packed (FP4 is half a byte, FP6 three quarters)."""
        return math.ceil(math.prod(shape) * self.bits / 8)

    def scale_bytes(self, shape: tuple[int, ...]) -> int:
        if self.scaling is None:
            return 0
        count = math.prod(self.scaling.scale_shape(shape))
        per_tensor = 4 if self.scaling.tensor_dtype else 0
        return count * DTYPES[self.scaling.dtype].bits // 8 + per_tensor

    def nbytes(self, shape: tuple[int, ...]) -> int:
        return self.element_bytes(shape) + self.scale_bytes(shape)

    def with_dtype(self, dtype: str) -> "Format":
        return Format(dtype, self.scaling)

    def __str__(self) -> str:
        return self.dtype if self.scaling is None else f"{self.dtype} {self.scaling}"


def _last_two(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[-2], shape[-1]


# Aliases put their block along the reduction axis of an activation [tokens, K], i.e. 1xN.
ALIASES: dict[str, Format] = {
    "mxfp8": Format("fp8_e4m3", Scaling("ue8m0", (1, 32))),
    "mxfp6": Format("fp6_e2m3", Scaling("ue8m0", (1, 32))),
    "mxfp4": Format("fp4_e2m1", Scaling("ue8m0", (1, 32))),
    "mxint8": Format("int8", Scaling("ue8m0", (1, 32))),
    "nvfp4": Format("fp4_e2m1", Scaling("fp8_e4m3", (1, 16), "fp32")),
}

_FORMAT_RE = re.compile(
    r"^\s*(?P<dtype>[a-z0-9_]+)\s*"
    r"(?:scaled\s*\(\s*(?P<sdtype>[a-z0-9_]+)\s*,\s*(?P<rows>\d+)\s*x\s*(?P<cols>\d+)\s*"
    r"(?:,\s*(?P<tdtype>[a-z0-9_]+)\s*)?\)\s*)?$")


def parse_format(text: str) -> Format:
    """Parse `DTYPE [scaled(SDTYPE, RxC[, fp32])]` or an alias; FormatError says what was expected."""
    match = _FORMAT_RE.match(text)
    if not match:
        raise FormatError(f"cannot read format '{text}' (expected DTYPE or "
                          "DTYPE scaled(SCALE_DTYPE, ROWSxCOLS), e.g. fp8_e4m3 scaled(fp32, 1x128))")
    name = match["dtype"]
    if name in ALIASES:
        if match["sdtype"]:
            raise FormatError(f"'{name}' already includes its scaling; write the element dtype to choose another")
        return ALIASES[name]
    if name not in ELEMENT_DTYPES:
        raise FormatError(f"unknown dtype '{name}' (expected one of "
                          f"{', '.join(ELEMENT_DTYPES + tuple(ALIASES))})")
    if not match["sdtype"]:
        return Format(name)
    block = (int(match["rows"]), int(match["cols"]))
    return Format(name, Scaling(match["sdtype"], block, match["tdtype"]))
