"""Mixed-precision matrix operands: a format's `native_operands` let its instruction read
another element format as it is (Blackwell's tcgen05.mma kind::f8f6f4: MXFP4 weights beside
MXFP8 activations); elsewhere the narrower operand is widened on the vector unit, as before."""
import pytest

from compiler import api
from compiler.driver import compile_model
from compiler.kernels.operand_plan import OperandPlan, plan_operands
from isa.assembler import ListingError, parse_listing
from isa.formats import Scaling
from isa.listing import render
from isa.mma_operands import mma_operands
from isa.program import TensorDecl, walk
from isa.target_loader import TargetError, load_target
from runtime.report.text import summary_text

MX = Scaling("ue8m0", (1, 32))            # MXFP8/MXFP4 as the A operand ([tokens, K])
MX_B = Scaling("ue8m0", (32, 1))          # ... and as the B operand ([K, N]): the transpose
EIGHT_BIT = ("fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp6_e3m2")
# b200 as a file that does not list mixed operands: every 8-bit format's list emptied.
NO_NATIVE = {f"matrix.formats.{f}.native_operands": [] for f in EIGHT_BIT}


def _conversions(plan: OperandPlan) -> tuple:
    return plan.fmt, plan.a_conv, plan.b_conv


def _plan(target, a_dtype, b_dtype, a_scaling=None, b_scaling=None) -> OperandPlan:
    a = TensorDecl("a", a_dtype, (1, 16, 4096), "temp", a_scaling)
    b = TensorDecl("b", b_dtype, (1, 4096, 7168), "temp", b_scaling)
    return plan_operands(a, b, target)


# ------------------------------------------------------------------------------ operand plans

def test_b200_reads_mxfp4_weights_beside_mxfp8_activations_natively():
    plan = _plan(load_target("b200"), "fp8_e4m3", "fp4_e2m1", MX, MX_B)
    assert plan == OperandPlan("fp8_e4m3", None, None, promote=False, scaled=False, k_step=32,
                               hw_scaled=True)


def test_b200_mixes_unscaled_formats_too_and_names_the_instruction_after_an_operand():
    target = load_target("b200")
    assert _plan(target, "fp8_e4m3", "fp4_e2m1").fmt == "fp8_e4m3"
    # e4m3 x e5m2: no 8-bit format holds both, yet kind::f8f6f4 reads both (before: BF16)
    assert _conversions(_plan(target, "fp8_e4m3", "fp8_e5m2")) == ("fp8_e4m3", None, None)
    assert _conversions(_plan(target, "fp6_e3m2", "fp4_e2m1")) == ("fp6_e3m2", None, None)
    # both FP4: the packed FP4 instruction at twice the rate, not the mixed one
    assert _plan(target, "fp4_e2m1", "fp4_e2m1").fmt == "fp4_e2m1"


def test_gb200_is_the_same_blackwell_sm():
    plan = _plan(load_target("gb200"), "fp8_e4m3", "fp4_e2m1", MX, MX_B)
    assert (plan.fmt, plan.a_conv, plan.b_conv, plan.hw_scaled) == ("fp8_e4m3", None, None, True)


def test_h800_widens_the_fp4_operand_as_before():
    plan = _plan(load_target("h800"), "fp8_e4m3", "fp4_e2m1", MX, MX_B)
    assert (plan.fmt, plan.a_conv, plan.b_conv) == ("fp8_e4m3", None, "cvt")


def test_a_target_file_without_the_native_list_widens():
    target = load_target("b200", NO_NATIVE)
    plan = _plan(target, "fp8_e4m3", "fp4_e2m1", MX, MX_B)
    assert (plan.fmt, plan.a_conv, plan.b_conv, plan.hw_scaled) == \
        ("fp8_e4m3", None, "cvt", True)
    assert _conversions(_plan(target, "fp8_e4m3", "fp8_e5m2")) == ("bf16", "cvt", "cvt")


def test_nvfp4_scales_are_not_applied_by_the_mixed_instruction():
    """kind::mxf8f6f4 applies UE8M0 scales per 32 of K only: NVFP4's E4M3 scales per 16 beside
    MXFP8 are dequantised, native list or not."""
    nv = Scaling("fp8_e4m3", (16, 1), "fp32")
    plan = _plan(load_target("b200"), "fp8_e4m3", "fp4_e2m1", MX, nv)
    assert (plan.fmt, plan.a_conv, plan.b_conv) == ("bf16", "dequant", "dequant")


# ------------------------------------------------------------------------------ target schema

@pytest.mark.parametrize("value, fragment", [
    (["fp9"], "unknown dtype 'fp9'"),
    (["fp8_e4m3"], "'fp8_e4m3' is the format itself"),
    (["fp4_e2m1", "fp4_e2m1"], "a dtype is listed twice"),
    (["bf16"], "'bf16' runs at 8192 flops per cycle as a format of its own, slower than "
               "fp8_e4m3's 16384"),
])
def test_a_bad_native_list_is_refused_naming_the_key(value, fragment):
    with pytest.raises(TargetError) as info:
        load_target("b200", {"matrix.formats.fp8_e4m3.native_operands": value})
    assert "matrix.formats.fp8_e4m3.native_operands" in str(info.value)
    assert fragment in str(info.value)


# ------------------------------------------------------------------------------ listings

@pytest.fixture(scope="module")
def mixed_llama():
    return compile_model("examples/llama3_8b.ds", "b200",
                         {"n_layers": "1", "weights": "mxfp4", "activations": "mxfp8"})


def _mixed_kernel(compiled):
    return next(k for k in compiled.program.kernels
                if any(m.b == "fp4_e2m1" for m in mma_operands(k)))


def test_the_listing_holds_fp4_on_chip_and_says_native(mixed_llama):
    kernel = _mixed_kernel(mixed_llama)
    sb = next(b for b in kernel.buffers if b.name == "sb")
    assert sb.dtype == "fp4_e2m1"
    assert sb.slot_bytes * 2 == sb.shape[-2] * sb.shape[-1]          # half a byte an element
    assert not any(b.name == "cb" for b in kernel.buffers)            # no widened copy
    assert not any(i.op == "vec.cvt" and i.args[1].name == "sb"
                   for i in walk(kernel.body))
    assert any("mma fp8_e4m3 instruction" in n and "operands fp8_e4m3 x fp4_e2m1 native" in n
               for n in kernel.notes)


def test_h800_listing_says_widened():
    compiled = compile_model("examples/llama3_8b.ds", "h800",
                             {"n_layers": "1", "weights": "mxfp4", "activations": "mxfp8"})
    kernel = next(k for k in compiled.program.kernels
                  if any(m.b == "fp4_e2m1" and m.b_conv for m in mma_operands(k)))
    assert any("operands fp8_e4m3 x fp4_e2m1 fp4_e2m1 widened on the vector unit" in n
               for n in kernel.notes)


def test_a_listing_feeding_an_operand_the_format_does_not_read_is_refused_at_its_line(
        mixed_llama):
    lines = render(mixed_llama.program).splitlines()
    kernel = _mixed_kernel(mixed_llama).name
    start = lines.index(next(l for l in lines if l.startswith(f"kernel {kernel}(")))
    buf = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("buffer sb:"))
    mma = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("mm.mma"))
    lines[buf] = lines[buf].replace("fp4_e2m1", "fp16")       # fp16 is no operand of kind::f8f6f4
    with pytest.raises(ListingError) as info:
        parse_listing("\n".join(lines) + "\n", "edited.lst", load_target("b200"))
    assert info.value.line == mma + 1
    assert ("mm.mma fmt=fp8_e4m3: operand b sb holds fp16, which the fp8_e4m3 instruction of "
            "target b200 does not read (it takes fp8_e4m3 or fp8_e5m2, fp6_e2m3, fp6_e3m2, "
            "fp4_e2m1); widen it first (vec.cvt)") in str(info.value)


def test_the_native_listing_is_refused_where_the_unit_does_not_mix(mixed_llama):
    """The same listing read against a b200 whose file lists no mixed operands."""
    text = render(mixed_llama.program)
    with pytest.raises(ListingError, match=r"operand b sb holds fp4_e2m1, which the fp8_e4m3 "
                                           r"instruction of target b200 does not read \(it "
                                           r"takes fp8_e4m3 only\)"):
        parse_listing(text, "native.lst", load_target("b200", NO_NATIVE))


# ------------------------------------------------------------------------------ bytes and time

def _gemm(tmp_path, weight: str, m: int = 16):
    path = tmp_path / "decode_gemm.ds"
    path.write_text("model decode_gemm {\n  size M = %d, N = 7168, K = 2048\n"
                    "  input  a: fp8_e4m3[M, K] scaled(ue8m0, 1x32)\n"
                    "  weight b: %s[K, N] scaled(ue8m0, 32x1)\n"
                    "  output c: bf16[M, N] = a @ b\n}\n" % (m, weight))
    return api.run(str(path), "b200").to_dict()


def test_a_decode_gemm_with_mxfp4_weights_loads_half_the_weight_bytes(tmp_path):
    """16 x 2048 x 7168 on b200, read once from memory: A 16 x 2048 FP8 and its 16 x 64 UE8M0
    scales, B 2048 x 7168 at 1 or 1/2 byte and its 64 x 7168 scales, C 16 x 7168 BF16."""
    a, scales, c = 16 * 2048 + 16 * 64, 64 * 7168, 16 * 7168 * 2
    fp8, fp4 = _gemm(tmp_path, "fp8_e4m3"), _gemm(tmp_path, "fp4_e2m1")
    assert fp8["bytes_offchip"] == a + 2048 * 7168 + scales + c
    assert fp4["bytes_offchip"] == a + 2048 * 7168 // 2 + scales + c
    assert fp4["kernels"][0]["matrix_operands"] == [
        {"format": "fp8_e4m3", "a": "fp8_e4m3", "b": "fp4_e2m1", "a_conversion": None,
         "b_conversion": None, "native": True}]
    assert fp4["time_s"] < fp8["time_s"]


def test_memory_bound_decode_on_b200_is_faster_with_mxfp4_weights_and_says_native():
    sets = {"n_layers": "2", "activations": "mxfp8"}
    fp8 = api.run("examples/llama3_8b.ds", "b200", sets={**sets, "weights": "mxfp8"})
    fp4 = api.run("examples/llama3_8b.ds", "b200", sets={**sets, "weights": "mxfp4"})
    assert fp4.time_s < fp8.time_s
    operands = [m for k in fp4.to_dict()["kernels"] for m in k["matrix_operands"]
                if m["b"] == "fp4_e2m1"]
    assert operands and all(m["native"] for m in operands)
    text = summary_text(fp4.run_result)
    assert "matrix operands: fp8_e4m3 x fp4_e2m1 on fp8_e4m3, native (6 kernels)" in text


# ------------------------------------------------------------- the report's activations hint

DEEPSEEK_A = Scaling("fp32", (1, 128))     # DeepSeek's activations: one FP32 scale per 128


@pytest.mark.parametrize("target, a_dtype, a_scaling, hint", [
    ("b200", "fp8_e4m3", DEEPSEEK_A, ("mxfp8", "fp8_e4m3")),
    ("b200", "fp8_e4m3", Scaling("ue8m0", (1, 128)), ("mxfp8", "fp8_e4m3")),   # V4's
    ("b200", "bf16", None, ("mxfp8", "fp8_e4m3")),           # dequantised today
    ("b200", "fp8_e4m3", MX, None),                          # already native, scales applied
    ("h800", "fp8_e4m3", DEEPSEEK_A, None),                  # no format applies block scales
])
def test_native_activations_from_the_targets_formats(target, a_dtype, a_scaling, hint):
    from runtime.report.operand_hint import native_activations
    a = TensorDecl("a", a_dtype, (16, 4096), "temp", a_scaling)
    b = TensorDecl("b", "fp4_e2m1", (4096, 7168), "weight", MX_B)
    assert native_activations(load_target(target), a, b) == hint


def test_nvfp4_weights_get_nvfp4_activations_as_the_hint():
    """b200 applies NVFP4's FP8 scales per 16 only in its FP4 instruction: FP4 activations,
    with scales of the weights' kind."""
    from runtime.report.operand_hint import native_activations
    a = TensorDecl("a", "fp8_e4m3", (16, 4096), "temp", DEEPSEEK_A)
    b = TensorDecl("b", "fp4_e2m1", (4096, 7168), "weight", Scaling("fp8_e4m3", (16, 1), "fp32"))
    assert native_activations(load_target("b200"), a, b) == ("nvfp4", "fp4_e2m1")


def test_without_mixed_operands_the_hint_is_fp4_activations():
    """Read off the file's data, not b200's name: with no 8-bit format listing FP4 beside it,
    only FP4 activations (MXFP4) would let the FP4 instruction apply both scales."""
    from runtime.report.operand_hint import native_activations
    a = TensorDecl("a", "fp8_e4m3", (16, 4096), "temp", DEEPSEEK_A)
    b = TensorDecl("b", "fp4_e2m1", (4096, 7168), "weight", MX_B)
    assert native_activations(load_target("b200", NO_NATIVE), a, b) == ("mxfp4", "fp4_e2m1")


def test_the_report_hints_mxfp8_activations_where_deepseek_scales_promote():
    """MXFP4 weights against DeepSeek-style activations (FP8, one FP32 scale per 128) on b200:
    the multiply reads both natively but the matrix unit cannot apply the 1x128 scales, so
    partial sums are promoted every 32 of K on the vector unit, slower than with MXFP8
    activations; the report says which --set would let it run natively."""
    sets = {"n_layers": "2", "weights": "mxfp4"}
    deepseek = api.run("examples/llama3_8b.ds", "b200",
                       sets={**sets, "activations": "fp8_e4m3 scaled(fp32, 1x128)"})
    mx = api.run("examples/llama3_8b.ds", "b200", sets={**sets, "activations": "mxfp8"})
    assert mx.time_s < deepseek.time_s
    hint = ("hint: --set activations=mxfp8 would let the fp8_e4m3 x fp4_e2m1 multiply run "
            "natively on fp8_e4m3, the matrix unit applying both block scales (6 kernels)")
    assert hint in summary_text(deepseek.run_result).splitlines()
    assert "hint:" not in summary_text(mx.run_result)
    on_h800 = api.run("examples/llama3_8b.ds", "h800",
                      sets={**sets, "activations": "fp8_e4m3 scaled(fp32, 1x128)"})
    assert "hint:" not in summary_text(on_h800.run_result)


def test_the_hint_counts_the_weight_gemms_it_would_slow(tmp_path):
    """An FP4 GEMM and an FP8 one with 128x128 weight scales (DeepSeek-V4's experts and its
    attention projections), activations with UE8M0 scales per 128: MXFP8 activations let the
    FP4 GEMM apply its scales in the matrix unit, and make the FP8 one promote every 32 of K
    rather than 128; the hint says both, and the run agrees."""
    path = tmp_path / "two.ds"
    path.write_text("""
model two {
  size M = 64, N = 4096, K = 4096
  precision { default bf16 activations fp8_e4m3 scaled(ue8m0, 1x128) }
  input  x: [M, K]
  weight experts: fp4_e2m1[K, N] scaled(ue8m0, 32x1)
  weight dense: fp8_e4m3[N, K] scaled(ue8m0, 128x128)
  output y = (x @ experts) @ dense
}""")
    now = api.run(str(path), "b200")
    mx = api.run(str(path), "b200", sets={"activations": "mxfp8"})
    assert ("hint: --set activations=mxfp8 would let the fp8_e4m3 x fp4_e2m1 multiply run "
            "natively on fp8_e4m3, the matrix unit applying both block scales (1 kernel); 1 "
            "kernel whose weights' scales it cannot apply would promote every 32 of K, more "
            "often than now") in summary_text(now.run_result).splitlines()
    cycles = lambda run: {k["name"]: k["end_cycle"] - k["start_cycle"]
                          for k in run.to_dict()["kernels"]}
    before, after = cycles(now), cycles(mx)
    assert after["matmul.q"] < before["matmul.q"] and after["y"] > before["y"]
