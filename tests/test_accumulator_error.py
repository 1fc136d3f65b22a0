"""Functional mode's second reference: the same program on the same quantised inputs with
products summed exactly, so the error a limited accumulator adds is seen by itself."""
from __future__ import annotations

import pytest

from compiler.cli.functional import check_numerics
from compiler.driver import compile_model
from isa.target_loader import load_target

GEMM = """model kgemm {{
  size M = 64, N = 64, K = {k}
  input a: fp8_e4m3[M, K]
  weight b: fp8_e4m3[K, N]
  output c: fp32[M, N] = a @ b
}}
"""


def _accumulator_error(tmp_path, k: int, interval: int) -> tuple[float, float]:
    """(error against the model, error against exact accumulation) of c, on h800 with its
    FP8 partial sums promoted every `interval` of K (0: never)."""
    model = tmp_path / f"k{k}.ds"
    model.write_text(GEMM.format(k=k))
    target = load_target("h800", {"matrix.promotion_interval": interval})
    result = check_numerics(compile_model(str(model), target, {}, unroll=True))
    (model_error,), (acc_error,) = result.outputs, result.accumulator
    return model_error.rel_error, acc_error.rel_error


KS = (128, 512, 2048)


def test_error_grows_with_k_without_promotion_and_not_with_it(tmp_path):
    """H800's FP8 accumulator keeps 13 mantissa bits. Never promoted to FP32
    (`promotion_interval = 0`, K tiles as for any GEMM), its error against exact sums grows
    with K; promoted every 128 it stays where one interval puts it. Against the unquantised
    model both are buried under the inputs' FP8 rounding (about 4%), which is why the second
    reference exists."""
    never = [_accumulator_error(tmp_path, k, 0) for k in KS]
    every = [_accumulator_error(tmp_path, k, 128) for k in KS]
    off = [acc for _, acc in never]
    on = [acc for _, acc in every]
    assert off[0] < off[1] < off[2] and off[2] > 3 * off[0]
    assert on[0] == pytest.approx(off[0])               # K = 128: one interval either way
    assert max(on) < 1.2 * on[0] and on[2] < off[2] / 3
    assert all(model > 20 * acc for model, acc in never + every)


def test_a_longer_interval_lies_between(tmp_path):
    """Promoted every 512 of K (four K steps of 128 or more between promotions), the error at
    K = 2048 is above every-128's and below never's: the interval, not the tile, sets it."""
    _, every = _accumulator_error(tmp_path, 2048, 128)
    _, longer = _accumulator_error(tmp_path, 2048, 512)
    _, never = _accumulator_error(tmp_path, 2048, 0)
    assert every < longer < never


def test_exact_formats_have_no_second_reference(tmp_path):
    model = tmp_path / "bf16.ds"
    model.write_text(GEMM.format(k=256).replace("fp8_e4m3", "bf16"))
    result = check_numerics(compile_model(str(model), "h800", {}, unroll=True))
    assert result.accumulator == [] and "accumulator_error" not in result.to_dict()


def test_the_report_names_both_references(tmp_path):
    model = tmp_path / "k.ds"
    model.write_text(GEMM.format(k=256))
    result = check_numerics(compile_model(str(model), "h800", {}, unroll=True))
    data = result.to_dict()
    assert data["accumulator_reference"].startswith("the same program on the same quantised")
    assert [o["name"] for o in data["accumulator_error"]] == ["c"]
    assert "rel error vs exact accumulation" in result.text()
