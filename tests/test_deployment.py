"""Multi-device deployments (expert parallelism): the plan text, the model's `deploy` block,
the shard pass, the all-to-all kernels and their hand-computed time, listings that carry a
deployment, the per-device capacity check, and the schedule of the link streams.

Everything runs on examples/tiny_moe.ds (8 routed experts, 3 MoE layers), shrunk or grown
with --set where a test needs it, so the whole file stays fast.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest

from cli_helpers import dsc, in_repo_root  # noqa: F401  (autouse fixture)

from compiler.capacity import device_need
from compiler.driver import compile_model, resolve_deployment
from compiler.frontend import load_model
from compiler.ir.text import print_graph
from compiler.passes import PassContext
from compiler.passes.shard import Shard, expert_values
from isa.assembler import ListingError, parse_listing
from isa.deployment import Deployment, DeploymentError, make_deployment, parse_plan
from isa.listing import render
from isa.program import bind_name, expand_schedule
from isa.target_loader import BUILTIN_DIR, load_target
from runtime.interpreter import run_program

ROOT = Path(__file__).resolve().parent.parent
TINY = "examples/tiny_moe.ds"
TINY_TEXT = (ROOT / TINY).read_text()
H800_TEXT = (BUILTIN_DIR / "h800.toml").read_text()
EP = "attn=dp,moe=ep"
E32 = {"n_experts": "32"}                       # 2 experts per device on 16 devices
# Bandwidth-dominated all-to-alls: 256 tokens of 512 per replica, one MoE layer.
BIG = {"n_experts": "32", "dim": "512", "batch": "64", "n_layers": "2"}


def assert_user_error(code: int, err: str) -> None:
    """Bad input: status 1, a message, never a traceback or an internal error."""
    assert code == 1, err
    assert "error: " in err, err
    assert "Traceback" not in err, err
    assert "internal error" not in err, err


@lru_cache(maxsize=None)
def _compiled(target: str, sets: tuple = (), devices: int | None = None,
              plan: str | None = None, measure: bool = True):
    return compile_model(TINY, target, dict(sets), devices=devices, plan=plan, measure=measure)


@lru_cache(maxsize=None)
def _run(target: str, sets: tuple = (), devices: int | None = None, plan: str | None = None,
         measure: bool = True):
    compiled = _compiled(target, sets, devices, plan, measure)
    return compiled, run_program(compiled.program, compiled.target)


def _target_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(re.sub(r'^name = "h800"', f'name = "{name}"', text, flags=re.M))
    return str(path)


# -- 1. the plan text (isa/deployment.py) ------------------------------------------------------


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
    ("experts=ep", "unknown plan key 'experts' (expected attn, ffn, moe, mb or a2a)"),
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
    (["--devices", "4", "--plan", "attn=tp2"],
     "error: plan attn=tp2,ffn=tp2,moe=ep: tensor parallelism is supported for the whole model "
     "over one group size"),
    (["--devices", "4", "--plan", "moe=tp2"],
     "error: plan attn=dp,ffn=dp,moe=tp2: tensor parallelism is supported for the whole model "
     "over one group size"),
    (["--devices", "4", "--plan", "attn=dp,ffn=tp4"],
     "error: plan attn=dp,ffn=tp4,moe=ep: tensor parallelism is supported for the whole model "
     "over one group size"),
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


# -- 2. the deploy { ... } block ---------------------------------------------------------------


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
    assert resolve_deployment(graph, h800, None, None) == Deployment(16, 8, "dp", "dp", "ep", 2)
    # the command line wins, item by item
    assert resolve_deployment(graph, h800, 4, "moe=dp,mb=1") == Deployment(4, 4, "dp", "dp",
                                                                          "dp", 1)
    assert load_model(TINY, {}).deploy == {}


def test_deploy_block_selects_the_deployment_like_the_command_line(tmp_path):
    path, _ = _model_with(tmp_path, DEPLOY4)
    from_block = compile_model(str(path), "h800", {}, measure=False)
    from_cli = compile_model(TINY, "h800", {}, devices=4, plan=EP, measure=False)
    assert from_block.program.deployment == Deployment(4, 4, "dp", "dp", "ep", 1)
    assert from_block.program.deployment == from_cli.program.deployment
    assert render(from_block.program) == render(from_cli.program)
    assert any(n.op == "all_to_all" for n in from_block.graph.nodes())
    # --devices overrides the block's count, --plan its modes
    assert compile_model(str(path), "h800", {}, devices=2, measure=False
                         ).program.deployment == Deployment(2, 2, "dp", "dp", "ep", 1)
    dp = compile_model(str(path), "h800", {}, plan="moe=dp", measure=False)
    assert dp.program.deployment == Deployment(4, 4, "dp", "dp", "dp", 1)
    assert not any(n.op == "all_to_all" for n in dp.graph.nodes())


def test_deploy_block_in_the_listing_header(capsys, tmp_path):
    path, _ = _model_with(tmp_path, DEPLOY4)
    code, out, err = dsc(capsys, "compile", str(path), "--target", "h800")
    assert code == 0, err
    assert out.splitlines()[2] == "deploy devices=4 per_node=4 attn=dp ffn=dp moe=ep mb=1"


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


# -- 3. the shard pass -------------------------------------------------------------------------


IR_LINE = re.compile(r"^%(?P<name>\S+) = (?P<op>\w+)\((?P<ins>[^)]*)\)(?: \{(?P<attrs>[^}]*)\})?"
                     r" : (?P<dtype>\w+)\[(?P<shape>[\d,]*)\]")


def _ir_nodes(text: str) -> list[dict]:
    """The nodes of printed IR in order: name, op, inputs, attrs, shape."""
    out = []
    for line in text.splitlines():
        m = IR_LINE.match(line)
        if m:
            attrs = dict(re.findall(r"(\w+)=(\[[^\]]*\]|[^,]+)", m["attrs"] or ""))
            out.append({"name": m["name"], "op": m["op"], "attrs": attrs,
                        "ins": [i.strip().lstrip("%") for i in m["ins"].split(",") if i.strip()],
                        "shape": tuple(int(d) for d in m["shape"].split(",") if d)})
    return out


def _check_sharded(nodes: list[dict], experts: int, devices: int, capacity: int, dim: int,
                   moe_layers: int) -> None:
    """Routed weights hold ceil(E/N) experts; each dispatch feeds exactly one all_to_all
    (split 0, concat 1) whose result has N x capacity rows per expert; each combine reads an
    all_to_all (split 1, concat 0, clipped to E) of the experts' output."""
    local = math.ceil(experts / devices)
    by_name = {n["name"]: (k, n) for k, n in enumerate(nodes)}
    routed = [n for n in nodes if n["op"] == "weight" and re.search(r"moe\.w[123]$", n["name"])]
    assert len(routed) == 3 * moe_layers
    assert all(n["shape"][0] == local for n in routed), [n["shape"] for n in routed]
    dispatches = [(k, n) for k, n in enumerate(nodes) if n["op"] == "dispatch"]
    combines = [(k, n) for k, n in enumerate(nodes) if n["op"] == "combine"]
    a2a = [(k, n) for k, n in enumerate(nodes) if n["op"] == "all_to_all"]
    assert len(dispatches) == len(combines) == moe_layers and len(a2a) == 2 * moe_layers
    for k, d in dispatches:
        assert d["shape"] == (experts, capacity, dim)
        users = [(j, n) for j, n in enumerate(nodes) if d["name"] in n["ins"]]
        assert len(users) == 1 and users[0][1]["op"] == "all_to_all" and users[0][0] > k
        j, sent = users[0]
        assert sent["attrs"] == {"concat": "1", "devices": str(devices), "split": "0",
                                 "route_k": "0"}
        assert sent["shape"] == (local, devices * capacity, dim)
        # the experts' matmuls read what arrived, never the local dispatch output
        assert any(sent["name"] in n["ins"] and n["op"] == "matmul" for n in nodes)
    for k, c in combines:
        j, back = by_name[c["ins"][0]]
        assert back["op"] == "all_to_all" and j < k
        assert back["attrs"] == {"concat": "0", "devices": str(devices), "size": str(experts),
                                 "split": "1", "route_k": "0"}
        assert back["shape"] == (experts, capacity, dim)
        _, ye = by_name[back["ins"][0]]
        assert ye["shape"] == (local, devices * capacity, dim)
        d_pos = max(i for i, _ in dispatches if i < j)
        assert d_pos < j                             # dispatch ... a2a ... combine


def test_print_after_shard_on_four_devices(capsys):
    code, out, err = dsc(capsys, "compile", TINY, "--target", "h800", "--devices", "4",
                         "--plan", EP, "--print-after", "shard")
    assert code == 0, err
    assert out.startswith("# after shard\n")
    # 8 experts over 4 devices: 2 each; 2 x 4 = 8 tokens of capacity per replica
    _check_sharded(_ir_nodes(out), experts=8, devices=4, capacity=8, dim=64, moe_layers=3)


@pytest.mark.parametrize("devices, experts", [(3, 8), (6, 8), (16, 32), (5, 32)])
def test_shard_takes_the_ceiling_when_devices_do_not_divide_experts(devices, experts):
    graphs = {}
    compile_model(TINY, "h800", {"n_experts": str(experts)}, devices=devices, plan=EP,
                  measure=False, check_fit=False, passes=[Shard()],
                  after=lambda name, g: graphs.setdefault(name, g))
    _check_sharded(_ir_nodes(print_graph(graphs["shard"])), experts=experts, devices=devices,
                   capacity=8, dim=64, moe_layers=3)


def _shard(graph, dep):
    return Shard().run(graph, PassContext(load_target("h800"), deployment=dep))


def test_one_device_or_replicated_experts_leave_the_graph_unchanged():
    graph = load_model(TINY, {})
    before = print_graph(graph)
    for dep in (None, Deployment(), make_deployment(4, 8, parse_plan("moe=dp"))):
        assert print_graph(_shard(graph, dep)) == before
    assert print_graph(_shard(graph, make_deployment(4, 8, {}))) != before
    assert print_graph(graph) == before                      # the pass did not mutate its input


def test_shard_on_one_device_compiles_the_same_program():
    one = _compiled("h800", (), 1, EP, False)
    default = _compiled("h800", (), None, None, False)
    assert render(one.program) == render(default.program)
    assert "deploy " not in render(one.program).splitlines()[2]


def test_model_without_experts_stays_data_parallel():
    ctx = PassContext(load_target("h800"), deployment=make_deployment(4, 8, {}))
    graph = load_model("examples/gemm.ds", {})
    assert print_graph(Shard().run(graph, ctx)) == print_graph(graph)
    assert any("has no routed experts" in note for note in ctx.notes)


# -- 4. all-to-all time, by hand from the target file ------------------------------------------
#
# The lowering (compiler/lower/templates/collective.py) makes one kernel per link with a single
# work item: a loop of `net.send` on the one `net` unit, one send per peer and tensor (the
# elements, then their block scales). The nvlink kernel then copies this device's own chunk
# with `link=local` sends.
#
# runtime/paths.py::_send_op costs a send of B bytes as a transfer whose path is
#   L2 x2 (read here + what arrives written here), memory x miss, the link x1,
# capped at the link's bandwidth R (bandwidth_gbs * 1e9 / (clock_ghz * 1e9) bytes per cycle),
# with latency = link latency (latency_us * 1e-6 * clock) + miss * memory latency
# (latency_ns * 1e-9 * clock). Each chunk of the input is read once, so miss = unique bytes /
# loaded bytes = 1 (runtime/kernel_sim.py::_memory_shares). On h800, L2 (6258 B/cycle) and
# memory (3350 GB/s = 1831 B/cycle) are far faster than a link (109 or 27 B/cycle), so a
# send moves at exactly R. The engine (docs/timing.md) keeps the unit busy for B / R, and the
# send completes `latency` later while the unit already starts the next one: the sends of a
# kernel queue back to back and only the last send's latency shows:
#
#   network kernel:  T = (peers x chunk bytes) / R_net + L_net + L_mem
#   nvlink kernel:   T = (peers x chunk bytes) / R_nv + L_mem
#                        + max(L_nv, own chunk bytes / dma.load_bytes_per_cycle + l2.latency)
#
# (the local copies follow the nvlink sends on the same unit at the core's load port rate and
# complete after the L2 latency; the kernel ends when the later of the two completes).

ELEMENT_BYTES = {"fp8_e4m3": 1, "bf16": 2, "fp32": 4}


def _figures(toml_text: str) -> dict[str, float]:
    t = tomllib.loads(toml_text)
    clock = t["clock_ghz"] * 1e9
    return {
        "R_nv": t["system"]["intra_node"]["bandwidth_gbs"] * 1e9 / clock,
        "R_net": t["system"]["inter_node"]["bandwidth_gbs"] * 1e9 / clock,
        "L_nv": t["system"]["intra_node"]["latency_us"] * 1e-6 * clock,
        "L_net": t["system"]["inter_node"]["latency_us"] * 1e-6 * clock,
        "L_mem": t["memory"]["latency_ns"] * 1e-9 * clock,
        "L_l2": t["l2"]["latency_cycles"],
        "dma": t["dma"]["load_bytes_per_cycle"],
        "per_node": t["system"]["devices_per_node"],
    }


def _a2a_chunks() -> dict[str, int]:
    """Bytes of one peer's chunk for BIG on 16 devices (2 experts each, 64 x 4 = 256 tokens of
    capacity, dim 512). Dispatch: fp8 [2, 256, 512] plus its 1x128 fp32 block scales
    [2, 256, 512/128]; combine: bf16 [2, 256, 512], a 256-row slice of the experts' output
    [2, 16 x 256, 512]."""
    experts, devices, tokens, dim = 32, 16, 64 * 4, 512
    local = experts // devices
    dispatch = (local * tokens * dim * ELEMENT_BYTES["fp8_e4m3"]
                + local * tokens * (dim // 128) * ELEMENT_BYTES["fp32"])
    combine = local * tokens * dim * ELEMENT_BYTES["bf16"]
    return {"xe": dispatch, "ye": combine}


def _expected_a2a(f: dict[str, float], link: str, chunk_bytes: int, devices: int = 16) -> float:
    if link == "network":
        peers = devices - f["per_node"]
        return peers * chunk_bytes / f["R_net"] + f["L_net"] + f["L_mem"]
    peers = f["per_node"] - 1
    return (peers * chunk_bytes / f["R_nv"] + f["L_mem"]
            + max(f["L_nv"], chunk_bytes / f["dma"] + f["L_l2"]))


def _a2a_records(compiled, run) -> dict[tuple[str, str], object]:
    """{(xe|ye, nvlink|network): LaunchRecord} of the first MoE layer, checking the tensors the
    kernel sends are the shapes the hand computation assumes."""
    tensors = compiled.program.tensor_table()
    out = {}
    for (launch, env), rec in zip(expand_schedule(compiled.program.schedule), run.launches):
        m = re.match(r"layer\.1\.moe\.(xe|ye)\.a2a", rec.name)
        if not rec.kernel.startswith("all_to_all") or not m:
            continue
        link = rec.kernel.split("_")[3]
        args = {p: tensors[bind_name(t, env)] for p, t in launch.args}
        if m[1] == "xe":
            assert (args["x0"].dtype, args["x0"].shape) == ("fp8_e4m3", (32, 256, 512))
            assert (args["x1"].dtype, args["x1"].shape) == ("fp32", (32, 256, 4))
            assert args["y0"].shape == (2, 16 * 256, 512)
        else:
            assert set(args) == {"x0", "y0"}
            assert (args["x0"].dtype, args["x0"].shape) == ("bf16", (2, 16 * 256, 512))
            assert args["y0"].shape == (32, 256, 512)
        out[(m[1], link)] = rec
    assert set(out) == {(v, link) for v in ("xe", "ye") for link in ("nvlink", "network")}
    return out


@pytest.fixture(scope="module")
def big_h800():
    return _run("h800", tuple(BIG.items()), 16, EP, False)


def test_all_to_all_time_is_latency_plus_bytes_over_bandwidth(big_h800):
    compiled, run = big_h800
    f, chunks = _figures(H800_TEXT), _a2a_chunks()
    records = _a2a_records(compiled, run)
    for (value, link), rec in records.items():
        assert rec.stream == link
        assert rec.end - rec.start == pytest.approx(_expected_a2a(f, link, chunks[value]),
                                                    rel=1e-9), (value, link)
    # the figures themselves: 8 peers x 270,336 B over 50 GB/s at 1.83 GHz, 2.8 + 0.3 us
    net = records[("xe", "network")]
    assert net.end - net.start == pytest.approx(8 * 270336 / (50 / 1.83) + 2.8e3 * 1.83
                                                + 300 * 1.83, rel=1e-9)


def _doubled_links(text: str) -> str:
    """h800 with both device links twice as fast (latencies unchanged)."""
    out, n = re.subn(r"(\[system\.(?:intra|inter)_node\]\nbandwidth_gbs = )(\d+)",
                     lambda m: f"{m[1]}{2 * int(m[2])}", text)
    assert n == 2
    return out


def test_doubling_link_bandwidth_halves_the_bandwidth_term(tmp_path, big_h800):
    fast_text = _doubled_links(H800_TEXT)
    fast = _target_file(tmp_path, "h800x2", fast_text)
    compiled, run = _run(fast, tuple(BIG.items()), 16, EP, False)
    f, f2, chunks = _figures(H800_TEXT), _figures(fast_text), _a2a_chunks()
    assert f2["R_net"] == 2 * f["R_net"] and f2["L_net"] == f["L_net"]
    slow_records = _a2a_records(*big_h800)
    fast_records = _a2a_records(compiled, run)
    for key, rec in fast_records.items():
        assert rec.end - rec.start == pytest.approx(_expected_a2a(f2, key[1], chunks[key[0]]),
                                                    rel=1e-9), key
    for value in ("xe", "ye"):
        slow = slow_records[(value, "network")]
        quick = fast_records[(value, "network")]
        t1, t2 = slow.end - slow.start, quick.end - quick.start
        latency = f["L_net"] + f["L_mem"]
        assert t2 - latency == pytest.approx((t1 - latency) / 2, rel=1e-9)
        assert 0.5 < t2 / t1 < 0.56                              # roughly halves
    # nothing but the links changed: the compute kernels take the same time
    slow_compute = sorted(r.result.cycles for r in big_h800[1].launches if r.stream == "compute")
    fast_compute = sorted(r.result.cycles for r in run.launches if r.stream == "compute")
    assert fast_compute == slow_compute


# -- 5. listings carry the deployment ----------------------------------------------------------


@pytest.fixture(scope="module")
def ep16():
    return _run("h800", tuple(E32.items()), 16, EP)


def test_listing_header_and_link_streams(ep16):
    compiled, _ = ep16
    text = render(compiled.program)
    lines = text.splitlines()
    assert lines[0] == "; dsc listing: model tiny_moe, target h800"
    assert lines[2] == "deploy devices=16 per_node=8 attn=dp ffn=dp moe=ep mb=1"
    launches = [ln for ln in lines if ln.lstrip().startswith("launch ")]
    nvlink = [ln for ln in launches if ln.endswith("stream=nvlink") or " stream=nvlink " in ln]
    network = [ln for ln in launches if " stream=network" in ln]
    assert len(nvlink) == len(network) == 2 * 3          # dispatch and combine, 3 MoE layers
    assert all("launch all_to_all_nvlink" in ln for ln in nvlink)
    assert all("launch all_to_all_network" in ln for ln in network)
    assert not any("stream=" in ln for ln in launches
                   if "all_to_all" not in ln.split("(")[0])
    assert "link=nvlink" in text and "link=network" in text and "link=local" in text


def test_listing_reads_back_into_the_same_program(ep16):
    compiled, _ = ep16
    text = render(compiled.program)
    program = parse_listing(text, "ep16.lst", compiled.target)
    assert program.deployment == Deployment(16, 8, "dp", "dp", "ep", 1)
    assert program == compiled.program
    assert render(program) == text


@pytest.mark.parametrize("edit, message", [
    ("mb=1", "mb=1 links=2"),
    ("per_node=8 ", ""),
    ("moe=ep", "moe=xx"),
])
def test_bad_deploy_line_in_a_listing(ep16, edit, message):
    compiled, _ = ep16
    text = render(compiled.program).replace(edit, message, 1)
    with pytest.raises(ListingError) as info:
        parse_listing(text, "bad.lst", compiled.target)
    assert ":3:" in str(info.value)                       # the deploy line


def test_run_listing_gives_the_same_cycles_as_the_model(capsys, tmp_path, ep16):
    listing = tmp_path / "ep16.lst"
    model_args = [TINY, "--target", "h800", "--set", "n_experts=32", "--devices", "16",
                  "--plan", EP]
    code, _, err = dsc(capsys, "compile", *model_args, "-o", str(listing))
    assert code == 0, err
    assert listing.read_text() == render(ep16[0].program)
    code, out, err = dsc(capsys, "run", str(listing), "--target", "h800", "--json", "-")
    assert code == 0, err
    from_listing = json.loads(out)
    code, out, err = dsc(capsys, "run", *model_args, "--json", "-")
    assert code == 0, err
    from_model = json.loads(out)
    assert from_listing["total_cycles"] == from_model["total_cycles"]
    assert from_listing["total_cycles"] == round(ep16[1].cycles)
    # the links add time: the same replica on one device (all 32 experts local) is faster
    one = _run("h800", tuple(E32.items()))[1]
    assert ep16[1].cycles > one.cycles


# -- 6. capacity -------------------------------------------------------------------------------
#
# tiny_moe's routed weights: 3 MoE layers x (w1, w3: [E, 64, 32]; w2: [E, 32, 64]) in FP8 with
# one FP32 scale per 128x128 block (one block per 64x32 matrix): 64 x 32 + 4 = 2052 bytes per
# expert and matrix, 9 matrices.

PER_EXPERT = 64 * 32 * 1 + 4
ROUTED_MATRICES = 9


@pytest.mark.parametrize("devices", [2, 3, 4, 8])
def test_device_need_holds_ceil_of_the_experts(devices):
    one = device_need(_compiled("h800", (), 1, EP, False).graph)
    many = device_need(_compiled("h800", (), devices, EP, False).graph)
    held = math.ceil(8 / devices)
    assert one.weights - many.weights == ROUTED_MATRICES * (8 - held) * PER_EXPERT
    assert many.caches == one.caches                   # one replica's requests per device


def test_routed_weights_are_found_by_dataflow():
    graph = load_model(TINY, {})
    _, weights = expert_values(graph)
    names = sorted(graph.node(w).name for w in weights)
    assert names == [f"layer.{i}.moe.{w}" for i in (1, 2, 3) for w in ("w1", "w2", "w3")]
    assert sum(graph.node(w).type.nbytes for w in weights) == ROUTED_MATRICES * 8 * PER_EXPERT


def _small_memory(tmp_path: Path, nbytes: int, name: str = "small") -> str:
    text, n = re.subn(r"^bytes = 84900000000 .*$", f"bytes = {nbytes}", H800_TEXT, flags=re.M)
    assert n == 1
    return _target_file(tmp_path, name, text)


def test_too_big_for_a_device_is_rejected_with_a_plan_that_fits(capsys, tmp_path):
    target = _small_memory(tmp_path, 250_000)
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
    assert out.splitlines()[2] == "deploy devices=4 per_node=4 attn=dp ffn=dp moe=ep mb=1"
    code, _, err = dsc(capsys, "compile", TINY, "--target", target, "--devices", "2")
    assert_user_error(code, err)
    assert err.startswith("error: tiny_moe does not fit a device of 2 x small "
                          "(attn=dp,ffn=dp,moe=ep)")
    # check_fit=False is the way around it
    compile_model(TINY, target, {}, measure=False, check_fit=False)


def test_too_big_on_run_as_well(capsys, tmp_path):
    code, _, err = dsc(capsys, "run", TINY, "--target", _small_memory(tmp_path, 250_000))
    assert_user_error(code, err)
    assert "does not fit one small" in err and "--devices 4 --plan attn=dp,ffn=dp,moe=ep" in err


def test_no_plan_fits_when_the_replicated_weights_do_not(capsys, tmp_path):
    # 100 kB: less than the weights outside the routed experts (embed and head alone: 64 kB)
    code, _, err = dsc(capsys, "compile", TINY, "--target", _small_memory(tmp_path, 100_000))
    assert_user_error(code, err)
    assert err.splitlines()[1] == ("expected: no plan fits: neither expert parallelism nor "
                                   "tensor parallelism over up to 64 devices brings a device "
                                   "under 0.1 MB (the largest part here: weights, 0.3 MB)")


def test_the_suggested_plan_fits(capsys, tmp_path):
    one = device_need(_compiled("h800", (), 1, None, False).graph)
    two = device_need(_compiled("h800", (), 2, EP, False).graph)
    estimate = two.weights + one.caches + one.activations    # what the suggestion assumes
    assert one.total > estimate
    target = _small_memory(tmp_path, estimate, "edge")
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
    listing.write_text(render(_compiled("h800", (), None, None, False).program))
    code, out, err = dsc(capsys, "run", str(listing), "--target", "h800", *argv)
    assert_user_error(code, err)
    assert out == ""
    assert err.startswith("error: --set, --devices, --plan and --ignore-capacity do not apply to "
                          "a listing")


def test_devices_zero_with_a_listing_is_an_error(capsys, tmp_path):
    listing = tmp_path / "one.lst"
    listing.write_text(render(_compiled("h800", (), None, None, False).program))
    code, _, err = dsc(capsys, "run", str(listing), "--target", "h800", "--devices", "0")
    assert_user_error(code, err)


# -- 7. the schedule: link streams and what waits for them -------------------------------------


def _records_by_tensor(compiled, run):
    """[(record, tensors read, tensors written)] with base tensor names, in launch order."""
    tensors = compiled.program.tensor_table()
    kernels = compiled.program.kernel_table()
    out = []
    for (launch, env), rec in zip(expand_schedule(compiled.program.schedule), run.launches):
        outputs = {p.name for p in kernels[launch.kernel].params if p.output}
        reads, writes = set(), set()
        for p, t in launch.args:
            decl = tensors[bind_name(t, env)]
            (writes if p in outputs else reads).add(decl.base or decl.name)
        out.append((rec, reads, writes))
    assert len(out) == len(run.launches)
    return out


def test_all_to_all_runs_on_the_link_streams(ep16):
    compiled, run = ep16
    a2a = [r for r in run.launches if r.kernel.startswith("all_to_all")]
    assert len(a2a) == 12
    for r in a2a:
        assert r.stream == ("nvlink" if "nvlink" in r.kernel else "network")
        assert r.flops == 0
    assert {r.stream for r in run.launches if r not in a2a} == {"compute"}
    # each stream runs in order, one launch after another
    for stream in ("compute", "nvlink", "network"):
        mine = [r for r in run.launches if r.stream == stream]
        assert all(b.start >= a.end for a, b in zip(mine, mine[1:]))
    assert run.cycles == max(r.end for r in run.launches)


def test_consumers_of_an_all_to_all_start_after_it_ends(ep16):
    compiled, run = ep16
    overhead = compiled.target.launch_overhead_cycles
    records = _records_by_tensor(compiled, run)
    checked = 0
    for k, (rec, reads, writes) in enumerate(records):
        if rec.stream == "compute":
            continue
        # the all-to-all starts after the compute launch that wrote what it sends
        producers = [r for r, _, w in records[:k] if w & reads and r.stream == "compute"]
        assert producers and rec.start >= producers[-1].end + overhead
        consumers = [(r, rd) for r, rd, _ in records[k + 1:] if rd & writes
                     and r.stream == "compute"]
        assert consumers, rec.name
        first, _ = consumers[0]
        assert first.start >= rec.end + overhead, (rec.name, first.name)
        checked += 1
    assert checked == 12
    # expert matmuls and combines wait for the links: the compute stream sits idle
    waiting = [r for r in run.launches if r.stream == "compute" and r.exposed > 0]
    assert {re.sub(r"^layer\.\d\.", "", r.name) for r in waiting} >= {"moe.silu", "moe.y"}
    for r in waiting:
        link_ends = [a.end for a in run.launches if a.stream != "compute" and a.end <= r.start]
        assert r.start == pytest.approx(max(link_ends) + overhead)


def test_the_two_links_of_one_all_to_all_work_at_once(ep16):
    _, run = ep16
    a2a = [r for r in run.launches if r.kernel.startswith("all_to_all")]
    for nvlink, network in zip(a2a[::2], a2a[1::2]):
        assert (nvlink.stream, network.stream) == ("nvlink", "network")
        assert nvlink.name == network.name
        assert network.start < nvlink.end


# -- 8. two micro-batches (compiler/passes/micro_batch.py) -------------------------------------

MB2 = "attn=dp,moe=ep,mb=2"


def test_micro_batches_double_the_activations_and_share_the_weights():
    one = _compiled("h800", (("batch", "4"), ("n_experts", "16")), 16, EP).program
    two = _compiled("h800", (("batch", "4"), ("n_experts", "16")), 16, MB2).program
    weights = {t.name for t in one.tensors if t.kind == "weight"}
    assert weights == {t.name for t in two.tensors if t.kind == "weight"}
    caches = [t for t in one.tensors if t.kind == "cache"]
    halves = {t.name: t for t in two.tensors if t.kind == "cache"}
    assert len(halves) == 2 * len(caches)
    for t in caches:
        scope = re.match(r"^\w+\.\d+\.", t.name)[0]
        for mb in (0, 1):
            half = halves[f"{scope}mb{mb}.{t.name[len(scope):]}"]
            assert half.shape == (t.shape[0] // 2, *t.shape[1:])
    flops = lambda p: sum(l.flops for l, _ in expand_schedule(p.schedule))
    assert flops(two) == pytest.approx(flops(one))
    assert dict(two.sizes)["batch"] == 4           # the model's batch, not a micro-batch's


def test_micro_batches_alternate_and_hide_communication():
    sets = (("batch", "16"), ("n_experts", "16"))
    _, one = _run("h800", sets, 16, EP)
    _, two = _run("h800", sets, 16, MB2)
    names = [r.name for r in two.launches if r.stream == "network"]
    tags = [re.search(r"\.(mb\d)\.", n)[1] for n in names]
    assert tags[:4] == ["mb0", "mb1", "mb0", "mb1"]    # dispatch 0, dispatch 1, combine 0, ...
    exposed = lambda run: sum(r.exposed for r in run.launches)
    assert exposed(two) < exposed(one)
    # toy kernels are launch-bound: twice the launches cost their overhead, no more
    extra = len(two.launches) - len(one.launches)
    overhead = load_target("h800").launch_overhead_cycles
    assert one.cycles < two.cycles <= one.cycles + extra * overhead


def test_micro_batch_listing_round_trips():
    program = _compiled("h800", (("batch", "4"), ("n_experts", "16")), 16, MB2).program
    target = load_target("h800")
    text = render(program)
    assert "deploy devices=16 per_node=8 attn=dp ffn=dp moe=ep mb=2" in text
    assert render(parse_listing(text, "mb2.lst", target)) == text


def test_micro_batches_need_an_even_batch(capsys):
    code, _, err = dsc(capsys, "compile", TINY, "--target", "h800", "--devices", "4",
                       "--plan", MB2, "--set", "batch=3")
    assert_user_error(code, err)
    assert "splits the size 'batch' into equal micro-batches, but model tiny_moe has batch = 3" in err


# -- 9. tensor parallelism (compiler/passes/tensor_parallel.py) --------------------------------

TP4 = "attn=tp4,moe=tp4"


def _sharded(devices: int, plan: str, sets: tuple = ()):
    graph = load_model(TINY, dict(sets))
    target = load_target("h800")
    dep = resolve_deployment(graph, target, devices, plan)
    return graph, Shard().run(graph, PassContext(target, deployment=dep))


def _named(graph, suffix: str):
    return [n for n in graph.nodes() if n.name.endswith(suffix)]


def test_tensor_parallel_splits_ffn_columns_then_rows_and_reduces_once():
    whole, tp = _sharded(4, TP4)
    for name, axis in (("layer.0.swiglu.w1", 1), ("layer.0.swiglu.w3", 1),
                       ("layer.0.swiglu.w2", 0), ("layer.1.moe.w1", 2), ("layer.1.moe.w2", 1),
                       ("layer.0.mla_absorbed.wq_b", 1), ("layer.0.mla_absorbed.w_uk", 0),
                       ("layer.0.mla_absorbed.wo", 0), ("head", 1)):
        before, after = _named(whole, name)[0].type.shape, _named(tp, name)[0].type.shape
        assert after[axis] * 4 == before[axis] and [
            d for i, d in enumerate(after) if i != axis] == [
            d for i, d in enumerate(before) if i != axis], name
    # low-rank down-projections and the router feed whole-row ops: left whole, not gathered
    for name in ("layer.0.mla_absorbed.wq_a", "layer.0.mla_absorbed.wkv_a", "layer.1.moe.w_gate"):
        assert _named(tp, name)[0].type.shape == _named(whole, name)[0].type.shape, name
    gathers = [n for n in tp.nodes() if n.op == "all_gather"]
    exchanges = [n for n in tp.nodes() if n.op == "all_to_all"]
    # one all-reduce (exchange + sum + gather) per attention and per FFN, the routed and shared
    # experts' partial sums added before it; one gather of the logits
    layers = tp.sizes["n_layers"]
    assert len(exchanges) == 2 * layers
    assert len(gathers) == 2 * layers + 1
    assert all(g.attr("devices") == 4 for g in gathers + exchanges)
    out = tp.node(tp.outputs[0])
    assert out.op == "all_gather" and out.type.shape == whole.node(whole.outputs[0]).type.shape
    combine = next(n for n in tp.nodes() if n.op == "combine")
    assert tp.node(combine.inputs[0]).op == "matmul"      # partials travel through the combine


def test_tensor_parallel_attention_keeps_its_heads_on_the_device():
    whole, tp = _sharded(4, TP4)
    heads = whole.sizes["heads"]
    q = _named(tp, "layer.0.mla_absorbed.q")[0]
    assert q.op == "reshape" and q.type.shape[2] == heads // 4
    scores = _named(tp, "layer.0.mla_absorbed.p")[0]
    assert scores.type.shape[1] == heads // 4
    cache = _named(tp, "layer.0.mla_absorbed.kv_cache")[0]      # the latent is every head's
    assert cache.type == _named(whole, "layer.0.mla_absorbed.kv_cache")[0].type


def test_tensor_parallel_weights_shrink_and_the_run_reports_the_group():
    one = device_need(_compiled("h800", (), None, None, False).graph)
    four = device_need(_compiled("h800", (), 4, TP4, False).graph)
    assert four.caches == one.caches
    assert one.weights / 4 < four.weights < one.weights / 2     # wq_a, wkv_a, router, norms whole
    compiled, run = _run("h800", (), 4, TP4, False)
    report = json.loads(json.dumps(__import__("runtime.report.json_report",
                                              fromlist=["report_dict"]).report_dict(run)))
    dep = report["deployment"]
    tokens = math.prod(load_model(TINY).node(0).type.shape)
    assert dep["plan"] == "attn=tp4,ffn=tp4,moe=tp4"
    assert dep["tokens_per_device"] * 4 == tokens                # the group shares its batch
    assert {r.stream for r in run.launches} == {"compute", "nvlink"}   # a group inside a node


def test_all_gather_time_from_the_link_figures():
    compiled, run = _run("h800", (("batch", "8"),), 4, TP4, False)
    f = _figures(H800_TEXT)
    tensors = compiled.program.tensor_table()
    checked = 0
    for (launch, env), rec in zip(expand_schedule(compiled.program.schedule), run.launches):
        if not rec.kernel.startswith("all_gather_nvlink"):
            continue
        x = tensors[bind_name(dict(launch.args)["x0"], env)]
        whole = x.nbytes                         # every peer gets the whole input
        # three peers at the link's rate, its latency once; the input was just written, so
        # it may still be in L2 (docs/timing.md): between no and a full memory latency more
        low = 3 * whole / f["R_nv"] + max(f["L_nv"], whole / f["dma"] + f["L_l2"])
        assert low <= rec.end - rec.start <= low + f["L_mem"], rec.name
        checked += 1
    assert checked >= 3


def test_a_dense_model_too_big_for_one_device_is_offered_tensor_parallelism(capsys, tmp_path):
    sets = ("--set", "n_experts=2", "--set", "n_groups=1", "--set", "top_k=1")
    one = device_need(_compiled("h800", (("n_experts", "2"), ("n_groups", "1"),
                                         ("top_k", "1")), None, None, False).graph)
    target = _small_memory(tmp_path, int(one.total * 0.6), "tight")
    code, _, err = dsc(capsys, "compile", TINY, "--target", target, *sets)
    assert_user_error(code, err)
    suggested = re.search(r"--devices (\d+) --plan (\S+)", err)
    assert suggested and "tp" in suggested[2], err
    code, _, err = dsc(capsys, "compile", TINY, "--target", target, *sets,
                       "--devices", suggested[1], "--plan", suggested[2])
    assert code == 0, err


def test_tensor_parallel_listing_round_trips_and_reruns(capsys, tmp_path):
    compiled, run = _run("h800", (), 4, TP4, False)
    text = render(compiled.program)
    assert "kernel all_gather_nvlink" in text
    assert render(parse_listing(text, "tp.lst", load_target("h800"))) == text
    listing = tmp_path / "tp.lst"
    listing.write_text(text)
    code, out, err = dsc(capsys, "run", str(listing), "--target", "h800", "--json", "-")
    assert code == 0, err
    assert json.loads(out)["total_cycles"] == round(run.cycles)


def test_micro_batches_run_independent_work_before_waiting():
    _, run = _run("h800", (("batch", "16"), ("n_experts", "16")), 16, MB2)
    order = [r.name for r in run.launches]
    first = lambda pattern: next(i for i, n in enumerate(order) if re.match(pattern, n))
    # both shared experts of layer 1 run before micro-batch 0's combine waits for its transfer
    combine0 = first(r"layer\.1\.mb0\.moe\.y\b")
    assert first(r"layer\.1\.mb0\.moe\.shared_experts") < combine0
    assert first(r"layer\.1\.mb1\.moe\.shared_experts") < combine0


def test_expert_parallelism_over_more_devices_than_experts_is_refused(capsys):
    code, _, err = dsc(capsys, "compile", TINY, "--target", "h800", "--devices", "16")
    assert_user_error(code, err)
    assert "plan moe=ep over 16 devices: the model has 8 routed experts" in err
    assert "expected: --devices 8 or fewer" in err


def test_a_partly_filled_node_sends_the_most_over_the_network():
    """12 devices, 8 per node: the slowest device is one of the 4 in the second node, with 3
    node-mates and 8 peers over the network."""
    compiled, _ = _run("h800", tuple(E32.items()), 12, EP)
    notes = [" ".join(k.notes) for k in compiled.program.kernels
             if k.name.startswith("all_to_all")]
    assert any("4 in this node; peers 1..3 over nvlink" in n for n in notes), notes
    assert any("peers 4..11 over network" in n for n in notes), notes


def test_tensor_parallelism_splits_a_gqa_cache_by_heads(capsys):
    """Llama-3-8B with 256 requests: the KV cache (137 GB) does not fit one device; tensor
    parallelism splits the cache by key-value heads, so two devices suffice."""
    code, _, err = dsc(capsys, "compile", "examples/llama3_8b.ds", "--target", "h800",
                       "--set", "batch=256")
    assert_user_error(code, err)
    assert "--devices 2 --plan attn=tp2,ffn=tp2 (per device: weights 8.6 GB, KV cache 68.7 GB" in err
    whole = load_model("examples/llama3_8b.ds", {"n_layers": "2"})
    target = load_target("h800")
    dep = resolve_deployment(whole, target, 8, "attn=tp8")
    tp = Shard().run(whole, PassContext(target, deployment=dep))
    for name in ("layer.0.gqa.k_cache", "layer.0.gqa.v_cache"):
        before, after = _named(whole, name)[0].type.shape, _named(tp, name)[0].type.shape
        assert after == (*before[:2], before[2] // 8, before[3]), name
    assert not [n for n in tp.nodes() if n.op == "all_gather" and ".gqa.k" in n.name]


# -- 10. each token once per node (a2a=node) ---------------------------------------------------

def test_once_per_node_share_by_hand():
    from compiler.lower.templates.collective import once_per_node
    # DeepSeek-V3 prefill on 4 nodes: 64 of the 256 experts per node, top-8
    hit = 1 - math.comb(192, 8) / math.comb(256, 8)
    assert once_per_node(256, 32, 8, 8) == pytest.approx(hit * 256 / (8 * 64), rel=1e-12)
    assert 0.45 < once_per_node(256, 32, 8, 8) < 0.46
    assert once_per_node(256, 256, 1, 1) == 1.0          # one expert per token: nothing to share


def test_node_all_to_all_sends_fewer_chunks_over_the_network_and_forwards_the_rest():
    from compiler.lower.templates.collective import once_per_node
    direct, run_direct = _run("h800", tuple(E32.items()), 16, EP)
    node, run_node = _run("h800", tuple(E32.items()), 16, EP + ",a2a=node")
    assert "deploy devices=16 per_node=8 attn=dp ffn=dp moe=ep mb=1 a2a=node" in render(
        node.program)
    share = once_per_node(32, 16, 8, 2)
    sends = math.ceil(8 * share)
    assert sends < 8
    loops = lambda prog, name: [s.count for k in prog.kernels if k.name.startswith(name)
                                for s in k.body if hasattr(s, "count")]
    assert set(loops(node.program, "all_to_all_network")) == {sends}
    assert loops(node.program, "all_to_all_nvlink")[:2] == [7, 7]   # mates, then forwarded
    time = lambda run, kernel: sum(r.end - r.start for r in run.launches if r.kernel == kernel)
    for k in ("all_to_all_network_0", "all_to_all_network_1"):
        assert time(run_node, k) < time(run_direct, k) * (sends + 1) / 8
    assert time(run_node, "all_to_all_nvlink_0") > time(run_direct, "all_to_all_nvlink_0")


def test_a2a_mode_errors(capsys):
    code, _, err = dsc(capsys, "compile", TINY, "--target", "h800", "--devices", "4",
                       "--plan", "a2a=ring")
    assert_user_error(code, err)
    assert "plan a2a=ring: expected direct or node" in err
