"""Kernel simulation: edge tiles, work-item classes, waves, the L2 model, write-back."""
import dataclasses
import itertools
import math

import pytest

from isa.expr import Const, Var, mul
from isa.program import Attr, Box, Buf, BufferDecl, Instr, Kernel, Loop, Param, TensorDecl
from isa.target_loader import load_target
from runtime.kernel_sim import simulate_kernel
from runtime.streams import box_bytes
from runtime.work_items import waves as wave_list


@pytest.fixture(scope="module")
def h800():
    return load_target("h800")


def test_box_bytes_clip_edge_tiles():
    decl = TensorDecl("x", "bf16", (100, 64), "temp")
    box = Box("x", (mul(Var("m"), Const(64)), Const(0)), (64, 64))
    assert box_bytes(box, decl, {"m": 0}) == 64 * 64 * 2
    assert box_bytes(box, decl, {"m": 1}) == 36 * 64 * 2     # rows 64..99
    assert box_bytes(box, decl, {"m": 2}) == 0               # past the end


def test_fp4_bytes_are_packed():
    decl = TensorDecl("w", "fp4_e2m1", (32, 33), "weight")
    box = Box("w", (Const(0), Const(0)), (32, 33))
    assert box_bytes(box, decl, {}) == (32 * 33 + 1) // 2


def _copy_kernel(rows: int, tile: int, grid: int) -> Kernel:
    """Each work item m loads rows m*tile.. and stores them back: one ld, one st."""
    start = (mul(Var("m"), Const(tile)), Const(0))
    body = (Instr("ld.tile", (Buf("s"), Box("x", start, (tile, 64))), signal=("in",)),
            Instr("st.tile", (Box("y", start, (tile, 64)), Buf("s")), wait=("in",)))
    return Kernel("copy", (Param("x", "bf16", (rows, 64)), Param("y", "bf16", (rows, 64), True)),
                  (("m", grid),), (BufferDecl("s", "bf16", (tile, 64), 1, "smem"),),
                  (("in", 0),), body)


def test_waves_split_items_over_cores(h800):
    kernel = _copy_kernel(rows=5 * 64, tile=64, grid=5)
    two_cores = dataclasses.replace(h800, chip=dataclasses.replace(h800.chip, cores_per_die=2))
    waves = wave_list(kernel, {((False,), None): 0, ((True,), None): 0}, two_cores)
    sequence = [waves.compositions[i] for i in waves.order()]
    assert sequence == [(((0, 0), 2),), (((0, 0), 2),), (((0, 0), 1),)]   # ((class, die), count)
    assert waves.counts() == [2, 1]


def _brute_force_waves(kernel: Kernel, class_of_key: dict, cores: int) -> list[tuple]:
    """Each wave's composition, dealing every item in turn (one die)."""
    sizes = [size for _, size in kernel.grid]
    out = []
    for first in range(0, math.prod(sizes), cores):
        comp: dict = {}
        for index in range(first, min(first + cores, math.prod(sizes))):
            coords, rest = [], index
            for size in reversed(sizes):
                coords.insert(0, rest % size)
                rest //= size
            key = tuple(c == s - 1 and s > 1 for c, s in zip(coords, sizes))
            cls = class_of_key[(key, None)]
            comp[cls] = comp.get(cls, 0) + 1
        out.append(tuple(((c, 0), n) for c, n in sorted(comp.items())))
    return out


@pytest.mark.parametrize("grid,cores", [((("m", 7), ("n", 10)), 4), ((("m", 50), ("n", 3)), 6),
                                        ((("g", 1), ("m", 9), ("n", 5)), 7)])
def test_repeating_waves_are_dealt_once(h800, grid, cores):
    """Waves before the last row of the grid repeat with a period; dealing one period gives
    the same waves as dealing every item."""
    kernel = dataclasses.replace(_copy_kernel(rows=64, tile=64, grid=1), grid=grid)
    keys = itertools.product((False, True), repeat=len(grid))
    class_of_key = {(key, None): sum(key) for key in keys}
    target = dataclasses.replace(h800, chip=dataclasses.replace(h800.chip, cores_per_die=cores))
    waves = wave_list(kernel, class_of_key, target)
    assert [waves.compositions[i] for i in waves.order()] == \
        _brute_force_waves(kernel, class_of_key, cores)


def test_a_trillion_items_in_a_periodic_grid_simulate_at_once(h800):
    kernel = _copy_kernel(rows=10**12 * 64, tile=64, grid=10**12)
    decl = TensorDecl("x", "bf16", (10**12 * 64, 64), "temp")
    result = simulate_kernel(kernel, {"x": decl, "y": decl}, h800)
    assert result.items == 10**12 and result.waves == -(-10**12 // 132)


def test_edge_items_form_their_own_class(h800):
    # 300 rows in tiles of 64: 4 full items and one of 44 rows.
    kernel = _copy_kernel(rows=300, tile=64, grid=5)
    params = {"x": TensorDecl("x", "bf16", (300, 64), "temp"),
              "y": TensorDecl("y", "bf16", (300, 64), "temp")}
    result = simulate_kernel(kernel, params, h800)
    assert result.items == 5 and result.waves == 1
    assert result.resource_bytes["l2"] == pytest.approx(2 * 300 * 64 * 2)   # loads + stores
    assert result.resource_bytes["memory"] == pytest.approx(2 * 300 * 64 * 2)


def test_rereads_hit_l2_when_the_operand_fits(h800):
    # Every item loads the same 64x64 tile of w: memory sees it once, L2 every time.
    body = (Instr("ld.tile", (Buf("s"), Box("w", (Const(0), Const(0)), (64, 64)))),)
    kernel = Kernel("reread", (Param("w", "bf16", (64, 64)),), (("m", 8),),
                    (BufferDecl("s", "bf16", (64, 64), 1, "smem"),), (), body)
    result = simulate_kernel(kernel, {"w": TensorDecl("w", "bf16", (64, 64), "weight")}, h800)
    tile = 64 * 64 * 2
    assert result.resource_bytes["l2"] == pytest.approx(8 * tile)
    assert result.resource_bytes["memory"] == pytest.approx(tile)


def test_memory_bandwidth_bounds_a_kernel_with_write_back(h800):
    # A big copy: stores drain in the background, but the kernel can't beat memory bandwidth.
    rows = 132 * 64 * 8
    kernel = _copy_kernel(rows=rows, tile=64, grid=132 * 8)
    params = {"x": TensorDecl("x", "bf16", (rows, 64), "temp"),
              "y": TensorDecl("y", "bf16", (rows, 64), "temp")}
    result = simulate_kernel(kernel, params, h800)
    moved = 2 * rows * 64 * 2
    assert result.cycles >= moved / h800.machine.memory("memory", 0).bytes_per_cycle * (1 - 1e-9)


def test_multicast_loads_count_once_on_l2(h800):
    body = (Instr("ld.tile", (Buf("s"), Box("w", (Const(0), Const(0)), (64, 64)), Attr("mcast", 2))),)
    kernel = Kernel("mc", (Param("w", "bf16", (64, 64)),), (("m", 4),),
                    (BufferDecl("s", "bf16", (64, 64), 1, "smem"),), (), body)
    result = simulate_kernel(kernel, {"w": TensorDecl("w", "bf16", (64, 64), "weight")}, h800)
    assert result.resource_bytes["l2"] == pytest.approx(4 * 64 * 64 * 2 / 2)


def test_loop_instructions_execute_per_iteration(h800):
    # One 128x128x128 fp8 MMA per step, 10 steps, one item: 10 x 2*128^3/8192 cycles.
    mma = Instr("mm.mma", (Buf("acc"), Buf("a"), Buf("b"), Attr("shape", (128, 128, 128)),
                           Attr("fmt", "fp8_e4m3"), Attr("first", 0)))
    kernel = Kernel("mm", (), (), (), (), (Loop("k", 10, (mma,)),))
    result = simulate_kernel(kernel, {}, h800)
    assert result.cycles == pytest.approx(10 * 2 * 128 ** 3 / 8192)
    assert result.unit_busy["mm"] == pytest.approx(result.cycles)


def test_mma_pads_to_the_instruction_granularity(h800):
    # M=4 rows still cost a 64-row wgmma: pad(4)=64.
    mma = Instr("mm.mma", (Buf("acc"), Buf("a"), Buf("b"), Attr("shape", (4, 128, 128)),
                           Attr("fmt", "bf16"), Attr("first", 1)))
    kernel = Kernel("mm", (), (), (), (), (mma,))
    assert simulate_kernel(kernel, {}, h800).cycles == pytest.approx(2 * 64 * 128 * 128 / 4096)


def test_target_figures_drive_the_result(h800):
    # Doubling the matrix throughput halves a pure-MMA kernel: no constant hides in between.
    fmt = h800.matrix.formats["bf16"]
    fast = dataclasses.replace(h800, matrix=dataclasses.replace(
        h800.matrix, formats={**h800.matrix.formats,
                              "bf16": dataclasses.replace(fmt, flops_per_cycle=2 * fmt.flops_per_cycle)}))
    mma = Instr("mm.mma", (Buf("acc"), Buf("a"), Buf("b"), Attr("shape", (128, 128, 64)),
                           Attr("fmt", "bf16"), Attr("first", 1)))
    kernel = Kernel("mm", (), (), (), (), (mma,))
    assert simulate_kernel(kernel, {}, fast).cycles == pytest.approx(
        simulate_kernel(kernel, {}, h800).cycles / 2)


def test_record_mode_keeps_each_wave_and_its_trace(h800):
    kernel = _copy_kernel(rows=5 * 64, tile=64, grid=5)
    params = {"x": TensorDecl("x", "bf16", (320, 64), "temp"),
              "y": TensorDecl("y", "bf16", (320, 64), "temp")}
    result = simulate_kernel(kernel, params, h800, record=True)
    assert len(result.timeline) == 1 and result.timeline[0][0] == 0.0
    assert result.timeline[0][1] == pytest.approx(result.cycles)
    trace = result.wave_traces[0]
    assert [s[1:3] for s in trace.slices] == [("ld", "ld.tile"), ("st", "st.tile")]
    assert [f[1:3] + f[4:5] for f in trace.flows] == [("in", "ld", "st")]   # ld -> st token
    assert trace.counters and all(v >= 0 for _, use in trace.counters for v in use.values())


def test_stall_reasons_name_the_releasing_unit_and_free_buffers(h800):
    """One buffer slot: the load of tile k+1 waits until the vector unit frees the slot, and
    the vector unit waits for each load. The reasons say so, naming the other unit."""
    from runtime.interpreter import LaunchRecord
    from runtime.report.summary import stall_reason, top_stall
    body = (Loop("k", 8, (
        Instr("ld.tile", (Buf("s"), Box("x", (mul(Var("k"), Const(64)), Const(0)), (64, 64))),
              wait=("free",), signal=("loaded",)),
        Instr("vec.exp", (Buf("s"), Buf("s"), Attr("n", 64 * 64)),
              wait=("loaded",), signal=("free",)))),)
    kernel = Kernel("k", (Param("x", "bf16", (512, 64)),), (), (
        BufferDecl("s", "bf16", (64, 64), 1, "smem"),), (("free", 1), ("loaded", 0)), body)
    result = simulate_kernel(kernel, {"x": TensorDecl("x", "bf16", (512, 64), "temp")}, h800)
    assert result.token_sources == {"free": ("vec",), "loaded": ("ld",)}
    assert result.slot_tokens == {"free"}
    assert result.token_wait[("ld", "free")] > 0 and result.token_wait[("vec", "loaded")] > 0
    rec = LaunchRecord("k", "k", 0.0, result.cycles, 0.0, result)
    assert top_stall(rec, "vector", h800.machine) == "vec waits for 'loaded' from ld"
    assert top_stall(rec, "memory", h800.machine) == "ld waits for a free buffer ('free', released by vec)"
    assert stall_reason("bandwidth", "ld", "link.d0>d1", (), (), load_target("b200").machine) == \
        "ld waits for die link 0\u21921 bandwidth"


def test_a_hand_over_through_l2_reaches_memory_once(h800):
    """Each item writes its tile to a scratch region 4 times and reads it back each time (how
    split cube/vector cores pass tiles): the reads hit L2 and memory absorbs each scratch byte
    once, so off-chip traffic is the input read plus the scratch's size."""
    tile = (64, 64)
    start = (mul(Var("m"), Const(64)), Const(0))
    body = (Instr("ld.tile", (Buf("s"), Box("x", start, tile)), signal=("in",)),
            Loop("j", 4, (
                Instr("st.tile", (Box("h", start, tile), Buf("s")), wait=("in",), signal=("out",)),
                Instr("ld.tile", (Buf("s"), Box("h", start, tile)), wait=("out",), signal=("in",)))))
    kernel = Kernel("handoff", (Param("x", "bf16", (512, 64)), Param("h", "bf16", (512, 64), True)),
                    (("m", 8),), (BufferDecl("s", "bf16", tile, 1, "smem"),),
                    (("in", 0), ("out", 0)), body)
    params = {n: TensorDecl(n, "bf16", (512, 64), "temp") for n in ("x", "h")}
    result = simulate_kernel(kernel, params, h800)
    size = 512 * 64 * 2
    assert result.resource_bytes["l2"] == pytest.approx(size + 4 * size + 4 * size)
    assert result.resource_bytes["memory"] == pytest.approx(size + size)


def test_a_two_core_pair_loads_half_of_b_each():
    # Blackwell's two-core instruction reads its B tile from both cores of the pair: each core
    # loads half. A 256x256 bf16 box (128 KiB) with pair=2 holds the load port for 64 KiB at
    # 64 B/cycle, 1,024 cycles a core, and the pair's two cores read it from L2 once.
    b200 = load_target("b200")
    box = Box("w", (Const(0), Const(0)), (256, 256))

    def loaded(*attrs):
        kernel = Kernel("pair", (Param("w", "bf16", (256, 256)),), (("m", 2),),
                        (BufferDecl("s", "bf16", (256, 256), 1, "smem"),), (),
                        (Instr("ld.tile", (Buf("s"), box) + attrs),))
        return simulate_kernel(kernel, {"w": TensorDecl("w", "bf16", (256, 256), "weight")},
                               b200)

    whole, halves = loaded(), loaded(Attr("pair", 2))
    assert b200.dma.load_bytes_per_cycle == 64
    assert whole.unit_busy["ld"] == pytest.approx(2 * 2048)      # two cores, core-cycles
    assert halves.unit_busy["ld"] == pytest.approx(2 * 1024)
    assert whole.resource_bytes["l2"] == pytest.approx(2 * 256 * 256 * 2)
    assert halves.resource_bytes["l2"] == pytest.approx(256 * 256 * 2)
