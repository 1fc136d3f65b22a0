"""Scales that factor out of a GEMM's K sum (a per-token activation scale times a per-channel
weight scale, W8A8) are applied once to the output tile in the epilogue: on the fixed pipe where
the target lists the op, else on the vector unit. The matrix unit multiplies the raw elements."""
from __future__ import annotations

import math

import numpy as np
import pytest

from compiler.driver import compile_model
from compiler.ir.evaluate import random_feeds
from compiler.kernels.operand_plan import plan_operands
from isa.assembler import parse_listing
from isa.formats import Scaling
from isa.listing import render
from isa.program import Loop, TensorDecl, walk
from isa.target_loader import load_target
from runtime.functional import Machine
from runtime.interpreter import run_program
from runtime.numerics import round_to_element
from target_variants import ascend_with_pipe



def _gemm(dtype: str, m: int, n: int, k: int, a_block=None, b_block=None) -> str:
    scaled = lambda block: f" scaled(fp32, {block[0]}x{block[1]})" if block else ""
    return f"""
model w8a8 {{
  size M = {m}, N = {n}, K = {k}
  input  a: {dtype}[M, K]{scaled(a_block)}
  weight b: {dtype}[K, N]{scaled(b_block)}
  output c: bf16[M, N] = a @ b
}}"""


def _w8a8(dtype: str, m: int = 96, n: int = 160, k: int = 256) -> str:
    return _gemm(dtype, m, n, k, (1, k), (k, 1))


def _model(tmp_path, text: str, name: str = "gemm.ds") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _ascend(tmp_path, ops: str | None) -> str:
    """ascend910b with its pipe's op list replaced (None: no fixed pipe at all)."""
    return ascend_with_pipe(tmp_path, None if ops is None else f"ops = {ops}")


def _decl(name, dtype, shape, block=None) -> TensorDecl:
    return TensorDecl(name, dtype, shape, "temp", Scaling("fp32", block) if block else None)


def _plan(target, a_dtype, b_dtype, k, a_block, b_block, epilogue=True, m=64, n=64):
    a = _decl("a", a_dtype, (1, m, k), a_block)
    b = _decl("b", b_dtype, (1, k, n), b_block)
    return plan_operands(a, b, load_target(target), epilogue=epilogue)


# ---- the operand plan ----------------------------------------------------------------------

@pytest.mark.parametrize("target, dtype, fmt, conv, promote", [
    ("ascend910b", "int8", "int8", None, False),        # int8 x int8 -> int32 on the cube
    ("h800", "fp8_e4m3", "fp8_e4m3", None, True),       # FP8, unscaled promotions every 128
    ("ascend910b", "fp8_e4m3", "bf16", "cvt", False),   # no FP8 cube: widened exactly
    ("a100", "fp8_e4m3", "bf16", "cvt", False),
])
def test_scales_spanning_k_are_left_to_the_epilogue(target, dtype, fmt, conv, promote):
    plan = _plan(target, dtype, dtype, 512, (1, 512), (512, 1))
    assert plan.epilogue_scales == ("a", "b")
    assert (plan.fmt, plan.a_conv, plan.b_conv) == (fmt, conv, conv)
    assert plan.promote == promote and not plan.scaled and not plan.hw_scaled


def test_a_block_wider_than_k_factors_out_and_one_scaled_operand_is_enough():
    assert _plan("h800", "fp8_e4m3", "fp8_e4m3", 512, (1, 4096), (4096, 1)).epilogue_scales \
        == ("a", "b")
    plan = _plan("h800", "bf16", "fp8_e4m3", 512, None, (512, 1))
    assert (plan.fmt, plan.a_conv, plan.b_conv, plan.epilogue_scales) == \
        ("bf16", None, "cvt", ("b",))


def test_fine_grained_blocks_keep_their_plans():
    """DeepSeek-style 1x128 / 128x128 blocks under a longer K do not factor out."""
    plan = _plan("h800", "fp8_e4m3", "fp8_e4m3", 512, (1, 128), (128, 128))
    assert (plan.promote, plan.scaled, plan.k_step, plan.epilogue_scales) == (True, True, 128, ())
    plan = _plan("ascend910b", "fp8_e4m3", "fp8_e4m3", 512, (1, 128), (128, 128))
    assert (plan.a_conv, plan.b_conv, plan.epilogue_scales) == ("dequant", "dequant", ())


@pytest.mark.parametrize("k, epilogue", [(128, False), (256, True), (512, True)])
def test_a_promotion_that_applies_the_scales_anyway_wins_when_k_is_one_step(k, epilogue):
    """On h800 an FP8 sum is promoted every 128 of K either way: with the scales (vec.promote,
    2 operations an element) or without (vec.accumulate, 1) plus the epilogue's two multiplies.
    Per output element: one step, 2 against 3; two, 4 against 4 (a tie goes to the epilogue,
    whose K tiles need not be one block); four, 8 against 6."""
    plan = _plan("h800", "fp8_e4m3", "fp8_e4m3", k, (1, k), (k, 1))
    assert bool(plan.epilogue_scales) == epilogue
    assert plan.scaled != epilogue


def test_kernels_without_a_gemm_epilogue_can_ask_for_the_promotion():
    plan = _plan("h800", "fp8_e4m3", "fp8_e4m3", 128, (1, 128), (128, 1), epilogue=False)
    assert (plan.scaled, plan.epilogue_scales) == (True, ())


def test_operands_no_format_holds_are_still_dequantised():
    """a100 has no integer matrix format: int8 W8A8 is dequantised into BF16 as before."""
    plan = _plan("a100", "int8", "int8", 512, (1, 512), (512, 1))
    assert (plan.a_conv, plan.b_conv, plan.epilogue_scales) == ("dequant", "dequant", ())


# ---- where the epilogue applies them ---------------------------------------------------------

ROW_PIPE = '["rowscale", "dequant", "quant", "cvt", "bias", "relu", "add", "layout"]'


@pytest.mark.parametrize("pipe, epilogue", [
    # ascend910b's FixPipe dequantises per channel; the per-token scale needs the vector cores,
    # so the pipe hands over its FP32 tile.
    ("builtin", ["fix.dequant", "fix.st", "vld.tile", "vld.tile", "vec.rowscale", "vec.cvt",
                 "vst.tile"]),
    # A pipe that also lists per-token scaling takes the whole epilogue (a what-if, as data).
    (ROW_PIPE, ["fix.rowscale", "fix.dequant", "fix.cvt", "fix.st"]),
    ("[]", ["fix.st", "vld.tile", "vld.tile", "vld.tile", "vec.rowscale", "vec.colscale",
            "vec.cvt", "vst.tile"]),
    (None, ["st.tile", "vld.tile", "vld.tile", "vld.tile", "vec.rowscale", "vec.colscale",
            "vec.cvt", "vst.tile"]),
])
def test_the_pipe_takes_the_scales_it_lists_and_the_vector_cores_the_rest(tmp_path, pipe,
                                                                           epilogue):
    target = "ascend910b" if pipe == "builtin" else _ascend(tmp_path, pipe)
    compiled = compile_model(_model(tmp_path, _w8a8("int8")), target, {})
    [kernel] = compiled.program.kernels
    ops = [ins.op for ins in walk(kernel.body)]
    assert ops[ops.index("sync.mm") + 1:] == epilogue
    assert "vec.dequant" not in ops and "vec.cvt" not in ops[:ops.index("sync.mm")]
    assert parse_listing(render(compiled.program), target=compiled.target) == compiled.program


def test_scales_are_loaded_once_per_output_tile_outside_the_k_loop(tmp_path):
    compiled = compile_model(_model(tmp_path, _w8a8("int8", k=1024)), "ascend910b", {})
    [kernel] = compiled.program.kernels
    [loop] = [node for node in kernel.body if isinstance(node, Loop)]
    scale_loads = [ins for ins in walk(kernel.body) if ins.op.endswith(".tile")
                   and any(getattr(a, "tensor", "") in ("a_scale", "b_scale") for a in ins.args)]
    assert len(scale_loads) == 2
    assert not any(ins in scale_loads for ins in walk(loop.body))


def test_gpus_scale_the_accumulator_on_the_vector_unit(tmp_path):
    compiled = compile_model(_model(tmp_path, _w8a8("fp8_e4m3", k=512)), "h800", {})
    [kernel] = compiled.program.kernels
    ops = [ins.op for ins in walk(kernel.body)]
    assert ops[-4:] == ["vec.rowscale", "vec.colscale", "vec.cvt", "st.tile"]
    assert "vec.promote" not in ops and "vec.accumulate" in ops


# ---- what it costs -----------------------------------------------------------------------------

def test_vector_work_is_two_passes_over_each_output_tile_whatever_k(tmp_path):
    """Hand-computed: on ascend910b the vector cores' work is vec.rowscale and vec.cvt, one
    element operation each per element of every output tile, on 128 lanes; K does not enter
    (the dequantising plan's vector work grew with K)."""
    target = load_target("ascend910b")
    for k in (512, 2048):
        compiled = compile_model(_model(tmp_path, _w8a8("int8", 256, 256, k)), "ascend910b", {})
        [kernel] = compiled.program.kernels
        bm, bn = [b.shape for b in kernel.buffers if b.name == "acc"][0][-2:]
        tiles = math.ceil(256 / bm) * math.ceil(256 / bn)
        [launch] = run_program(compiled.program, compiled.target).launches
        assert launch.result.unit_busy["vec"] == pytest.approx(     # core-cycles, all cores
            tiles * 2 * bm * bn / target.vector.lanes)
        # the pipe's per-channel pass: n / elements_per_cycle per tile, beside its drain
        fix = [ins for ins in walk(kernel.body) if ins.op == "fix.dequant"]
        assert [ins.attr("n") for ins in fix] == [bm * bn]


def _time(tmp_path, text: str, target: str) -> float:
    compiled = compile_model(_model(tmp_path, text, "t.ds"), target, {})
    return run_program(compiled.program, compiled.target).cycles


def test_w8a8_on_ascend_runs_close_to_the_unscaled_gemm(tmp_path):
    """The int8 cube runs at its own rate; what the scales add is the epilogue's hand-over
    through memory and two vector passes per output tile (the dequantising plan took about
    four times the unscaled GEMM)."""
    m, n, k = 2048, 2048, 4096
    scaled = _time(tmp_path, _w8a8("int8", m, n, k), "ascend910b")
    plain = _time(tmp_path, _gemm("int8", m, n, k), "ascend910b")
    assert plain < scaled < 1.25 * plain


# ---- what it computes --------------------------------------------------------------------------

def _run(path: str, target: str, exact_accumulation: bool = True):
    """The ISA's product and the numpy one of the same quantised inputs (float64, rounded
    once to bf16). Exact accumulation leaves only the scales' and the output's rounding."""
    compiled = compile_model(path, target, {})
    machine = Machine(compiled.program, compiled.target, exact_accumulation)
    machine.store_feeds(random_feeds(compiled.graph, 0))
    machine.run()
    value = machine.memory.value
    exact = value("a").astype(np.float64) @ value("b").astype(np.float64)
    return value("c"), round_to_element(exact, "bf16")


# One bf16 unit in the last place: the FP32 sums and scales round before the bf16 store does.
BF16_ULP = 2.0 ** -7


@pytest.mark.parametrize("target", ["ascend910b", "h800", ROW_PIPE, "[]", None])
def test_int8_w8a8_matches_numpy(tmp_path, target):
    """int8 x int8 sums are exact in the accumulator's FP32 at this K; the scales multiply in
    FP32 and the result rounds to bf16: within one bf16 ulp of numpy, on every way of applying
    the scales (pipe, vector cores after the hand-over, no pipe at all, a GPU)."""
    where = target if target in ("ascend910b", "h800") else _ascend(tmp_path, target)
    isa, ref = _run(_model(tmp_path, _w8a8("int8")), where, exact_accumulation=False)
    assert np.all(np.abs(isa - ref) <= np.abs(ref) * BF16_ULP)


@pytest.mark.parametrize("target", ["ascend910b", "h800", "a100"])
def test_fp8_per_channel_matches_numpy(tmp_path, target):
    """FP8 with per-token and per-channel scales, the products summed exactly: within one
    bf16 ulp of numpy."""
    isa, ref = _run(_model(tmp_path, _w8a8("fp8_e4m3")), target)
    assert np.all(np.abs(isa - ref) <= np.abs(ref) * BF16_ULP)


def test_fp8_on_hopper_adds_only_its_limited_accumulators_error(tmp_path):
    """h800's FP8 sums keep 13 mantissa bits between promotions (every 128 of K) whether the
    scales are applied at promotion or in the epilogue: the error it adds is that of the
    unscaled FP8 GEMM, small against the format's own."""
    isa, ref = _run(_model(tmp_path, _w8a8("fp8_e4m3")), "h800", exact_accumulation=False)
    assert 0 < np.linalg.norm(isa - ref) < 2e-3 * np.linalg.norm(ref)
