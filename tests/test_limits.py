"""Sizes that would run away: each finishes quickly or is refused before the work starts, with
one message at the model text or listing line that makes it so (compiler/frontend/limits.py,
isa/workload.py)."""
import time
from pathlib import Path

import pytest

from cli_helpers import ROOT, assert_one_error, dsc, in_repo_root  # noqa: F401  (autouse fixture)
from compiler.cli.main import main


def test_a_trillion_row_gemm_simulates_in_seconds(capsys):
    start = time.process_time()
    code, out, _ = dsc(capsys, "run", "examples/gemm.ds", "--target", "h800",
                       "--set", "M=1000000000000", "--ignore-capacity")
    assert code == 0 and "model gemm on h800" in out
    assert time.process_time() - start < 20


@pytest.mark.parametrize("sets, words", [
    (["K=2147483648"], ["examples/gemm.ds:6:28: error: cannot tile 'c'",
                        "executes 100,663,299 instructions", "at most 100,000"]),
    (["N=4294967296"], ["examples/gemm.ds:6:28: error: cannot tile 'c'",
                        "do not repeat with a short period"]),
])
def test_a_gemm_too_large_to_simulate_is_refused_at_the_operator(capsys, sets, words):
    code, out, err = dsc(capsys, "run", "examples/gemm.ds", "--target", "h800",
                         *sum((["--set", s] for s in sets), []), "--ignore-capacity")
    assert_one_error(code, out, err)
    for word in words:
        assert word in err


def test_a_vector_kernel_too_large_to_simulate_is_refused_at_its_operation(tmp_path, capsys):
    model = tmp_path / "big.ds"
    model.write_text("model big {\n  size R = 1000000000000\n  input x: [R, 4096]\n"
                     "  output y = silu(x)\n}\n")
    code, out, err = dsc(capsys, "run", str(model), "--target", "h800", "--ignore-capacity")
    assert_one_error(code, out, err)
    assert err.startswith(f"{model}:4:14: error: a work item of kernel silu_0 executes ")


def test_a_kernel_refused_inside_a_block_names_the_call_that_built_it(tmp_path, capsys):
    model = tmp_path / "blk.ds"
    model.write_text("block act(x) {\n  return silu(x)\n}\n\nmodel big {\n"
                     "  size R = 1000000000000\n  input x: [R, 4096]\n"
                     "  output y = act(x)\n}\n")
    code, out, err = dsc(capsys, "run", str(model), "--target", "h800", "--ignore-capacity")
    assert_one_error(code, out, err)
    assert err.startswith(f"{model}:2:10: error: a work item of kernel silu_0 executes ")
    assert err.endswith(f"note: in the block call at {model}:8:14 (building 'y')\n")


def test_a_million_experts_are_traced_from_the_library_to_the_models_line(capsys):
    code, out, err = dsc(capsys, "compile", "examples/deepseek_v3.ds", "--target", "h800",
                         "--set", "n_experts=1000000", "-o", "-")
    assert_one_error(code, out, err)
    assert err.startswith("std/moe.ds:23:12: error: cannot lower 'layer.3.moe.idx'")
    lines = Path("examples/deepseek_v3.ds").read_text().splitlines()
    line, text = next((k + 1, t) for k, t in enumerate(lines) if " = moe(" in t)
    assert err.endswith(f"note: in the block call at examples/deepseek_v3.ds:{line}:"
                        f"{text.index('moe(') + 1} (building 'layer.3.moe')\n")


def test_ten_thousand_layers_are_refused_at_the_repeat(capsys):
    start = time.process_time()
    code, out, err = dsc(capsys, "run", "examples/deepseek_v3.ds", "--target", "h800",
                         "--set", "n_layers=10000", "--ignore-capacity")
    assert_one_error(code, out, err)
    assert err.startswith("examples/deepseek_v3.ds:57:10: error: this repeat unrolls to "
                          "9,997 x 69 operations")
    assert time.process_time() - start < 20


@pytest.fixture(scope="module")
def gemm_listing(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("gemm") / "x.lst"
    assert main(["compile", str(ROOT / "examples/gemm.ds"), "--target", "h800",
                 "--set", "K=128", "-o", str(path)]) == 0
    return path.read_text()


@pytest.mark.parametrize("old, new, at, words", [
    ("\n  grid ", "\n  grid g=2 h=2 i=2 j=2 k=2 l=2 o=2 ", "kernel matmul_0(",
     ["kernel matmul_0 has a grid of 9 dims", "at most 8"]),
    ("  launch matmul_0(", "  repeat i 0..999999\n  launch matmul_0(", "repeat i 0..999999",
     ["'repeat i 0..999999' unrolls to more than 200,000 launches"]),
])
def test_a_listing_too_large_to_simulate_is_refused_at_its_line(gemm_listing, tmp_path,
                                                                 capsys, old, new, at, words):
    text = gemm_listing.replace(old, new, 1)
    if "repeat" in new:
        text = text.replace("; c = matmul\n", "; c = matmul\n  end\n", 1)
    (tmp_path / "x.lst").write_text(text)
    code, out, err = dsc(capsys, "run", str(tmp_path / "x.lst"), "--target", "h800")
    assert_one_error(code, out, err)
    line = next(i + 1 for i, text_line in enumerate(text.splitlines()) if at in text_line)
    assert err.startswith(f"{tmp_path / 'x.lst'}:{line}: error: ")
    for word in words:
        assert word in err


def test_a_gemm_with_long_work_items_is_tiled_by_the_estimate(capsys):
    """K of a million: each work item executes some fifty thousand instructions, within what
    the interpreter runs once but seconds for every candidate tile (a model of such GEMMs
    took minutes to compile; found by fuzzing)."""
    start = time.process_time()
    code, out, _ = dsc(capsys, "compile", "examples/gemm.ds", "--target", "h800",
                       "--set", "K=1048576", "--ignore-capacity", "--emit", "ir")
    assert code == 0
    assert 'tile_choice="best estimate of' in out and "too long to simulate each" in out
    assert time.process_time() - start < 5
