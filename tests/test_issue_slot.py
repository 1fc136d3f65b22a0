"""Every instruction holds its unit for at least one cycle, its issue slot: a listing of tiny
instructions hand-computed on h800, and the JSON report's spans in whole cycles."""
import pytest

from isa.assembler import parse_listing
from isa.target_loader import load_target
from runtime.interpreter import run_program
from runtime.kernel_sim import simulate_kernel
from runtime.report.json_report import _whole, report_dict

LISTING = """; dsc listing: model tiny, target h800
sizes

tensor x: bf16[1,16] input
tensor y: bf16[1,16] output

kernel k(x: bf16[1,16], out y: bf16[1,16])
  grid m=1
  buffer s: bf16[1,16] smem @0
  buffer v: bf16[1,16] smem @64
  token loaded=0 done=0
  ld.tile           s, @x[0:+1, 0:+16]  signal(loaded)
  vec.add           v, s, s  n=16  wait(loaded)
  vec.add           v, v, s  n=16
  vec.add           v, v, s  n=16
  vec.add           v, v, s  n=16  signal(done)
  st.tile           @y[0:+1, 0:+16], v  wait(done)
end

schedule
  launch k(x=x, y=y) flops=0.0
end
"""

# h800 at its peak clock (1.83 GHz): 64 B/cycle load and store ports, 128 vector lanes; a
# cold load waits an L2 hit and a miss (260 + 300 ns x 1.83 GHz = 809 cycles), a store the
# L2 (260).
MISS, HIT = 260 + 300 * 1.83, 260


@pytest.fixture(scope="module")
def tiny():
    target = load_target("h800", peak=True)
    return parse_listing(LISTING, "tiny.lst", target), target


def test_tiny_instructions_take_a_cycle_each(tiny):
    """The load moves 32 bytes in half a cycle but holds ld for one, and lands 809 later:
    810. Each vec.add of 16 elements is 16/128 of a cycle, and takes one: 814. The store's 32
    bytes take a slot too and complete after an L2 hit: 815 + 260 = 1075. Without the slot
    it would be 0.5 + 809 + 4 x 0.125 + 0.5 + 260 = 1070.5."""
    program, target = tiny
    params = {t.name: t for t in program.tensors}
    result = simulate_kernel(program.kernels[0], params, target)
    assert result.cycles == pytest.approx(1 + MISS + 4 * 1 + 1 + HIT)
    assert result.unit_busy == {"ld": 1, "vec": 4, "st": 1}


def test_the_report_shows_at_least_a_cycle_for_every_kernel(tiny):
    """The engine's slot makes every kernel last a cycle or more; the JSON report's whole
    cycles keep that under rounding (both ends rounded to the nearest even could meet)."""
    program, target = tiny
    report = report_dict(run_program(program, target))
    (kernel,) = report["kernels"]
    assert kernel["end_cycle"] - kernel["start_cycle"] == round(1 + MISS + 4 + 1 + HIT)
    assert report["total_cycles"] >= kernel["end_cycle"]


def test_rounding_to_whole_cycles_never_shortens_a_span_below_one():
    assert _whole(1.5, 2.5) == (2, 3)          # both ends round to 2 (half to even)
    assert _whole(0.4, 1.4) == (0, 1)
    assert _whole(3.0, 3.0) == (3, 3)          # nothing ran: no time
