"""dsc diff: two runs' JSON reports compared, kernel by kernel and layer by layer, with the
causes in words; bad inputs are one clear error."""
import json
import re

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


def test_diff_html_shows_the_same_comparison_as_the_text(capsys, tmp_path):
    gemm = ["examples/gemm.ds", "--set", "M=256"]
    a = run_json(capsys, tmp_path, "h800", *gemm, "--target", "h800")
    b = run_json(capsys, tmp_path, "h20", *gemm, "--target", "h20")
    page = tmp_path / "diff.html"
    code, out, err = dsc(capsys, "diff", a, b, "--html", str(page))
    assert code == 0, err
    html = page.read_text()
    cause = out.split("top causes:\n")[1].split("\n")[0][len("1. "):]
    assert f"<li>{cause}</li>" in html                 # the cause, word for word
    assert "<td class=\"name\">c</td><td>memory</td><td>compute</td>" in html
    blocks = html.split('<svg id="blocks"')[1].split("</svg>")[0]
    assert blocks.count("<rect") == 2                   # one block, A's bar and B's
    widths = [float(w) for w in re.findall(r'<rect x="150" y="[\d.]+" width="([\d.]+)"', blocks)]
    span = lambda path: sum(k["end_cycle"] - k["start_cycle"] for k in json.load(open(path))["kernels"])
    cycles_a, cycles_b = span(a), span(b)
    hz_a, hz_b = (json.load(open(p))["total_cycles"] / json.load(open(p))["time_s"] for p in (a, b))
    assert widths[1] == 420                             # B's is the longest bar
    assert abs(widths[0] / widths[1] - (cycles_a / hz_a) / (cycles_b / hz_b)) < 1e-3
    assert "Layers" not in html                         # no deployment, no layer table
    code, out2, _ = dsc(capsys, "diff", a, b, "--html", str(page))
    assert out2 == out and page.read_text() == html     # deterministic


def test_diff_html_refuses_an_unwritable_path_before_reading(capsys, tmp_path):
    code, out, err = dsc(capsys, "diff", "missing_a.json", "missing_b.json", "--html",
                         str(tmp_path / "no" / "such" / "dir.html"))
    assert_one_error(code, out, err)
    assert "--html" in err and "cannot read" not in err
