"""Causal attention skips the key blocks wholly above the diagonal and computes the diagonal
blocks whole (masked), with row blocks paired so every work item does equal work; the
launch's FLOPs count only the scores the mask keeps. Hand-computed on small cases."""
from __future__ import annotations

import pytest

from compiler.driver import compile_model
from compiler.kernels import causal
from isa.program import Loop
from runtime.interpreter import run_program

PREFILL = """
model prefill {{
  size B = 1, S = {seq}, ctx = 0
  hd = 128
  input q: bf16[B, S, 2, 4, hd]
  input k: bf16[B, S, 2, hd]
  input v: bf16[B, S, 2, hd]
  scores = einsum("bsgqe,btge->bgqst", q, k) * (1 / sqrt(hd))
  p = softmax({mask})
  output o = einsum("bgqst,btge->bsgqe", p, v)
}}
"""


def test_key_blocks_and_pairs_by_hand():
    # 512 positions, 128-row blocks, 64-key blocks: row block i needs 2(i+1) key blocks.
    assert [causal.key_blocks(i * 128, 128, 64, 0, 512) for i in range(4)] == [2, 4, 6, 8]
    pairs = causal.pairs(512, 128, 64, 0, 512)
    assert (pairs.row_blocks, pairs.first, pairs.step, pairs.per_item, pairs.items) == \
        (4, 2, 2, 10, 2)
    # 64 cached positions before the 512 new ones: one more key block for every row block.
    assert causal.pairs(512, 128, 64, 64, 576).per_item == 12
    # One row block that already needs every key: nothing to skip.
    assert causal.pairs(128, 128, 64, 4096, 4224) is None


@pytest.mark.parametrize("rows,offset,keys", [(4, 0, 4), (7, 3, 10), (5, 0, 3), (1, 99, 100)])
def test_visible_fraction_counts_the_kept_scores(rows, offset, keys):
    kept = sum(1 for r in range(rows) for t in range(keys) if t <= r + offset)
    assert causal.visible_fraction(rows, offset, keys) == kept / (rows * keys)


def _compile(tmp_path, mask: str, seq: int = 4096):
    path = tmp_path / "prefill.ds"
    path.write_text(PREFILL.format(mask=mask, seq=seq))
    compiled = compile_model(str(path), "h800", {})
    (kernel,) = compiled.program.kernels
    return compiled, kernel


def test_causal_prefill_skips_blocks_above_the_diagonal(tmp_path):
    compiled, kernel = _compile(tmp_path, "causal_mask(scores, ctx)")
    grid = dict(kernel.grid)
    (loop,) = [s for s in kernel.body if isinstance(s, Loop)]
    bm = next(b for b in kernel.buffers if b.name == "sq0").shape[0]
    bt = next(b for b in kernel.buffers if b.name == "sk0").shape[0]
    pairs = causal.pairs(4096, bm, bt, 0, 4096)
    # 2 KV groups x 4 query heads, each 4096 rows in pairs of row blocks.
    assert grid == {"g": 2, "q": 4, "m": pairs.items}
    assert loop.count == pairs.per_item == 4096 // bt + bm // bt
    # Half the score work (plus the diagonal) is done and counted: the two products' FLOPs,
    # and the softmax's few per score (under 2% more).
    products = 2 * 2 * 8 * 4096 * 4096 * 128 * (4096 * 4097 / 2) / 4096 ** 2
    launch = compiled.program.schedule[0]
    assert products < launch.flops < 1.02 * products
    # K and V are read once per key block an item visits: bt x hd bf16 each.
    run = run_program(compiled.program, compiled.target)
    items = 2 * 4 * pairs.items
    kv_loads = items * pairs.per_item * 2 * bt * 128 * 2
    q_loads = 2 * 4 * 4096 * 128 * 2
    assert run.launches[0].result.resource_bytes["l2"] >= kv_loads + q_loads


def test_a_small_causal_prefill_keeps_one_row_block_per_item(tmp_path):
    """64 items of 8 full blocks fill the 132 cores in one wave; 32 pairs would each run 9
    blocks' worth: no pairing, every block run (masked), as the longest row block must."""
    _, kernel = _compile(tmp_path, "causal_mask(scores, ctx)", seq=1024)
    assert "q" not in dict(kernel.grid)


def test_causal_prefill_takes_about_half_the_time_of_full_attention(tmp_path):
    causal_run = _run(tmp_path, "causal_mask(scores, ctx)")
    full_run = _run(tmp_path, "scores")
    assert 0.45 < causal_run / full_run < 0.7


def _run(tmp_path, mask):
    compiled, _ = _compile(tmp_path, mask)
    return run_program(compiled.program, compiled.target).cycles


def test_paired_causal_attention_computes_the_reference(tmp_path):
    """Functional mode on a 4-core fp32 chip, where pairs pay: both row blocks of a pair,
    the second's key blocks from its diagonal down, match the IR's float32 reference."""
    from compiler.cli.functional import check_numerics
    from isa.target_loader import BUILTIN_DIR
    text = (BUILTIN_DIR / "h800.toml").read_text()
    text = text.replace('name = "h800"', 'name = "four_cores"', 1).replace(
        "cores_per_die = 132", "cores_per_die = 4", 1).replace(
        "[matrix.formats.bf16]",
        "[matrix.formats.fp32]\nshape = [64, 8, 8]\nflops_per_cycle = 1024\n\n"
        "[matrix.formats.bf16]", 1)
    target = tmp_path / "four_cores.toml"
    target.write_text(text)
    model = tmp_path / "causal.ds"
    model.write_text(PREFILL.format(mask="causal_mask(scores, ctx)", seq=512)
                     .replace("bf16", "fp32").replace("hd = 128", "hd = 16").replace(
                         "size B", "precision { default fp32 weights fp32 activations fp32 "
                         "kv_cache fp32 }\n  size B"))
    compiled = compile_model(str(model), str(target), {})
    (kernel,) = compiled.program.kernels
    assert "paired" in kernel.notes[1]
    result = check_numerics(compiled)
    for out in result.outputs:
        assert out.rel_error < 1e-5, out
