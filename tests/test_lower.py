"""Lowering: golden listings, static checks of every example, folding, determinism."""
from pathlib import Path

import pytest

from compiler.driver import compile_model
from isa.check import check_program
from isa.listing import render
from isa.program import Repeat, walk

GOLDEN = Path(__file__).parent / "golden" / "isa"
SMALL = {"deepseek_v3": {"n_layers": "5"}, "llama3_8b": {"n_layers": "2"}}
EXAMPLES = ["gemm", "grouped", "tiny_moe", "llama3_8b", "deepseek_v3"]


def _compile(name, target="h800"):
    return compile_model(f"examples/{name}.ds", target, SMALL.get(name, {}))


@pytest.mark.parametrize("name", EXAMPLES)
def test_listing_matches_golden(name, golden):
    golden(GOLDEN / f"{name}.h800.lst", render(_compile(name).program))


@pytest.mark.parametrize("target", ["h800", "ascend910b", "b200"])
@pytest.mark.parametrize("name", EXAMPLES)
def test_every_program_passes_the_static_checks(name, target):
    """Including, on split cube/vector cores, that no compute unit touches the other core's
    buffers."""
    compiled = _compile(name, target)
    check_program(compiled.program, compiled.target)


def test_listings_are_deterministic():
    assert render(_compile("tiny_moe").program) == render(_compile("tiny_moe").program)


def test_identical_layers_fold_into_repeats():
    program = compile_model("examples/deepseek_v3.ds", "h800", {"n_layers": "7"}).program
    repeats = [item for item in program.schedule if isinstance(item, Repeat)]
    # Layer 0 reads the embedding, so it stands alone; dense layers 1-2 fold. A MoE layer's
    # last residual add fuses with the next layer's norm, so the first MoE layer (after a
    # dense one) and the last (before the final norm) differ: MoE layers 4-5 fold.
    assert [(r.start, r.count) for r in repeats] == [(1, 2), (4, 2)]
    names = {launch.kernel for r in repeats for launch in r.body}
    kernels = program.kernel_table()
    assert names <= set(kernels)


def test_full_model_is_a_short_program():
    program = compile_model("examples/deepseek_v3.ds", "h800", {}, check_fit=False).program
    assert len(program.kernels) < 60                    # one kernel per distinct op shape
    assert len(program.schedule) < 80                   # 61 layers folded
    listing = render(program)
    assert listing.count("\n") < 2000


def test_gemm_kernel_pipelines_its_loads():
    program = _compile("gemm").program
    kernel = program.kernels[0]
    ops = [ins.op for ins in walk(kernel.body)]
    assert ops.count("mm.mma") == 1 and "vec.promote" in ops      # FP32 promotion on H800
    assert dict(kernel.tokens)["free"] >= 2                       # at least double-buffered
    assert any("tile " in note for note in kernel.notes)


def test_kernel_groups_that_need_each_other_are_refused():
    """Nodes tagged into two kernels that each read the other's result cannot be ordered."""
    from compiler.ir.graph import Graph, TensorType
    from compiler.kernels.groups import kernel_groups
    from isa.formats import Format
    g, t = Graph("m"), TensorType((4, 8), Format("bf16"))
    x = g.add("input", [], t, "x")
    a = g.add("neg", [x.id], t, "a", sched={"kernel": "vector.0"})
    b = g.add("neg", [a.id], t, "b", sched={"kernel": "vector.1"})
    g.add("neg", [b.id], t, "c", sched={"kernel": "vector.0"})
    with pytest.raises(ValueError, match=r"in a cycle: vector\.(0 -> vector\.1|1 -> vector\.0)$"):
        kernel_groups(g)


ONE_ROW_PER_GROUP = """\
model one_row {
  size G = 8, K = 128, N = 64
  input x: bf16[G, 1, K]
  weight w: bf16[G, K, N]
  output y = silu(x @ w)
}
"""


def test_an_epilogue_output_with_one_row_per_group_keeps_its_groups(tmp_path):
    """A batched GEMM of one row per group (an expert given one token) stores its fused
    epilogue's output per group: the view is [G, 1, N], not one broadcast row written by
    every group."""
    from compiler.cli.functional import check_numerics
    model = tmp_path / "one_row.ds"
    model.write_text(ONE_ROW_PER_GROUP)
    compiled = compile_model(str(model), "h800", {})
    check_program(compiled.program, compiled.target)
    [y] = check_numerics(compiled).outputs
    assert y.rel_error < 1e-2, y


@pytest.mark.parametrize("value", ["x", "x @ w"])
def test_scale_blocks_spanning_rows_of_a_batched_tensor_are_refused_at_the_cast(tmp_path, value):
    """A kernel sees a tensor of rank 3 as rows with its leading dims merged, where 128x128
    scale blocks would straddle the batch dim: the cast is refused at its position, naming
    the blocks (it compiled to a listing that stored no scales, or, fused into a GEMM's
    epilogue, crashed the lowering; found by fuzzing)."""
    from compiler.errors import DscError
    model = tmp_path / "m.ds"
    model.write_text("model m {\n  input x: [4, 64, 256]\n  weight w: [256, 256]\n"
                     f'  output y = cast({value}, "fp8_e4m3 scaled(fp32, 128x128)")\n}}\n')
    with pytest.raises(DscError) as err:
        compile_model(str(model), "h800", {})
    text = str(err.value)
    assert text.startswith(f"{model}:4:14: error: cannot lower 'y'"), text
    assert "128x128 scale blocks span rows" in text and "1x128" in text


def test_routed_activations_with_scale_blocks_spanning_rows_are_refused_at_the_dispatch(tmp_path):
    """Dispatch moves each token's row alone, so 2x128 scale blocks shared by two tokens
    cannot follow it: refused at the dispatch, traced to the model's moe call (it ran, and a
    functional run gathered scale rows past the scale tensor's end; found by fuzzing)."""
    from compiler.errors import DscError
    model = tmp_path / "m.ds"
    model.write_text('import "std/moe.ds"\nmodel m {\n  precision {\n'
                     '    activations fp8_e4m3 scaled(fp32, 2x128)\n    weights mxint8\n  }\n'
                     "  input x: bf16[8, 256]\n"
                     "  output y = moe(x, 8, 4, 100, groups=1, topk_groups=1, scale=2.5, "
                     "shared=1, capacity=8)\n}\n")
    with pytest.raises(DscError) as err:
        compile_model(str(model), "h800", {})
    text = str(err.value)
    assert text.startswith("std/moe.ds:"), text
    assert "dispatched to experts row by row" in text and "2x128 scale blocks span 2 rows" in text
    assert text.endswith(f"note: in the block call at {model}:8:14 (building 'moe')")


@pytest.mark.parametrize("scaled, flash", [("s * 0.125", True), ("s / 8", True), ("s / 0", False),
                                            ("8 / s", False), ("s * 0", False)])
def test_only_a_finite_non_zero_factor_folds_into_flash_attention(tmp_path, scaled, flash):
    """Scores times or over a constant fold into flash attention as its scale; a zero or
    infinite factor, or a constant over the scores, stays a kernel of its own (dividing the
    scores by 0 crashed the lowering with a ZeroDivisionError; found by fuzzing, seed 2)."""
    model = tmp_path / "m.ds"
    model.write_text("model m {\n  input q: [2, 16, 32]\n  input k: [2, 16, 32]\n"
                     "  input v: [2, 16, 32]\n  s = einsum(\"bse,bte->bst\", q, k)\n"
                     f"  p = softmax({scaled})\n  output o = einsum(\"bst,bte->bse\", p, v)\n}}\n")
    listing = render(compile_model(str(model), "h20", {}).program)
    assert ("kernel flash_attention" in listing) == flash


def test_scale_blocks_that_do_not_align_with_the_gemm_tiles_are_refused(tmp_path):
    """A weight with 7x3 scale blocks in 32-wide K tiles: the second tile starts inside a
    block and its scale box missed the last block (the compiled listing was refused when read
    back: elements 21..21 of the scales never read; found by fuzzing, seed 2)."""
    from compiler.errors import DscError
    model = tmp_path / "m.ds"
    model.write_text('model m {\n  precision {\n    weights fp8_e4m3 scaled(fp32, 7x3)\n  }\n'
                     "  input x: bf16[4, 64]\n  weight w: [64, 128]\n  output y = x @ w\n}\n")
    with pytest.raises(DscError) as err:
        compile_model(str(model), "h800", {})
    assert str(err.value).startswith(f"{model}:7:16: error: cannot tile 'y'"), str(err.value)
    assert "scale blocks do not align with its 32-wide tiles over a dim of 64" in str(err.value)


def test_a_dispatch_whose_row_does_not_fit_is_refused_at_the_dispatch(tmp_path):
    """A routed row of 2,000,000 bytes cannot be gathered whole into a 233,472-byte buffer:
    refused at the dispatch with the model's moe call as a note (it was refused by the buffer
    check after lowering, without file:line:col; found by fuzzing, seed 2, case 60984)."""
    from compiler.errors import DscError
    model = tmp_path / "m.ds"
    model.write_text('import "std/moe.ds"\nmodel m {\n  input x: bf16[1, 1000000]\n'
                     "  output y = moe(x, 2, 2, 128, groups=1, topk_groups=1, scale=2.5, "
                     "shared=0, capacity=0)\n}\n")
    with pytest.raises(DscError) as err:
        compile_model(str(model), "b200", {}, check_fit=False)
    text = str(err.value)
    assert text.startswith("std/moe.ds:"), text
    assert "one row of 2,000,000 bytes does not fit the vector buffer (233,472 bytes)" in text
    assert text.endswith(f"note: in the block call at {model}:4:14 (building 'moe')")
