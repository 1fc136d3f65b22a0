"""Deployments, the user's side: the plan text (isa/deployment.py), the model's `deploy`
block, the errors of a plan that cannot be used, and the per-device capacity check with the
plan it suggests (compiler/capacity.py)."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import dsc, in_repo_root  # noqa: F401  (autouse fixture)
from deployment_helpers import (EP, ROOT, TINY, TINY_TEXT, assert_user_error, compiled_tiny,
                                small_memory_target)

from compiler.capacity import device_need
from compiler.driver import compile_model, resolve_deployment
from compiler.frontend import load_model
from compiler.passes.shard import expert_values
from isa.deployment import Deployment, DeploymentError, make_deployment, parse_plan
from isa.listing import render
from isa.target_loader import load_target


def test_parse_plan_items():
    assert parse_plan("attn=dp,moe=ep") == {"attn": "dp", "moe": "ep"}
    assert parse_plan(" attn = tp4 , ffn=dp, moe=dp ,mb=2") == {
        "attn": "tp4", "ffn": "dp", "moe": "dp", "micro_batches": 2}
    assert parse_plan("mb=2") == {"micro_batches": 2}
    assert parse_plan("") == {} and parse_plan(",,") == {}


def test_make_deployment_defaults_ffn_to_attn_and_clamps_the_node():
    dep = make_deployment(16, 8, parse_plan("attn=dp,moe=ep"))
    assert dep == Deployment(16, 8, "dp", "dp", "ep", 1)
    assert (dep.nodes, dep.replicas) == (2, 16)
    assert dep.plan_text == "attn=dp,ffn=dp,moe=ep"
    assert str(dep) == "16 devices (2 nodes x 8), attn=dp ffn=dp moe=ep"
    tp = make_deployment(8, 8, parse_plan("attn=tp4"))
    assert tp.ffn == "tp4" and tp.tp("ffn") == 4 and tp.replicas == 2
    assert make_deployment(8, 8, parse_plan("attn=tp4,ffn=dp")).ffn == "dp"
    assert make_deployment(8, 8, {"attn": "tp"}).tp("attn") == 8        # bare tp: all devices
    mb = make_deployment(4, 8, parse_plan("mb=2"))
    assert (mb.per_node, mb.micro_batches, mb.nodes) == (4, 2, 1)    # a node of 8 holds 4
    assert mb.plan_text == "attn=dp,ffn=dp,moe=ep,mb=2"
    assert str(make_deployment(1, 8, {})) == "1 device"


@pytest.mark.parametrize("text, message", [
    ("attn", "plan item 'attn': expected KEY=VALUE"),
    ("attn=dp,moe", "plan item 'moe': expected KEY=VALUE"),
    ("attn=", "plan item 'attn=': expected KEY=VALUE"),
    ("experts=ep", "unknown plan key 'experts' (expected attn, ffn, moe, mb, overlap, a2a, "
                   "load, redundant, comm_cores or launch)"),
    ("attn=dp,attn=tp2", "plan key 'attn' is given twice"),
    ("mb=1,mb=2", "plan key 'mb' is given twice"),
    ("mb=two", "plan mb=two: expected 1 or 2 micro-batches"),
])
def test_parse_plan_errors(text, message):
    with pytest.raises(DeploymentError) as info:
        parse_plan(text)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize("devices, plan, message", [
    (4, {"micro_batches": 3}, "plan mb=3: expected 1 or 2 micro-batches"),
    (4, {"attn": "ep"}, "plan attn=ep: expected one of dp, tpN (N a positive integer)"),
    (4, {"ffn": "tq2"}, "plan ffn=tq2: expected one of dp, tpN (N a positive integer)"),
    (4, {"moe": "dp2"}, "plan moe=dp2: expected one of ep, dp, tpN (N a positive integer)"),
    (4, {"moe": "ep4"}, "plan moe=ep4: expected one of ep, dp, tpN (N a positive integer)"),
    (6, {"attn": "tp4"}, "plan attn=tp4: the tensor-parallel degree must divide the 6 devices"),
    (4, {"attn": "tp8"}, "plan attn=tp8: the tensor-parallel degree must divide the 4 devices"),
    (4, {"attn": "dp", "ffn": "tp3"},
     "plan ffn=tp3: the tensor-parallel degree must divide the 4 devices"),
    (0, {}, "the device count must be a positive integer, got 0"),
    (-3, {}, "the device count must be a positive integer, got -3"),
])
def test_deployment_errors(devices, plan, message):
    with pytest.raises(DeploymentError) as info:
        make_deployment(devices, 8, plan)
    assert str(info.value) == message


def test_tp0_is_a_deployment_error_not_a_crash():
    with pytest.raises(DeploymentError, match="attn=tp0"):
        make_deployment(4, 8, {"attn": "tp0"})


def test_tp0_on_the_command_line_is_a_user_error(capsys):
    code, _, err = dsc(capsys, "compile", TINY, "--target", "h800", "--devices", "4",
                       "--plan", "attn=tp0")
    assert_user_error(code, err)
    assert "attn=tp0" in err


@pytest.mark.parametrize("argv, message", [
    (["--devices", "4", "--plan", "attn"], "error: plan item 'attn': expected KEY=VALUE"),
    (["--devices", "4", "--plan", "moe=ep,moe=dp"], "error: plan key 'moe' is given twice"),
    (["--devices", "0"], "error: the device count must be a positive integer, got 0"),
    (["--devices", "6", "--plan", "attn=tp4"],
     "error: plan attn=tp4: the tensor-parallel degree must divide the 6 devices"),
    (["--devices", "4", "--plan", "attn=tp2,ffn=tp4"],
     "error: plan attn=tp2,ffn=tp4,moe=ep: the tensor-parallel parts must share one group "
     "size"),
    (["--devices", "8", "--plan", "attn=dp,ffn=tp4,moe=tp2"],
     "error: plan attn=dp,ffn=tp4,moe=tp2: the tensor-parallel parts must share one group "
     "size"),
])
def test_bad_plans_on_the_command_line(capsys, argv, message):
    code, out, err = dsc(capsys, "compile", TINY, "--target", "h800", *argv)
    assert_user_error(code, err)
    assert out == ""
    assert err.startswith(message), err


def test_devices_need_a_target_with_a_system(capsys):
    code, _, err = dsc(capsys, "compile", TINY, "--target", "ascend910b", "--devices", "2")
    assert_user_error(code, err)
    assert "target ascend910b has no [system] table" in err


def _model_with(tmp_path: Path, block: str, name: str = "deployed") -> tuple[Path, str]:
    """tiny_moe with a deploy block before its precision block; (file, text)."""
    text = TINY_TEXT.replace("  precision {", block + "\n  precision {", 1)
    assert text != TINY_TEXT
    path = tmp_path / f"{name}.ds"
    path.write_text(text)
    return path, text


def _where(text: str, fragment: str) -> str:
    """'LINE:COL' of the first occurrence of `fragment` (1-based, as error messages count)."""
    before = text[:text.index(fragment)]
    return f"{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"


DEPLOY4 = "  deploy {\n    devices 4\n    attn dp\n    moe ep\n  }\n"


def test_deploy_block_is_read_into_the_graph(tmp_path):
    path, _ = _model_with(tmp_path, "  deploy {\n    devices 16\n    attn dp\n    moe ep\n"
                                    "    micro_batches 2\n  }\n")
    graph = load_model(str(path), {})
    assert graph.deploy == {"devices": 16, "attn": "dp", "moe": "ep", "micro_batches": 2}
    h800 = load_target("h800")
    assert resolve_deployment(graph, h800, None, None) == Deployment(16, 8, "dp", "dp", "ep", 2, launch="graph")
    # the command line wins, item by item
    assert resolve_deployment(graph, h800, 4, "moe=dp,mb=1") == Deployment(4, 4, "dp", "dp",
                                                                          "dp", 1, launch="graph")
    assert load_model(TINY, {}).deploy == {}


def test_deploy_block_selects_the_deployment_like_the_command_line(tmp_path):
    path, _ = _model_with(tmp_path, DEPLOY4)
    from_block = compile_model(str(path), "h800", {}, measure=False)
    from_cli = compile_model(TINY, "h800", {}, devices=4, plan=EP, measure=False)
    assert from_block.program.deployment == Deployment(4, 4, "dp", "dp", "ep", 1, launch="graph")
    assert from_block.program.deployment == from_cli.program.deployment
    assert render(from_block.program) == render(from_cli.program)
    assert any(n.op == "all_to_all" for n in from_block.graph.nodes())
    # --devices overrides the block's count, --plan its modes
    assert compile_model(str(path), "h800", {}, devices=2, measure=False
                         ).program.deployment == Deployment(2, 2, "dp", "dp", "ep", 1, launch="graph")
    dp = compile_model(str(path), "h800", {}, plan="moe=dp", measure=False)
    assert dp.program.deployment == Deployment(4, 4, "dp", "dp", "dp", 1, launch="graph")
    assert not any(n.op == "all_to_all" for n in dp.graph.nodes())


def test_deploy_block_in_the_listing_header(capsys, tmp_path):
    path, _ = _model_with(tmp_path, DEPLOY4)
    code, out, err = dsc(capsys, "compile", str(path), "--target", "h800")
    assert code == 0, err
    assert out.splitlines()[2] == "deploy devices=4 per_node=4 attn=dp ffn=dp moe=ep mb=1 launch=graph"


BAD_BLOCKS = [
    # (entries, the fragment the error points at, the message)
    ("devices 4\n    mode ep", "mode ep", "unknown deploy key 'mode' (did you mean 'moe'?)"),
    ("devices 4\n    devices 8", "devices 8",
     "duplicate declaration: deploy key 'devices' is given twice"),
    ("devices four", "devices four", "deploy devices four: expected an integer"),
    ("devices 4\n    attn 2", "attn 2", "deploy attn 2: expected a mode name"),
    ("devices 4\n    moe xx", "moe xx", "plan moe=xx: expected one of ep, dp, tpN"),
    ("devices 4\n    attn tp3", "attn tp3",
     "plan attn=tp3: the tensor-parallel degree must divide the 4 devices"),
    ("devices 4\n    micro_batches 3", "micro_batches 3",
     "plan mb=3: expected 1 or 2 micro-batches"),
    ("devices 0", "devices 0", "the device count must be a positive integer, got 0"),
]


@pytest.mark.parametrize("entries, culprit, message", BAD_BLOCKS)
def test_bad_deploy_entry_is_an_error_at_its_line(capsys, tmp_path, entries, culprit, message):
    path, text = _model_with(tmp_path, f"  deploy {{\n    {entries}\n  }}\n")
    code, out, err = dsc(capsys, "compile", str(path), "--target", "h800")
    assert_user_error(code, err)
    assert out == ""
    first = err.splitlines()[0]
    assert first.startswith(f"{path}:{_where(text, culprit)}: error: "), first
    assert message in first, first


def test_second_deploy_block_is_an_error(capsys, tmp_path):
    path, text = _model_with(tmp_path, DEPLOY4 + "  deploy {\n    moe dp\n  }\n")
    code, _, err = dsc(capsys, "compile", str(path), "--target", "h800")
    assert_user_error(code, err)
    second = text.index("deploy {", text.index("deploy {") + 1)
    line = text[:second].count("\n") + 1
    assert err.startswith(f"{path}:{line}:3: error: duplicate declaration: a second deploy "
                          "block"), err


def test_bad_deploy_block_as_a_process_never_shows_a_traceback(tmp_path):
    path, text = _model_with(tmp_path, "  deploy {\n    devices 4\n    attn tp3\n  }\n")
    env = {k: v for k, v in os.environ.items() if k != "DSC_DEBUG"}
    proc = subprocess.run([sys.executable, "-m", "compiler.cli.main", "compile", str(path),
                           "--target", "h800"], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{path}:{_where(text, 'attn tp3')}: error: plan attn=tp3")


PER_EXPERT = 64 * 32 * 1 + 4


ROUTED_MATRICES = 9


@pytest.mark.parametrize("devices", [2, 3, 4, 8])
def test_device_need_holds_ceil_of_the_experts(devices):
    one = device_need(compiled_tiny("h800", (), 1, EP, False).graph)
    many = device_need(compiled_tiny("h800", (), devices, EP, False).graph)
    held = math.ceil(8 / devices)
    assert one.weights - many.weights == ROUTED_MATRICES * (8 - held) * PER_EXPERT
    assert many.caches == one.caches                   # one replica's requests per device


def test_routed_weights_are_found_by_dataflow():
    graph = load_model(TINY, {})
    _, weights = expert_values(graph)
    names = sorted(graph.node(w).name for w in weights)
    assert names == [f"layer.{i}.moe.{w}" for i in (1, 2, 3) for w in ("w1", "w2", "w3")]
    assert sum(graph.node(w).type.nbytes for w in weights) == ROUTED_MATRICES * 8 * PER_EXPERT


def test_too_big_for_a_device_is_rejected_with_a_plan_that_fits(capsys, tmp_path):
    target = small_memory_target(tmp_path, 250_000)
    listing = tmp_path / "out.lst"
    code, out, err = dsc(capsys, "compile", TINY, "--target", target, "-o", str(listing))
    assert_user_error(code, err)
    assert out == "" and not listing.exists()
    first, second = err.splitlines()[:2]
    assert first.startswith("error: tiny_moe does not fit one small: it needs 0.3 MB per device")
    assert first.endswith("and a device has 0.2 MB")
    assert second.startswith("expected: the smallest plan that fits: --devices 4 --plan "
                             "attn=dp,ffn=dp,moe=ep (per device: weights 0.2 MB")
    code, out, err = dsc(capsys, "compile", TINY, "--target", target, "--devices", "4")
    assert code == 0, err
    assert out.splitlines()[2] == "deploy devices=4 per_node=4 attn=dp ffn=dp moe=ep mb=1 launch=graph"
    code, _, err = dsc(capsys, "compile", TINY, "--target", target, "--devices", "2")
    assert_user_error(code, err)
    assert err.startswith("error: tiny_moe does not fit a device of 2 x small "
                          "(attn=dp,ffn=dp,moe=ep)")
    # check_fit=False is the way around it
    compile_model(TINY, target, {}, measure=False, check_fit=False)


def test_too_big_on_run_as_well(capsys, tmp_path):
    code, _, err = dsc(capsys, "run", TINY, "--target", small_memory_target(tmp_path, 250_000))
    assert_user_error(code, err)
    assert "does not fit one small" in err and "--devices 4 --plan attn=dp,ffn=dp,moe=ep" in err


def test_no_plan_fits_when_the_replicated_weights_do_not(capsys, tmp_path):
    # 100 kB: less than the weights outside the routed experts (embed and head alone: 64 kB)
    code, _, err = dsc(capsys, "compile", TINY, "--target", small_memory_target(tmp_path, 100_000))
    assert_user_error(code, err)
    assert err.splitlines()[1] == ("expected: no plan fits: neither expert parallelism nor "
                                   "tensor parallelism over up to 64 devices brings a device "
                                   "under 0.1 MB (the largest part here: weights, 0.3 MB)")


def test_a_model_that_fits_no_plan_is_refused_without_compiling_the_plans(capsys, tmp_path,
                                                                         monkeypatch):
    """Candidates are screened from the tensor sizes; only one that could fit is compiled.
    At 4 kB even sixty-four-way tensor parallelism of the whole model cannot fit: none is."""
    import compiler.capacity as capacity
    compiled = []
    real = capacity._sharded_need
    monkeypatch.setattr(capacity, "_sharded_need",
                        lambda *args: compiled.append(args[2].plan_text) or real(*args))
    code, _, err = dsc(capsys, "compile", TINY, "--target",
                       small_memory_target(tmp_path, 4_000))
    assert_user_error(code, err)
    assert "no plan fits" in err and compiled == []


def test_the_deep_flagship_is_refused_quickly(capsys):
    """244 layers on one h800: only 64-way tensor parallelism passes the screen, and it is
    the only plan compiled (it does not fit: it cannot split every weight)."""
    import time

    import compiler.capacity as capacity
    compiled = []
    real = capacity._sharded_need
    start = time.process_time()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(capacity, "_sharded_need",
                      lambda *args: compiled.append(args[2].plan_text) or real(*args))
        code, _, err = dsc(capsys, "compile", "examples/deepseek_v3.ds", "--target", "h800",
                           "--set", "n_layers=244")
    assert_user_error(code, err)
    assert "no plan fits" in err and compiled == ["attn=tp64,ffn=tp64,moe=tp64"]
    assert time.process_time() - start < 20          # 68 s when every plan was compiled


def test_the_suggested_plan_fits(capsys, tmp_path):
    one = device_need(compiled_tiny("h800", (), 1, None, False).graph)
    two = device_need(compiled_tiny("h800", (), 2, EP, False).graph)
    estimate = two.weights + one.caches + one.activations    # what the suggestion assumes
    assert one.total > estimate
    target = small_memory_target(tmp_path, estimate, "edge")
    code, _, err = dsc(capsys, "compile", TINY, "--target", target)
    assert_user_error(code, err)
    suggested = re.search(r"--devices (\d+) --plan (\S+)", err)
    assert suggested, err
    code, _, err = dsc(capsys, "compile", TINY, "--target", target,
                       "--devices", suggested[1], "--plan", suggested[2])
    assert code == 0, err


@pytest.mark.parametrize("argv", [["--devices", "4"], ["--plan", EP],
                                  ["--devices", "16", "--plan", EP]])
def test_devices_or_plan_with_a_listing_is_an_error(capsys, tmp_path, argv):
    listing = tmp_path / "one.lst"
    listing.write_text(render(compiled_tiny("h800", (), None, None, False).program))
    code, out, err = dsc(capsys, "run", str(listing), "--target", "h800", *argv)
    assert_user_error(code, err)
    assert out == ""
    assert err.startswith("error: --set, --devices, --plan, --place and --ignore-capacity do not "
                          "apply to a listing")


def test_devices_zero_with_a_listing_is_an_error(capsys, tmp_path):
    listing = tmp_path / "one.lst"
    listing.write_text(render(compiled_tiny("h800", (), None, None, False).program))
    code, _, err = dsc(capsys, "run", str(listing), "--target", "h800", "--devices", "0")
    assert_user_error(code, err)


def test_expert_parallelism_over_more_devices_than_experts_is_refused(capsys):
    code, _, err = dsc(capsys, "compile", TINY, "--target", "h800", "--devices", "16")
    assert_user_error(code, err)
    assert "plan moe=ep over 16 devices: this MoE block has 8 routed experts" in err
    assert "expected: --devices 8 or fewer" in err


def test_a2a_mode_errors(capsys):
    code, _, err = dsc(capsys, "compile", TINY, "--target", "h800", "--devices", "4",
                       "--plan", "a2a=ring")
    assert_user_error(code, err)
    assert "plan a2a=ring: expected direct or node" in err
