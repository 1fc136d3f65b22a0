"""The static verifier on edited listings: every mistake of the edit-and-rerun workflow is
refused at its line, naming the instruction and the rule; what the compiler emits passes."""
import re

import pytest

from cli_helpers import ROOT, dsc, in_repo_root  # noqa: F401  (autouse fixture)
from compiler.cli.main import main
from compiler.driver import compile_model
from isa.check import check_program
from isa.program import walk


@pytest.fixture(scope="module")
def gemm_listing(tmp_path_factory) -> str:
    """`dsc compile examples/gemm.ds --target h800 -o x.lst`, as a user would."""
    path = tmp_path_factory.mktemp("gemm") / "x.lst"
    assert main(["compile", str(ROOT / "examples/gemm.ds"), "--target", "h800",
                 "-o", str(path)]) == 0
    return path.read_text()


def _edited(text: str, old: str, new: str) -> tuple[str, int]:
    """`text` with the one line holding `old` changed to hold `new`; that line's number."""
    lines = text.splitlines()
    numbers = [i for i, line in enumerate(lines) if old in line]
    assert len(numbers) == 1, f"'{old}' is on {len(numbers)} lines"
    lines[numbers[0]] = lines[numbers[0]].replace(old, new)
    return "\n".join(lines) + "\n", numbers[0] + 1


def _line_of(text: str, needle: str) -> int:
    return next(i + 1 for i, line in enumerate(text.splitlines()) if needle in line)


# (what, edit old -> new, the line the error names (None: the edited one), what it must say)
MISTAKES = [
    ("slot index beyond the slots", " sa[k%4], @a[", " sa[k%5], @a[", None,
     ["ld.tile sa[k%5]", "takes values 0..4", "buffer sa has 4 slots"]),
    ("box outside the tensor", "m*128:+128, k*128:+128]  mcast=2  wait(free)",
     "m*128+4000:+128, k*128:+128]  mcast=2  wait(free)", None,
     ["ld.tile @a[0:+1, m*128+4000:+128, k*128:+128]", "reaches 8095",
      "a box must lie inside its tensor"]),
    ("grid covering more tiles than the output", "grid m=32", "grid m=64", None,
     ["st.tile @c[", "the grid has m=64", "only for m < 32", "work items m=32..63 move nothing",
      "the grid covers more tiles than the data"]),
    ("grid covering fewer tiles than the output", "grid m=32", "grid m=16", "st.tile",
     ["st.tile @c[", "(grid m=16)", "elements 2048..4095 are never written",
      "every element of an output is written exactly once"]),
    ("loop no longer covering the reduction", "loop k 16", "loop k 8", "ld.tile           sa",
     ["ld.tile @a[", "(loop k=8)", "elements 1024..2047 are never read",
      "consume every element of the dimension it sweeps exactly once"]),
    ("loop running past the reduction", "loop k 16", "loop k 32", "ld.tile           sa",
     ["ld.tile @a[", "loop k runs 32 times", "iterations k=16..31 move nothing"]),
    ("token credit above the ring's slots", "token free=4", "token free=5", None,
     ["token 'free' starts with 5 credits", "the 4 slots of buffer sa it guards",
      "ld.tile (k=4) can overwrite sa[k%4] while mm.mma (k=0) is still reading it",
      "a data race"]),
    ("buffers overlapping while both are live", "x4 smem @67584", "x4 smem @0", None,
     ["buffers sa and sb share bytes 0..65535 of smem while both are live",
      "mm.mma on sa (k=15) is not ordered before ld.tile on sb (k=0)"]),
    ("buffers beyond the core's capacity", "x4 smem @67584", "x4 smem @200000", None,
     ["buffer sb (65536 bytes at 200000 in smem) ends at byte 265536",
      "past the 233472 bytes of smem on target h800", "capacity"]),
    ("a ring that starts without credit", "token free=4", "token free=0", "ld.tile           sa",
     ["ld.tile (k=0) can never start", "('free')", "the kernel deadlocks"]),
    ("more elements than the buffers hold", "n=16384 first=k==0", "n=100000 first=k==0", None,
     ["vec.promote n=100000", "more elements than its largest buffer acc [128, 128] holds"]),
    ("a matrix shape the operands cannot hold", "shape=128x128x128", "shape=128x128x256", None,
     ["mm.mma shape=128x128x256: operand sa [128, 128] cannot hold the 128 x 256 matrix"]),
    ("an output no longer stored", "st.tile           @c[0:+1, m*128:+128, n*128:+128], out",
     "; the store, removed", "kernel matmul_0(",
     ["output parameter c is never written"]),
    ("an element count that is not an integer", "vec.cvt           out, acc[(m*56+n)//132%2]  n=16384",
     "vec.cvt           out, acc[(m*56+n)//132%2]  n=1e-300", None, ["vec.cvt n=1e-300: expected an integer >= 0"]),
    ("a matrix shape that is not MxNxK", "shape=128x128x128", "shape=128x128", None,
     ["mm.mma shape=128x128: expected MxNxK, three integers >= 1"]),
    ("a matrix shape with a zero", "shape=128x128x128", "shape=0x128x128", None,
     ["mm.mma shape=0x128x128: expected MxNxK, three integers >= 1"]),
    ("a multicast wider than the target's clusters", "k*128:+128]  mcast=2  wait(free)",
     "k*128:+128]  mcast=4  wait(free)", None,
     ["ld.tile mcast=4: the loads of target h800 reach at most 2 cores at once"]),
    ("a pair split on a target without a two-core instruction", "k*128:+128]  mcast=2  wait(free)",
     "k*128:+128]  pair=2  wait(free)", None,
     ["ld.tile pair=2: target h800 has no two-core matrix instruction (no format lists pair_m)"]),
    ("a pair of zero cores", "k*128:+128]  mcast=2  wait(free)",
     "k*128:+128]  pair=0  wait(free)", None, ["ld.tile pair=0: expected an integer >= 1"]),
    ("a producer no longer waited for", "first=1  wait(loaded,part_free)",
     "first=1  wait(part_free)", None,
     ["mm.mma reads sa[k%4] (k=0) while ld.tile (k=0) may still be writing the same slot",
      "a data race"]),
]


@pytest.mark.parametrize("what, old, new, at, says", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_an_edited_listing_is_refused_at_its_line(gemm_listing, tmp_path, capsys, what, old,
                                                  new, at, says):
    text, edited = _edited(gemm_listing, old, new)
    line = edited if at is None else _line_of(text, at)
    (tmp_path / "x.lst").write_text(text)
    code, out, err = dsc(capsys, "run", str(tmp_path / "x.lst"), "--target", "h800")
    assert code == 1 and out == ""
    assert re.match(rf"^{re.escape(str(tmp_path / 'x.lst'))}:{line}: error: kernel matmul_0: ",
                    err), err
    assert err.count("\n") == 1
    for phrase in says:
        assert phrase in err


def test_the_unedited_listing_runs(gemm_listing, tmp_path, capsys):
    (tmp_path / "x.lst").write_text(gemm_listing)
    code, out, err = dsc(capsys, "run", str(tmp_path / "x.lst"), "--target", "h800")
    assert code == 0 and err == "" and "model gemm on h800" in out


# ---- a listing run on another target --------------------------------------------------------

def test_a_listing_run_on_a_target_it_does_not_fit_is_an_error(gemm_listing, tmp_path, capsys):
    text = gemm_listing.replace("  mcast=2", "")          # a100 has no multicast either
    (tmp_path / "x.lst").write_text(text)
    code, _, err = dsc(capsys, "run", str(tmp_path / "x.lst"), "--target", "a100")
    line = _line_of(text, "mm.mma")
    assert code == 1
    assert err.startswith(f"{tmp_path / 'x.lst'}:{line}: error: kernel matmul_0: mm.mma "
                          "fmt=fp8_e4m3: the matrix unit of target a100 has no fp8_e4m3 format")
    assert err.rstrip().endswith("(the listing was compiled for target h800, and is checked "
                                 "here against a100)")


def test_a_listing_valid_on_both_targets_runs_with_a_warning(gemm_listing, tmp_path, capsys):
    (tmp_path / "x.lst").write_text(gemm_listing)
    code, out, err = dsc(capsys, "run", str(tmp_path / "x.lst"), "--target", "h20")
    assert code == 0 and "model gemm on h20" in out
    assert err == (f"{tmp_path / 'x.lst'}:1: warning: the listing was compiled for target h800 "
                   "and runs on h20: it passes h20's checks, but its tiles, stages and buffer "
                   "placement were chosen for h800\n")


# ---- what the compiler emits passes ---------------------------------------------------------

DEPLOYED = [
    ("deepseek_v3_prefill", "h800", {"n_layers": "4"}, {}),
    ("tiny_moe", "h800", {}, {"devices": 4, "plan": "attn=dp,moe=ep"}),
    ("tiny_moe", "h800", {}, {"devices": 4, "plan": "attn=dp,moe=ep,mb=2"}),
    ("tiny_moe", "b200", {}, {"devices": 4, "plan": "attn=dp,moe=ep", "die_mode": "numa"}),
    ("llama3_8b", "h800", {"n_layers": "2"}, {"devices": 2, "plan": "attn=tp2,ffn=tp2"}),
    ("deepseek_v3", "h800", {"n_layers": "4"}, {"devices": 16}),
    ("deepseek_v3", "b200", {"n_layers": "4"}, {"die_mode": "numa"}),
]


@pytest.mark.parametrize("example, target, sets, deploy", DEPLOYED,
                         ids=[f"{e}-{t}-{'-'.join(map(str, d.values()))}"
                              for e, t, _, d in DEPLOYED])
def test_deployed_and_prefill_programs_pass_the_verifier(example, target, sets, deploy):
    """Every example on every target is read back and verified in test_assembler.py; these
    are the deployed and prefill forms, checked as compiled (not read from a listing)."""
    compiled = compile_model(f"examples/{example}.ds", target, sets, measure=False, **deploy)
    check_program(compiled.program, compiled.target)
    assert any(walk(k.body) for k in compiled.program.kernels)
