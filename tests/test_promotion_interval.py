"""The promotion interval is a target figure independent of the K tile: the tile pass picks the
K tile as for any GEMM (dividing the interval), partial sums of a limited accumulator are
promoted every `promotion_interval` of K (every few K steps), and 0 means never (the limited
accumulator sums all of K, as a naive FP8 kernel does). Block-scaled operands still promote
once per scale block."""
from __future__ import annotations

import math

import numpy as np
import pytest

from compiler.cli.main import main
from compiler.driver import compile_model
from compiler.ir.evaluate import random_feeds
from compiler.kernels.operand_plan import unusable
from isa.target_loader import TargetError, load_target
from isa.program import Loop, walk
from runtime.functional import Machine
from runtime.interpreter import run_program
from runtime.numerics import scaled_matmul

GEMM = """model g {{
  size M = {m}, N = {n}, K = {k}
  input a: fp8_e4m3[M, K]{scale_a}
  weight b: fp8_e4m3[K, N]{scale_b}
  output c: fp32[M, N] = a @ b
}}
"""


def _h800(interval: int):
    return load_target("h800", {"matrix.promotion_interval": interval})


def _compile(tmp_path, k: int, interval: int, m: int = 64, n: int = 64, scaled: bool = False):
    model = tmp_path / f"g{m}x{n}x{k}{'s' if scaled else ''}.ds"
    model.write_text(GEMM.format(m=m, n=n, k=k,
                                 scale_a=" scaled(fp32, 1x128)" if scaled else "",
                                 scale_b=" scaled(fp32, 128x128)" if scaled else ""))
    return compile_model(str(model), _h800(interval), {})


def _kernel(compiled):
    [kernel] = compiled.program.kernels
    return kernel


def _tile(kernel) -> tuple[int, int, int]:
    """bm, bn (the accumulator's shape) and bk (the A tile's K side)."""
    shapes = {b.name: b.shape for b in kernel.buffers}
    return shapes["acc"][-2], shapes["acc"][-1], shapes["sa"][-1]


def _per_item(body, op: str, times: int = 1) -> int:
    """Instances of `op` one work item executes (loops multiplied out)."""
    count = 0
    for stmt in body:
        if isinstance(stmt, Loop):
            count += _per_item(stmt.body, op, times * stmt.count)
        elif stmt.op == op:
            count += times
    return count


def _header(kernel) -> str:
    return next(note for note in kernel.notes if note.startswith("tile "))


# ---- the target key ----------------------------------------------------------------------------

def test_zero_is_never_and_the_builtins_keep_their_cited_interval():
    assert _h800(0).matrix.promotion_interval == 0
    assert load_target("h800").matrix.promotion_interval == 128


@pytest.mark.parametrize("value, message", [
    (-128, "expected a value >= 0, got -128"),
    (100, "expected 0 \\(never promote\\) or a multiple of the K of every format with "
          "accumulator_bits \\(fp8_e4m3's instruction K is 32\\), got 100"),
])
def test_bad_intervals_are_one_clear_error(value, message):
    with pytest.raises(TargetError, match=f"matrix.promotion_interval = {value}: {message}"):
        _h800(value)


def test_a_bad_interval_on_the_command_line_exits_1(capsys):
    code = main(["compile", "examples/gemm.ds", "--target", "h800",
                 "--target-set", "matrix.promotion_interval=48"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "a promotion cannot fall inside an instruction" in err


# ---- the K loop --------------------------------------------------------------------------------

def test_a_long_interval_is_promoted_every_few_steps_of_a_k_tile_that_fits(tmp_path):
    """Promoted every 1024 of K: the K tile stays what buffers and speed choose (before, the
    tile had to be 1024 deep); one vec.accumulate per interval, after a loop over its steps."""
    kernel = _kernel(_compile(tmp_path, 2048, 1024))
    bm, bn, bk = _tile(kernel)
    steps = 1024 // bk
    assert bk <= 128 and 1024 % bk == 0
    assert f"promote every 1024 of K ({steps} K steps of {bk}): vec.accumulate" in _header(kernel)
    [intervals] = [s for s in kernel.body if isinstance(s, Loop)]
    assert (intervals.var, intervals.count) == ("p", 2)
    [inner] = [s for s in intervals.body if isinstance(s, Loop)]
    assert (inner.var, inner.count) == ("j", steps)
    assert _per_item(kernel.body, "vec.accumulate") == 2
    assert _per_item(kernel.body, "mm.mma") == 2048 // bk


def test_never_promote_keeps_the_limited_sums_in_the_accumulator(tmp_path):
    kernel = _kernel(_compile(tmp_path, 2048, 0))
    ops = {ins.op for ins in walk(kernel.body)}
    assert "vec.accumulate" not in ops and "part" not in {b.name for b in kernel.buffers}
    assert ("never promoted: fp8_e4m3 sums kept in 13 mantissa bits over all 2048 of K"
            in _header(kernel))


def _functional(compiled) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    machine = Machine(compiled.program, compiled.target)
    machine.store_feeds(random_feeds(compiled.graph, 0))
    machine.run()
    value = machine.memory.value
    return value("a"), value("b"), value("c")


@pytest.mark.parametrize("k, interval, accumulator", [
    (640, 512, "promote"),        # one whole interval and a tail of 128
    (640, 0, "truncate"),         # never: the limited accumulator over all of K
    (640, 128, "promote"),
    (1000, 512, "promote"),       # a tail interval ending in a partial K step
    (1000, 1024, "promote"),      # one interval, shorter than the target's
    (96, 128, "promote"),
])
def test_the_listing_computes_the_accumulator_model(tmp_path, k, interval, accumulator):
    """Executed instruction by instruction, the kernel's sums are exactly those of the
    accumulator model (runtime/numerics/matmul.py: 13 mantissa bits per 32 products, added
    into FP32 every `interval`), also when K is not a whole number of intervals; one
    promotion per interval begun."""
    compiled = _compile(tmp_path, k, interval)
    promotions = math.ceil(k / interval) if interval else 0
    assert _per_item(_kernel(compiled).body, "vec.accumulate") == promotions
    a, b, c = _functional(compiled)
    model, _ = scaled_matmul(a.astype(np.float32), b.astype(np.float32), accumulator,
                             interval or k, 13)
    np.testing.assert_array_equal(c, model)


@pytest.mark.parametrize("interval", [512, 0])
def test_block_scaled_operands_still_promote_once_per_scale_block(tmp_path, interval):
    """DeepSeek's 1x128 and 128x128 scales differ from block to block along K: whatever the
    interval, each block's partial sums are promoted with their own scales."""
    kernel = _kernel(_compile(tmp_path, 1024, interval, scaled=True))
    assert _tile(kernel)[2] == 128
    assert _per_item(kernel.body, "vec.promote") == 1024 // 128
    assert "promote every 128 of K: vec.promote" in _header(kernel)


# ---- what it costs -----------------------------------------------------------------------------

def test_fewer_promotions_cost_the_vector_unit_less(tmp_path):
    """Hand-computed on h800 (128 vector lanes): a 128 x 128 x 2048 FP8 GEMM with an FP32
    output. Each output tile's vector work is one vec.accumulate per interval (one operation
    an element) and the epilogue's vec.cvt (one an element): bm x bn x (promotions + 1) / 128
    cycles a tile, 16 + 1, 4 + 1 and 0 + 1 passes for intervals of 128, 512 and never."""
    busy = {}
    for interval, promotions in ((128, 16), (512, 4), (0, 0)):
        compiled = _compile(tmp_path, 2048, interval, m=128, n=128)
        kernel = _kernel(compiled)
        bm, bn, _ = _tile(kernel)
        tiles = math.ceil(128 / bm) * math.ceil(128 / bn)
        assert _per_item(kernel.body, "vec.accumulate") == promotions
        [launch] = run_program(compiled.program, compiled.target).launches
        busy[interval] = launch.result.unit_busy["vec"]          # core-cycles, all cores
        assert busy[interval] == pytest.approx(tiles * bm * bn * (promotions + 1) / 128)
    assert busy[0] < busy[512] < busy[128]


def test_split_cores_use_a_limited_format_when_it_is_never_promoted(tmp_path):
    """ascend910b's vector cores cannot reach the cube's accumulator, so a format whose
    accumulator is limited (here a hypothetical 13-bit FP16 one) is refused while it must be
    promoted; never promoted, the cube hands over the limited sums of all of K."""
    limited = {"matrix.formats.fp16.accumulator_bits": 13}
    promoted = load_target("ascend910b", {**limited, "matrix.promotion_interval": 128})
    never = load_target("ascend910b", {**limited, "matrix.promotion_interval": 0})
    assert "split vector cores cannot promote partial sums" in unusable(promoted, "fp16")
    assert unusable(never, "fp16") is None
    model = tmp_path / "h.ds"
    model.write_text(GEMM.format(m=64, n=64, k=512, scale_a="", scale_b="")
                     .replace("fp8_e4m3", "fp16"))
    kernel = _kernel(compile_model(str(model), never, {}))
    assert ("mma fp16" in _header(kernel)
            and "never promoted: fp16 sums kept in 13 mantissa bits over all 512 of K"
            in _header(kernel))
