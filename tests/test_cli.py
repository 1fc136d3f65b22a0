"""The `dsc` command line: outputs, the JSON contracts, determinism, and error handling.

Most commands run in-process through `compiler.cli.main.main(argv)`; a few run as a separate
process to check the real exit status and that no Python traceback ever reaches stderr.
Exit status: 0 on success, 1 on bad input (one message), 2 on bad usage.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import ERROR_LINE, assert_one_error, dsc, in_repo_root  # noqa: F401  (autouse fixture)

from compiler.driver import compile_model

from compiler.cli.main import main
from isa.target_loader import BUILTIN_DIR

ROOT = Path(__file__).resolve().parent.parent
GEMM = "examples/gemm.ds"
DEEPSEEK = "examples/deepseek_v3.ds"
SMALL_DEEPSEEK = ["--set", "n_layers=2", "--set", "n_dense=1"]   # one dense + one MoE layer
H800_TEXT = (BUILTIN_DIR / "h800.toml").read_text()

BAD_MODEL = """\
model bad {
  size M = 4
  input a: bf16[M, M]
  output c: bf16[M, M] = a @@ a
}
"""


def dsc_process(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.pop("DSC_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "compiler.cli.main", *argv], cwd=ROOT,
                          capture_output=True, text=True, env=full_env, timeout=120)


# -- compile ---------------------------------------------------------------------------------


def test_compile_prints_listing(capsys):
    code, out, err = dsc(capsys, "compile", GEMM, "--target", "h800")
    assert code == 0, err
    assert out.startswith("; dsc listing")
    assert "model gemm" in out.splitlines()[0] and "h800" in out.splitlines()[0]
    assert "kernel matmul_0" in out
    assert "mm.mma" in out
    assert "tile " in out
    assert err == ""                        # gemm fits easily: no capacity warning


def test_compile_emit_isa_is_the_default(capsys):
    _, default, _ = dsc(capsys, "compile", GEMM, "--target", "h800")
    code, isa, _ = dsc(capsys, "compile", GEMM, "--target", "h800", "--emit", "isa")
    assert code == 0
    assert isa == default


def test_compile_emit_ir(capsys):
    from compiler.frontend import load_model
    from compiler.ir.text import parse_graph
    code, out, err = dsc(capsys, "compile", GEMM, "--target", "h800", "--emit", "ir")
    assert code == 0, err
    assert out.startswith("# dsc ir")
    assert "model gemm" in out
    assert re.search(r"^%c = matmul\(%a, %b\) : bf16\[4096,7168\]", out, re.M)
    assert "mm.mma" not in out
    # The IR after the passes, which prints and parses back to the same graph.
    assert parse_graph(out) == compile_model(GEMM, "h800", {}).graph


def test_compile_output_file(capsys, tmp_path):
    _, listing, _ = dsc(capsys, "compile", GEMM, "--target", "h800")
    target = tmp_path / "gemm.lst"
    code, out, err = dsc(capsys, "compile", GEMM, "--target", "h800", "-o", str(target))
    assert code == 0, err
    assert out == ""
    assert target.read_text() == listing
    assert list(tmp_path.glob(".dsc-*.tmp")) == []


def test_compile_failure_leaves_no_output_file(capsys, tmp_path):
    model = tmp_path / "bad.ds"
    model.write_text(BAD_MODEL)
    target = tmp_path / "bad.lst"
    code, out, err = dsc(capsys, "compile", str(model), "--target", "h800", "-o", str(target))
    assert_one_error(code, out, err)
    assert not target.exists()
    assert list(tmp_path.glob(".dsc-*.tmp")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ds"]


def test_compile_failure_keeps_an_existing_output_file(capsys, tmp_path):
    model = tmp_path / "bad.ds"
    model.write_text(BAD_MODEL)
    target = tmp_path / "old.lst"
    target.write_text("previous contents\n")
    code, out, err = dsc(capsys, "compile", str(model), "--target", "h800", "-o", str(target))
    assert_one_error(code, out, err)
    assert target.read_text() == "previous contents\n"
    assert list(tmp_path.glob(".dsc-*.tmp")) == []


def test_compile_output_into_missing_directory(capsys, tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "out.lst"
    code, out, err = dsc(capsys, "compile", GEMM, "--target", "h800", "-o", str(target))
    assert_one_error(code, out, err)
    assert str(target) in err
    assert not target.parent.exists()


def test_compile_with_user_target_file(capsys, tmp_path):
    path = tmp_path / "mychip.toml"
    path.write_text(H800_TEXT.replace('name = "h800"', 'name = "mychip"'))
    code, out, err = dsc(capsys, "compile", GEMM, "--target", str(path))
    assert code == 0, err
    assert "target mychip" in out.splitlines()[0]


# -- run and its JSON report -----------------------------------------------------------------

CONTRACT_RUN = {"model": str, "target": str, "total_cycles": int, "time_s": float,
                "flops": float, "bytes_offchip": float, "kernels": list, "units": dict}
CONTRACT_KERNEL = {"name": str, "start_cycle": int, "end_cycle": int, "flops": float,
                   "bytes": float, "bound": str}


def is_type(value, kind) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_run_report(report: dict, model: str, target: str) -> None:
    for key, kind in CONTRACT_RUN.items():
        assert key in report, key
        assert is_type(report[key], kind), (key, report[key])
    assert report["model"] == model
    assert report["target"] == target
    assert report["kernels"], "no kernels"
    for k in report["kernels"]:
        for key, kind in CONTRACT_KERNEL.items():
            assert key in k, key
            assert is_type(k[key], kind), (key, k[key])
        assert 0 <= k["start_cycle"] <= k["end_cycle"] <= report["total_cycles"]
        assert k["bound"]
    starts = [k["start_cycle"] for k in report["kernels"]]
    assert starts == sorted(starts)
    assert report["total_cycles"] == max(k["end_cycle"] for k in report["kernels"])
    assert report["flops"] == pytest.approx(sum(k["flops"] for k in report["kernels"]))
    assert report["bytes_offchip"] == pytest.approx(sum(k["bytes"] for k in report["kernels"]))
    assert report["units"]
    for name, unit in report["units"].items():
        assert isinstance(name, str)
        assert set(unit) >= {"busy_cycles", "utilization"}
        assert is_type(unit["busy_cycles"], int), (name, unit)
        assert is_type(unit["utilization"], float), (name, unit)
        assert 0 <= unit["busy_cycles"] <= report["total_cycles"]
        assert 0.0 <= unit["utilization"] <= 1.0


def test_run_json_to_stdout(capsys):
    code, out, err = dsc(capsys, "run", GEMM, "--target", "h800", "--json", "-")
    assert code == 0, err
    report = json.loads(out)                   # stdout is the JSON and nothing else
    check_run_report(report, "gemm", "h800")
    # gemm.ds: M=4096, N=7168, K=2048, one matmul
    M, N, K = 4096, 7168, 2048
    assert report["flops"] == 2 * M * N * K
    assert [k["flops"] for k in report["kernels"]] == [2 * M * N * K]
    # at least the compulsory traffic: read a and b with their fp32 scales, write c in bf16
    a_bytes = M * K + M * (K // 128) * 4
    b_bytes = K * N + (K // 128) * (N // 128) * 4
    c_bytes = M * N * 2
    assert report["bytes_offchip"] >= a_bytes + b_bytes + c_bytes
    clock_hz = 1.6e9                           # h800's sustained clock
    assert report["time_s"] == pytest.approx(report["total_cycles"] / clock_hz, rel=1e-5)
    # the single kernel starts after one stream launch (2.5 us at 1.6 GHz)
    assert report["kernels"][0]["start_cycle"] == round(2.5e-6 * clock_hz)
    assert {"mm", "ld", "st", "vec"} <= set(report["units"])


def test_run_json_to_file_writes_the_same_report(capsys, tmp_path):
    _, stdout_json, _ = dsc(capsys, "run", GEMM, "--target", "h800", "--json", "-")
    path = tmp_path / "report.json"
    code, out, err = dsc(capsys, "run", GEMM, "--target", "h800", "--json", str(path))
    assert code == 0, err
    assert path.read_text() == stdout_json          # provenance leaves output files out
    assert out.strip() and not out.lstrip().startswith("{")     # the text summary instead
    assert "gemm" in out and "h800" in out
    assert list(tmp_path.glob(".dsc-*.tmp")) == []


def test_run_small_deepseek_json(capsys):
    code, out, err = dsc(capsys, "run", DEEPSEEK, "--target", "h800", *SMALL_DEEPSEEK,
                         "--json", "-")
    assert code == 0, err
    report = json.loads(out)
    check_run_report(report, "deepseek_v3", "h800")
    assert len(report["kernels"]) > 10
    for before, after in zip(report["kernels"], report["kernels"][1:]):
        assert after["start_cycle"] >= before["end_cycle"]


def test_run_json_is_deterministic(capsys):
    argv = ("run", GEMM, "--target", "h800", "--json", "-")
    _, first, _ = dsc(capsys, *argv)
    _, second, _ = dsc(capsys, *argv)
    assert first == second
    proc = dsc_process(*argv, env={"PYTHONHASHSEED": "12345"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == first


def test_listing_is_deterministic(capsys):
    argv = ("compile", DEEPSEEK, "--target", "h800", *SMALL_DEEPSEEK)
    code, first, err = dsc(capsys, *argv)
    assert code == 0, err
    _, second, _ = dsc(capsys, *argv)
    assert first == second
    proc = dsc_process(*argv, env={"PYTHONHASHSEED": "4242"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == first


# -- stats -----------------------------------------------------------------------------------


def test_stats_json_full_deepseek(capsys):
    code, out, err = dsc(capsys, "stats", DEEPSEEK, "--json")
    assert code == 0, err
    stats = json.loads(out)
    kinds = {"params": int, "active_params": int, "flops_per_token": float,
             "kv_cache_bytes_per_token": int, "kv_cache_bytes_per_token_exact": float,
             "weight_bytes": int}
    assert set(stats) == set(kinds)
    for key, kind in kinds.items():
        assert is_type(stats[key], kind), (key, stats[key])
    assert stats["params"] > stats["active_params"] > 0
    assert stats["kv_cache_bytes_per_token"] == stats["kv_cache_bytes_per_token_exact"] == 70272
    assert stats["flops_per_token"] > 2 * stats["active_params"] * 0.9


def test_stats_text(capsys):
    code, out, err = dsc(capsys, "stats", GEMM)
    assert code == 0, err
    assert "14,680,064" in out                 # 2048 x 7168 parameters
    assert "4096 tokens" in out


# -- targets ---------------------------------------------------------------------------------


def test_targets_lists_h800(capsys):
    code, out, err = dsc(capsys, "targets")
    assert code == 0, err
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert "h800" in names


def test_targets_show_prints_the_toml(capsys):
    code, out, err = dsc(capsys, "targets", "show", "h800")
    assert code == 0, err
    assert out.startswith(H800_TEXT)               # the file, then the derived figures


def test_targets_show_user_file(capsys, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(H800_TEXT.replace('name = "h800"', 'name = "mine"'))
    code, out, err = dsc(capsys, "targets", "show", str(path))
    assert code == 0, err
    assert out.startswith(path.read_text())


def test_targets_show_broken_file(capsys, tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(H800_TEXT.replace("cores_per_die = 132", 'cores_per_die = "many"'))
    code, out, err = dsc(capsys, "targets", "show", str(path))
    assert_one_error(code, out, err)
    assert str(path) in err and "chip.cores_per_die" in err


# -- bad input: status 1, one message ---------------------------------------------------------


def test_missing_model_file(capsys, tmp_path):
    missing = tmp_path / "nowhere.ds"
    code, out, err = dsc(capsys, "compile", str(missing), "--target", "h800")
    assert_one_error(code, out, err)
    assert "nowhere.ds" in err


def test_malformed_model_shows_position_and_caret(capsys, tmp_path):
    model = tmp_path / "bad.ds"
    model.write_text(BAD_MODEL)
    code, out, err = dsc(capsys, "compile", str(model), "--target", "h800")
    assert_one_error(code, out, err)
    line_text = "  output c: bf16[M, M] = a @@ a"
    col = line_text.index("@@") + 2              # the second '@' is unexpected
    lines = err.splitlines()
    assert lines[0].startswith(f"{model}:4:{col}: error:"), err
    source = next(i for i, l in enumerate(lines) if l.endswith(line_text))
    caret = lines[source + 1]
    assert caret.strip().endswith("^")
    assert caret.index("|") == lines[source].index("|")
    assert caret.index("^") == lines[source].index("@@") + 1     # under the second '@'
    assert "expected" in err


def test_unknown_target(capsys):
    code, out, err = dsc(capsys, "compile", GEMM, "--target", "h80")
    assert_one_error(code, out, err)
    assert "h80" in err and "did you mean 'h800'" in err


def test_broken_target_file(capsys, tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(H800_TEXT.replace("latency_cycles = 260", "latency_cycles = -1"))
    code, out, err = dsc(capsys, "compile", GEMM, "--target", str(path))
    assert_one_error(code, out, err)
    assert str(path) in err and "l2.latency_cycles" in err


def test_broken_target_file_toml_syntax(capsys, tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(H800_TEXT + "\n[memory\n")
    code, out, err = dsc(capsys, "run", GEMM, "--target", str(path), "--json", "-")
    assert_one_error(code, out, err)
    assert str(path) in err


@pytest.mark.parametrize("setting, words", [
    ("nope=3", ["nope", "unknown name"]),
    ("batch=abc", ["batch", "abc", "not an integer"]),
    ("weights=fp7", ["fp7", "weights"]),
    ("batch", ["NAME=VALUE", "batch"]),
])
def test_bad_set(capsys, setting, words):
    code, out, err = dsc(capsys, "compile", DEEPSEEK, "--target", "h800", "--set", setting)
    assert_one_error(code, out, err)
    for word in words:
        assert word in err, err


def test_bad_set_on_stats(capsys):
    code, out, err = dsc(capsys, "stats", GEMM, "--set", "M=abc", "--json")
    assert_one_error(code, out, err)
    assert "M=abc" in err


def test_non_utf8_model_file(capsys, tmp_path):
    model = tmp_path / "latin1.ds"
    model.write_bytes(b"model x {\n  size M = 4  # \xe9\n}\n")
    code, out, err = dsc(capsys, "compile", str(model), "--target", "h800")
    assert_one_error(code, out, err)
    assert "latin1.ds" in err


# -- usage errors: status 2 ------------------------------------------------------------------


def test_usage_errors_in_process(capsys):
    code, _, err = dsc(capsys, "frobnicate")
    assert code == 2 and "usage" in err
    code, _, err = dsc(capsys, "compile", GEMM)
    assert code == 2 and "--target" in err


# -- capacity -----------------------------------------------------------------------------------


def test_full_deepseek_on_one_h800_is_rejected_with_a_plan_that_fits(capsys, tmp_path):
    listing = tmp_path / "deepseek.lst"
    code, out, err = dsc(capsys, "compile", DEEPSEEK, "--target", "h800", "-o", str(listing))
    assert code == 1 and out == "" and not listing.exists()
    first, second = err.splitlines()[:2]
    assert first.startswith("error: deepseek_v3 does not fit one h800: it needs 710.0 GB per "
                            "device (weights 673.2 GB, KV cache 36.9 GB, activations ")
    assert first.endswith("and a device has 84.9 GB")
    assert second.startswith("expected: the smallest plan that fits: --devices 24 --plan "
                             "attn=dp,ffn=dp,moe=ep (per device: weights 47.2 GB")
    assert "Traceback" not in err


def test_the_suggested_plan_fits_and_the_one_before_does_not():
    from compiler.errors import DscError
    compiled = compile_model(DEEPSEEK, "h800", {}, measure=False, devices=24)
    assert compiled.program.deployment.devices == 24
    with pytest.raises(DscError, match="does not fit a device of 16 x h800"):
        compile_model(DEEPSEEK, "h800", {}, measure=False, devices=16)


def test_no_capacity_error_when_it_fits(capsys):
    code, out, err = dsc(capsys, "compile", DEEPSEEK, "--target", "h800", *SMALL_DEEPSEEK)
    assert code == 0, err
    assert "error" not in err                      # pass notes may still be shown
    assert out.startswith("; dsc listing")


# -- as a separate process: real exit codes, never a traceback --------------------------------


@pytest.mark.parametrize("argv, status", [
    (["targets"], 0),
    (["stats", GEMM, "--json"], 0),
    (["compile", "missing.ds", "--target", "h800"], 1),
    (["compile", GEMM, "--target", "h80"], 1),
    (["compile", GEMM, "--target", "h800", "--set", "M=abc"], 1),
    (["compile", GEMM, "--target", "h800", "--set", "M"], 1),
    (["frobnicate"], 2),
    (["compile", GEMM], 2),
    (["run", GEMM], 2),
])
def test_process_exit_status(argv, status):
    proc = dsc_process(*argv)
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    if status == 1:
        assert proc.stdout == ""
        assert len(ERROR_LINE.findall(proc.stderr)) == 1, proc.stderr
    if status == 2:
        assert "usage" in proc.stderr


def test_process_malformed_model(tmp_path):
    model = tmp_path / "bad.ds"
    model.write_text(BAD_MODEL)
    proc = dsc_process("compile", str(model), "--target", "h800", "-o", str(tmp_path / "x.lst"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"{model}:4:" in proc.stderr and "^" in proc.stderr
    assert not (tmp_path / "x.lst").exists()


def test_console_script():
    script = Path(sys.executable).parent / "dsc"
    if not script.exists():
        pytest.skip("the dsc console script is not installed next to this interpreter")
    proc = subprocess.run([str(script), "targets", "show", "h800"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(H800_TEXT)
    proc = subprocess.run([str(script), "compile", "missing.ds", "--target", "h800"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "missing.ds" in proc.stderr


def test_a_listing_that_deadlocks_is_an_error_naming_the_tokens(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    listing = tmp_path / "gemm.lst"
    assert main(["compile", "examples/gemm.ds", "--target", "h800", "-o", str(listing)]) == 0
    text = listing.read_text()
    assert "token free=4 " in text
    listing.write_text(text.replace("token free=4 ", "token free=0 "))
    capsys.readouterr()
    assert main(["run", str(listing), "--target", "h800"]) == 1
    err = capsys.readouterr().err                 # found by the verifier, before the run
    line = next(i + 1 for i, text in enumerate(text.splitlines()) if "ld.tile           sa" in text)
    assert err.startswith(f"{listing}:{line}: error: kernel matmul_0: ld.tile (k=0) can never "
                          "start: the credit it waits for ('free')")
    assert "the kernel deadlocks" in err
    assert "Traceback" not in err and "internal error" not in err


def test_print_after_shows_each_pass_in_pipeline_order(capsys, monkeypatch):
    """Graph passes print IR text; program passes (plan, place) print the listing, with the
    buffer offsets plan chose."""
    monkeypatch.chdir(ROOT)
    assert main(["compile", "examples/gemm.ds", "--target", "h800", "--print-after", "place",
                 "--print-after", "fuse", "--print-after", "plan"]) == 0
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if line.startswith("# after ")]
    assert heads == ["# after fuse", "# after plan", "# after place"]
    fuse = out.split("# after plan")[0]
    assert "sched {kernel=" in fuse and "tile=" not in fuse          # tile runs after fuse
    plan = out.split("# after plan")[1].split("# after place")[0]
    assert plan.startswith("\n; dsc listing: model gemm, target h800")
    assert re.search(r"buffer sa: fp8_e4m3\[128,128\] x4 smem @\d+", plan)


def test_a_reduction_over_an_inner_dim_is_refused_where_it_is_written(capsys, tmp_path):
    model = tmp_path / "inner.ds"
    model.write_text("model inner {\n  input x: bf16[4, 8, 128]\n  output y = sum(x, axis=-2)\n}\n")
    code, out, err = dsc(capsys, "compile", str(model), "--target", "h800")
    assert_one_error(code, out, err)
    assert err.startswith(f"{model}:3:14: error: cannot lower 'y' for target h800: sum over dim "
                          "-2 of [4, 8, 128]: the vector unit reduces along the last dim")
