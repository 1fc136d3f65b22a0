"""Element formats against an independent reference built from the bit layouts.

The reference below uses only the standard library: it enumerates every code of each format
from its sign/exponent/mantissa/bias layout (OCP 8-bit FP (OFP8) spec, OCP MX v1.0 spec,
IEEE 754 for fp16/bf16), and rounds an exact rational value to the nearest code, ties to the
even code, saturating. fp32 (too many codes to enumerate) uses an arithmetic rounder that is
checked against the enumeration on the small formats. test_numerics_blockscale.py imports it.
"""
from __future__ import annotations

import bisect
import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from isa.formats import holds_exactly
from runtime.numerics import elements, scales

# --------------------------------------------------------------------------- reference


@dataclass(frozen=True)
class Layout:
    bits: int
    exponent_bits: int
    mantissa_bits: int
    bias: int
    special: str        # "none": every code finite; "fn": only S.1111.111 is NaN; "ieee": max exponent is Inf/NaN


LAYOUTS: dict[str, Layout] = {
    "fp8_e4m3": Layout(8, 4, 3, 7, "fn"),
    "fp8_e5m2": Layout(8, 5, 2, 15, "ieee"),
    "fp6_e2m3": Layout(6, 2, 3, 1, "none"),
    "fp6_e3m2": Layout(6, 3, 2, 3, "none"),
    "fp4_e2m1": Layout(4, 2, 1, 1, "none"),
    "fp16": Layout(16, 5, 10, 15, "ieee"),
    "bf16": Layout(16, 8, 7, 127, "ieee"),
    "fp32": Layout(32, 8, 23, 127, "ieee"),
}
INT8_SCALE = 64                   # MXINT8: value = code / 64
NAN = "nan"                       # reference marker: "a NaN code" (payloads are not compared)
ENUMERATED = [name for name, layout in LAYOUTS.items() if layout.bits <= 16]
FLOAT_FORMATS = list(LAYOUTS)
ALL_FORMATS = FLOAT_FORMATS + ["int8"]

# Facts as the specifications tabulate them: (max normal, emax_elem, smallest subnormal).
SPEC_TABLE = {
    "fp8_e4m3": (448, 8, Fraction(1, 2 ** 9)),
    "fp8_e5m2": (57344, 15, Fraction(1, 2 ** 16)),
    "fp6_e3m2": (28, 4, Fraction(1, 16)),
    "fp6_e2m3": (Fraction(15, 2), 2, Fraction(1, 8)),
    "fp4_e2m1": (6, 2, Fraction(1, 2)),
    "int8": (Fraction(127, 64), 0, Fraction(1, 64)),
    "fp16": (65504, 15, Fraction(1, 2 ** 24)),
    "bf16": ((2 - Fraction(1, 2 ** 7)) * 2 ** 127, 127, Fraction(1, 2 ** 133)),
    "fp32": ((2 - Fraction(1, 2 ** 23)) * 2 ** 127, 127, Fraction(1, 2 ** 149)),
}


def layout_value(code: int, layout: Layout) -> Fraction | str:
    """Value of a positive code (sign bit clear), or NAN / "inf" for the special codes."""
    exponent_field = code >> layout.mantissa_bits
    mantissa = code & ((1 << layout.mantissa_bits) - 1)
    all_ones = (1 << layout.exponent_bits) - 1
    if layout.special == "ieee" and exponent_field == all_ones:
        return "inf" if mantissa == 0 else NAN
    if layout.special == "fn" and exponent_field == all_ones and mantissa == (1 << layout.mantissa_bits) - 1:
        return NAN
    if exponent_field == 0:   # subnormal: 0.m * 2**(1 - bias)
        return Fraction(mantissa, 1 << layout.mantissa_bits) * Fraction(2) ** (1 - layout.bias)
    return (1 + Fraction(mantissa, 1 << layout.mantissa_bits)) * Fraction(2) ** (exponent_field - layout.bias)


@lru_cache(maxsize=None)
def finite_table(name: str) -> tuple[list[Fraction], list[int]]:
    """Finite non-negative values of a format, ascending, with their codes."""
    layout = LAYOUTS[name]
    pairs = [(layout_value(c, layout), c) for c in range(1 << (layout.bits - 1))]
    finite = sorted((v, c) for v, c in pairs if isinstance(v, Fraction))
    return [v for v, _ in finite], [c for _, c in finite]


def reference_max(name: str) -> Fraction:
    if name == "int8":
        return Fraction(127, INT8_SCALE)
    if name in ENUMERATED:
        return finite_table(name)[0][-1]
    layout = LAYOUTS[name]
    return (2 - Fraction(1, 2 ** layout.mantissa_bits)) * Fraction(2) ** ((1 << layout.exponent_bits) - 2 - layout.bias)


def round_half_even(value: Fraction) -> int:
    return round(value)   # Python rounds Fractions half to even


def floor_log2_fraction(value: Fraction) -> int:
    """floor(log2(value)) for value > 0, with integers only."""
    p, q = value.numerator, value.denominator
    exponent = p.bit_length() - q.bit_length()
    return exponent - 1 if (p << max(0, -exponent)) < (q << max(0, exponent)) else exponent


def arithmetic_round(magnitude: Fraction, layout: Layout) -> Fraction:
    """Nearest value with `mantissa_bits` bits and minimum exponent 1 - bias; ties to even; no max."""
    if magnitude == 0:
        return Fraction(0)
    exponent = max(floor_log2_fraction(magnitude), 1 - layout.bias)
    shift = layout.mantissa_bits - exponent            # magnitude / quantum = p * 2**shift / q
    p, q = magnitude.numerator, magnitude.denominator
    numerator, denominator = (p << shift, q) if shift >= 0 else (p, q << -shift)
    units, remainder = divmod(numerator, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and units % 2 == 1):
        units += 1
    return Fraction(units, 1 << shift) if shift >= 0 else Fraction(units << -shift)


def round_fp32(value: Fraction) -> Fraction:
    """RNE to float32 including subnormals; exponent unbounded above (callers clamp)."""
    sign = -1 if value < 0 else 1
    return sign * arithmetic_round(abs(value), LAYOUTS["fp32"])


def _magnitude_code_enumerated(magnitude: Fraction, name: str) -> int:
    values, codes = finite_table(name)
    if magnitude >= values[-1]:
        return codes[-1]
    above = bisect.bisect_right(values, magnitude)
    lower, upper = values[above - 1], values[above]
    if magnitude - lower != upper - magnitude:
        return codes[above - 1] if magnitude - lower < upper - magnitude else codes[above]
    return codes[above - 1] if codes[above - 1] % 2 == 0 else codes[above]


def _magnitude_code_fp32(magnitude: Fraction) -> int:
    rounded = min(arithmetic_round(magnitude, LAYOUTS["fp32"]), reference_max("fp32"))
    return struct.unpack("<I", struct.pack("<f", float(rounded)))[0]


def _inf_code(name: str) -> int:
    layout = LAYOUTS[name]
    return ((1 << layout.exponent_bits) - 1) << layout.mantissa_bits


def reference_code(magnitude: Fraction | str, negative: bool, name: str) -> int | str:
    """Code of sign * magnitude in `name`; magnitude may be "inf" or NAN. RNE, saturating."""
    if name == "int8":
        if magnitude == NAN:
            return 0
        limit = 127 if magnitude == "inf" else min(round_half_even(magnitude * INT8_SCALE), 127)
        return -limit if negative else limit
    layout = LAYOUTS[name]
    if magnitude == NAN:
        return NAN if layout.special != "none" else 0
    if magnitude == "inf" and layout.special == "ieee":
        code = _inf_code(name)
    elif magnitude == "inf":
        code = finite_table(name)[1][-1]
    else:
        code = _magnitude_code_fp32(magnitude) if name == "fp32" else _magnitude_code_enumerated(magnitude, name)
    return code | (1 << (layout.bits - 1)) if negative else code


def split_float(x: float) -> tuple[Fraction | str, bool]:
    """A Python float as (exact magnitude or "inf"/NAN, sign bit)."""
    if math.isnan(x):
        return NAN, False
    negative = math.copysign(1.0, x) < 0
    return ("inf" if math.isinf(x) else Fraction(abs(x))), negative


@lru_cache(maxsize=None)
def positive_code_values(name: str) -> dict[int, float]:
    """Every positive code of a format -> its value as a float (NaN codes -> nan, Inf -> inf)."""
    layout = LAYOUTS[name]
    special = {NAN: math.nan, "inf": math.inf}
    return {c: special[v] if isinstance(v, str) else float(v)
            for c, v in ((c, layout_value(c, layout)) for c in range(1 << (layout.bits - 1)))}


def reference_value(code: int | str, name: str) -> float:
    if code == NAN:
        return math.nan
    if name == "int8":
        return code / INT8_SCALE
    layout = LAYOUTS[name]
    sign = -1.0 if code >> (layout.bits - 1) else 1.0
    magnitude_code = code & ((1 << (layout.bits - 1)) - 1)
    if layout.bits <= 16:
        return sign * positive_code_values(name)[magnitude_code]
    value = layout_value(magnitude_code, layout)
    return sign * (math.inf if value == "inf" else float(value))


def implementation_codes(codes: np.ndarray, name: str) -> list[int | str]:
    """Bit patterns of an implementation code array, NaN codes replaced by NAN."""
    if name == "int8":
        return [int(c) for c in codes.ravel()]
    is_nan = np.isnan(codes.astype(np.float32)).ravel()
    unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32}[codes.dtype.itemsize]
    bits = codes.view(unsigned).ravel()
    return [NAN if n else int(b) for n, b in zip(is_nan, bits)]


# --------------------------------------------------------------------------- input generation


def float32_values(seed: int, size: int, center: int, spread: int) -> np.ndarray:
    """Random float32 values over 2*spread+1 binades around 2**center: full and short
    mantissas (short ones land on ties often), both signs, some zeros."""
    rng = np.random.default_rng(seed)
    exponents = rng.integers(center - spread, center + spread + 1, size)
    full = rng.uniform(1, 2, size)
    short = rng.integers(8, 16, size) / 8           # 1.xxx: exact midpoints of coarse formats
    mantissas = np.where(rng.random(size) < 0.5, full, short)
    signs = np.where(rng.random(size) < 0.5, -1.0, 1.0)
    values = signs * np.ldexp(mantissas, exponents)
    values[rng.random(size) < 0.1] = 0.0
    return values.astype(np.float32)


# --------------------------------------------------------------------------- tests


def test_reference_arithmetic_rounder_agrees_with_enumeration():
    for name in ["fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp6_e3m2", "fp4_e2m1", "fp16", "bf16"]:
        layout, top = LAYOUTS[name], reference_max(name)
        for value in float32_values(1, 300, 0, 12).tolist():
            magnitude = Fraction(abs(value))
            if magnitude > top:
                continue
            expected = reference_value(_magnitude_code_enumerated(magnitude, name), name)
            assert float(arithmetic_round(magnitude, layout)) == expected, (name, value)


@pytest.mark.parametrize("name", list(SPEC_TABLE))
def test_facts_match_spec_table_and_finfo(name):
    spec = elements.element_spec(name)
    max_normal, emax, smallest = SPEC_TABLE[name]
    assert (spec.max_normal, spec.emax, spec.smallest_subnormal) == (max_normal, emax, smallest)
    if name in ENUMERATED:
        assert finite_table(name)[0][1] == smallest
    if name in LAYOUTS:
        assert reference_max(name) == max_normal
        info = ml_dtypes.finfo(spec.storage)
        assert (float(info.max), int(info.maxexp) - 1, float(info.smallest_subnormal)) == (max_normal, emax, smallest)


@pytest.mark.parametrize("name", ALL_FORMATS)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), center=st.integers(-40, 40), spread=st.integers(0, 24))
def test_encode_matches_reference(name, seed, center, spread):
    values = float32_values(seed, 200, center, spread)
    expected = [reference_code(*split_float(v), name) for v in values.tolist()]
    assert implementation_codes(elements.encode(values, name), name) == expected


@pytest.mark.parametrize("name", ALL_FORMATS)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), center=st.integers(-20, 20))
def test_encode_of_float64_is_rounded_once(name, seed, center):
    """float64 inputs are rounded directly (round-to-odd trick), not via float32."""
    rng = np.random.default_rng(seed)
    values = np.ldexp(rng.uniform(-2, 2, 200), rng.integers(center - 8, center + 9, 200))
    expected = [reference_code(*split_float(v), name) for v in values.tolist()]
    assert implementation_codes(elements.encode(values, name), name) == expected


@pytest.mark.parametrize("name", ENUMERATED + ["int8"])     # fp32 codes are too many to list
def test_decode_of_every_code_matches_layout(name):
    bits = 8 if name == "int8" else LAYOUTS[name].bits
    spec = elements.element_spec(name)
    raw = np.arange(1 << bits)
    codes = (raw.astype(np.uint8).view(np.int8) if name == "int8"
             else raw.astype(np.uint16 if bits > 8 else np.uint8).view(spec.storage))
    if name == "int8":
        expected = [c / INT8_SCALE for c in codes.tolist()]
    else:
        expected = [reference_value(c, name) for c in range(1 << bits)]
    decoded = elements.decode(codes, name)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, np.array(expected, np.float32))


@pytest.mark.parametrize("name, value, expected", [
    ("fp8_e4m3", 1000.0, 448.0), ("fp8_e4m3", 465.0, 448.0), ("fp8_e4m3", -1e30, -448.0),
    ("fp8_e4m3", np.inf, 448.0), ("fp8_e4m3", -np.inf, -448.0),
    ("fp8_e5m2", 1e6, 57344.0), ("fp8_e5m2", np.inf, np.inf),
    ("fp6_e2m3", 8.0, 7.5), ("fp6_e3m2", -100.0, -28.0), ("fp4_e2m1", 7.0, 6.0),
    ("int8", 3.0, 127 / 64), ("int8", -3.0, -127 / 64),
    ("fp16", 1e6, 65504.0), ("bf16", 3.4e38, 3.3895313892515355e38), ("fp32", 1e39, 3.4028234663852886e38),
])
def test_overflow_saturates(name, value, expected):
    assert elements.round_to_element(np.array([value]), name)[0] == np.float32(expected)


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2", "fp16", "bf16", "fp32"])
def test_nan_stays_nan_where_the_format_has_nan(name):
    assert np.isnan(elements.round_to_element(np.array([np.nan]), name)[0])


@pytest.mark.parametrize("name", ["fp6_e2m3", "fp6_e3m2", "fp4_e2m1", "int8"])
def test_nan_becomes_positive_zero_where_the_format_has_none(name):
    codes = elements.encode(np.array([np.nan, -np.nan], np.float32), name)
    assert implementation_codes(codes, name) == [0, 0]


@pytest.mark.parametrize("name, value, expected", [
    ("fp8_e4m3", 1.0625, 1.0),              # tie between 1.0 (0x38, even) and 1.125 (0x39)
    ("fp8_e4m3", 1.1875, 1.25),             # tie between 1.125 (odd) and 1.25 (0x3A)
    ("fp8_e4m3", 2.0 ** -10, 0.0),          # half the smallest subnormal: tie to +0
    ("fp8_e4m3", 3 * 2.0 ** -10, 2.0 ** -8),  # tie between subnormals 1 and 2 -> code 2
    ("fp8_e4m3", 2.0 ** -9, 2.0 ** -9),     # smallest subnormal is exact
    ("fp8_e4m3", 464.0, 448.0),             # would round up to 512 (not representable): saturates
    ("fp4_e2m1", 0.25, 0.0), ("fp4_e2m1", 0.75, 1.0), ("fp4_e2m1", 2.5, 2.0),
    ("fp4_e2m1", 3.5, 4.0), ("fp4_e2m1", 5.0, 4.0),
    ("fp6_e2m3", 0.0625, 0.0), ("fp6_e3m2", 0.09375, 0.125),
    ("fp8_e5m2", 1.125, 1.0), ("fp8_e5m2", 1.375, 1.5),
    ("int8", 0.5 / 64, 0.0), ("int8", 1.5 / 64, 2 / 64), ("int8", 2.5 / 64, 2 / 64),
])
def test_ties_to_even_and_subnormals(name, value, expected):
    assert elements.round_to_element(np.array([value], np.float32), name)[0] == np.float32(expected)


def test_negative_values_that_round_to_zero_keep_their_sign():
    codes = elements.encode(np.array([-1e-10, -0.0], np.float32), "fp8_e4m3")
    assert codes.view(np.uint8).tolist() == [0x80, 0x80]


def _midpoint_neighbours(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 values a hair above and below each midpoint between neighbouring positive
    values of a format, with the correct RNE result of each."""
    spec = elements.element_spec(name)
    width = np.uint8 if spec.storage.itemsize == 1 else np.uint16
    every = np.arange(np.iinfo(width).max + 1, dtype=width).view(spec.storage)
    with np.errstate(invalid="ignore"):
        values = np.unique(every.astype(np.float64))
    values = values[np.isfinite(values) & (values > 0)]
    mid = (values[:-1] + values[1:]) / 2
    return mid * (1 + 2.0 ** -30), values[1:], mid * (1 - 2.0 ** -30), values[:-1]


@pytest.mark.parametrize("direct", [elements.CASTS_FLOAT64_DIRECTLY, False],
                         ids=["as-probed", "round-to-odd"])
@pytest.mark.parametrize("name", ["bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "fp6_e2m3",
                                  "fp6_e3m2", "fp4_e2m1"])
def test_float64_inputs_round_once(name, direct, monkeypatch):
    """A float64 a hair off a midpoint goes to the nearer neighbour. Rounding through float32
    would land on the midpoint and tie to even. Checked on the path the import-time probe
    chose for the installed library, and on the round-to-odd path forced."""
    monkeypatch.setattr(elements, "CASTS_FLOAT64_DIRECTLY", direct)
    above, up, below, down = _midpoint_neighbours(name)
    np.testing.assert_array_equal(elements.round_to_element(above, name), up)
    np.testing.assert_array_equal(elements.round_to_element(below, name), down)


def test_probe_of_the_library_cast_agrees_with_the_library():
    """The import-time probe says the library rounds float64 once exactly when it does."""
    value = np.array([1.0625 + 2.0 ** -30])
    once = float(value.astype(ml_dtypes.float8_e4m3fn)[0]) == 1.125
    assert elements.CASTS_FLOAT64_DIRECTLY == once


def test_round_to_odd_float32():
    values = np.array([1 + 2.0 ** -30, 1 + 2.0 ** -23, 1 - 2.0 ** -40, 1e39, -1e39, 1e-50, 0.0])
    expected = [1 + 2.0 ** -23, 1 + 2.0 ** -23, 1 - 2.0 ** -24, 3.4028234663852886e38,
                -3.4028234663852886e38, 2.0 ** -149, 0.0]
    assert elements.round_to_odd_float32(values).tolist() == expected


def test_ue8m0_decode_code_zero_is_subnormal_and_0xff_is_nan():
    codes = np.array([0, 1, 126, 127, 128, 254, 255], np.uint8)
    decoded = scales.ue8m0_decode(codes)
    assert decoded[:6].tolist() == [2.0 ** -127, 2.0 ** -126, 0.5, 1.0, 2.0, 2.0 ** 127]
    assert decoded[0] != 0 and np.isnan(decoded[6])
    # Every other code is 2**(code - 127), as the OCP MX specification defines E8M0.
    every = np.arange(255).astype(np.uint8)
    np.testing.assert_array_equal(scales.ue8m0_decode(every),
                                  np.ldexp(1.0, every.astype(int) - 127).astype(np.float32))


def test_ue8m0_encode():
    values = np.array([2.0 ** -127, 1.0, 0.25, 2.0 ** 127, np.nan])
    assert scales.ue8m0_encode(values).view(np.uint8).tolist() == [0, 127, 125, 254, 255]
    with pytest.raises(ValueError):
        scales.ue8m0_encode(np.array([3.0]))
    with pytest.raises(ValueError):
        scales.ue8m0_encode(np.array([2.0 ** 128]))
    with pytest.raises(ValueError):
        scales.ue8m0_encode(np.array([0.0]))


@pytest.mark.parametrize("value, floor_log2", [(1.0, 0), (1.5, 0), (2.0, 1), (0.75, -1), (448.0, 8),
                                                (511.0, 8), (2.0 ** -149, -149), (3.0 * 2 ** -149, -148)])
def test_floor_log2_is_exact(value, floor_log2):
    assert scales.floor_log2(np.float32(value)) == floor_log2


@pytest.mark.parametrize("value, denominator, expected", [(448.0, 448.0, 0), (449.0, 448.0, 1),
                                                           (511.0, 448.0, 1), (224.0, 448.0, -1),
                                                           (224.5, 448.0, 0), (6.0, 6.0, 0), (1.0, 6.0, -2)])
def test_ceil_log2_ratio_is_exact(value, denominator, expected):
    assert scales.ceil_log2_ratio(np.float32(value), denominator) == expected


# --------------------------------------------------------------------------- exact widening

@pytest.mark.parametrize("wide", FLOAT_FORMATS)
@pytest.mark.parametrize("narrow", FLOAT_FORMATS)
def test_holds_exactly_agrees_with_the_value_grids(wide, narrow):
    """The compiler widens a matrix operand only into a format that holds it exactly
    (isa.formats.holds_exactly): every finite value of the narrow format must then survive
    the conversion, and some must not otherwise."""
    if LAYOUTS[narrow].bits <= 16:
        values = [reference_value(c, narrow) for c in range(1 << LAYOUTS[narrow].bits)]
    else:                                       # fp32: its extremes and its precision decide
        info = np.finfo(np.float32)
        values = [float(info.max), float(info.smallest_subnormal), 1 + float(info.eps)]
    finite = np.array([v for v in values if math.isfinite(v)], np.float32)
    survives = np.array_equal(elements.decode(elements.encode(finite, wide), wide), finite)
    assert holds_exactly(wide, narrow) == survives
