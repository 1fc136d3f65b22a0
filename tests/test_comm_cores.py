"""Cores held by communication kernels (plan comm_cores=N): the compute kernels run on the
others, the listing records it, and a listing runs as it was compiled."""
from __future__ import annotations

import pytest

from cli_helpers import dsc, in_repo_root  # noqa: F401  (autouse fixture)
from deployment_helpers import assert_user_error

from compiler.driver import compile_model
from isa.listing import render
from runtime.interpreter import run_program

GEMM = "examples/gemm.ds"


def test_the_compute_kernels_run_on_the_other_cores():
    """H800 has 132 SMs; holding 32 leaves 100 for the GEMM, which takes longer, but never
    more than 132/100 times as long (it has fewer cores, not slower ones)."""
    whole = compile_model(GEMM, "h800", {})
    held = compile_model(GEMM, "h800", {}, plan="comm_cores=32")
    assert (whole.target.cores, held.target.cores) == (132, 100)
    t_whole = run_program(whole.program, whole.target).cycles
    t_held = run_program(held.program, held.target).cycles
    assert t_whole < t_held <= t_whole * 132 / 100 * 1.001
    assert "deploy devices=1 per_node=1 attn=dp ffn=dp moe=ep mb=1 comm_cores=32" in \
        render(held.program)


def test_a_listing_runs_on_the_cores_it_was_compiled_for(capsys, tmp_path):
    listing = tmp_path / "g.lst"
    code, _, err = dsc(capsys, "compile", GEMM, "--target", "h800", "--plan", "comm_cores=32",
                       "-o", str(listing))
    assert code == 0, err
    held = compile_model(GEMM, "h800", {}, plan="comm_cores=32")
    code, out, err = dsc(capsys, "run", str(listing), "--target", "h800", "--json", "-")
    assert code == 0, err
    import json
    assert json.loads(out)["total_cycles"] == round(
        run_program(held.program, held.target).cycles)


@pytest.mark.parametrize("target, plan, message", [
    ("h800", "comm_cores=132", "h800 has 1 die of 132 cores"),
    ("b200", "comm_cores=3", "b200 has 2 dies of 74 cores"),
    ("h800", "comm_cores=x", "plan comm_cores=x: expected a number of cores"),
])
def test_held_cores_the_chip_cannot_give_are_refused(capsys, target, plan, message):
    code, _, err = dsc(capsys, "compile", GEMM, "--target", target, "--plan", plan)
    assert_user_error(code, err)
    assert message in err
