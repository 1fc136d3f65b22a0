"""A unit is an in-order queue: a signal releases what the queue issued before it, whatever
order its transfers land in. Hand-computed on a listing of two loads and a store."""
import pytest

from isa.assembler import parse_listing
from isa.target_loader import load_target
from runtime.kernel_sim import simulate_kernel

LOAD_X = "ld.tile           bx, @x[0:+64, 0:+64]"      # 8,192 bytes, cold: misses L2
LOAD_S = "ld.tile           bs, @s[0:+1, 0:+64]"       # 256 bytes, resident in L2: hits


def _listing(first: str, second: str) -> str:
    """Two loads, the second signalling `full`, and a store of x that waits for it."""
    return f"""; dsc listing: model swap, target h800
sizes

tensor x: bf16[64,64] input
tensor s: fp32[1,64] input
tensor y: bf16[64,64] output

kernel k(x: bf16[64,64], s: fp32[1,64], out y: bf16[64,64])
  grid m=1
  buffer bx: bf16[64,64] smem @0
  buffer bs: fp32[1,64] smem @8192
  token full=0
  {first}
  {second}  signal(full)
  st.tile           @y[0:+64, 0:+64], bx  wait(full)
end

schedule
  launch k(x=x, s=s, y=y) flops=0.0
end
"""


def _cycles(first: str, second: str) -> float:
    target = load_target("h800", peak=True)
    program = parse_listing(_listing(first, second), "swap.lst", target)
    params = {t.name: t for t in program.tensors}
    return simulate_kernel(program.kernels[0], params, target, resident={"s": 1.0}).cycles


# h800 at its peak clock (1.83 GHz): the load port and the store port move 64 B/cycle; an L2
# hit waits 260 cycles, a miss 260 + 300 ns x 1.83 GHz = 809.
PORT, HIT, MISS = 64, 260, 260 + 300 * 1.83


def test_the_signal_waits_for_the_longer_load_issued_before_it():
    """x then s: x's bytes 0-128 land at 128 + 809 = 937; s's 128-132 land at 132 + 260 = 392.
    `full` fires when both have landed, at 937 (not at 392, when the signalling load alone
    has); the store then moves 8,192 bytes (128 cycles) and completes after an L2 hit."""
    landed = max(8192 / PORT + MISS, (8192 + 256) / PORT + HIT)
    assert landed == pytest.approx(937)
    assert _cycles(LOAD_X, LOAD_S) == pytest.approx(landed + 8192 / PORT + HIT)


def test_swapping_the_loads_moves_the_time_only_by_the_port_time_of_the_first():
    """s then x: s's bytes 0-4, x's 4-132, landing at 941: `full` fires 4 cycles later than
    in the other order (the port moved s first), not 545 cycles (the difference in latency)."""
    swapped = _cycles(LOAD_S, LOAD_X)
    assert swapped == pytest.approx((256 + 8192) / PORT + MISS + 8192 / PORT + HIT)
    assert swapped - _cycles(LOAD_X, LOAD_S) == pytest.approx(256 / PORT)
