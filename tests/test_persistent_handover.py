"""The hand-over between a persistent worker's items: hand-computed on a two-core h800, equal
to the worker's items written out as one long work item, and never shorter when an
instruction class gets longer."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from isa.assembler import parse_listing
from isa.target_loader import BUILTIN_DIR, load_target
from runtime.kernel_sim import simulate_kernel

# Each tile loads its own 128x64 and 64x128 bf16 blocks per k step, so every load misses L2;
# two accumulators alternate, and their reuse and the output buffer's are ordered by tokens.
HEADER = """; dsc listing: model handover, target two_cores
sizes

tensor a: bf16[1,{rows},{depth}] input
tensor b: bf16[1,{depth},{rows}] weight
tensor c: bf16[1,{rows},128] output

kernel k(a: bf16[1,{rows},{depth}], b: bf16[1,{depth},{rows}], out c: bf16[1,{rows},128])
"""
TILE = """sync.mm             wait(acc_free)
loop k {steps}
  ld.tile           sa[{step}%{stages}], @a[0:+1, {tile}*128:+128, k*64:+64]  wait(free)
  ld.tile           sb[{step}%{stages}], @b[0:+1, k*64:+64, {tile}*128:+128]  signal(loaded)
  mm.mma            acc[{slot}%2], sa[{step}%{stages}], sb[{step}%{stages}]  shape=128x128x64 fmt=bf16 first=k==0  wait(loaded)  signal(free)
end
sync.mm             signal(acc_ready)
vec.cvt             out, acc[{slot}%2]  n=16384  wait(acc_ready,out_free)  signal(out_ready,acc_free)
st.tile             @c[0:+1, {tile}*128:+128, 0:+128], out  wait(out_ready)  signal(out_free)
"""
BUFFERS = """  buffer sa: bf16[128,64] x{stages} smem @0
  buffer sb: bf16[64,128] x{stages} smem @65536
  buffer acc: fp32[128,128] x2 registers @0
  buffer out: bf16[128,128] smem @131072
  token free={stages} loaded=0 acc_ready=0 out_ready=0 out_free=1 acc_free=2
"""
FOOTER = """end

schedule
  launch k(a=a, b=b, c=c) flops=0.0
end
"""


def persistent(tiles: int, steps: int = 2, stages: int = 4) -> str:
    """One tile per work item, walked by the two cores' persistent workers."""
    body = TILE.format(steps=steps, stages=stages, step="k", tile="m", slot="m//2")
    return (HEADER.format(rows=128 * tiles, depth=64 * steps)
            + f"  grid m={tiles}\n  persistent\n" + BUFFERS.format(stages=stages)
            + _indent(body, 2) + FOOTER)


def worker(per_core: int, steps: int = 2, stages: int = 4) -> str:
    """The same tiles as one work item per core that runs its tiles t = 0, 1, ... itself."""
    body = TILE.format(steps=steps, stages=stages, step=f"(t*{steps}+k)", tile="(t*2+m)",
                       slot="t")
    return (HEADER.format(rows=256 * per_core, depth=64 * steps) + "  grid m=2\n"
            + BUFFERS.format(stages=stages) + f"  loop t {per_core}\n" + _indent(body, 4)
            + "  end\n" + FOOTER)


def _indent(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.splitlines())


@pytest.fixture(scope="module")
def two_cores(tmp_path_factory):
    path = tmp_path_factory.mktemp("handover") / "two_cores.toml"
    path.write_text((BUILTIN_DIR / "h800.toml").read_text().replace(
        'name = "h800"', 'name = "two_cores"', 1).replace(
        "cores_per_die = 132", "cores_per_die = 2", 1))
    return str(path)


def _run(text: str, target_file: str, figures: dict | None = None):
    target = load_target(target_file, figures or {}, peak=True)
    program = parse_listing(text, "handover.lst", target)
    (kernel,) = program.kernels
    return simulate_kernel(kernel, {t.name: t for t in program.tensors}, target)


# At the peak 1.83 GHz: a 16 KiB load holds ld 256 cycles (64 B/cycle) and lands an L2 hit
# and a miss later (260 + 300 ns x 1.83 = 809); an mma of 128x128x64 takes 2 x 128 x 128 x
# 64 / 4096 = 512; a fence its slot, 1; the cvt of 16384 elements 128 on 128 lanes; the
# 32 KiB store 512, landing an L2 hit (260) later.
LOAD, MISS, MMA, SLOT, CVT, STORE, HIT = 256, 809, 512, 1, 128, 512, 260


def test_the_hand_over_hides_the_fill_and_the_epilogue(two_cores):
    """One tile: its two loads and their miss before the first mma (2 x 256 + 809 = 1321),
    two mmas, the fence, the cvt and the store: 3246. The next tile's loads go out while the
    first one's mmas run (four slots), so each further tile adds its two mmas and the two
    fences of the mm queue (acc_free before the loop, acc_ready after it): 1026, and a
    hand-over saves 3246 - 1026 = 2220, the fill and the epilogue. Four tiles on two cores
    are two waves (4272); five take a third, partial one (5298), not 3 x 3246."""
    one = 2 * LOAD + MISS + 2 * MMA + SLOT + CVT + STORE + HIT
    further = 2 * MMA + 2 * SLOT
    assert _run(persistent(2), two_cores).cycles == one == 3246
    four = _run(persistent(4), two_cores)
    assert four.cycles == one + further == 4272
    assert four.handover_overlap == one - further == 2220
    five = _run(persistent(5), two_cores)
    assert (five.waves, five.cycles) == (3, one + 2 * further)


@pytest.mark.parametrize("per_core", [2, 3, 5])
def test_a_worker_takes_what_its_tiles_take_back_to_back(two_cores, per_core):
    assert _run(persistent(2 * per_core), two_cores).cycles == \
        _run(worker(per_core), two_cores).cycles


def test_a_short_main_loop_waits_for_the_slots_the_item_before_holds(two_cores):
    """Two k steps on four slots with slow loads and a 7,490-cycle miss: a pair of tiles
    alone starts both on the four free slots, so the second one's loads run wholly under
    the first one's miss (it adds 4,096 cycles); the third waits for slots the second holds
    (5,954), and from then on the tiles alternate. Five tiles a worker take 34,839 cycles
    and six 38,935; taking every tile as the pair's second, 14,739 + 4 x 4,096 = 31,123
    (11% short) and 35,219."""
    slow = {"dma.load_bytes_per_cycle": 16, "l2.latency_cycles": 2000,
            "memory.latency_ns": 3000}
    assert [_run(worker(n), two_cores, slow).cycles for n in (1, 2, 3, 5, 6)] == \
        [14739, 14739 + 4096, 14739 + 4096 + 5954, 34839, 38935]
    assert _run(persistent(10), two_cores, slow).cycles == 34839
    assert _run(persistent(12), two_cores, slow).cycles == 38935


# One figure the instructions' durations come from, each made worse by a factor.
SLOWER = {
    "dma.load_bytes_per_cycle": (64, lambda v, f: v / f),
    "dma.store_bytes_per_cycle": (64, lambda v, f: v / f),
    "vector.lanes": (128, lambda v, f: max(1, int(v / f))),
    "matrix.formats.bf16.flops_per_cycle": (4096, lambda v, f: max(1, int(v / f))),
    "l2.latency_cycles": (260, lambda v, f: int(v * f)),
    "memory.latency_ns": (300, lambda v, f: v * f),
}


@settings(max_examples=25, deadline=None)
@given(tiles=st.integers(3, 13), steps=st.integers(1, 4), stages=st.sampled_from([1, 2, 4]),
       base=st.fixed_dictionaries({k: st.sampled_from([1, 4, 16]) for k in SLOWER}),
       figure=st.sampled_from(sorted(SLOWER)), factor=st.sampled_from([1.01, 1.3, 2, 8]))
def test_a_longer_instruction_never_shortens_a_persistent_kernel(
        two_cores, tiles, steps, stages, base, figure, factor):
    """`base` scales each figure down (rates) or up (latencies) from h800's, so the kernel
    is bound in turn by loads, latency, the matrix unit, the cvt or the stores."""
    figures = {k: worse(value, scale) for k, (value, worse) in SLOWER.items()
               for scale in [base[k]]}
    longer = dict(figures, **{figure: SLOWER[figure][1](figures[figure], factor)})
    text = persistent(tiles, steps, stages)
    before = _run(text, two_cores, figures).cycles
    assert _run(text, two_cores, longer).cycles >= before * (1 - 1e-12)
