"""Where routed tokens land: node-limited routing, tokens sent once per device, the expert load
(uniform, Zipf, histogram), the hottest device setting the pace, and the redundant experts
placed by the balancer. Hand-computed from the combinatorics, not from the code's formulas."""
from __future__ import annotations

import itertools
import math

import pytest

from cli_helpers import dsc, in_repo_root  # noqa: F401  (autouse fixture)
from deployment_helpers import E32, EP, TINY, assert_user_error, run_tiny

from compiler.errors import DscError
from compiler.expert_load import (ExpertTraffic, Routing, balanced, contiguous,
                                  expert_shares)
from isa.assembler import parse_listing
from isa.listing import render

V3 = Routing(256, 8, 8, 4)                     # DeepSeek-V3: top-8, best 4 of 8 groups


def _miss_by_enumeration(routing: Routing, experts: set[int]) -> float:
    """Every choice of groups, then the chance that none of the k picks among their experts
    falls in the set."""
    m, k = routing.experts // routing.groups, routing.top_k
    choices = list(itertools.combinations(range(routing.groups), routing.topk_groups))
    total = 0.0
    for chosen in choices:
        pool = [e for g in chosen for e in range(g * m, (g + 1) * m)]
        inside = sum(1 for e in pool if e in experts)
        total += math.comb(len(pool) - inside, k) / math.comb(len(pool), k)
    return total / len(choices)


def test_node_limited_routing_by_hand():
    """DeepSeek-V3 prefill on 4 nodes of 64 experts: a node holds 2 of the 8 groups. Of the
    C(8,4) = 70 choices of 4 groups, 15 take neither of its groups, 40 one, 15 both."""
    node = set(range(64))
    miss = (15 * 1 + 40 * math.comb(96, 8) / math.comb(128, 8)
            + 15 * math.comb(64, 8) / math.comb(128, 8)) / 70
    assert V3.miss(V3.group_counts(node)) == pytest.approx(miss, rel=1e-12)
    assert _miss_by_enumeration(V3, node) == pytest.approx(miss, rel=1e-12)
    # without the group limit a node is hit more often: 1 - C(192,8) / C(256,8)
    unlimited = Routing(256, 8)
    assert unlimited.miss(unlimited.group_counts(node)) == pytest.approx(
        math.comb(192, 8) / math.comb(256, 8), rel=1e-12)
    assert 1 - miss < 1 - math.comb(192, 8) / math.comb(256, 8)
    # a set spread over groups (decode: 2 experts, say 31 and 32, in two groups)
    for experts in ({31, 32}, {0, 1, 2, 40, 200}, set(range(0, 256, 17))):
        assert V3.miss(V3.group_counts(experts)) == pytest.approx(
            _miss_by_enumeration(V3, experts), rel=1e-12)


def test_node_limited_routing_bounds_the_network_share():
    """DeepSeek's prefill (32 devices, 4 nodes, a2a=node): each of a device's T tokens
    crosses to each other node it reaches once. The hottest device's network rows are
    3 x T x P(node reached); as a share of the T x 8 routed copies that is
    3 x (1 - miss) / 8, against 3 x 64 / 256 = 3/4 of the copies sent one by one."""
    t = 4096
    node = set(range(64))
    reached = 1 - _miss_by_enumeration(V3, node)
    traffic = ExpertTraffic(V3, 32, 8, t, expert_shares("uniform", 256), by_node=True).traffic()
    wire = dict(traffic.wire)
    assert wire["network"] == pytest.approx(3 * t * reached, abs=1e-3)
    share = wire["network"] / (t * 8)
    assert share == pytest.approx(3 * reached / 8, rel=1e-6)
    assert 0.27 < share < 0.28                 # 27% of the routed copies cross the network
    unlimited = ExpertTraffic(Routing(256, 8), 32, 8, t, expert_shares("uniform", 256),
                              by_node=True).traffic()
    assert 0.33 < dict(unlimited.wire)["network"] / (t * 8) < 0.34


def test_a_token_goes_once_to_each_device_it_reaches():
    """8 experts, 2 per device on 4 devices (one node of 4), top-2 with no group limit: a
    device is reached by 1 - C(6,2) / C(8,2) = 13/28 of the tokens, which send it
    2 x 2 / 8 = 14/28 copies each on average; its 3 node-mates and itself receive 13/28 T."""
    t = 1000
    traffic = ExpertTraffic(Routing(8, 2), 4, 4, t, expert_shares("uniform", 8)).traffic()
    wire = dict(traffic.wire)
    assert wire["local"] == pytest.approx(t * 13 / 28, abs=1e-3)
    assert wire["node"] == pytest.approx(3 * t * 13 / 28, abs=1e-3)
    assert wire["network"] == 0
    # the experts compute every copy: 4 devices x T x 2 / 8 per expert
    assert traffic.rows_per_slot == 4 * t * 2 // 8
    assert Routing(8, 2).distinct_share([0, 1]) == pytest.approx(13 / 14, rel=1e-12)


def test_small_batches_are_not_rounded_up_to_a_capacity():
    """Four tokens per device on DeepSeek-V3's 144-device decode: each of its 2 experts
    receives 144 x 4 x 8 / 256 = 18 rows, not 144 x ceil(4 x 8 / 256) = 144."""
    traffic = ExpertTraffic(V3, 144, 8, 4, expert_shares("uniform", 256)).traffic()
    assert (traffic.slots, traffic.rows_per_slot) == (2, 18)
    wire = dict(traffic.wire)
    assert wire["network"] < 136 * 4 * 8 * 2 / 256 + 1e-9     # at most one row per copy


def test_zipf_and_histogram_loads():
    shares = expert_shares("zipf:1", 4)
    h = 1 + 1 / 2 + 1 / 3 + 1 / 4
    assert shares == pytest.approx((1 / h, 1 / 2 / h, 1 / 3 / h, 1 / 4 / h), rel=1e-12)
    assert expert_shares("zipf:0", 4) == pytest.approx((0.25,) * 4)


def test_histogram_file(tmp_path):
    path = tmp_path / "load.txt"
    path.write_text("# tokens per expert\n30 10\n40 20  # the last two\n")
    assert expert_shares(str(path), 4) == pytest.approx((0.3, 0.1, 0.4, 0.2))
    for text in ("1 2 3", "1 2 3 -4", "0 0 0 0", "1 2 x 4"):
        path.write_text(text)
        with pytest.raises(DscError, match="expected 4 non-negative counts"):
            expert_shares(str(path), 4)
    with pytest.raises(DscError, match="cannot read the expert histogram"):
        expert_shares(str(tmp_path / "missing.txt"), 4)
    with pytest.raises(DscError, match="Zipf exponent"):
        expert_shares("zipf:-1", 4)


def test_the_balancer_places_redundant_experts_by_hand():
    """Loads 0.4, 0.3, 0.2, 0.1 on 2 devices with 2 redundant copies. Copies go to the most
    loaded expert per copy: expert 0 (0.4 -> 2 x 0.2), then expert 1 (0.3 -> 2 x 0.15).
    Packed heaviest first onto the least-loaded device with a free slot (3 slots each):
    0.2 -> d0, 0.2 -> d1, 0.2 (e2) -> d0, 0.15 -> d1, 0.15 -> d1, 0.1 (e3) -> d0."""
    shares = (0.4, 0.3, 0.2, 0.1)
    placed = balanced(shares, 2, 2)
    assert placed.replicas == (2, 2, 1, 1)
    assert placed.devices == ((0, 2, 3), (0, 1, 1))
    assert placed.loads(shares) == pytest.approx((0.5, 0.5))
    # in order, two experts each: 0.7 and 0.3 of the copies
    assert contiguous(4, 2).loads(shares) == pytest.approx((0.7, 0.3))


def test_the_hottest_device_sets_the_pace():
    """The same placement of the experts in order, but a Zipf load: the hottest device holds
    experts 0 and 1 and receives (1 + 1/2) / H(32) of all copies, its expert matmuls that many
    rows; the balancer with 16 redundant copies brings it near the mean."""
    uniform, run_uniform = run_tiny("h800", tuple(E32.items()), 16, EP)
    skewed, run_skewed = run_tiny("h800", tuple(E32.items()), 16, EP + ",load=zipf:1")
    h = sum(1 / (e + 1) for e in range(32))
    hot = (1 + 1 / 2) / h
    copies = 16 * 8 * 2 * hot
    rows = lambda c: next(n.type.shape[1] for n in c.graph.nodes()
                          if n.op == "all_to_all" and n.attr("split") == 0)
    assert rows(uniform) == 16 * 8 * 2 // 32
    assert rows(skewed) == math.ceil(copies / 2)
    load = dict(skewed.program.expert_load)
    assert load["hottest"] == pytest.approx(hot * 16, abs=1e-4)
    assert load["hottest"] == load["hottest_in_order"]
    # Six times the rows: more matrix work and more bytes on the hottest device. (These tiny
    # expert GEMMs are latency-bound, and the larger one spreads its 8-row swapped tiles over
    # more cores, so neither its time nor the step's need grow.)
    expert_work = lambda run: sum(r.result.unit_busy["mm"] for r in run.launches
                                  if ".moe.silu" in r.name)
    assert expert_work(run_skewed) > expert_work(run_uniform)
    moved = lambda run: sum(r.result.resource_bytes.get("l2", 0.0) for r in run.launches)
    assert moved(run_skewed) > moved(run_uniform)
    balanced_run = run_tiny("h800", tuple(E32.items()), 16, EP + ",load=zipf:1,redundant=16")
    load = dict(balanced_run[0].program.expert_load)
    assert load["slots"] == 3 and load["hottest"] < 1.1 < load["hottest_in_order"]
    assert rows(balanced_run[0]) < rows(skewed)


def test_load_and_redundant_round_trip_through_a_listing():
    compiled, _ = run_tiny("h800", tuple(E32.items()), 16, EP + ",load=zipf:0.5,redundant=16")
    text = render(compiled.program)
    assert 'deploy devices=16 per_node=8 attn=dp ffn=dp moe=ep mb=1 load="zipf:0.5" ' \
           'redundant=16' in text
    program = parse_listing(text, "x.lst", compiled.target)
    assert program == compiled.program
    assert program.deployment.load == "zipf:0.5" and program.deployment.redundant == 16


@pytest.mark.parametrize("plan, message", [
    ("load=zipf:abc", "Zipf exponent"),
    ("redundant=-1", "expected a number of redundant experts"),
    ("load=nofile.txt", "cannot read the expert histogram"),
])
def test_bad_load_plans_are_one_message(capsys, plan, message):
    code, _, err = dsc(capsys, "run", TINY, "--target", "h800", "--devices", "4", "--plan",
                       f"{EP},{plan}")
    assert_user_error(code, err)
    assert message in err


@pytest.mark.parametrize("experts, devices", [(4, 3), (256, 144), (8, 8), (3, 5), (257, 16)])
def test_experts_are_spread_as_evenly_as_they_divide(experts, devices):
    placement = contiguous(experts, devices)
    held = [len(d) for d in placement.devices]
    assert sorted(e for d in placement.devices for e in d) == list(range(experts))
    assert max(held) - min(held) <= 1 and max(held) == math.ceil(experts / devices)
    assert contiguous(4, 3).devices == ((0,), (1,), (2, 3))   # not (0, 1), (2, 3), ()
