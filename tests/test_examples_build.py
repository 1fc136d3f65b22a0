"""The example models build, with their published sizes and the contract names."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from compiler.frontend import load_model
from compiler.ir.evaluate import evaluate, random_feeds
from compiler.ir.verify import verify
from isa.formats import Format, Scaling

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# The contract texts, exactly as outside checks use them.
GEMM = """\
# gemm.ds — one FP8 GEMM with DeepSeek-style fine-grained scales
model gemm {
  size M = 4096, N = 7168, K = 2048
  input  a: fp8_e4m3[M, K] scaled(fp32, 1x128)
  weight b: fp8_e4m3[K, N] scaled(fp32, 128x128)
  output c: bf16[M, N] = a @ b
}
"""
GROUPED = """\
# grouped.ds — a batched (grouped) GEMM, one group per expert
model grouped {
  size G = 4, M = 256, N = 4096, K = 7168
  input  a: fp8_e4m3[G, M, K] scaled(fp32, 1x128)
  weight b: fp8_e4m3[G, K, N] scaled(fp32, 128x128)
  output c: bf16[G, M, N] = a @ b
}
"""


def load(name: str, overrides=None):
    """Every iteration of every repeat: these tests count and name the model's nodes."""
    return load_model(str(EXAMPLES / f"{name}.ds"), overrides, unroll=True)


def params(g) -> int:
    return sum(n.type.numel for n in g.nodes() if n.op == "weight")


def kv_bytes_per_token(g) -> int:
    return sum(math.prod(n.type.shape[2:]) * n.type.format.bits // 8
               for n in g.nodes() if n.op == "cache")


@pytest.fixture(scope="module")
def deepseek():
    start = time.perf_counter()
    g = load("deepseek_v3")
    return g, time.perf_counter() - start


def test_contract_files_are_exactly_the_contract_text():
    assert (EXAMPLES / "gemm.ds").read_text() == GEMM
    assert (EXAMPLES / "grouped.ds").read_text() == GROUPED


@pytest.mark.parametrize("name, sizes, shape", [
    ("gemm", {"M": 4096, "N": 7168, "K": 2048}, (4096, 7168)),
    ("grouped", {"G": 4, "M": 256, "N": 4096, "K": 7168}, (4, 256, 4096)),
])
def test_contract_files_build(name, sizes, shape):
    g = load(name)
    assert g.model == name and g.sizes == sizes
    c = g.node(g.outputs[0])
    assert (c.op, c.name, c.type.shape, c.type.format) == ("matmul", "c", shape, Format("bf16"))
    a, b = g.inputs_of(c)
    assert a.type.format == Format("fp8_e4m3", Scaling("fp32", (1, 128)))
    assert b.type.format == Format("fp8_e4m3", Scaling("fp32", (128, 128)))
    verify(g)


def test_deepseek_v3_parameters_and_kv_cache(deepseek):
    g, _ = deepseek
    assert params(g) == pytest.approx(671e9, rel=0.01)
    assert kv_bytes_per_token(g) == 70272 == 61 * 576 * 2
    verify(g)


def test_deepseek_v3_sizes_and_policy(deepseek):
    g, _ = deepseek
    assert g.model == "deepseek_v3"
    assert {"batch": 128, "seq": 1, "ctx": 4096, "n_layers": 61}.items() <= g.sizes.items()
    assert g.policy["weights"] == Format("fp8_e4m3", Scaling("fp32", (128, 128)))
    assert g.policy["activations"] == Format("fp8_e4m3", Scaling("fp32", (1, 128)))
    assert g.policy["kv_cache"] == g.policy["default"] == Format("bf16")
    by = {n.name: n for n in g.nodes()}
    assert by["embed"].type.format == by["head"].type.format == Format("bf16")
    assert by["tokens"].type.shape == (128, 1) and by["tokens"].type.format == Format("i32")
    assert by["layer.3.moe.w_gate"].type.format == Format("bf16")
    assert by["layer.60.moe.w1"].type.shape == (256, 7168, 2048)
    assert by["layer.0.swiglu.w1"].type.shape == (7168, 18432)
    assert by["layer.0.mla_absorbed.kv_cache"].type.shape == (128, 4097, 576)
    assert "layer.61.norm.w" not in by and "layer.2.moe.w1" not in by
    assert [g.node(o).name for o in g.outputs] == ["logits"]
    assert g.node(g.outputs[0]).type.shape == (128, 1, 129280)


def test_deepseek_v3_builds_fast(deepseek):
    _, seconds = deepseek
    assert seconds < 3.0


def test_deepseek_v3_overrides(tmp_path):
    g = load("deepseek_v3", {"n_layers": "4", "batch": "8", "weights": "mxfp4"})
    assert g.sizes["n_layers"] == 4 and g.sizes["batch"] == 8
    layers = {n.name.split(".")[1] for n in g.nodes() if n.name.startswith("layer.")}
    assert layers == {"0", "1", "2", "3"}
    assert g.node(g.outputs[0]).type.shape == (8, 1, 129280)
    w1 = next(n for n in g.nodes() if n.name == "layer.3.moe.w1")
    assert w1.type.format == Format("fp4_e2m1", Scaling("ue8m0", (32, 1)))


def test_llama3_8b():
    g = load("llama3_8b")
    assert params(g) == pytest.approx(8.03e9, rel=0.005)
    assert {"batch", "seq", "ctx", "n_layers"} <= set(g.sizes)
    assert g.sizes["n_layers"] == 32
    rope = next(n for n in g.nodes() if n.op == "rope")
    assert rope.attr("theta") == 500000.0
    assert next(n for n in g.nodes() if n.op == "rmsnorm").attr("eps") == 1e-5
    assert {n.type.format for n in g.nodes() if n.op == "weight"} == {Format("bf16")}
    verify(g)


def test_tiny_moe_builds_fast_and_drops_no_token():
    start = time.perf_counter()
    g = load("tiny_moe")
    assert time.perf_counter() - start < 1.0
    assert {"batch", "seq", "ctx", "n_layers"} <= set(g.sizes)
    tokens = g.sizes["batch"] * g.sizes["seq"]
    dispatches = [n for n in g.nodes() if n.op == "dispatch"]
    assert len(dispatches) == g.sizes["n_layers"] - g.sizes["n_dense"]
    assert all(n.attr("capacity") >= tokens for n in dispatches)
    verify(g)


def test_stdlib_blocks_build_in_both_mla_forms(tmp_path):
    """mla_naive and mla_absorbed compute the same when the absorbed form's per-head w_uk and
    w_uv hold wkv_b's key and value halves."""
    text = """import "std/attention.ds"
    model m {
      size B = 2, S = 3, ctx = 5
      input x: [B, S, 32]
      output naive = mla_naive(x, ctx, 4, 16, 8, 8, 4, 8)
      output absorbed = mla_absorbed(x, ctx, 4, 16, 8, 8, 4, 8)
    }"""
    (tmp_path / "m.ds").write_text(text)
    g = load_model(str(tmp_path / "m.ds"))
    def weights(prefix):
        return {n.name.split(".")[-1]: n.type for n in g.nodes()
                if n.op in ("weight", "cache") and n.name.startswith(prefix + ".")}
    naive, absorbed = weights("mla_naive"), weights("mla_absorbed")
    assert {k: v for k, v in naive.items() if k != "wkv_b"} == \
        {k: v for k, v in absorbed.items() if k not in ("w_uk", "w_uv")}
    heads, kv_rank, nope, v_dim = 4, 8, 8, 8      # the call: heads=4, q_rank=16, kv_rank=8, nope=8
    assert naive["wkv_b"].numel == absorbed["w_uk"].numel + absorbed["w_uv"].numel
    assert [g.node(o).type.shape for o in g.outputs] == [(2, 3, 32), (2, 3, 32)]
    verify(g)
    feeds = random_feeds(g)
    feeds.update({name.replace("mla_naive.", "mla_absorbed."): value
                  for name, value in feeds.items() if name.startswith("mla_naive.")})
    wkv_b = feeds["mla_naive.wkv_b"].reshape(kv_rank, heads, nope + v_dim)
    feeds["mla_absorbed.w_uk"] = np.ascontiguousarray(wkv_b[:, :, :nope].transpose(1, 2, 0))
    feeds["mla_absorbed.w_uv"] = np.ascontiguousarray(wkv_b[:, :, nope:].transpose(1, 0, 2))
    values = evaluate(g, feeds)
    assert np.allclose(values["naive"], values["absorbed"], rtol=1e-4, atol=1e-4)
