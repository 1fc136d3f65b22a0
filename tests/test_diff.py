"""dsc diff: two runs' JSON reports compared, kernel by kernel and layer by layer, with the
causes in words; bad inputs are one clear error."""
import json

from cli_helpers import assert_one_error, dsc, in_repo_root  # noqa: F401

FLAGSHIP = ["examples/deepseek_v3.ds", "--devices", "144", "--plan", "attn=dp,moe=ep,mb=2"]


def run_json(capsys, tmp_path, name, *argv) -> str:
    path = str(tmp_path / f"{name}.json")
    code, _, err = dsc(capsys, "run", *argv, "--json", path)
    assert code == 0, err
    return path


def test_diff_explains_the_flagship_on_h800_and_on_h20(capsys, tmp_path):
    """H20 has more memory bandwidth than H800 (4.0 against 3.35 TB/s) but about a seventh of
    its matrix peak: the decode step gets slower, kernels that were memory- or L2-bound on
    H800 become compute-bound, and the causes say so with the peaks."""
    a = run_json(capsys, tmp_path, "h800", *FLAGSHIP, "--target", "h800")
    b = run_json(capsys, tmp_path, "h20", *FLAGSHIP, "--target", "h20")
    code, out, err = dsc(capsys, "diff", a, b)
    assert code == 0, err
    report_a, report_b = (json.load(open(p)) for p in (a, b))
    assert report_b["time_s"] > report_a["time_s"]
    assert f"B - A: +{(report_b['time_s'] - report_a['time_s']) * 1e3:,.3f} ms" in out
    causes = out.split("top causes:\n")[1].split("\n\n")[0].splitlines()
    assert len(causes) == 3 and causes[0].startswith("1. ")
    assert all("compute-bound on B" in c and "matrix peak fp8_e4m3 1,979 TFLOP/s on h800 "
               "against" in c for c in causes[:2])
    assert "memory -> compute" in out.split("bound moved:")[1]
    for block in ("attention", "MoE", "communication"):
        assert f"\n{block} " in out
    assert "exposed comm A -> B us" in out and "\n4-59 " in out


def test_a_memory_bound_gemm_moves_by_its_bandwidth(capsys, tmp_path):
    gemm = ["examples/gemm.ds", "--target", "h800", "--set", "M=256"]
    a = run_json(capsys, tmp_path, "slow", *gemm, "--target-set", "memory.bandwidth_gbs=1000")
    b = run_json(capsys, tmp_path, "fast", *gemm, "--target-set", "memory.bandwidth_gbs=2000")
    code, out, _ = dsc(capsys, "diff", a, b)
    assert code == 0
    (cause,) = out.split("top causes:\n")[1].split("\n\n")[0].splitlines()
    assert "memory-bound on both" in cause
    assert "memory bandwidth 1,000 GB/s on h800 against 2,000 on h800" in cause
    assert "bound moved: in no kernel group" in out


def test_diff_refuses_what_is_not_a_report(capsys, tmp_path):
    text = tmp_path / "text.json"
    text.write_text("model gemm\n")
    other = tmp_path / "other.json"
    other.write_text('{"model": "gemm"}')
    for path, words in ((text, "not a JSON file"), (other, "not a dsc run report (no target"),
                        (tmp_path / "missing.json", "cannot read")):
        code, out, err = dsc(capsys, "diff", str(path), str(path))
        assert_one_error(code, out, err)
        assert words in err
