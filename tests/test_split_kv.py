"""Split-KV decode attention (flash-decoding, FlashMLA): when batch x row blocks leaves cores
idle, the keys are cut into pieces streamed by separate work items, and a combine kernel
folds the pieces; the split count is chosen by cost. Hand-computed on small cases."""
from __future__ import annotations

import math

import pytest

from compiler.driver import compile_model
from compiler.kernels import split_kv
from runtime.interpreter import run_program

MLA_DECODE = """
import "std/attention.ds"
model mla_decode {
  size B = 32, S = 1, ctx = 4096
  input x: bf16[B, S, 7168]
  output y = mla_absorbed(x, ctx, 128, 1536, 512, 128, 64, 128)
}
"""


def _costs(**change) -> split_kv.SplitCosts:
    base = dict(items=64, blocks=129, block_cycles=1000.0, cores=132, kv_bytes=1e6,
                partial_bytes=1e5, memory_bytes_per_cycle=1000.0, launch_cycles=5000.0)
    return split_kv.SplitCosts(**{**base, **change})


def test_the_split_that_fills_the_cores_wins_by_hand():
    # 64 items on 132 cores: 2 pieces of 65 blocks fill 128 cores in one wave,
    # 65,000 + 5,000 launch + 2 x 2 x 100 combine = 70,400 cycles against 129,000 unsplit;
    # 3 pieces of 43 need two waves (192 items): 86,000 + 5,000 + 600.
    choice = split_kv.choose(_costs(), None, 32)
    assert (choice.splits, choice.per_split) == (2, 65)
    assert choice.estimate == pytest.approx(65 * 1000 + 5000 + 2 * 2 * 1e5 / 1000)
    assert choice.unsplit == 129 * 1000


def test_no_split_when_memory_bounds_the_kernel_or_the_cores_are_full():
    # Memory-bound: 1e9 bytes at 1000 per cycle take 1e6 cycles whatever the split.
    assert split_kv.choose(_costs(kv_bytes=1e9), None, 32).splits == 1
    assert split_kv.choose(_costs(items=132), None, 32).splits == 1


def test_a_split_evens_out_a_last_wave_that_is_almost_empty():
    # 140 items on 132 cores take two waves of 129 blocks, 258,000 cycles. Pieces of 65, 43
    # and 33 blocks (2, 3, 4 pieces: 280, 420, 560 items, 3, 4, 5 waves) cost 195,000,
    # 172,000 and 165,000 plus the launch and 2 x S x 100 of combine: 4 pieces win, as
    # FlashMLA's scheduler balances whole sequences over the cores.
    choice = split_kv.choose(_costs(items=140), None, 32)
    assert choice.unsplit == 2 * 129 * 1000
    assert (choice.splits, choice.per_split) == (4, 33)
    assert choice.estimate == pytest.approx(5 * 33 * 1000 + 5000 + 2 * 4 * 1e5 / 1000)


def test_no_piece_may_start_after_a_key_some_row_cannot_see():
    # 4 blocks of 64 keys: 4 pieces start their last at key 192, 2 pieces at 128. A causal
    # row at position 200 sees both; one at position 150 only the 2-piece split's.
    costs = _costs(blocks=4, items=1, block_cycles=1e6)
    assert split_kv.choose(costs, 200, 64).splits == 4
    assert split_kv.choose(costs, 150, 64).splits == 2
    assert split_kv.choose(costs, 100, 64).splits == 1


@pytest.fixture(scope="module")
def mla_decode(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "mla_decode.ds"
    path.write_text(MLA_DECODE)
    compiled = compile_model(str(path), "h800", {})
    return compiled, run_program(compiled.program, compiled.target)


def test_mla_decode_of_32_sequences_uses_the_cores(mla_decode):
    """32 sequences x 2 row blocks of 64 heads is 64 items: the keys are split in two, so
    128 of the 132 cores stream keys, and a combine kernel follows."""
    compiled, run = mla_decode
    names = [l.kernel for l in run.launches]
    attention = next(k for k in compiled.program.kernels if k.name.startswith("flash_split_kv"))
    assert math.prod(size for _, size in attention.grid) == 128
    assert dict(attention.grid)["kv"] == 2
    i = next(i for i, n in enumerate(names) if n.startswith("flash_split_kv"))
    assert names[i + 1].startswith("flash_combine")
    # The attention's FLOPs are counted once, on the kernel that does them.
    assert run.launches[i].flops > 0 and run.launches[i + 1].flops == 0
    assert "keys split 2 ways" in attention.notes[1]


def test_a_split_partial_leaves_from_the_accumulator(mla_decode):
    """On a GPU the vector unit reaches the accumulator: a piece's fp32 output (64 heads x 512)
    is normalised in place and stored from it, as FlashMLA stores o_accum from registers,
    with no 128 KiB fp32 staging tile beside the key tiles in shared memory."""
    from isa.program import Box, walk
    compiled, _ = mla_decode
    attention = next(k for k in compiled.program.kernels if k.name.startswith("flash_split_kv"))
    assert "out" not in {b.name for b in attention.buffers}
    (store,) = [i for i in walk(attention.body) if i.op == "st.tile"
                and isinstance(i.args[0], Box) and i.args[0].tensor == "part_o"]
    assert store.args[1].name == "o"


def test_split_decode_computes_the_reference(tmp_path):
    """Functional mode, fp32 on an h800 with an fp32 matrix format: the pieces and their
    combine give the IR's float32 reference (one sequence, 4001 keys, two heads)."""
    from compiler.cli.functional import check_numerics
    from isa.target_loader import BUILTIN_DIR
    from tests.test_functional import MODELS
    text = (BUILTIN_DIR / "h800.toml").read_text().replace(
        'name = "h800"', 'name = "h800_fp32"', 1).replace(
        "[matrix.formats.bf16]",
        "[matrix.formats.fp32]\nshape = [64, 8, 8]\nflops_per_cycle = 1024\n\n"
        "[matrix.formats.bf16]", 1)
    target = tmp_path / "h800_fp32.toml"
    target.write_text(text)
    model = tmp_path / "split_decode.ds"
    model.write_text(MODELS["split_decode"])
    compiled = compile_model(str(model), str(target), {})
    assert any(k.name.startswith("flash_split_kv") for k in compiled.program.kernels)
    result = check_numerics(compiled)
    for out in result.outputs:
        assert out.rel_error < 1e-5, out
