"""scaled_matmul accumulator models and the mantissa-rounding helper."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from isa.formats import ALIASES, Format
from runtime.numerics import dequantize, quantize, round_to_mantissa_bits, scaled_matmul


# --------------------------------------------------------------------------- round_to_mantissa_bits

@pytest.mark.parametrize("value, bits, expected", [
    (1 + 2.0 ** -14, 13, 1.0),                         # half an ulp (2**-13): tie to even
    (1 + 3 * 2.0 ** -14, 13, 1 + 2.0 ** -12),          # tie between odd 1+2**-13 and even 1+2**-12
    (1 + 2.0 ** -14 + 2.0 ** -40, 13, 1 + 2.0 ** -13),  # just above the tie
    (-(1 + 3 * 2.0 ** -14), 13, -(1 + 2.0 ** -12)),
    (1000.3, 13, 1000.3125), (2.5, 1, 2.0), (3.5, 1, 4.0), (0.75, 0, 1.0), (1.5, 0, 2.0),
    (2.0 ** -200, 13, 2.0 ** -200),                    # the exponent range is not limited
    (0.0, 13, 0.0), (math.inf, 13, math.inf), (-math.inf, 3, -math.inf),
])
def test_round_to_mantissa_bits(value, bits, expected):
    assert round_to_mantissa_bits(np.array([value]), bits)[0] == expected


def test_round_to_mantissa_bits_keeps_nan_and_rejects_bad_widths():
    assert np.isnan(round_to_mantissa_bits(np.array([np.nan]), 13)[0])
    with pytest.raises(ValueError):
        round_to_mantissa_bits(np.array([1.0]), 52)


SHORT = 24        # significant bits of values that float32 holds exactly


@pytest.mark.parametrize("bits, dtype, significant", [(23, np.float32, 53), (10, np.float16, 53),
                                                       (7, ml_dtypes.bfloat16, SHORT)])
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_round_to_mantissa_bits_matches_ieee_casts(bits, dtype, significant, seed):
    """Same as an RNE cast within the target's normal range. numpy casts float64 to float32 and
    float16 directly; ml_dtypes goes through float32, so bfloat16 gets float32-exact inputs."""
    rng = np.random.default_rng(seed)
    mantissas = rng.integers(1 << (significant - 1), 1 << significant, 500, dtype=np.uint64)
    # drop random low bits so that exact ties are frequent
    mantissas >>= rng.integers(0, significant - bits, 500).astype(np.uint64)
    top_bit = np.floor(np.log2(mantissas.astype(np.float64))).astype(int)
    values = np.ldexp(mantissas.astype(np.float64), rng.integers(-10, 10, 500) - top_bit)
    values *= np.where(rng.random(500) < 0.5, -1, 1)
    expected = values.astype(np.float32) if significant == SHORT else values
    np.testing.assert_array_equal(round_to_mantissa_bits(values, bits),
                                  expected.astype(dtype).astype(np.float64))


# --------------------------------------------------------------------------- exact mode

def _fsum_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correctly rounded float32 of each exact dot product of float32 operands (math.fsum)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    out = np.empty(a.shape[:-1] + b.shape[-1:], np.float64)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            out[i, j] = math.fsum((a64[i] * b64[:, j]).tolist())    # float64 products are exact
    return out.astype(np.float32)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), m=st.integers(1, 6), k=st.integers(1, 300), n=st.integers(1, 6))
def test_exact_mode_is_float32_rounding_of_the_dequantised_product(seed, m, k, n):
    rng = np.random.default_rng(seed)
    a = quantize(rng.standard_normal((m, k)) * np.exp2(rng.integers(-8, 8, (m, k))), ALIASES["mxfp8"])
    b_fmt = Format("fp4_e2m1", ALIASES["nvfp4"].scaling.transposed())     # blocks along K
    b = quantize(rng.standard_normal((k, n)), b_fmt)
    out, mode = scaled_matmul(a, b, "exact")
    assert out.dtype == np.float32 and out.shape == (m, n) and mode.startswith("exact")
    reference = _fsum_reference(dequantize(a), dequantize(b))
    # float64 summation of k products: at most k * 2**-53 * sum|products| from the exact sum
    magnitude = np.abs(dequantize(a)).astype(np.float64) @ np.abs(dequantize(b)).astype(np.float64)
    slack = np.spacing(np.abs(reference)) + k * 2.0 ** -53 * magnitude
    assert np.all(np.abs(out.astype(np.float64) - reference) <= slack)


def test_exact_mode_concrete():
    a = np.array([[1.0, 2.0 ** -24, 2.0 ** -24]], np.float32)
    b = np.ones((3, 1), np.float32)
    out, _ = scaled_matmul(a, b, "exact")
    assert out[0, 0] == np.float32(1 + 2.0 ** -23)     # float32 accumulation would give 1.0


# --------------------------------------------------------------------------- promote / truncate

def _big_then_small(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Products 1, then k-1 times 2**-20: each 32-product group adds 2**-15, under half an ulp of
    a 13-bit accumulator holding 1 (2**-14)."""
    a = np.full((1, k), 2.0 ** -10, np.float32)
    a[0, 0] = 1.0
    return a, a.T.copy()


@pytest.mark.parametrize("k", [256, 1024, 4096])
def test_truncate_error_grows_with_k_and_promote_stays_close(k):
    a, b = _big_then_small(k)
    exact, _ = scaled_matmul(a, b, "exact")
    truncated, truncate_mode = scaled_matmul(a, b, "truncate")
    promoted, promote_mode = scaled_matmul(a, b, "promote", interval=128)
    assert exact[0, 0] == 1 + (k - 1) * 2.0 ** -20
    assert truncated[0, 0] == 1.0                                   # every small group is lost
    assert promoted[0, 0] == 1 + (k - 128) * 2.0 ** -20             # only the first interval's are
    assert exact[0, 0] - truncated[0, 0] == (k - 1) * 2.0 ** -20    # grows with K
    assert exact[0, 0] - promoted[0, 0] == 127 * 2.0 ** -20         # does not
    assert truncate_mode == f"truncate: 13-bit-mantissa accumulator rounded per 32-product MMA group over all K={k}"
    assert promote_mode == ("promote: 13-bit-mantissa accumulator rounded per 32-product MMA group, "
                            f"promoted to float32 every 128 of K={k}")


def test_wider_accumulator_keeps_the_small_addends():
    a, b = _big_then_small(1024)
    out, _ = scaled_matmul(a, b, "truncate", mantissa_bits=23)
    assert out[0, 0] == 1 + 1023 * 2.0 ** -20


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), k=st.integers(1, 400), batch=st.integers(1, 3))
def test_promote_with_an_interval_covering_k_equals_truncate(seed, k, batch):
    rng = np.random.default_rng(seed)
    a = quantize(rng.standard_normal((batch, 3, k)) * 100, ALIASES["mxfp8"])
    b = quantize(rng.standard_normal((batch, k, 2)), Format("fp8_e4m3", ALIASES["mxfp8"].scaling.transposed()))
    promoted, _ = scaled_matmul(a, b, "promote", interval=k + rng.integers(0, 100))
    truncated, _ = scaled_matmul(a, b, "truncate")
    np.testing.assert_array_equal(promoted, truncated)
    assert promoted.shape == (batch, 3, 2)


def test_promote_with_interval_32_matches_a_hand_computed_sum():
    # groups of 32 products, each rounded to 13 bits and added to float32 separately
    a = np.ones((1, 64), np.float32)
    b = np.full((64, 1), 1 + 2.0 ** -10, np.float32)
    b[0, 0] = 1 + 2.0 ** -12
    out, _ = scaled_matmul(a, b, "promote", interval=32)
    group1 = 31 * (1 + 2.0 ** -10) + 1 + 2.0 ** -12     # 32.0307..., rounded to 13 bits: ulp 2**-8
    group2 = 32 * (1 + 2.0 ** -10)                       # exact: 32.03125
    expected = round(group1 * 2 ** 8) / 2 ** 8 + group2
    assert out[0, 0] == np.float32(expected) == np.float32(64.0625)


def test_plain_float_operands_and_errors():
    out, _ = scaled_matmul(np.ones((2, 3)), np.ones((3, 4)), "promote")
    assert out.tolist() == [[3.0] * 4] * 2
    with pytest.raises(ValueError):
        scaled_matmul(np.ones((2, 3)), np.ones((4, 4)))
    with pytest.raises(ValueError):
        scaled_matmul(np.ones((2, 3)), np.ones((3, 4)), "fp16")
    with pytest.raises(ValueError):
        scaled_matmul(np.ones((2, 3)), np.ones((3, 4)), "promote", interval=0)


def test_promotion_accumulates_in_float32():
    a = np.ones((1, 96), np.float32)
    b = np.zeros((96, 1), np.float32)
    b[0, 0], b[32, 0], b[64, 0] = 2.0 ** 24, 1.0, 1.0
    promoted, _ = scaled_matmul(a, b, "promote", interval=32, mantissa_bits=30)
    exact, _ = scaled_matmul(a, b, "exact")
    assert promoted[0, 0] == 2.0 ** 24              # 2**24 + 1 is a float32 tie, twice: even stays
    assert exact[0, 0] == 2.0 ** 24 + 2
