"""The Python API (compiler/api.py), --target-set and --version: the API's figures are the
command's, target overrides are validated as the file is, and a session that shares compiled
programs gives the figures fresh runs give."""
import json
import tomllib

import pytest

from cli_helpers import ROOT, assert_one_error, dsc, in_repo_root  # noqa: F401
from compiler import api
from compiler.cli.main import main
from compiler.errors import DscError
from isa.target_loader import TargetError

GEMM = "examples/gemm.ds"


def test_the_api_and_the_command_give_one_report(capsys):
    code, out, _ = dsc(capsys, "run", GEMM, "--target", "h800", "--set", "M=256",
                       "--target-set", "memory.bandwidth_gbs=1000", "--json", "-")
    assert code == 0
    report = api.run(GEMM, "h800", sets={"M": 256}, target_set={"memory.bandwidth_gbs": 1000})
    from_cli = json.loads(out)
    provenance = from_cli.pop("provenance")
    assert report.to_dict() == from_cli
    assert provenance["command"] == ("dsc run examples/gemm.ds --target h800 --set M=256 "
                                     "--target-set memory.bandwidth_gbs=1000")
    assert provenance["target_file"] == "h800 (builtin)"
    assert provenance["target_overrides"] == {"memory.bandwidth_gbs": 1000}
    assert len(provenance["target_sha256"]) == 64
    assert report.row()["total_cycles"] == json.loads(out)["total_cycles"]
    (kernel,) = report.kernels
    assert kernel.bound == "memory" and kernel.row()["bound"] == "memory"
    assert kernel.time_us == pytest.approx(report.time_s * 1e6 - report.target.launch_overhead_us)


def test_a_memory_bound_gemm_follows_the_overridden_bandwidth():
    """M=256 streams 14.7 MB of FP8 weights: at 500 and 1000 GB/s the memory time dominates
    (at least the weights' bytes over the bandwidth), so halving the bandwidth nearly doubles
    the time."""
    slow = api.run(GEMM, "h800", sets={"M": 256}, target_set={"memory.bandwidth_gbs": 500})
    fast = api.run(GEMM, "h800", sets={"M": 256}, target_set={"memory.bandwidth_gbs": 1000})
    weights = 2048 * 7168                               # fp8: one byte each
    assert slow.kernels[0].bytes >= weights
    seconds_at_500 = weights / 500e9
    assert slow.time_s >= seconds_at_500
    assert 1.7 < slow.time_s / fast.time_s < 2.05


@pytest.mark.parametrize("override, words", [
    ("memory.bandwidth_gbs=fast", ["the override memory.bandwidth_gbs = 'fast'", "expected float"]),
    ("memory.bandwidth_gbs=0", ["expected a value >= 0.001"]),
    ("memory.bandwith_gbs=3000", ["unknown key (did you mean 'bandwidth_gbs'?)"]),
    ("clock_ghz.boost=2", ["clock_ghz is not a table"]),
    ("memory.bandwidth_gbs", ["expects KEY=VALUE"]),
    ("l2.keeps=sometimes", ["expected one of lru, nothing"]),
])
def test_a_bad_target_override_is_one_clear_error(capsys, override, words):
    code, out, err = dsc(capsys, "run", GEMM, "--target", "h800", "--target-set", override)
    assert_one_error(code, out, err)
    for word in words:
        assert word in err


def test_a_bare_word_override_is_a_string_and_a_number_a_number():
    target = api.load_target("h800", {"l2.keeps": "nothing"})
    assert target.l2.keeps == "nothing"
    code = main(["run", GEMM, "--target", "h800", "--target-set",
                                    "l2.keeps=nothing", "--target-set", "clock_ghz=1.5"])
    assert code == 0
    assert api.load_target("h800", {"clock_ghz": 1.5}).clock_ghz == 1.5


def test_version_is_the_package_version(capsys):
    code, out, _ = dsc(capsys, "--version")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert code == 0 and out == f"dsc {version}\n"


def test_a_session_shares_programs_and_keeps_fresh_figures():
    """Bandwidth moves the GEMM's tile choice (stages, cluster): the session re-decides every
    point, reuses a lowered program only where the decisions match, and every point's figures
    are a fresh run's."""
    session = api.Session()
    tiles = set()
    for bandwidth in (500, 1000, 2000, 3350, 5000):
        options = dict(sets={"M": 256}, target_set={"memory.bandwidth_gbs": bandwidth})
        shared = session.run(GEMM, "h800", **options)
        fresh_compile = api.compile(GEMM, "h800", **options)
        fresh = api.simulate(fresh_compile)
        tiles.add(next(n.sched_get("tile") for n in fresh_compile.graph.nodes()
                       if n.sched_get("tile")))
        assert shared.total_cycles == fresh.total_cycles
        assert shared.kernel_rows() == fresh.kernel_rows()
    assert len(tiles) > 1                                  # decisions did differ
    assert session.memo.hits["model"] == 4                 # one front end
    assert 0 < session.memo.hits["program"] < 4            # some programs, not every one


def test_api_errors_are_the_commands_messages(tmp_path):
    with pytest.raises(DscError, match="bad --set: unknown name 'Q'"):
        api.run(GEMM, "h800", sets={"Q": 3})
    with pytest.raises(TargetError, match="unknown target 'h8000'"):
        api.run(GEMM, "h8000")
    with pytest.raises(TypeError):
        api.compile(GEMM, api.load_target("h800"), target_set={"clock_ghz": 1.0})
