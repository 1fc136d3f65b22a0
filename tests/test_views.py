"""The rules a listing's tensor table obeys (isa/views.py): views look into declared tensors
through steps that give their declared shape; block-scaled tensors have their scales."""
from isa.formats import ALIASES
from isa.program import TensorDecl, ViewStep
from isa.views import apply_step, step_problem, tensor_problems

NVFP4 = ALIASES["nvfp4"]


def _table(*decls):
    return {d.name: d for d in decls}


def _nvfp4_weight():
    w = TensorDecl("w", NVFP4.dtype, (32, 64), "weight", NVFP4.scaling)
    scales = TensorDecl("w.scale", NVFP4.scaling.dtype, NVFP4.scaling.scale_shape((32, 64)), "scale")
    return w, scales


def test_a_whole_nvfp4_tensor_is_consistent():
    w, scales = _nvfp4_weight()
    tscale = TensorDecl("w.tscale", "fp32", (1,), "scale")
    assert list(tensor_problems(_table(w, scales, tscale))) == []


def test_an_nvfp4_tensor_needs_its_per_tensor_scale():
    w, scales = _nvfp4_weight()
    [(name, problem)] = tensor_problems(_table(w, scales))
    assert name == "w" and "'w.tscale' is not declared (expected 'tensor w.tscale: fp32[1] " \
        "scale')" in problem
    wrong = TensorDecl("w.tscale", "fp32", (2,), "scale")
    [(name, problem)] = tensor_problems(_table(w, scales, wrong))
    assert name == "w.tscale" and "is fp32[1], but 'w.tscale' is fp32[2]" in problem


def test_a_view_of_a_scaled_tensor_needs_a_scaled_base():
    x = TensorDecl("x", "fp8_e4m3", (4, 256), "input")
    v = TensorDecl("v", "fp8_e4m3", (1, 4, 256), "view", ALIASES["mxfp8"].scaling, "x",
                   (ViewStep("reshape", (1, 4, 256)),))
    [(name, problem)] = tensor_problems(_table(x, v))
    assert name == "v" and "its base 'x' is not block-scaled" in problem


def test_steps_are_checked_against_the_shape_they_apply_to():
    assert step_problem((4, 6), ViewStep("slice", (1, 2, 6))) is None
    assert apply_step((4, 6), ViewStep("slice", (1, 2, 6))) == (4, 4)
    assert "outside [0, 6)" in step_problem((4, 6), ViewStep("slice", (1, 2, 7)))
    assert "axis 2, which [4, 6] does not have" in step_problem((4, 6), ViewStep("slice", (2, 0, 1)))
    assert "outside" in step_problem((4, 6), ViewStep("slice", (0, 3, 3)))      # empty
    assert step_problem((4, 6), ViewStep("transpose", (1, 0))) is None
    assert "not a permutation" in step_problem((4, 6), ViewStep("transpose", (0, 0)))
    assert step_problem((4, 6), ViewStep("reshape", (24,))) is None
