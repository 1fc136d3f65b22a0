"""Link traffic beside compute (runtime/contention.py): the memory bandwidth a deployment's
collectives take while the cores run, by hand."""
from __future__ import annotations

from pathlib import Path

import pytest

from isa.program import TensorDecl
from isa.target_loader import load_target
from runtime.contention import LinkTraffic
from runtime.errors import SimulationError
from runtime.kernel_sim import simulate_kernel
from test_kernel_sim import _copy_kernel

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def h800():
    return load_target("h800")


def test_a_links_traffic_over_a_window_by_hand(h800):
    """A send over [100, 300) reads 2,000 bytes of memory and puts 1,000 on the network (as
    many come back into memory from the peers): 3,000 bytes over 200 cycles. A compute
    window [200, 400) overlaps half of it: 1,500 bytes over 200 cycles, 7.5 bytes/cycle."""
    links = LinkTraffic(h800)
    links.add(100.0, 300.0, {"memory.d0": 2000.0, "memory": 2000.0, "network": 1000.0})
    assert links.background(200.0, 400.0) == {"memory.d0": 7.5}
    assert links.background(300.0, 400.0) == {}                  # over before it starts
    links.add(350.0, 450.0, {"nvlink": 100.0})                   # 100 bytes received
    assert links.background(400.0, 500.0) == {"memory.d0": 0.5}  # 50 of them over 100 cycles


def _copy(rows: int):
    kernel = _copy_kernel(rows=rows, tile=64, grid=rows // 64)
    params = {"x": TensorDecl("x", "bf16", (rows, 64), "temp"),
              "y": TensorDecl("y", "bf16", (rows, 64), "temp")}
    return kernel, params


def test_background_traffic_leaves_a_memory_bound_kernel_the_rest(h800):
    """A big copy with the links taking half of the memory's bandwidth: its 2 x rows x 128
    bytes move at the other half, plus the memory's latency once."""
    rows = 132 * 64 * 8
    kernel, params = _copy(rows)
    memory = h800.machine.memory("memory", 0)
    half = memory.bytes_per_cycle / 2
    alone = simulate_kernel(kernel, params, h800)
    shared = simulate_kernel(kernel, params, h800, background={memory.id: half})
    moved = 2 * rows * 64 * 2
    assert shared.resource_bytes["memory"] == pytest.approx(moved)
    assert shared.cycles == pytest.approx(moved / half + memory.latency_cycles, rel=1e-12)
    assert alone.cycles < shared.cycles


def test_links_that_outrun_the_memory_are_refused(h800):
    kernel, params = _copy(64 * 132)
    memory = h800.machine.memory("memory", 0)
    with pytest.raises(SimulationError, match="the links outrun the memory"):
        simulate_kernel(kernel, params, h800, background={memory.id: memory.bytes_per_cycle})


def test_compute_beside_the_all_to_alls_runs_slower_and_only_there():
    """DeepSeek-V3's decode on 144 devices with two micro-batches: the attention of one
    micro-batch runs while the other's all-to-all moves, so the links take part of its
    memory bandwidth; a launch no transfer overlaps runs as it would alone."""
    from compiler.driver import compile_model
    from runtime.interpreter import run_program
    compiled = compile_model(str(ROOT / "examples" / "deepseek_v3.ds"), "h800", {"n_layers": "5"},
                             devices=144, plan="attn=dp,moe=ep,mb=2")
    run = run_program(compiled.program, compiled.target)
    links = [r for r in run.launches if r.stream != "compute"]
    overlaps = lambda r: any(l.start < r.start + r.result.cycles - r.slowed and l.end > r.start
                             for l in links)
    slowed = [r for r in run.launches if r.slowed > 0]
    assert slowed and all(r.stream == "compute" and overlaps(r) for r in slowed)
    assert all(r.slowed == 0 for r in run.launches if not overlaps(r))
    assert all(r.end - r.start == pytest.approx(r.result.cycles) for r in run.launches)
