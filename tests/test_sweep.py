"""dsc sweep: the sweep file's points, a tidy table whose figures are fresh runs', charts that
fit the axes, failed points recorded, the same table from one worker, a process pool and a
Dask LocalCluster."""
import csv
import io
from pathlib import Path

import pytest

from cli_helpers import ROOT, assert_one_error, dsc, in_repo_root  # noqa: F401
from compiler import api
from compiler.errors import DscError
from compiler.sweep.engine import run_sweep
from compiler.sweep.spec import load_sweep

GEMM_SWEEP = """
model = "{model}"
target = "h800"
metrics = ["time_s", "total_cycles", "bound", "tflops"]

[axes]
"target.memory.bandwidth_gbs" = [500, 1000, 4000]
"set.M" = [128, 256]
"""


def sweep_file(tmp_path, text=GEMM_SWEEP) -> Path:
    path = tmp_path / "gemm_sweep.toml"
    path.write_text(text.replace("{model}", str(ROOT / "examples" / "gemm.ds")))
    return path


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_a_sweep_writes_fresh_runs_figures_and_charts(capsys, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = dsc(capsys, "sweep", str(sweep_file(tmp_path)), "-o", str(out),
                            "--workers", "1")
    assert code == 0, err
    assert "6 points: wrote" in stdout
    assert "\rsweep" not in err                      # no progress line off a terminal
    rows = read_csv(out / "gemm_sweep.csv")
    assert list(rows[0]) == ["point", "target.memory.bandwidth_gbs", "set.M", "time_s",
                             "total_cycles", "bound", "tflops", "status", "error"]
    assert [(r["target.memory.bandwidth_gbs"], r["set.M"]) for r in rows] == \
        [(bw, m) for bw in ("500", "1000", "4000") for m in ("128", "256")]
    for row in rows:
        fresh = api.run("examples/gemm.ds", "h800", sets={"M": int(row["set.M"])},
                        target_set={"memory.bandwidth_gbs": int(row["target.memory.bandwidth_gbs"])})
        assert int(row["total_cycles"]) == fresh.total_cycles
        assert float(row["time_s"]) == fresh.time_s
        assert row["status"] == "ok" and row["error"] == ""
    assert rows[0]["bound"] == "memory"            # M=128 at 500 GB/s streams its weights
    page = (out / "gemm_sweep.html").read_text()
    assert page.count("<svg") == 3 * 2 + 3          # 3 numeric metrics x 2 axes, 3 heatmaps
    assert "time_s by target.memory.bandwidth_gbs" in page and "set.M=256" in page
    assert "Pareto" not in page                     # no tokens/s metric asked for


def test_the_flagship_example_parses_to_its_cross_product():
    sweep = load_sweep(str(ROOT / "examples/sweeps/bandwidth.toml"))
    assert sweep.axes == ("target.memory.bandwidth_gbs", "set.weights")
    assert len(sweep.points) == 4 * 2
    first = sweep.points[0]
    assert Path(first.model).resolve() == ROOT / "examples/deepseek_v3.ds"
    assert first.devices == 144 and first.plan == "attn=dp,moe=ep,mb=2"
    assert dict(first.target_set) == {"memory.bandwidth_gbs": 2000}
    assert dict(first.sets) == {"weights": "fp8_e4m3"}


def test_a_point_list_and_a_failed_point(capsys, tmp_path):
    text = f"""
model = "{ROOT / 'examples/gemm.ds'}"
target = "h800"
set = {{ M = 128 }}
metrics = ["time_s"]

[[points]]
"target.memory.bandwidth_gbs" = 1000

[[points]]
"target.memory.bandwidth_gbs" = -5

[[points]]
target = "a100"
"""
    out = tmp_path / "o"
    code, stdout, err = dsc(capsys, "sweep", str(sweep_file(tmp_path, text)), "-o", str(out),
                            "--workers", "1")
    assert code == 0
    rows = read_csv(out / "gemm_sweep.csv")
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    assert "the override memory.bandwidth_gbs = -5: expected a value >= 0.001" in rows[1]["error"]
    assert "point 1 failed" in err and "(1 failed)" in stdout
    assert rows[2]["target"] == "a100" and rows[0]["target"] == "h800"
    assert rows[2]["target.memory.bandwidth_gbs"] == ""


@pytest.mark.parametrize("text, words", [
    ('model = "m.ds"\ntarget = "h800"\nmetric = ["time_s"]\n[axes]\nplan = ["attn=dp"]',
     "unknown key 'metric' (did you mean 'metrics'?)"),
    ('model = "m.ds"\ntarget = "h800"\nmetrics = ["time"]\n[axes]\nplan = ["attn=dp"]',
     "unknown metric 'time'"),
    ('model = "m.ds"\ntarget = "h800"\n[axes]\nplan = ["attn=dp"]\n[[points]]\nplan = "x"',
     "not both"),
    ('model = "m.ds"\ntarget = "h800"\n[axes]\nbandwidth = [1, 2]', "unknown axis 'bandwidth'"),
    ('model = "m.ds"\ntarget = "h800"\n[axes]\nplan = []', "expected a non-empty list"),
    ('model = "m.ds"\ntarget = "h800"\n[axes]\ndevices = ["four"]', "'devices' = 'four': expected int"),
    ('target = "h800"\n[axes]\nplan = ["attn=dp"]', "'model' names the .ds file"),
    ('model = "m.ds"\n[axes', "not valid TOML"),
])
def test_a_bad_sweep_file_is_one_clear_error(capsys, tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, out, err = dsc(capsys, "sweep", str(path), "-o", str(tmp_path))
    assert_one_error(code, out, err)
    assert words in err and str(path) in err


def test_every_point_failing_is_an_error(capsys, tmp_path):
    text = f'model = "{ROOT / "examples/gemm.ds"}"\ntarget = "h800"\n[axes]\n"set.Q" = [1, 2]\n'
    code, out, err = dsc(capsys, "sweep", str(sweep_file(tmp_path, text)), "-o", str(tmp_path),
                         "--workers", "1")
    assert_one_error(code, out, err)
    assert "every point" in err and "unknown name 'Q'" in err
    assert not (tmp_path / "gemm_sweep.csv").exists()


def test_a_process_pool_gives_the_table_one_worker_gives(tmp_path):
    sweep = load_sweep(str(sweep_file(tmp_path)))
    seen = []
    alone = run_sweep(sweep, "local", workers=1)
    pooled = run_sweep(sweep, "local", workers=2, progress=lambda *a: seen.append(a))
    assert pooled == alone
    assert seen[-1] == (6, 6, 0) and len(seen) > 1


def test_the_sweep_runs_on_a_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip(
        "dask.distributed", reason="Dask is not installed: pip install -e '.[cluster]'")
    sweep = load_sweep(str(sweep_file(tmp_path)))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        on_dask = run_sweep(sweep, "dask", workers=1, scheduler=cluster.scheduler_address)
    assert on_dask == run_sweep(sweep, "local", workers=1)


def test_engine_options_are_checked(tmp_path):
    sweep = load_sweep(str(sweep_file(tmp_path)))
    with pytest.raises(DscError, match="goes with --engine dask"):
        run_sweep(sweep, "local", scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(DscError, match="at least 1"):
        run_sweep(sweep, "local", workers=-1)
