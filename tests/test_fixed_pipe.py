"""The fixed pipe: epilogue ops it supports run there, the rest on the vector unit, decided by
the target file alone; on split cube/vector cores the vector part goes through memory."""
from pathlib import Path

import pytest

from compiler.driver import compile_model
from isa.listing import render
from isa.program import walk
from runtime.interpreter import run_program
from runtime.report.summary import unit_totals
from target_variants import ascend_with_pipe

ASCEND = Path("isa/targets/ascend910b.toml")
SMALL = {"n_layers": "1"}


@pytest.fixture
def pipe_with_silu(tmp_path):
    """The same chip whose pipe also applies silu and mul (a what-if, written as data)."""
    text = ASCEND.read_text().replace(
        'ops = ["dequant", "quant", "cvt", "bias", "relu", "add", "layout"]',
        'ops = ["dequant", "quant", "cvt", "bias", "relu", "add", "layout", "silu", "mul"]')
    path = tmp_path / "ascend_silu.toml"
    path.write_text(text)
    return str(path)


def _swiglu_kernel(target, overrides=SMALL):
    program = compile_model("examples/llama3_8b.ds", target, overrides).program
    kernel = next(k for k in program.kernels if k.name.startswith("matmul_silu"))
    return [ins.op for ins in walk(kernel.body)]


def test_unsupported_epilogue_op_goes_through_memory_to_the_vector_core():
    ops = _swiglu_kernel("ascend910b")
    # cube -> fixed pipe (convert) -> memory -> vector core -> memory
    assert ops[-5:] == ["fix.cvt", "fix.st", "vld.tile", "vec.silu", "vst.tile"]


def test_a_pipe_that_lists_silu_takes_it_with_no_code_change(pipe_with_silu):
    ops = _swiglu_kernel(pipe_with_silu)
    assert ops[-2:] == ["fix.silu", "fix.st"]
    assert "vec.silu" not in ops and "vld.tile" not in ops


def test_targets_without_a_pipe_use_the_vector_unit():
    ops = _swiglu_kernel("h800")
    assert not any(op.startswith("fix.") for op in ops)
    assert ops[-2:] == ["vec.silu", "st.tile"]


def test_per_unit_busy_time_shows_the_work_moving_to_the_pipe(pipe_with_silu):
    prefill = {"n_layers": "1", "batch": "1", "seq": "1024", "ctx": "0"}

    def busy(target):
        c = compile_model("examples/llama3_8b.ds", target, prefill)
        return unit_totals(run_program(c.program, c.target))
    plain, piped = busy("ascend910b"), busy(pipe_with_silu)
    # silu and mul leave the vector unit, and so do the round trips through memory; the pipe
    # was draining those tiles anyway (a convert before, the op now), at its element rate.
    assert piped["vec"]["busy_cycles"] < plain["vec"]["busy_cycles"]
    assert piped["vld"]["busy_cycles"] < plain["vld"]["busy_cycles"]
    assert piped["vst"]["busy_cycles"] < plain["vst"]["busy_cycles"]
    # (The two chips may choose different GEMM tiles, whose padding the pipe drains too.)
    assert piped["fix"]["busy_cycles"] >= 0.999 * plain["fix"]["busy_cycles"]


def test_pipe_listings_round_trip(pipe_with_silu):
    from isa.assembler import parse_listing
    program = compile_model("examples/llama3_8b.ds", "ascend910b", SMALL).program
    assert parse_listing(render(program)) == program


# -- split cores with less of a pipe: the hand-over falls back to what the target has ---------

BIASED_RESIDUAL = """\
model biased {
  size M = 64, N = 128, K = 256
  input x: bf16[M, K]
  weight w: bf16[K, N]
  weight b: bf16[N]
  input r: bf16[M, N]
  output y = x @ w + b + r
}
"""
HANDED_OVER = ["vld.tile"] * 3 + ["vec.add", "vec.add", "vst.tile"]
# The pipe table, and the kernel's instructions after the last product: the tile handed over
# raw (by the store engine or by the pipe) and the vector core adding bias and residual, or
# the pipe doing both on the way out.
PIPES = {
    "no pipe": (None, ["st.tile"] + HANDED_OVER),
    "pipe without ops": ("ops = []", ["fix.st"] + HANDED_OVER),
    "pipe without cvt": ('ops = ["bias", "relu", "add"]', ["fix.bias", "fix.add", "fix.st"]),
    "builtin pipe": ('ops = ["dequant", "quant", "cvt", "bias", "relu", "add", "layout"]',
                     ["fix.bias", "fix.add", "fix.st"]),
}


@pytest.mark.parametrize("pipe", PIPES)
def test_a_gemm_with_bias_and_residual_runs_on_any_pipe_of_split_cores(tmp_path, pipe):
    """Lowering emits only instructions the target has: without a pipe the cube core's
    store engine hands the raw FP32 tile over, without a pipe `cvt` the pipe hands it over
    unconverted, and the vector core does the rest. Every way computes the same values."""
    from compiler.cli.functional import check_numerics
    model = tmp_path / "biased.ds"
    model.write_text(BIASED_RESIDUAL)
    table, epilogue = PIPES[pipe]
    compiled = compile_model(str(model), ascend_with_pipe(tmp_path, table), {})
    [kernel] = compiled.program.kernels
    ops = [ins.op for ins in walk(kernel.body)]
    assert ops[ops.index("sync.mm") + 1:] == epilogue
    from isa.assembler import parse_listing          # checks every instruction's unit and reach
    assert parse_listing(render(compiled.program), target=compiled.target) == compiled.program
    on_a_gpu = compile_model(str(model), "h800", {})      # no pipe, no split: the reference
    assert check_numerics(compiled).outputs == check_numerics(on_a_gpu).outputs
