"""Matrix-instruction shapes are target data, and a GEMM may swap its operands so a small
token dimension rides the instruction's flexible N side (as production decode and grouped
expert kernels do). Hand-computed on small cases."""
from __future__ import annotations

import re

import pytest

from compiler.driver import compile_model
from isa.assembler import parse_listing
from isa.listing import render
from isa.program import walk
from isa.target_loader import BUILTIN_DIR, TargetError, load_target
from runtime.interpreter import run_program
from runtime.report.summary import summarize

# A Qwen3-30B-A3B-like decode expert GEMM: 128 experts of hidden 2048 -> 2 x 768 (gate and
# up), 4 tokens routed to each (64 tokens x 8 experts / 128).
EXPERTS, TOKENS, HIDDEN, OUT = 128, 4, 2048, 1536
EXPERT_GEMM = f"""
model expert_gemm {{
  size G = {EXPERTS}, M = {TOKENS}, N = {OUT}, K = {HIDDEN}
  input  a: bf16[G, M, K]
  weight b: bf16[G, K, N]
  output c: bf16[G, M, N] = a @ b
}}
"""


@pytest.fixture(scope="module")
def expert_gemm(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("models") / "expert_gemm.ds"
    path.write_text(EXPERT_GEMM)
    return str(path)


def _mma(program):
    (kernel,) = program.kernels
    return kernel, next(i for i in walk(kernel.body) if i.op == "mm.mma")


def test_instruction_padding_follows_the_orientation():
    unit = load_target("h800").matrix.formats["bf16"]         # wgmma: M 64, N 8..256 step 8
    assert unit.padded(4, 1536, 2048) == (64, 1536, 2048)    # rows on M: 4 rows pad to 64
    assert unit.padded(4, 1536, 2048, swap=True) == (8, 1536, 2048)   # rows on N: to 8
    assert unit.mma_cycles(4, 256, 16, swap=True) == 2 * 8 * 256 * 16 / 4096
    assert unit.instruction(8, 256, swap=True) == (64, 8, 16)
    assert unit.instruction(128, 192) == (64, 192, 16)
    ampere = load_target("a100").matrix.formats["bf16"]     # mma.sync m16n8k16
    assert ampere.padded(4, 64, 16, swap=True) == (8, 64, 16)
    assert ampere.instruction(128, 128) == (16, 8, 16)
    blackwell = load_target("b200").matrix.formats["bf16"]  # tcgen05: M 64 or 128
    assert blackwell.instruction(256, 256) == (128, 256, 16)


def test_small_token_expert_gemm_is_swapped_not_padded_to_64_rows(expert_gemm):
    compiled = compile_model(expert_gemm, "h800", {})
    kernel, mma = _mma(compiled.program)
    bm, bn, bk = mma.attr("shape")
    assert mma.attr("swap") == 1 and bm == 8                 # 4 tokens pad to 8, not 64
    assert "swapped" in kernel.notes[1] and "m64n8k16" in kernel.notes[1]
    unit = compiled.target.matrix.formats["bf16"]
    ctx_cycles = 2 * 8 * bn * bk / unit.flops_per_cycle       # the instruction's cost
    assert unit.mma_cycles(bm, bn, bk, swap=True) == ctx_cycles
    # The listing round-trips with the orientation, and the verifier accepts it.
    text = render(compiled.program)
    assert "swap=1" in text
    assert render(parse_listing(text, target=compiled.target)) == text


@pytest.mark.parametrize("target", ["h800", "h20"])
def test_qwen3_like_decode_expert_gemm_is_memory_bound_on_h20_and_h800(expert_gemm, target):
    """Hand-computed: the weights (128 x 2048 x 1536 bf16 = 805 MB) cross memory once; the
    tokens' products are 2 x 128 x 8 x 1536 x 2048 padded FLOPs, far below what memory
    time allows on either chip (h20: 146 TFLOPS, 4.0 TB/s; h800: 989 TFLOPS, 3.35 TB/s)."""
    compiled = compile_model(expert_gemm, target, {})
    run = run_program(compiled.program, compiled.target)
    row = summarize(run.launches[0], compiled.target)
    weights = EXPERTS * HIDDEN * OUT * 2
    memory = compiled.target.machine.memory("memory", 0).bytes_per_cycle
    compute = 2 * EXPERTS * 8 * OUT * HIDDEN / (
        compiled.target.matrix.formats["bf16"].flops_per_cycle * compiled.target.cores)
    assert compute < 0.5 * weights / memory
    assert row.bound == "memory"
    assert weights / memory <= row.cycles <= 1.1 * weights / memory


def test_h20_is_faster_than_h800_on_the_decode_expert_gemm(expert_gemm):
    seconds = {}
    for target in ("h800", "h20"):
        compiled = compile_model(expert_gemm, target, {})
        seconds[target] = run_program(compiled.program, compiled.target).cycles \
            / compiled.target.clock_hz
    assert seconds["h20"] < seconds["h800"]                   # 4.0 vs 3.35 TB/s


def test_many_rows_keep_the_rows_on_m(expert_gemm):
    compiled = compile_model(expert_gemm, "h800", {"M": "256"})
    _, mma = _mma(compiled.program)
    assert not mma.attr("swap")


@pytest.mark.parametrize("key,value,message", [
    ("n_max", "12", "multiple of shape's N (8)"),
    ("m_sizes", "[64, 96]", "multiples of shape's M (64)"),
])
def test_instruction_sizes_must_be_whole_steps(tmp_path, key, value, message):
    text = (BUILTIN_DIR / "h800.toml").read_text().replace(
        "n_max = 256", f"n_max = 256\n{key} = {value}" if key != "n_max" else f"n_max = {value}", 1)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TargetError, match=re.escape(message)):
        load_target(str(path))
