"""An edited listing run in functional mode against its model: the unedited listing has the
compiled program's error exactly, a wrong edit that the verifier cannot see shows a large one."""
import json

import pytest

from cli_helpers import ROOT, dsc, in_repo_root  # noqa: F401  (autouse fixture)
from compiler.cli.main import main

SIZES = ["--set", "M=128", "--set", "N=256", "--set", "K=512"]


@pytest.fixture(scope="module")
def listing(tmp_path_factory):
    """A small GEMM listing, compiled as a user would; (path, text)."""
    path = tmp_path_factory.mktemp("gemm") / "g.lst"
    assert main(["compile", str(ROOT / "examples/gemm.ds"), "--target", "h800", *SIZES,
                 "-o", str(path)]) == 0
    return path, path.read_text()


def _functional(capsys, path, *extra) -> tuple[int, dict, str]:
    code, out, err = dsc(capsys, "run", str(path), "--target", "h800", "--functional",
                         "--model", "examples/gemm.ds", "--json", "-", *extra)
    return code, (json.loads(out)["functional"] if code == 0 else {}), err


def test_the_unedited_listing_has_the_compiled_programs_error(listing, capsys):
    code, functional, err = _functional(capsys, listing[0])
    assert code == 0 and err == ""
    (output,), (baseline,) = functional["outputs"], functional["baseline"]
    assert output["name"] == "c" and output == baseline          # the same program
    assert 1e-3 < output["rel_error"] < 0.1                      # fp8 operands, bf16 output


def test_the_text_report_shows_the_compiled_programs_error_beside(listing, capsys):
    code, out, _ = dsc(capsys, "run", str(listing[0]), "--target", "h800", "--functional",
                       "--model", "examples/gemm.ds")
    assert code == 0
    assert "compiled program's rel error" in out
    assert "an edit that only reschedules keeps about the compiled program's error" in out


# Edits the verifier accepts (well-formed, no race) that compute something else.
WRONG = [
    ("a partial sum no longer accumulated", "first=k==0 block_cols", "first=1 block_cols"),
    ("the rows of A reversed", "@a[0:+1, m*64:+64, k*128:+128]",
     "@a[0:+1, (1-m)*64:+64, k*128:+128]"),
    ("the scale operands swapped", "ssa[k%4], ssb[k%4]  n=", "ssb[k%4], ssa[k%4]  n="),
]


@pytest.mark.parametrize("what, old, new", WRONG, ids=[w[0] for w in WRONG])
def test_a_wrong_edit_shows_a_large_error(listing, tmp_path, capsys, what, old, new):
    path, text = listing
    assert text.count(old) == 1
    edited = tmp_path / "g.lst"
    edited.write_text(text.replace(old, new))
    code, functional, err = _functional(capsys, edited)
    assert code == 0, err
    (output,), (baseline,) = functional["outputs"], functional["baseline"]
    assert output["rel_error"] > 0.15 and output["rel_error"] > 4 * baseline["rel_error"]


def test_a_functional_listing_run_needs_the_model(listing, capsys):
    code, out, err = dsc(capsys, "run", str(listing[0]), "--target", "h800", "--functional")
    assert code == 1 and out == ""
    assert "--functional on a listing needs the model it was compiled from" in err
    assert "--functional --model MODEL.ds" in err


def test_a_listing_of_another_model_is_refused(listing, capsys):
    code, _, err = dsc(capsys, "run", str(listing[0]), "--target", "h800", "--functional",
                       "--model", "examples/grouped.ds")
    assert code == 1
    assert "functional mode: the listing is of model gemm, not grouped" in err


def test_a_listing_whose_sizes_differ_from_the_model_is_refused(listing, capsys):
    code, _, err = _functional(capsys, listing[0], "--set", "K=1024")
    assert code == 1
    assert "functional mode: the listing's tensor 'a' is [128, 512], the model's input is " \
           "[128, 1024]" in err


def test_model_applies_only_to_a_functional_listing_run(listing, capsys):
    code, _, err = dsc(capsys, "run", str(listing[0]), "--target", "h800",
                       "--model", "examples/gemm.ds")
    assert code == 1 and "--model applies to a listing run with --functional" in err
    code, _, err = dsc(capsys, "run", "examples/gemm.ds", "--target", "h800", *SIZES,
                       "--functional", "--model", "examples/gemm.ds")
    assert code == 1 and "examples/gemm.ds is a model itself" in err


def test_an_instruction_that_cannot_execute_is_an_error_in_the_listings_terms(listing, tmp_path,
                                                                            capsys):
    """An attribute the verifier accepts but the semantics cannot use (16 column scales
    where the tile has one): one message naming the instruction, its operands and attributes,
    not Python's exception text (found by fuzzing)."""
    path, text = listing
    edited = tmp_path / "g.lst"
    edited.write_text(text.replace("block_cols=16 ", "block_cols=1 "))
    code, _, err = _functional(capsys, edited)
    assert code == 1
    assert err.startswith("error: functional mode: vec.promote in kernel matmul_0 at m=0, n=0")
    assert "cannot be executed with its operands (acc [" in err and "block_cols=1" in err
    assert "Error" not in err and "index" not in err
