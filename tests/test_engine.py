"""The discrete-event engine, rule by rule, against cycle counts computed by hand."""
import pytest

from runtime.bandwidth import Flow, share
from runtime.engine import COMPUTE, FENCE, TRANSFER, DeadlockError, Engine, Group, Op


def compute(cycles, waits=(), signals=(), label="op"):
    return Op(COMPUTE, label, tuple(waits), tuple(signals), cycles=cycles)


def load(nbytes, cap=10.0, latency=50.0, waits=(), signals=(), path=(("mem", 1.0),)):
    return Op(TRANSFER, "ld", tuple(waits), tuple(signals), nbytes=nbytes, path=path, cap=cap,
              latency=latency)


def run(units, weight=1, tokens=None, capacity=None):
    group = Group("g", weight, units)
    return Engine([group], tokens or {}, capacity or {"mem": 1e9}).run()


def test_compute_ops_on_one_unit_run_in_order():
    assert run({"mm": [compute(30), compute(12)]}).cycles == 42


def test_units_run_concurrently():
    assert run({"mm": [compute(30)], "vec": [compute(50)]}).cycles == 50


def test_token_orders_units_and_is_consumed():
    # vec waits for mm's token: 30 + 20; the second vec op waits for a second signal (none).
    result = run({"mm": [compute(30, signals=["t"]), compute(5, signals=["t"])],
                  "vec": [compute(20, waits=["t"]), compute(1, waits=["t"])]})
    # mm: 0-30, 30-35; vec: 30-50 (first t), 50-51 (second t, available since 35)
    assert result.cycles == 51


def test_transfer_costs_bytes_over_cap_plus_latency():
    # 1000 B at a 10 B/cycle port: 100 cycles, then 50 cycles of latency before the token.
    result = run({"ld": [load(1000, signals=["x"])], "mm": [compute(7, waits=["x"])]})
    assert result.cycles == pytest.approx(100 + 50 + 7)


def test_unit_streams_next_transfer_during_latency():
    # Two loads back to back: the second starts at 100 (not 150); its data lands at 250.
    result = run({"ld": [load(1000), load(1000, signals=["x"])], "mm": [compute(1, waits=["x"])]})
    assert result.cycles == pytest.approx(200 + 50 + 1)


def test_identical_cores_share_bandwidth():
    # 4 cores each load 1000 B through a 20 B/cycle memory: 5 B/cycle each -> 200 cycles.
    result = run({"ld": [load(1000, latency=0)]}, weight=4, capacity={"mem": 20.0})
    assert result.cycles == pytest.approx(200)
    assert result.resource_bytes["mem"] == pytest.approx(4000)
    stats = result.units[("g", "ld")]
    # Alone at its 10 B/cycle port it would take 100 cycles: 100 were lost to memory bandwidth.
    assert stats.bandwidth_wait == {"mem": pytest.approx(100)}


def test_share_is_recomputed_when_a_transfer_finishes():
    # Two groups on a 20 B/cycle memory: 1000 B and 3000 B, ports of 20.
    # Both at 10 B/cycle until the first ends at 100; then the second gets 20: 2000/20 = 100.
    a = Group("a", 1, {"ld": [load(1000, cap=20, latency=0)]})
    b = Group("b", 1, {"ld": [load(3000, cap=20, latency=0)]})
    result = Engine([a, b], {}, {"mem": 20.0}).run()
    assert result.cycles == pytest.approx(200)


def test_coefficients_weight_each_resource():
    # A load whose bytes half-miss L2: memory sees 0.5 x rate. Memory 10 B/c -> rate 20 B/c.
    flow = Flow(1, 100.0, (("l2", 1.0), ("mem", 0.5)), 1000.0)
    share([flow], {"l2": 1000.0, "mem": 10.0})
    assert flow.rate == pytest.approx(20.0)
    assert flow.bottleneck == "mem"


def test_max_min_fairness_gives_spare_to_unconstrained_flow():
    # f1 is capped by its port at 2; f2 takes the rest of the 10 B/c resource.
    f1 = Flow(1, 2.0, (("r", 1.0),), 100.0)
    f2 = Flow(1, 100.0, (("r", 1.0),), 100.0)
    share([f1, f2], {"r": 10.0})
    assert (f1.rate, f2.rate) == (pytest.approx(2.0), pytest.approx(8.0))
    assert f1.bottleneck == "port" and f2.bottleneck == "r"


def test_fence_waits_for_outstanding_transfers():
    ops = [load(1000, latency=50), Op(FENCE, "sync.ld", signals=("done",))]
    result = run({"ld": ops, "vec": [compute(3, waits=["done"])]})
    assert result.cycles == pytest.approx(150 + 3)


def test_initial_credits_bound_the_pipeline_depth():
    # ld waits for a 'free' credit (2 to start); mm returns one per op. Loads take 10 cycles
    # (100 B at 10 B/c, no latency), mm takes 25: loads 0-10, 10-20, then the third waits for
    # the first mm (10-35) to free a slot: 35-45, mm3 starts at max(60, 45) = 60 -> ends 85.
    ld = [load(100, latency=0, waits=["free"], signals=["full"]) for _ in range(3)]
    mm = [compute(25, waits=["full"], signals=["free"]) for _ in range(3)]
    result = run({"ld": ld, "mm": mm}, tokens={"free": 2})
    assert result.cycles == pytest.approx(85)
    assert result.units[("g", "ld")].token_wait == {"free": pytest.approx(15)}


def test_zero_byte_transfer_takes_its_issue_slot_and_no_latency():
    result = run({"ld": [load(0, signals=["x"])], "mm": [compute(4, waits=["x"])]})
    assert result.cycles == 1 + 4


def test_every_compute_op_holds_its_unit_for_an_issue_slot():
    # Four ops of a quarter of a cycle each (a few elements on wide lanes): four cycles, not one.
    result = run({"vec": [compute(0.25) for _ in range(4)]})
    assert result.cycles == 4
    assert result.units[("g", "vec")].busy == 4


def test_a_short_transfer_holds_its_unit_for_a_slot_then_waits_its_latency():
    # 4 bytes at 10 B/cycle move in 0.4 cycles, but each load holds ld for one: the first lets
    # go at 1 and lands at 11, the second at 2 and 12; mm then takes a slot: 13.
    ops = [load(4, latency=10), load(4, latency=10, signals=["x"])]
    result = run({"ld": ops, "mm": [compute(0.5, waits=["x"])]})
    assert result.cycles == pytest.approx(13)
    assert result.units[("g", "ld")].busy == pytest.approx(2)
    assert result.units[("g", "ld")].bandwidth_wait == {}       # the slot is not a stall


def test_a_fence_takes_its_slot_even_with_nothing_in_flight():
    result = run({"st": [Op(FENCE, "sync.st", signals=("done",))],
                  "vec": [compute(3, waits=["done"])]})
    assert result.cycles == 1 + 3


def test_a_signal_waits_for_the_earlier_transfers_of_its_unit():
    # A big load with a long latency, then a small one with a short latency that signals.
    # Bytes at 10 B/cycle: big 0-100, lands at 100 + 500 = 600; small 100-110, lands at 160.
    # The signal releases the queue's past: it fires at 600, not 160; mm ends at 601.
    ops = [load(1000, latency=500), load(100, latency=50, signals=["x"])]
    assert run({"ld": ops, "mm": [compute(1, waits=["x"])]}).cycles == pytest.approx(601)
    # Swapped, the big load moves after the small one: 10-110, lands at 610; mm ends at 611.
    # The swap moves the result by the small load's 10 cycles on the port, not by the
    # 450-cycle difference in latency.
    swapped = [load(100, latency=50), load(1000, latency=500, signals=["x"])]
    assert run({"ld": swapped, "mm": [compute(1, waits=["x"])]}).cycles == pytest.approx(611)


def test_a_signal_fires_in_issue_order_and_an_earlier_one_is_not_held_back():
    # Three loads: x (lands 600) signals a, y (lands 160) signals b, z (lands 170) signals c.
    # a fires at 600; b and c are held until x has landed: 600 as well. The first op does not
    # wait for the later ones: mm (waits a) and vec (waits c) both start at 600.
    ops = [load(1000, latency=500, signals=["a"]), load(100, latency=50, signals=["b"]),
           load(100, latency=50, signals=["c"])]
    result = run({"ld": ops, "mm": [compute(7, waits=["a"])], "vec": [compute(3, waits=["c"])]})
    assert result.cycles == pytest.approx(607)
    assert result.units[("g", "vec")].token_wait == {"c": pytest.approx(600)}


def test_a_zero_byte_transfer_signals_after_the_transfers_before_it():
    # An edge tile past the tensor's end moves nothing, but its signal still releases the
    # load issued before it: 100 cycles of bytes + 50 of latency, then mm's 4.
    ops = [load(1000, latency=50), load(0, signals=["x"])]
    assert run({"ld": ops, "mm": [compute(4, waits=["x"])]}).cycles == pytest.approx(154)


def test_a_signal_does_not_wait_for_other_units():
    # vec is busy for 1,000 cycles; ld's signal at 150 does not wait for it.
    units = {"ld": [load(1000, signals=["x"])], "vec": [compute(1000)],
             "mm": [compute(5, waits=["x"], signals=["y"])], "st": [compute(1, waits=["y"])]}
    result = run(units)
    assert result.cycles == 1000
    assert result.units[("g", "st")].token_wait == {"y": pytest.approx(155)}


def test_deadlock_names_the_blocked_units_and_tokens():
    units = {"mm": [compute(1, waits=["b"], signals=["a"])],
             "vec": [compute(1, waits=["a"], signals=["b"])]}
    with pytest.raises(DeadlockError) as info:
        run(units)
    text = str(info.value)
    assert "g/mm op 0 (op) waits for token 'b'" in text
    assert "g/vec op 0 (op) waits for token 'a'" in text


def test_second_missing_token_is_waited_for_too():
    # mm needs x and y; x comes first at 10, y at 30: mm must not start before 30.
    units = {"ld": [compute(10, signals=["x"]), compute(20, signals=["y"])],
             "mm": [compute(5, waits=["x", "y"])]}
    assert run(units).cycles == 35
