"""Honest numbers: simulated GEMMs against bounds computed from the target file alone."""
import pytest

from compiler.driver import compile_model
from runtime.interpreter import run_program
from runtime.report.summary import summarize


def _run(overrides):
    compiled = compile_model("examples/gemm.ds", "h800", overrides)
    run = run_program(compiled.program, compiled.target)
    return compiled.target, run, summarize(run.launches[0], compiled.target)


def test_large_fp8_gemm_is_compute_bound_and_below_peak():
    target, run, row = _run({})
    m, n, k = 4096, 7168, 2048
    flops = 2 * m * n * k
    assert row.flops == flops
    seconds = row.cycles / target.clock_hz
    peak = target.peak_flops("fp8_e4m3")
    assert flops / seconds < peak                      # never faster than the datasheet
    assert row.bound == "compute"
    assert row.utilization["mm"] > row.utilization["memory"]
    # The launch overhead is paid before the kernel starts.
    assert run.launches[0].start == pytest.approx(target.launch_overhead_cycles)
    assert run.cycles >= target.launch_overhead_cycles + flops / peak * target.clock_hz


def test_small_m_gemm_is_memory_bound_and_below_peak_bandwidth():
    target, run, row = _run({"M": "64"})
    seconds = row.cycles / target.clock_hz
    weight_bytes = 2048 * 7168 + (2048 // 128) * (7168 // 128) * 4
    assert row.bytes_offchip >= weight_bytes            # the weight is read at least once
    assert row.bytes_offchip / seconds < target.peak_memory_bandwidth
    assert row.bound == "memory"
    assert row.cycles >= weight_bytes / target.machine.memory("memory", 0).bytes_per_cycle


def test_grouped_gemm_moves_every_group():
    compiled = compile_model("examples/grouped.ds", "h800", {})
    run = run_program(compiled.program, compiled.target)
    row = summarize(run.launches[0], compiled.target)
    g, m, n, k = 4, 256, 4096, 7168
    assert row.flops == 2 * g * m * n * k
    assert row.bytes_offchip >= g * (m * k + k * n + 2 * m * n)
    assert row.flops / (row.cycles / compiled.target.clock_hz) < compiled.target.peak_flops("fp8_e4m3")


def test_conversions_touch_only_the_rows_and_columns_that_hold_data():
    """FP8 with block scales on ascend910b (no FP8 cube) is dequantised into BF16 on the vector
    cores. A 4-token GEMM in a 16-row tile dequantises its 4 real rows of A (4 x bk), all bk x bn
    of B; the estimate counts the same elements, so the simulated tile and the estimate agree
    on the vector work."""
    from compiler.kernels.gemm_tiles import GemmTile, real_extent
    from isa.program import walk
    compiled = compile_model("examples/gemm.ds", "ascend910b",
                             {"M": "4", "N": "256", "K": "512"})
    (kernel,) = compiled.program.kernels
    mma = next(i for i in walk(kernel.body) if i.op == "mm.mma")
    bm, bn, bk = mma.attr("shape")
    dequant = {str(i.operands[0].name): i.attr("n") for i in walk(kernel.body)
               if i.op == "vec.dequant"}
    assert bm == 16 and dequant == {"va": 4 * bk, "vb": bk * bn}
    assert real_extent(GemmTile(16, 16, 64, 4), 4, 256) == (4, 16)
    assert real_extent(GemmTile(64, 128, 64, 4), 200, 100) == (64, 100)
