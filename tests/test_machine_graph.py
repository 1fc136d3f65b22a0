"""Target files in the graph form: [memories.NAME] and [links.NAME], the same machine as the
shorthand tables, routes across links, what access sizes, request rates, conversions and
write-through caches cost, and the rules that relate declarations (located errors)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from compiler.driver import compile_model
from isa.instructions import Transfer
from isa.program import Attr, Box, Buf, BufferDecl, Instr, Kernel, Param, TensorDecl, TensorRef
from isa.expr import Const
from isa.target_loader import BUILTIN_DIR, TargetError, load_target
from runtime.interpreter import run_program
from runtime.kernel_sim import simulate_kernel

ROOT = Path(__file__).resolve().parent.parent
H800 = (BUILTIN_DIR / "h800.toml").read_text()
B200 = (BUILTIN_DIR / "b200.toml").read_text()


def without(text: str, *tables: str) -> str:
    """The file without the named tables (header line to the next header)."""
    out, skip = [], False
    for line in text.splitlines():
        header = re.match(r"\[([^\]]+)\]", line)
        if header:
            skip = header.group(1) in tables
        if not skip:
            out.append(line)
    return "\n".join(out) + "\n"


H800_GRAPH = without(H800, "l2", "memory", "system.intra_node", "system.inter_node") + """
[memories.memory]
bytes = 84900000000
bandwidth_gbs = 3350
latency_ns = 300
achievable = 0.887
achievable_source = "Azure AI-benchmarking-guide, ND H100 v5 STREAM triad 2.97 TB/s"

[memories.l2]
bytes = 50000000
bytes_per_cycle = 6258
latency_cycles = 260
caches = ["memory"]
label = "L2"

[links.nvlink]
between = ["device", "node"]
bandwidth_gbs = 200
latency_us = 3.3
achievable = 0.8
achievable_source = "Zhao et al., Insights into DeepSeek-V3, ISCA'25, section 4.3"

[links.network]
between = ["device", "network"]
bandwidth_gbs = 50
latency_us = 2.8
achievable = 0.8
achievable_source = "Zhao et al., Insights into DeepSeek-V3, ISCA'25, section 4.3"
"""

B200_GRAPH = without(B200, "l2", "memory", "die_link") + """
[memories.memory]
bytes = 90000000000
bandwidth_gbs = 4000
latency_ns = 300

[memories.l2]
bytes = 63000000
bytes_per_cycle = 3508
latency_cycles = 260
caches = ["memory"]
label = "L2"

[links.link]
between = ["die", "die"]
bandwidth_gbs = 5000
latency_ns = 100
label = "die link"
"""


def write(tmp_path: Path, text: str, name: str = "chip.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name, graph", [("h800", H800_GRAPH), ("b200", B200_GRAPH)])
def test_the_graph_form_builds_the_shorthands_machine(tmp_path, name, graph):
    explicit = load_target(write(tmp_path, graph))
    assert explicit.machine == load_target(name).machine


def test_the_graph_form_runs_to_the_same_cycles(tmp_path):
    path = write(tmp_path, B200_GRAPH)
    model = str(ROOT / "examples" / "tiny_moe.ds")
    runs = [run_program(compile_model(model, t, {}).program, load_target(t)).cycles
            for t in ("b200", path)]
    assert runs[0] == runs[1]


# -- a memory behind a link: the requesting die's cache stands in front of it --

HOST = """
[memories.host]
bytes = 480000000000
bandwidth_gbs = 500
latency_ns = 800
at = "cpu"

[links.c2c]
between = ["die", "cpu"]
bandwidth_gbs = 450
latency_ns = 200
"""


def test_a_memory_at_a_place_is_reached_over_the_link_through_the_own_cache(tmp_path):
    text = H800_GRAPH.replace('caches = ["memory"]', 'caches = ["memory", "host"]') + HOST
    m = load_target(write(tmp_path, text), peak=True).machine
    route = m.route(0, m.memory("host", 0))
    assert (route.cache.id, route.near, [l.id for l in route.far]) == \
        ("l2.d0", (), ["c2c.cpu>d0"])
    assert route.miss_latency == pytest.approx((800 + 200) * 1.83)
    assert route.miss_bytes_per_cycle == pytest.approx(450e9 / 1.83e9)   # the link is slower
    assert m.placeable == ("memory", "host")


def test_without_a_cache_in_front_every_load_reaches_the_memory(tmp_path):
    m = load_target(write(tmp_path, H800_GRAPH + HOST)).machine
    route = m.route(0, m.memory("host", 0))
    assert route.cache is None and [l.id for l in route.near] == ["c2c.cpu>d0"]


# -- what the declarations cost: one load kernel, hand-computed --

def _gather_kernel(rows: int, width: int):
    """One core gathers `rows` rows of `width` bf16 values by index (one instruction)."""
    body = (Instr("ld.tile", (Buf("i"), Box("idx", (Const(0),), (rows,))), signal=("ids",)),
            Instr("ld.gather", (Buf("x"), TensorRef("table"), Buf("i"), Attr("rows", rows)),
                  wait=("ids",)))
    kernel = Kernel("g", (Param("idx", "i32", (rows,)), Param("table", "bf16", (4096, width))),
                    (), (BufferDecl("i", "i32", (rows,), 1, "smem"),
                         BufferDecl("x", "bf16", (rows, width), 1, "smem")),
                    (("ids", 0),), body)
    params = {"idx": TensorDecl("idx", "i32", (rows,), "input"),
              "table": TensorDecl("table", "bf16", (4096, width), "weight")}
    return kernel, params


def test_short_rows_cost_whole_accesses_and_requests(tmp_path):
    text = H800_GRAPH.replace("latency_ns = 300\n", "latency_ns = 300\naccess_bytes = 128\n"
                              "requests_per_ns = 1.0\n", 1)
    target = load_target(write(tmp_path, text))
    kernel, params = _gather_kernel(rows=4096, width=32)          # 64-byte rows
    r = simulate_kernel(kernel, params, target)
    ids = 4096 * 4                                                 # the index tile: one run
    assert r.resource_bytes["memory.d0"] == 4096 * 128 + ids       # 128 bytes per 64-byte row
    assert r.resource_bytes["l2.d0"] == 4096 * 64 + ids            # the cache has no such size
    requests = r.resource_bytes["memory.d0 requests"]
    assert requests == 4096 + ids / 128
    per_cycle = 1.0 / 1.83                                         # 1 per ns at 1.83 GHz
    assert r.cycles >= requests / per_cycle
    plain = simulate_kernel(kernel, params, load_target(write(tmp_path, H800_GRAPH, "p.toml")))
    assert plain.cycles < requests / per_cycle                     # the requests bound it


def test_a_converting_link_carries_fewer_bytes(tmp_path):
    from isa.program import Loop
    plain = load_target(write(tmp_path, H800_GRAPH, "a.toml"), peak=True)
    text = H800_GRAPH.replace('between = ["device", "node"]',
                              'between = ["device", "node"]\nconverts = ["bf16>fp8_e4m3"]')
    converting = load_target(write(tmp_path, text, "b.toml"), peak=True)
    rows = 8192
    body = (Instr("net.send", (Box("y", (Const(0), Const(0)), (rows, 1024)),
                               Box("x", (Const(0), Const(0)), (rows, 1024)),
                               Attr("link", "nvlink"))),)
    kernel = Kernel("s", (Param("x", "bf16", (rows, 1024)), Param("y", "bf16", (rows, 1024), True)),
                    (), (), (), body)
    params = {n: TensorDecl(n, "bf16", (rows, 1024), "temp") for n in "xy"}
    a, b = (simulate_kernel(kernel, params, t) for t in (plain, converting))
    nbytes = rows * 1024 * 2
    assert a.resource_bytes["nvlink"] == pytest.approx(nbytes)
    assert b.resource_bytes["nvlink"] == pytest.approx(nbytes / 2)
    link = 200e9 / 1.83e9         # the link's latency is a message's, memory to memory
    assert a.cycles == pytest.approx(nbytes / link + 3.3e-6 * 1.83e9, rel=1e-6)
    assert b.cycles < a.cycles * 0.51 + 3.3e-6 * 1.83e9


def test_a_write_through_cache_sends_stores_on_at_once(tmp_path):
    back = load_target(write(tmp_path, H800_GRAPH, "a.toml"))
    through = load_target(write(tmp_path, H800_GRAPH.replace('label = "L2"',
                                                             'label = "L2"\nwrite = "through"'),
                                "b.toml"))
    body = (Instr("st.tile", (Box("y", (Const(0), Const(0)), (128, 128)), Buf("s"))),)
    kernel = Kernel("w", (Param("y", "bf16", (128, 128), True),), (),
                    (BufferDecl("s", "bf16", (128, 128), 1, "smem"),), (), body)
    params = {"y": TensorDecl("y", "bf16", (128, 128), "output")}
    a, b = (simulate_kernel(kernel, params, t) for t in (back, through))
    assert a.resource_bytes["memory.d0"] == b.resource_bytes["memory.d0"] == 128 * 128 * 2
    memory_latency = back.machine.reach().miss_latency
    assert b.cycles == pytest.approx(a.cycles + memory_latency)


# -- rules --

CASES = [
    ("both bandwidths", H800_GRAPH.replace("bandwidth_gbs = 3350", "bandwidth_gbs = 3350\n"
                                           "bytes_per_cycle = 10"),
     "memories.memory", "give exactly one of bandwidth_gbs and bytes_per_cycle"),
    ("cache of nothing", H800_GRAPH.replace('caches = ["memory"]', 'caches = ["hbm"]'),
     "memories.l2.caches", "'hbm' is not a memory declared here"),
    ("unreached place", H800_GRAPH + HOST.replace("[links.c2c]", "[links.c2c_x]")
     .replace('between = ["die", "cpu"]', 'between = ["die", "pool"]'),
     "memories.host.at", "no link reaches place 'cpu'"),
    ("device link without a system", without(H800_GRAPH, "system"),
     "links.nvlink.between", "a device link needs a [system] table"),
    ("bad conversion", H800_GRAPH.replace('between = ["device", "node"]',
                                          'between = ["device", "node"]\nconverts = ["bf16"]'),
     "links.nvlink.converts", "expected FROM>TO dtypes"),
    ("fraction without source", H800_GRAPH.replace(
        'achievable = 0.8\nachievable_source = "Zhao et al., Insights into DeepSeek-V3, '
        'ISCA\'25, section 4.3"\n\n[links.network]', 'achievable = 0.8\n\n[links.network]'),
     "links.nvlink.achievable", "needs its source"),
    ("two networks", H800_GRAPH + '\n[links.ib]\nbetween = ["device", "network"]\n'
     'bandwidth_gbs = 50\nlatency_us = 3\n', "links.ib.between", "a second link to the network"),
    ("die link on one die", H800_GRAPH + '\n[links.d2d]\nbetween = ["die", "die"]\n'
     'bandwidth_gbs = 50\nlatency_ns = 3\n', "links.d2d.between", "several dies"),
    ("shorthand name taken", H800 + '\n[memories.memory]\nbytes = 1\nbandwidth_gbs = 1\n'
     'latency_ns = 1\n', "memories.memory", "taken by the [memory] table"),
    ("no memory", without(H800_GRAPH, "memories.memory", "memories.l2"), "memories",
     "no memory to keep tensors in"),
]


@pytest.mark.parametrize("case, text, key, message", CASES, ids=[c[0] for c in CASES])
def test_graph_rules_name_the_key_to_fix(tmp_path, case, text, key, message):
    path = write(tmp_path, text)
    with pytest.raises(TargetError) as info:
        load_target(path)
    err = str(info.value)
    assert err.startswith(f"{path}:") and f"error: {key}:" in err and message in err, err
