"""Expert parallelism: the shard pass, the all-to-all kernels and their time worked out by
hand from the target file, listings that carry a deployment, the link streams of the schedule,
and tokens sent once per node (a2a=node). Everything runs on examples/tiny_moe.ds, grown with
--set where a test needs it."""
from __future__ import annotations

import json
import math
import re

import pytest

from cli_helpers import assert_one_error, dsc, in_repo_root  # noqa: F401  (autouse fixture)
from deployment_helpers import (BIG, E32, ELEMENT_BYTES, EP, H800_TEXT, TINY, compiled_tiny,
                                link_figures, run_tiny, target_file)

from compiler.driver import compile_model
from compiler.frontend import load_model
from compiler.ir.text import print_graph
from compiler.passes import PassContext
from compiler.passes.shard import Shard
from isa.assembler import ListingError, parse_listing
from isa.deployment import Deployment, make_deployment, parse_plan
from isa.listing import render
from isa.program import bind_name, expand_schedule
from isa.target_loader import load_target


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
                   moe_layers: int, tokens: int = 8, k: int = 2) -> None:
    """Routed weights hold ceil(E/N) experts; each dispatch feeds exactly one all_to_all
    (split 0, concat 1) whose result holds, per expert slot of the hottest device, the rows
    every device routes there (uniform routing: N T k / E, not N x capacity); each combine
    reads an all_to_all (split 1, concat 0) back into the dispatch's [E, capacity] layout."""
    local = math.ceil(experts / devices)
    rows = math.ceil(devices * tokens * k / experts)
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
        assert {a: sent["attrs"][a] for a in ("concat", "devices", "split", "part", "size",
                                              "counts")} == {
            "concat": "1", "devices": str(devices), "split": "0", "part": str(local),
            "size": str(rows), "counts": "false"}
        assert sent["shape"] == (local, rows, dim)
        # the experts' matmuls read what arrived, never the local dispatch output
        assert any(sent["name"] in n["ins"] and n["op"] == "matmul" for n in nodes)
    for k, c in combines:
        j, back = by_name[c["ins"][0]]
        assert back["op"] == "all_to_all" and j < k
        assert {a: back["attrs"][a] for a in ("concat", "devices", "split", "part",
                                              "size")} == {
            "concat": "0", "devices": str(devices), "size": str(experts), "split": "1",
            "part": str(capacity)}
        assert back["shape"] == (experts, capacity, dim)
        _, ye = by_name[back["ins"][0]]
        assert ye["shape"] == (local, rows, dim)
        d_pos = max(i for i, _ in dispatches if i < j)
        assert d_pos < j                             # dispatch ... a2a ... combine


def test_print_after_shard_on_four_devices(capsys):
    code, out, err = dsc(capsys, "compile", TINY, "--target", "h800", "--devices", "4",
                         "--plan", EP, "--print-after", "shard")
    assert code == 0, err
    assert out.startswith("# after shard\n")
    # 8 experts over 4 devices: 2 each, receiving 4 x 8 x 2 / 8 = 8 rows apiece
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
    one = compiled_tiny("h800", (), 1, EP, False)
    default = compiled_tiny("h800", (), None, None, False)
    assert render(one.program) == render(default.program)
    # one device: only the launch mode (a decode step runs as a graph) needs saying
    assert render(one.program).splitlines()[2] == \
        "deploy devices=1 per_node=1 attn=dp ffn=dp moe=ep mb=1 launch=graph"


def test_model_without_experts_stays_data_parallel():
    ctx = PassContext(load_target("h800"), deployment=make_deployment(4, 8, {}))
    graph = load_model("examples/gemm.ds", {})
    assert print_graph(Shard().run(graph, ctx)) == print_graph(graph)
    assert any("has no routed experts" in note for note in ctx.notes)


TWO_MOE_BLOCKS = """import "std/moe.ds"
model two_moe {
  size T = 16, d = 32
  input x: [T, d]
  h = x + moe(x, 16, 1, 64, groups=1, topk_groups=1, scale=1.0, shared=0, capacity=16)
  y = h + moe(h, 4, 1, 64, groups=1, topk_groups=1, scale=1.0, shared=0, capacity=16)
  output z = y + moe(y, EXPERTS, 1, 16, groups=1, topk_groups=1, scale=1.0, shared=0, capacity=16)
}
"""


def test_moe_blocks_with_different_experts_each_keep_their_own_slots(tmp_path):
    """16, 4 and 3 routed experts over 3 devices: 6, 2 and 1 slots. Every routed weight took
    the largest block's 6, so the 4-expert block multiplied [2, 12, 32] rows by [6, 32, 64]
    weights (found by fuzzing)."""
    path = tmp_path / "two_moe.ds"
    path.write_text(TWO_MOE_BLOCKS.replace("EXPERTS", "3"))
    graphs = {}
    compile_model(str(path), "h800", {}, devices=3, plan=EP, measure=False, check_fit=False,
                  passes=[Shard()], after=lambda name, g: graphs.setdefault(name, g))
    nodes = _ir_nodes(print_graph(graphs["shard"]))
    routed = {n["name"]: n["shape"][0] for n in nodes if n["op"] == "weight"
              and re.search(r"\.w[123]$", n["name"])}
    assert routed == {f"{block}.{w}": slots for block, slots in
                      (("moe", 6), ("moe_1", 2), ("moe_2", 1)) for w in ("w1", "w2", "w3")}
    sent = [n for n in nodes if n["op"] == "all_to_all" and n["attrs"]["split"] == "0"]
    assert [int(n["attrs"]["part"]) for n in sent] == [6, 2, 1]
    compiled = compile_model(str(path), "h800", {}, devices=3, plan=EP, check_fit=False)
    assert compiled.program.kernels


def test_more_devices_than_a_moe_block_has_experts_is_refused_at_its_call(capsys, tmp_path):
    """The smallest MoE block decides: 16 and 4 experts would spread over 3 devices, 2 not."""
    path = tmp_path / "two_moe.ds"
    path.write_text(TWO_MOE_BLOCKS.replace("EXPERTS", "2"))
    code, out, err = dsc(capsys, "compile", str(path), "--target", "h800", "--devices", "3",
                         "-o", str(tmp_path / "out.lst"))
    assert_one_error(code, out, err)
    assert err.startswith(
        "std/moe.ds:25:8: error: plan moe=ep over 3 devices: this MoE block has 2 routed "
        "experts, so some devices would hold none (devices would differ, which the one-device "
        "simulation cannot show)\n")
    assert "expected: --devices 2 or fewer\n" in err
    assert f"note: in the block call at {path}:7:18 (building 'moe_2')" in err
    assert not (tmp_path / "out.lst").exists()


def _big_wire() -> dict[str, float]:
    """Rows each link of the hottest device carries per all-to-all for BIG on 16 devices (2 of
    the 32 experts each, top-2 from the best 1 of 2 groups of 16). A device's two experts sit
    in one group: a token reaches it when its group is chosen (1/2) and one of its 2 picks
    among the group's 16 falls on them: 1/2 x (1 - C(14,2) / C(16,2)) = 29/240, once per
    token whether one or both picks do. Each device routes 256 tokens; the hottest receives
    from its 7 node-mates and 8 remote peers alike, and sends as much."""
    into = 256 * 29 / 240
    return {"local": into, "node": 7 * into, "network": 8 * into}


# Bytes of one row: dispatch fp8 [.., 512] plus its 1x128 fp32 scales; combine bf16.
ROW_BYTES = {"xe": 512 * ELEMENT_BYTES["fp8_e4m3"] + 4 * ELEMENT_BYTES["fp32"],
             "ye": 512 * ELEMENT_BYTES["bf16"]}


def _messages(rows: float, peers: int) -> tuple[int, int]:
    """(messages, rows each): one per peer, or one row each when there are fewer rows."""
    each = math.ceil(rows / min(peers, math.ceil(rows)))
    return math.ceil(rows / each), each


def _expected_a2a(f: dict[str, float], link: str, value: str) -> float:
    """One engine sends message after message at the link's rate; the latency of the link is
    paid once (the rows are in L2: the dispatch or the experts just wrote them, and L2 keeps
    them for the next launches). The NVLink kernel then copies the device's own tokens, at the
    L2's rate (many cores copy it)."""
    wire, row = _big_wire(), ROW_BYTES[value]
    if link == "network":
        sends, rows = _messages(wire["network"], 8)
        return sends * rows * row / f["R_net"] + f["L_net"]
    sends, rows = _messages(wire["node"], 7)
    local = math.ceil(wire["local"]) * row
    return (sends * rows * row / f["R_nv"]
            + max(f["L_nv"], local / f["R_l2"] + f["L_l2"]))


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
        # both viewed as rows: the dispatch layout [32 experts x 256, 512], and the hottest
        # device's 2 slots of 16 x 256 x 2 / 32 = 256 rows each
        if m[1] == "xe":
            assert (args["x0"].dtype, args["x0"].shape) == ("fp8_e4m3", (32 * 256, 512))
            assert (args["x1"].dtype, args["x1"].shape) == ("fp32", (32 * 256, 4))
            assert args["y0"].shape == (2 * 256, 512)
        else:
            assert set(args) == {"x0", "y0"}
            assert (args["x0"].dtype, args["x0"].shape) == ("bf16", (2 * 256, 512))
            assert args["y0"].shape == (32 * 256, 512)
        out[(m[1], link)] = rec
    assert set(out) == {(v, link) for v in ("xe", "ye") for link in ("nvlink", "network")}
    return out


@pytest.fixture(scope="module")
def big_h800():
    return run_tiny("h800", tuple(BIG.items()), 16, EP, False)


def test_all_to_all_time_is_latency_plus_bytes_over_bandwidth(big_h800):
    compiled, run = big_h800
    f = link_figures(H800_TEXT)
    records = _a2a_records(compiled, run)
    for (value, link), rec in records.items():
        assert rec.stream == link
        assert rec.end - rec.start == pytest.approx(_expected_a2a(f, link, value),
                                                    rel=1e-9), (value, link)
    # the figures themselves: 247.5 rows as 8 messages of 31 rows of 528 B over 40 GB/s
    # (0.8 of 50) at 1.6 GHz, 2.8 us (the bytes are in L2: no memory latency)
    net = records[("xe", "network")]
    assert net.end - net.start == pytest.approx(8 * 31 * 528 / (40 / 1.6) + 2.8e3 * 1.6,
                                                rel=1e-9)


def _doubled_links(text: str) -> str:
    """h800 with both device links twice as fast (latencies unchanged)."""
    out, n = re.subn(r"(\[system\.(?:intra|inter)_node\]\nbandwidth_gbs = )(\d+)",
                     lambda m: f"{m[1]}{2 * int(m[2])}", text)
    assert n == 2
    return out


def test_doubling_link_bandwidth_halves_the_bandwidth_term(tmp_path, big_h800):
    fast_text = _doubled_links(H800_TEXT)
    fast = target_file(tmp_path, "h800x2", fast_text)
    compiled, run = run_tiny(fast, tuple(BIG.items()), 16, EP, False)
    f, f2 = link_figures(H800_TEXT), link_figures(fast_text)
    assert f2["R_net"] == 2 * f["R_net"] and f2["L_net"] == f["L_net"]
    slow_records = _a2a_records(*big_h800)
    fast_records = _a2a_records(compiled, run)
    for key, rec in fast_records.items():
        assert rec.end - rec.start == pytest.approx(_expected_a2a(f2, key[1], key[0]),
                                                    rel=1e-9), key
    for value in ("xe", "ye"):
        slow = slow_records[(value, "network")]
        quick = fast_records[(value, "network")]
        t1, t2 = slow.end - slow.start, quick.end - quick.start
        latency = f["L_net"]
        assert t2 - latency == pytest.approx((t1 - latency) / 2, rel=1e-9)
        assert 0.5 < t2 / t1 < 0.8                   # the bandwidth term halves, not the latency
    # nothing but the links changed: the compute kernels take the same time
    slow_compute = sorted(r.result.cycles for r in big_h800[1].launches if r.stream == "compute")
    fast_compute = sorted(r.result.cycles for r in run.launches if r.stream == "compute")
    assert fast_compute == slow_compute


@pytest.fixture(scope="module")
def ep16():
    return run_tiny("h800", tuple(E32.items()), 16, EP)


def test_listing_header_and_link_streams(ep16):
    compiled, _ = ep16
    text = render(compiled.program)
    lines = text.splitlines()
    assert lines[0] == "; dsc listing: model tiny_moe, target h800"
    assert lines[2] == "deploy devices=16 per_node=8 attn=dp ffn=dp moe=ep mb=1 launch=graph"
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
    assert program.deployment == Deployment(16, 8, "dp", "dp", "ep", 1, launch="graph")
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
    one = run_tiny("h800", tuple(E32.items()))[1]
    assert ep16[1].cycles > one.cycles


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
    overhead = compiled.target.boundary_cycles(compiled.program.deployment.launch)
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


def test_a_partly_filled_node_sends_the_most_over_the_network():
    """12 devices, 8 per node: the slowest device is one of the 4 in the second node, with 3
    node-mates and 8 peers over the network."""
    compiled, _ = run_tiny("h800", tuple(E32.items()), 12, EP)
    notes = [" ".join(k.notes) for k in compiled.program.kernels
             if k.name.startswith("all_to_all")]
    assert any("12 devices, 4 in this node" in n and "over nvlink" in n for n in notes), notes
    # the hottest device (3 experts of group 1, e.g. 24-26) in the second node receives 8
    # tokens from each of its 3 mates and 8 remote peers, each with probability
    # 1/2 x (1 - C(13,2) / C(16,2)) = 0.175
    into = 8 * 0.5 * (1 - math.comb(13, 2) / math.comb(16, 2))
    for n in compiled.graph.nodes():
        if n.op == "all_to_all":
            assert n.attr("wire_node") == pytest.approx(3 * into, abs=1e-3)
            assert n.attr("wire_network") == pytest.approx(8 * into, abs=1e-3)


def test_node_all_to_all_crosses_once_per_node_and_forwards_the_rest():
    """E32 on 16 devices (2 nodes of 8), top-2 from the best of 2 groups of 16: a node holds
    one whole group, so a token reaches the other node exactly when that group is chosen
    (1/2), whichever of its experts it picks. Each device's 8 tokens: 4 cross, against
    8 x 29/240 x 8 = 7.73 rows when each token goes to every device it reaches."""
    direct, run_direct = run_tiny("h800", tuple(E32.items()), 16, EP)
    node, run_node = run_tiny("h800", tuple(E32.items()), 16, EP + ",a2a=node")
    assert "deploy devices=16 per_node=8 attn=dp ffn=dp moe=ep mb=1 a2a=node" in render(
        node.program)
    a2a = lambda c: [n for n in c.graph.nodes() if n.op == "all_to_all"]
    for n in a2a(node):
        assert n.attr("wire_network") == pytest.approx(8 * 0.5, abs=1e-3)
        # forwarded: its own and its rail peer's tokens, to each mate they reach
        assert n.attr("wire_node") == pytest.approx(2 * 7 * 8 * 29 / 240, abs=1e-3)
    for n in a2a(direct):
        assert n.attr("wire_network") == pytest.approx(8 * 8 * 29 / 240, abs=1e-3)
        assert n.attr("wire_node") == pytest.approx(7 * 8 * 29 / 240, abs=1e-3)
    # only the node plan's dispatch exchanges its counts first (DeepEP's normal kernels)
    assert [bool(n.attr("counts")) for n in a2a(node)] == [True, False] * 3
    assert not any(n.attr("counts") for n in a2a(direct))
    time = lambda run, kernel: sum(r.end - r.start for r in run.launches if r.kernel == kernel)
    assert time(run_node, "all_to_all_network_1") < time(run_direct, "all_to_all_network_1")
    assert time(run_node, "all_to_all_nvlink_0") > time(run_direct, "all_to_all_nvlink_0")


def test_count_exchange_costs_a_round_trip_on_each_link():
    """Before a node-plan dispatch, counts go out to every peer and offsets come back: two
    fenced rounds of tiny sends (a peer's 2 slot counts, i32), each one link latency long,
    then the 4 rows (8 tokens, half of which reach the other node), each 64 fp8 elements and
    one fp32 scale. The rows are in L2 (just dispatched); the counts' first read may reach
    memory."""
    node, run_node = run_tiny("h800", tuple(E32.items()), 16, EP + ",a2a=node")
    f = link_figures(H800_TEXT)
    kernel = node.program.kernel_table()["all_to_all_network_0"]
    fences = [ins for ins in kernel.body if getattr(ins, "op", "") == "sync.net"]
    assert len(fences) == 2
    rec = next(r for r in run_node.launches if r.kernel == "all_to_all_network_0")
    counts = 8 * (2 * 4) / f["R_net"]                  # one message to each of 8 remote peers
    payload = 4 * (64 + 4) / f["R_net"]
    exchange = rec.end - rec.start - (payload + f["L_net"])
    assert 2 * (counts + f["L_net"]) - 1e-6 <= exchange <= 2 * (counts + f["L_net"] + f["L_mem"])
