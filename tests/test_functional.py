"""Functional mode: the ISA program executed with numpy against the IR's float32 reference.

Full-precision models (every tensor fp32, on a target whose matrix unit takes fp32) must match
the reference to float32 rounding; low-precision recipes must show the error their formats
introduce, growing as the formats narrow; stored inputs must follow the format rules; an
instruction without semantics is an error. See docs/functional.md.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compiler.cli.main import main
from compiler.driver import compile_model
from compiler.ir.evaluate import random_feeds
from isa.formats import Format
from isa.program import (Attr, Box, Buf, BufferDecl, Instr, Kernel, Launch, Param, Program,
                         TensorDecl, scale_name)
from isa.target_loader import BUILTIN_DIR, load_target
from isa.expr import Const
from compiler.cli.functional import check_numerics
from runtime.functional import FunctionalError, Machine
from runtime.numerics import dequantize, quantize, round_to_element, scaled_matmul
from attention_models import two_head_attention
from target_variants import h800_with_fp32_matrix

ROOT = Path(__file__).resolve().parent.parent
TINY_MOE = str(ROOT / "examples/tiny_moe.ds")
GEMM = str(ROOT / "examples/gemm.ds")
FP32_ALL = "default fp32 weights fp32 activations fp32 kv_cache fp32"
FP32 = f"precision {{ {FP32_ALL} }}"


def _decode_attention(name: str, S: int, ctx: int) -> str:
    """Two FP32 heads attending over a cache of ctx + S positions, causally masked."""
    return two_head_attention(name, FP32_ALL, S, ctx, hd=16)


MODELS = {
    "matmul": f"""
model matmul {{
  size M = 48, N = 40, K = 72
  {FP32}
  input x: [M, K]
  weight w: [K, N]
  output y = x @ w
}}""",
    "epilogue": f"""
model epilogue {{
  size M = 40, N = 48, K = 64
  {FP32}
  input x: [M, K]
  weight w: [K, N]
  weight b: [N]
  output y = silu(x @ w + b)
}}""",
    "mlp": f"""
model mlp {{
  size T = 24, d = 64, inter = 96
  {FP32}
  input x: [T, d]
  weight g: [d]
  weight w1: [d, inter]
  weight w3: [d, inter]
  weight w2: [inter, d]
  h = rmsnorm(x, g, 1e-6)
  output y = x + (silu(h @ w1) * (h @ w3)) @ w2
}}""",
    "attention": f"""
model attention {{
  size B = 2, S = 3, ctx = 5
  heads = 2
  hd = 16
  d = 32
  {FP32}
  input x: [B, S, d]
  weight wq: [d, heads * hd]
  weight wk: [d, heads * hd]
  weight wv: [d, heads * hd]
  weight wo: [heads * hd, d]
  cache k_cache: [B, ctx + S, heads, hd]
  cache v_cache: [B, ctx + S, heads, hd]
  q = rope(reshape(x @ wq, [B, S, heads, hd]), offset=ctx)
  k = rope(reshape(x @ wk, [B, S, heads, hd]), offset=ctx)
  v = reshape(x @ wv, [B, S, heads, hd])
  keys = cache_write(k_cache, k, ctx)
  values = cache_write(v_cache, v, ctx)
  scores = einsum("bshe,bthe->bhst", q, keys) * (1 / sqrt(hd))
  p = softmax(causal_mask(scores, ctx))
  o = einsum("bhst,bthe->bshe", p, values)
  output y = reshape(o, [B, S, heads * hd]) @ wo
}}""",
    "long_attention": _decode_attention("long_attention", S=2, ctx=300),
    "split_decode": _decode_attention("split_decode", S=1, ctx=4000),
    "causal_prefill": f"""
model causal_prefill {{
  size B = 1, S = 256, ctx = 0
  hd = 16
  {FP32}
  input q: [B, S, 1, 2, hd]
  input k: [B, S, 1, hd]
  input v: [B, S, 1, hd]
  scores = einsum("bsgqe,btge->bgqst", q, k) * (1 / sqrt(hd))
  p = softmax(causal_mask(scores, ctx))
  output o = einsum("bgqst,btge->bsgqe", p, v)
}}""",
    "moe": f"""
model moe {{
  size T = 8
  d = 32
  experts = 4
  inter = 16
  {FP32}
  input x: [T, d]
  weight w_gate: [d, experts]
  weight gate_bias: [experts]
  weight w1: [experts, d, inter]
  weight w3: [experts, d, inter]
  weight w2: [experts, inter, d]
  scores = sigmoid(x @ w_gate)
  w, idx = topk(scores, 2, bias=gate_bias, groups=2, topk_groups=1, scale=2.5)
  xe = dispatch(x, idx, experts, T)
  ye = (silu(xe @ w1) * (xe @ w3)) @ w2
  output y = combine(ye, idx, w)
}}""",
}
MODELS["layernorm_gelu"] = f"""
model layernorm_gelu {{
  size T = 24, d = 64, inter = 96
  {FP32}
  input x: [T, d]
  weight g: [d]
  weight beta: [d]
  weight w1: [d, inter]
  weight b1: [inter]
  weight w2: [inter, d]
  h = layernorm(x, g, beta, 1e-5)
  output y = x + gelu_tanh(gelu(h @ w1 + b1) @ w2)
}}"""
# 40 rows (MLA's queries of 5 heads), fewer than a power of two: a tile holds all 40, so the
# parts placed side by side and the row they fill have the same rows (found by fuzzing).
MODELS["concat"] = f"""
model concat {{
  size B = 2, S = 4, heads = 5
  {FP32}
  input latent: [B, heads, S, 32]
  input pe: [B, S, heads, 8]
  weight w: [40, 16]
  output y = concat([latent * 2.0, transpose(pe, [0, 2, 1, 3])]) @ w
}}"""
KERNELS = {"attention": "flash_attention", "long_attention": "flash_attention",
           "causal_prefill": "flash_attention", "split_decode": "flash", "moe": "dispatch", "epilogue": "matmul_add_silu",
           "concat": "mul_concat"}


@pytest.fixture(scope="module")
def fp32_target(tmp_path_factory) -> str:
    return h800_with_fp32_matrix(tmp_path_factory.mktemp("targets"))


@pytest.fixture(scope="module")
def fp32_split_target(tmp_path_factory) -> str:
    """ascend910b (split cube/vector cores, fixed pipe) plus an fp32 matrix format."""
    text = (BUILTIN_DIR / "ascend910b.toml").read_text()
    text = text.replace('name = "ascend910b"', 'name = "ascend_fp32"', 1).replace(
        "[matrix.formats.fp16]",
        "[matrix.formats.fp32]\nshape = [16, 16, 8]\nflops_per_cycle = 2048\n\n"
        "[matrix.formats.fp16]", 1)
    path = tmp_path_factory.mktemp("targets") / "ascend_fp32.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("target", ["fp32_target", "fp32_split_target"])
@pytest.mark.parametrize("name", list(MODELS))
def test_full_precision_matches_reference(name, target, tmp_path, request):
    path = tmp_path / f"{name}.ds"
    path.write_text(MODELS[name])
    compiled = compile_model(str(path), request.getfixturevalue(target), {})
    assert {t.dtype for t in compiled.program.tensors} <= {"fp32", "i32"}
    if name in KERNELS:
        assert any(k.name.startswith(KERNELS[name]) for k in compiled.program.kernels)
    result = check_numerics(compiled)
    assert not result.warnings
    assert set(result.accumulation) == {"fp32"}
    assert result.accumulation["fp32"].startswith("exact")
    for out in result.outputs:
        assert out.rel_error < 1e-5, (name, out)
    equal, total = result.indices
    assert equal == total


def test_fp8_gemm_error_and_stored_inputs():
    compiled = compile_model(GEMM, "h800", {"M": "128", "N": "256", "K": "512"})
    result = check_numerics(compiled)
    (out,) = result.outputs
    assert out.name == "c" and out.format == "bf16"
    assert 1e-4 < out.rel_error < 5e-2
    assert result.accumulation["fp8_e4m3"].startswith("promote: 13-bit")
    assert "every 128 of K" in result.accumulation["fp8_e4m3"]
    feeds = random_feeds(compiled.graph, 0)
    machine = Machine(compiled.program, compiled.target)
    machine.store_feeds(feeds)
    for name in ("a", "b"):
        decl = compiled.program.tensor_table()[name]
        q = quantize(feeds[name], Format(decl.dtype, decl.scaling))
        elements = machine.memory.read(name)
        assert np.array_equal(elements, round_to_element(elements, "fp8_e4m3"))
        assert np.array_equal(machine.memory.read(scale_name(name)), q.scales)
        assert np.array_equal(machine.memory.value(name), dequantize(q))


def test_fp8_gemm_follows_the_promote_model():
    """Within one bf16 rounding of runtime.numerics' promote model, plus the limited
    accumulator's rounding where sums cancel (the ISA applies the scales at promotion, the
    model before accumulating, so roundings differ slightly)."""
    compiled = compile_model(GEMM, "h800", {"M": "128", "N": "256", "K": "512"})
    feeds = random_feeds(compiled.graph, 0)
    machine = Machine(compiled.program, compiled.target)
    machine.store_feeds(feeds)
    machine.run()
    table = compiled.program.tensor_table()
    qa, qb = (quantize(feeds[n], Format(table[n].dtype, table[n].scaling)) for n in ("a", "b"))
    model = round_to_element(scaled_matmul(qa, qb, "promote")[0], "bf16")
    isa = machine.memory.value("c")
    slack = np.abs(model) * 2.0 ** -7 + np.abs(model).max() * 2.0 ** -13
    assert np.all(np.abs(isa - model) <= slack)
    assert np.linalg.norm(isa - model) < 1e-3 * np.linalg.norm(model)


@pytest.fixture(scope="module")
def tiny_moe_errors() -> dict:
    policies = {"default": None, "mxfp8": "mxfp8", "mxfp6": "mxfp6", "mxfp4": "mxfp4",
                "nvfp4": "nvfp4", "ue8m0": "fp8_e4m3 scaled(ue8m0, 128x128)"}
    out = {}
    for key, fmt in policies.items():
        compiled = compile_model(TINY_MOE, "h800", {"weights": fmt} if fmt else {})
        out[key] = check_numerics(compiled, probes=("layer.1.h",))
    return out


def test_tiny_moe_errors_grow_as_formats_narrow(tiny_moe_errors):
    rel = {k: r.outputs[0].rel_error for k, r in tiny_moe_errors.items()}
    assert all(np.isfinite(v) and v > 1e-3 for v in rel.values()), rel
    assert rel["mxfp4"] > rel["mxfp8"]
    assert rel["nvfp4"] > rel["default"]
    early = {k: r.probes[0].rel_error for k, r in tiny_moe_errors.items()}   # before routing
    assert max(early["default"], early["mxfp8"]) < min(early["mxfp4"], early["nvfp4"])


def test_tiny_moe_reports_formats_and_accumulation(tiny_moe_errors):
    default, mxfp4 = tiny_moe_errors["default"], tiny_moe_errors["mxfp4"]
    assert "fp8_e4m3 scaled(fp32, 128x128)" in default.formats["weights"]
    assert "fp8_e4m3 scaled(fp32, 1x128)" in default.formats["activations"]
    assert default.formats["kv_cache"] == {"bf16": 4}
    assert "fp4_e2m1 scaled(ue8m0, 32x1)" in mxfp4.formats["weights"]
    assert default.accumulation["fp8_e4m3"].startswith("promote")
    assert default.accumulation["bf16"].startswith("exact")
    assert default.policy["weights"] == "fp8_e4m3 scaled(fp32, 128x128)"
    json.dumps(default.to_dict())


def test_nvfp4_weights_keep_their_tensor_scale():
    compiled = compile_model(TINY_MOE, "h800", {"weights": "nvfp4"})
    feeds = random_feeds(compiled.graph, 0)
    machine = Machine(compiled.program, compiled.target)
    machine.store_feeds(feeds)
    name = "layer.1.moe.w1"
    decl = compiled.program.tensor_table()[name]
    assert decl.scaling.tensor_dtype == "fp32"
    q = quantize(feeds[name], Format(decl.dtype, decl.scaling))
    assert np.array_equal(machine.memory.value(name), dequantize(q))


PLAIN_GEMM = """
model plain {
  size M = 64, N = 96, K = 256
  input x: [M, K]
  weight w: [K, N]
  output y = x @ w
}"""


@pytest.mark.parametrize("target", ["h800", "b200"])
@pytest.mark.parametrize("weights, activations", [
    ("mxfp8", "mxfp8"), ("mxfp4", "mxfp8"), ("nvfp4", "mxfp8"), ("mxfp6", "bf16"),
    ("nvfp4", "fp8_e4m3 scaled(fp32, 1x128)"), ("fp8_e4m3 scaled(fp32, 128x128)", "mxfp8")])
def test_mixed_formats_lose_nothing_beyond_their_own_rounding(tmp_path, target, weights,
                                                              activations):
    """Whatever path the operands take to the matrix unit (widened, hardware-scaled,
    promoted or dequantised), the GEMM computes the product of the stored values: the error
    against float64 on those values is accumulation and bf16 output rounding only."""
    path = tmp_path / "plain.ds"
    path.write_text(PLAIN_GEMM)
    compiled = compile_model(str(path), target, {"weights": weights, "activations": activations})
    machine = Machine(compiled.program, compiled.target)
    machine.store_feeds(random_feeds(compiled.graph, 0))
    machine.run()
    a_name = "x.q" if "x.q" in compiled.program.tensor_table() else "x"
    exact = machine.memory.value(a_name).astype(np.float64) @ machine.memory.value("w")
    error = np.linalg.norm(machine.memory.value("y") - exact) / np.linalg.norm(exact)
    assert error < 2.0 ** -8


@pytest.mark.parametrize("target", ["a100", "ascend910b", "b200", "h20"])
def test_tiny_moe_runs_on_every_builtin_target(target):
    """Every instruction the templates emit for the target has semantics (fixed-pipe ops on
    ascend910b, dequantisation where the matrix unit lacks FP8, ...)."""
    result = check_numerics(compile_model(TINY_MOE, target, {}))
    assert not result.warnings
    assert 1e-3 < result.outputs[0].rel_error < 2


# ---- hand-made programs -----------------------------------------------------------------

def _program(body, tensors, buffers, params, args) -> Program:
    kernel = Kernel("k", params, (), buffers, (), tuple(body))
    return Program("hand", "h800", tuple(tensors), (kernel,), (Launch("k", args),))


def _box(param, shape):
    return Box(param, tuple(Const(0) for _ in shape), tuple(shape))


def test_unknown_instruction_is_an_error():
    program = _program(
        [Instr("vec.frobnicate", (Buf("b"), Buf("b"), Attr("n", 4)))],
        [], (BufferDecl("b", "fp32", (2, 2), 1, "smem"),), (), ())
    with pytest.raises(FunctionalError, match=r"vec\.frobnicate.*no functional semantics"):
        Machine(program, load_target("h800")).run()


def test_load_clips_and_pads_store_rounds_immediates_and_fixed_pipe():
    x = TensorDecl("x", "fp32", (3, 5), "input")
    y = TensorDecl("y", "bf16", (3, 5), "output")
    body = [
        Instr("ld.tile", (Buf("s"), _box("px", (4, 8)))),
        Instr("vec.sub", (Buf("v"), Buf("s"), Attr("n", 32), Attr("imm0", 1.0))),   # 1 - x
        Instr("fix.bias", (Buf("v"), Buf("v"), Buf("s"), Attr("n", 32))),            # + x
        Instr("vec.mul", (Buf("w"), Buf("s"), Attr("n", 32), Attr("imm1", 3.0))),    # 3 x
        Instr("vec.add", (Buf("w"), Buf("w"), Buf("v"), Attr("n", 32))),
        Instr("sync.vec", ()),
        Instr("st.tile", (_box("py", (4, 8)), Buf("w"))),
    ]
    buffers = tuple(BufferDecl(n, "fp32", (4, 8), 1, "smem") for n in ("s", "v", "w"))
    program = _program(body, [x, y], buffers,
                       (Param("px", "fp32", (3, 5)), Param("py", "bf16", (3, 5), output=True)),
                       (("px", "x"), ("py", "y")))
    machine = Machine(program, load_target("ascend910b"))
    value = np.linspace(-2, 2, 15, dtype=np.float32).reshape(3, 5) + np.float32(1e-3)
    machine.store_feeds({"x": value})
    machine.run()
    assert np.array_equal(machine.memory.read("y"), round_to_element(3 * value + 1, "bf16"))


def test_lowering_bugs_are_reported():
    """Reading a temporary nobody wrote, or block-scaled elements without their scales."""
    from isa.formats import parse_format
    fmt = parse_format("mxfp8")
    x = TensorDecl("x", fmt.dtype, (4, 32), "input", fmt.scaling)
    xs = TensorDecl("x.scale", "ue8m0", (4, 1), "scale")
    t = TensorDecl("t", "bf16", (4, 32), "temp")
    y = TensorDecl("y", "bf16", (4, 32), "output")
    body = [Instr("ld.tile", (Buf("a"), _box("px", (4, 32)))),
            Instr("ld.tile", (Buf("b"), _box("pt", (4, 32)))),
            Instr("vec.add", (Buf("b"), Buf("a"), Buf("b"), Attr("n", 128))),
            Instr("st.tile", (_box("py", (4, 32)), Buf("b")))]
    buffers = (BufferDecl("a", fmt.dtype, (4, 32), 1, "smem"),
               BufferDecl("b", "bf16", (4, 32), 1, "smem"))
    params = (Param("px", fmt.dtype, (4, 32)), Param("pt", "bf16", (4, 32)),
              Param("py", "bf16", (4, 32), output=True))
    program = _program(body, [x, xs, t, y], buffers, params,
                       (("px", "x"), ("pt", "t"), ("py", "y")))
    machine = Machine(program, load_target("h800"))
    machine.store_feeds({"x": np.ones((4, 32), np.float32)})
    warnings = machine.run().warnings
    assert any("reads t before anything was stored" in w for w in warnings)
    assert any("block-scaled x without its scales" in w for w in warnings)


def test_cli_functional_json(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = main(["run", "examples/tiny_moe.ds", "--target", "h800", "--functional", "--json", "-"])
    out, _ = capsys.readouterr()
    assert code == 0
    report = json.loads(out)
    functional = report["functional"]
    assert [o["name"] for o in functional["outputs"]] == ["logits"]
    assert functional["outputs"][0]["rel_error"] > 0
    assert "fp8_e4m3" in functional["accumulation"]
    assert report["total_cycles"] > 0


def test_cli_functional_refuses_big_models(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = main(["run", "examples/gemm.ds", "--target", "h800", "--functional",
                 "--set", "M=16384", "--set", "N=16384", "--set", "K=16384"])
    _, err = capsys.readouterr()
    assert code == 1
    assert "too big for functional mode" in err and "--set" in err


def test_functional_mode_refuses_what_would_take_gigabytes(tmp_path, capsys):
    """Eight experts of 100,000 inner rows hold 1.5e8 weight elements: a functional run would
    keep over 3 GB (found by fuzzing: a MemoryError under a 3 GB cap)."""
    model = tmp_path / "m.ds"
    model.write_text('import "std/moe.ds"\nmodel m {\n  input x: [16, 64]\n'
                     "  output y = moe(x, 8, 1, 100000, groups=1, capacity=0)\n}\n")
    code = main(["run", str(model), "--target", "h800", "--functional"])
    _, err = capsys.readouterr()
    assert code == 1 and "too big for functional mode" in err and "the limit is 2e+07" in err


def test_experts_with_one_row_each_keep_their_groups(tmp_path, capsys):
    """A grouped GEMM with M = 1 (one token per expert) and an epilogue: its output keeps the
    expert dim (found by the fuzzer: the epilogue's output view was [1, 1, N], every expert
    stored to the same row, and the listing failed its own verifier)."""
    model = tmp_path / "m.ds"
    model.write_text('import "std/moe.ds"\nmodel m {\n  input x: [1, 64]\n'
                     "  output y = moe(x, 4, 2, 64, groups=2, capacity=1)\n}\n")
    assert main(["run", str(model), "--target", "a100", "--functional"]) == 0
    assert "functional check" in capsys.readouterr().out
    listing = tmp_path / "m.lst"
    assert main(["compile", str(model), "--target", "a100", "-o", str(listing)]) == 0
    assert main(["run", str(listing), "--target", "a100"]) == 0


@pytest.mark.parametrize("body, scaled", [
    ('  input a: fp8_e4m3[16, 256] scaled(fp32, 1x32)\n  output y = -a\n', "a"),
    ('  input x: [16, 256]\n  h = cast(x, "mxfp8")\n  output y = -h\n', "h"),
    ('  input x: [16, 256]\n  weight w: [256, 256]\n  h = cast(x @ w, "mxfp8")\n'
     '  output y = -h\n', "h"),
])
def test_a_vector_op_reads_a_block_scaled_value_through_its_scales(tmp_path, body, scaled):
    """An op reading a block-scaled value (an input, or a value quantised by a cast in the
    same model) gets its elements times their scales, exactly: a vector kernel dequantises
    what it loads, and a quantised value is stored and read back by its users' own kernel,
    never passed on in the kernel that quantised it (found by fuzzing: its elements were read
    without their scales)."""
    model = tmp_path / "m.ds"
    model.write_text(f"model m {{\n{body}}}\n")
    compiled = compile_model(str(model), "h800", {})
    machine = Machine(compiled.program, compiled.target)
    machine.store_feeds(random_feeds(compiled.graph, 0))
    machine.run()
    assert not machine.stats.warnings
    expected = round_to_element(-machine.memory.value(scaled), "bf16")
    assert np.array_equal(machine.memory.value("y"), expected)


@pytest.mark.parametrize("fmt", ["bf16", "fp8_e4m3 scaled(fp32, 1x32)"])
def test_a_cache_append_in_the_caches_own_format_stores_the_entries_as_they_are(tmp_path, fmt):
    """New entries already in the cache's format are copied into its window, elements and
    block scales alike: the window reads back exactly the entries (the scales of such an
    append were stored from a buffer nothing wrote, when the cache write was a special case
    of the vector lowering)."""
    model = tmp_path / "m.ds"
    dtype, _, scaling = fmt.partition(" ")
    model.write_text(f"model m {{\n  input k: {dtype}[1, 4, 64] {scaling}\n"
                     f"  cache k_cache: {dtype}[1, 12, 64] {scaling}\n"
                     "  output keys = cache_write(k_cache, k, 8)\n}\n")
    compiled = compile_model(str(model), "h800", {})
    machine = Machine(compiled.program, compiled.target)
    machine.store_feeds(random_feeds(compiled.graph, 0))
    machine.run()
    assert not machine.stats.warnings
    assert np.array_equal(machine.memory.value("k_cache")[:, 8:], machine.memory.value("k"))
