"""DeepSeek Sparse Attention: the lightning indexer as one kernel, top-k over long rows, and
attention over gathered cache rows; examples/deepseek_v32.ds against its configuration.

Each piece is checked against numpy (full precision on a target with an fp32 matrix format,
and FP8 with scales on h800 against the dequantised stored values), in the listing (the
indexer's [heads, keys] scores never stored, the keys gathered by ld.gather) and in cost (the
selection's cycles follow its row length and the vector unit).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compiler import api
from compiler.cli.functional import check_numerics
from compiler.cli.main import main
from compiler.driver import compile_model
from compiler.ir.evaluate import random_feeds
from isa.program import walk
from isa.vector_ops import RADIX_SELECT_OPS
from runtime.functional import Machine
from target_variants import h800_with_fp32_matrix

ROOT = Path(__file__).resolve().parent.parent
FP32 = "precision { default fp32 weights fp32 activations fp32 kv_cache fp32 }"
FP8 = ("precision { default fp32 weights fp32 activations fp8_e4m3 scaled(fp32, 1x128) "
       "kv_cache fp8_e4m3 scaled(fp32, 1x128) }")


@pytest.fixture(scope="module")
def fp32_target(tmp_path_factory) -> str:
    return h800_with_fp32_matrix(tmp_path_factory.mktemp("targets"))


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.ds"
    path.write_text(text)
    return str(path)


def _indexer(precision: str, q: str = "q") -> str:
    return f"""
model indexer {{
  size B = 2, S = 3, T = 700
  {precision}
  input q: [B, S, 8, 128]
  input w: [B, S, 8]
  cache k: [B, T, 128]
  output i = einsum("bsht,bsh->bst", relu(einsum("bshd,btd->bsht", {q}, k)), w)
}}"""


def _sparse(precision: str) -> str:
    return f"""
model sparse {{
  size B = 2, S = 2, T = 300, K = 40
  {precision}
  input q: [B, S, 4, 96]
  input q_pe: [B, S, 4, 32]
  input chosen: i32[B, S, K]
  cache latent: [B, T, 96]
  cache pe: bf16[B, T, 32]
  kv = gather(latent, chosen)
  s = einsum("bshc,bskc->bshk", q, kv) + einsum("bshr,bskr->bshk", q_pe, gather(pe, chosen))
  output o = einsum("bshk,bskc->bshc", softmax(s * 0.1), kv)
}}"""


def _run(compiled):
    feeds = random_feeds(compiled.graph, 0)
    machine = Machine(compiled.program, compiled.target)
    machine.store_feeds(feeds)
    machine.run()
    return feeds, machine


def test_indexer_is_one_kernel_and_matches_numpy(tmp_path, fp32_target):
    compiled = compile_model(_write(tmp_path, "ix", _indexer(FP32)), fp32_target, {})
    (kernel,) = compiled.program.kernels
    assert kernel.name.startswith("index_logits")
    # Nothing of the [B, S, heads, T] scores is declared: they never leave the chip.
    assert not any(t.shape[-2:] == (8, 700) for t in compiled.program.tensors)
    result = check_numerics(compiled)
    assert not result.warnings and result.outputs[0].rel_error < 1e-5


MXFP8 = "precision { default fp32 weights fp32 activations mxfp8 kv_cache mxfp8 }"


@pytest.mark.parametrize("precision, cast, promotions", [
    (FP8, "fp8_e4m3 scaled(fp32, 1x128)", 1),
    (MXFP8, "mxfp8", 4),          # one per 1x32 block of the 128-wide head dim
])
def test_fp8_indexer_applies_query_and_key_scales(tmp_path, precision, cast, promotions):
    text = _indexer(precision, f'cast(q, "{cast}")')
    compiled = compile_model(_write(tmp_path, "ix8", text), "h800", {})
    kernel = next(k for k in compiled.program.kernels if k.name.startswith("index_logits"))
    ops = [i.op for i in walk(kernel.body)]
    assert ops.count("vec.promote") == ops.count("mm.mma") == promotions
    assert "vec.head_sum" in ops
    feeds, machine = _run(compiled)
    (q,) = [machine.memory.value(t.name) for t in compiled.program.tensors
            if t.dtype == "fp8_e4m3" and t.kind == "temp"]
    k = machine.memory.value("k").astype(np.float64)
    ref = np.einsum("bsht,bsh->bst", np.maximum(np.einsum("bshd,btd->bsht", q, k), 0),
                    feeds["w"])
    got = machine.memory.value("i")
    assert np.linalg.norm(got - ref) < 1e-3 * np.linalg.norm(ref)


@pytest.mark.parametrize("width", [700, 100_000])
def test_topk_over_a_long_row_matches_the_reference(tmp_path, width):
    text = f"""
model sel {{
  size R = 3, T = {width}
  {FP32}
  input s: [R, T]
  _, chosen = topk(s, 256)
  output i = chosen
}}"""
    compiled = compile_model(_write(tmp_path, "sel", text), "h800", {})
    names = [k.name for k in compiled.program.kernels]
    assert any(n.startswith("select_topk" if width > 1000 else "topk") for n in names)
    result = check_numerics(compiled)
    equal, total = result.indices
    assert equal == total == 3 * 256


def test_selection_cycles_follow_the_row_and_the_vector_unit(tmp_path):
    """vec.select's cost: RADIX_SELECT_OPS per element plus the merge of 2k candidates per
    chunk, over the vector lanes; the chunks a longer row adds cost what the formula says (the
    rest of the run, launch and last store, is the same)."""
    times, per_chunk = {}, {}
    for width in (65_536, 131_072):
        text = f"""
model sel {{
  size R = 1, T = {width}
  {FP32}
  input s: [R, T]
  _, chosen = topk(s, 2048)
  output i = chosen
}}"""
        compiled = compile_model(_write(tmp_path, f"sel{width}", text), "h800", {})
        (kernel,) = compiled.program.kernels
        (select,) = [i for i in walk(kernel.body) if i.op == "vec.select"]
        attrs = {a.key: a.value for a in select.args if hasattr(a, "key")}
        lanes = compiled.target.vector.lanes
        cycles = attrs["width"] * RADIX_SELECT_OPS * (1 + 2 * 2048 / attrs["width"]) / lanes
        per_chunk[width] = cycles
        times[width] = api.simulate(compiled).total_cycles
        assert times[width] >= width // attrs["width"] * cycles
    extra = (131_072 - 65_536) // 16_384 * per_chunk[65_536]
    assert per_chunk[65_536] == per_chunk[131_072]
    assert extra <= times[131_072] - times[65_536] < 1.2 * extra


def test_sparse_attention_gathers_the_chosen_rows(tmp_path, fp32_target):
    compiled = compile_model(_write(tmp_path, "sp", _sparse(FP32)), fp32_target, {})
    (kernel,) = [k for k in compiled.program.kernels if k.name.startswith("flash")]
    assert sum(i.op == "ld.gather" for i in walk(kernel.body)) == 2
    assert not any("kv" == t.name.split(".")[-1] for t in compiled.program.tensors)
    result = check_numerics(compiled)
    assert not result.warnings
    assert result.outputs[0].rel_error < 3e-3      # the bf16 rope cache's own rounding


@pytest.mark.parametrize("target", ["h800", "ascend910b"])
def test_sparse_attention_over_an_fp8_cache_matches_numpy(tmp_path, target):
    compiled = compile_model(_write(tmp_path, "sp8", _sparse(FP8)), target, {})
    (kernel,) = [k for k in compiled.program.kernels if k.name.startswith("flash")]
    ops = [i.op for i in walk(kernel.body)]
    # Split cores: the vector core gathers the FP8 rows it dequantises, the cube the BF16 ones.
    gathers = {"h800": ["ld.gather"] * 3, "ascend910b": ["vld.gather"] * 2 + ["ld.gather"]}
    assert sorted(op for op in ops if op.endswith(".gather")) == sorted(gathers[target])
    assert not check_numerics(compiled).warnings
    feeds, machine = _run(compiled)
    latent, pe = (machine.memory.value(n).astype(np.float64) for n in ("latent", "pe"))
    b = np.arange(2)[:, None, None]
    kv, kpe = latent[b, feeds["chosen"]], pe[b, feeds["chosen"]]
    s = (np.einsum("bshc,bskc->bshk", feeds["q"], kv)
         + np.einsum("bshr,bskr->bshk", feeds["q_pe"], kpe)) * 0.1
    p = np.exp(s - s.max(-1, keepdims=True))
    ref = np.einsum("bshk,bskc->bshc", p / p.sum(-1, keepdims=True), kv)
    got = machine.memory.value("o")
    assert np.linalg.norm(got - ref) < 1e-2 * np.linalg.norm(ref)
    # Ignoring the scales would attend to the elements alone: far off.
    raw = machine.memory.read("latent").astype(np.float64)[b, feeds["chosen"]]
    assert np.linalg.norm(got - np.einsum("bshk,bskc->bshc", p / p.sum(-1, keepdims=True),
                                          raw)) > 0.3 * np.linalg.norm(ref)


def test_a_gather_outside_attention_is_refused(tmp_path, capsys):
    text = f"""
model g {{
  size B = 1, S = 1, T = 16, K = 4
  {FP32}
  input idx: i32[B, S, K]
  cache c: [B, T, 8]
  output y = gather(c, idx)
}}"""
    assert main(["compile", _write(tmp_path, "g", text), "--target", "h800"]) == 1
    err = capsys.readouterr().err
    assert "gather" in err and "Traceback" not in err


def test_deepseek_v32_counts_match_the_configuration(capsys):
    """DeepSeek-V3.2 (config_671B_v3.2.json): V3's layers plus the indexer in each."""
    d, vocab, layers, dense, inter, experts, moe_inter = 7168, 129280, 61, 3, 18432, 256, 2048
    mla = (d * 1536 + 1536 + 1536 * 128 * 192 + d * 576 + 512 + 512 * 128 * (128 + 128)
           + 128 * 128 * d)                                          # q, kv, w_uk/w_uv, wo
    indexer = 1536 * 64 * 128 + d * 128 + 2 * 128 + d * 64          # wq, wk, LayerNorm, w
    assert (mla, indexer) == (187_107_328, 13_959_424)
    expert = 3 * d * moe_inter
    gate = experts * d + experts
    dense_layer = mla + indexer + 2 * d + 3 * d * inter
    moe_layer = mla + indexer + 2 * d + (experts + 1) * expert + gate
    moe_active = mla + indexer + 2 * d + 9 * expert + gate
    outer = 2 * vocab * d + d
    total = dense * dense_layer + (layers - dense) * moe_layer + outer
    active = dense * dense_layer + (layers - dense) * moe_active + outer
    kv = layers * ((512 + 4 * 4 + 64 * 2) + (128 + 4))           # FP8 latent + scales, BF16
    assert (total, active, kv) == (671_877_944_064, 38_403_822_336, 48_068)   # rope; indexer
    capsys.readouterr()
    assert main(["stats", str(ROOT / "examples/deepseek_v32.ds"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["params"], got["active_params"], got["kv_cache_bytes_per_token"]) == (
        total, active, kv)


@pytest.mark.parametrize("target", ["h800", "h20", "b200"])
def test_deepseek_v32_decode_runs(capsys, target):
    capsys.readouterr()
    code = main(["run", str(ROOT / "examples/deepseek_v32.ds"), "--target", target,
                 "--devices", "144", "--plan", "attn=dp,moe=ep,mb=2", "--set", "n_layers=4",
                 "--set", "batch=8", "--set", "ctx=8191"])
    out = capsys.readouterr().out
    assert code == 0 and "deepseek_v32 on" in out
    assert "mla_dsa.einsum " in out and "mla_dsa.chosen" in out      # indexer, selection


def test_deepseek_v32_decode_runs_on_split_cores(capsys):
    capsys.readouterr()
    code = main(["run", str(ROOT / "examples/deepseek_v32.ds"), "--target", "ascend910b",
                 "--ignore-capacity", "--set", "n_layers=4", "--set", "batch=8",
                 "--set", "ctx=8191"])
    out = capsys.readouterr().out
    assert code == 0 and "deepseek_v32 on ascend910b" in out and "mla_dsa.chosen" in out
