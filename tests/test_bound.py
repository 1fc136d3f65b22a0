"""A kernel's bound names the resource that limited it, including one die's memory or one
direction of the die-to-die link (runtime/report/summary.py: bound)."""
from isa.target_loader import load_target
from runtime.report.summary import bound

B200 = load_target("b200").machine      # two dies: memory.d0/d1, link.d0>d1 and link.d1>d0


def test_one_direction_of_the_die_link_saturated_is_link_bound():
    # matmul_2 of the absorbed MLA with a 1 TB/s die link: the family is under half used
    # because the other direction idles; the kernel is still waiting on the link.
    util = {"mm": 0.05, "memory": 0.3, "memory.d0": 0.3, "memory.d1": 0.3,
            "link": 0.48, "link.d0>d1": 0.006, "link.d1>d0": 0.953}
    assert bound(util, B200) == "link"


def test_one_dies_memory_saturated_is_memory_bound():
    util = {"vec": 0.1, "memory": 0.46, "memory.d0": 0.92, "memory.d1": 0.0, "link": 0.0}
    assert bound(util, B200) == "memory"


def test_nothing_half_used_is_latency_bound():
    util = {"mm": 0.2, "memory": 0.3, "memory.d0": 0.49, "memory.d1": 0.11,
            "link": 0.2, "link.d0>d1": 0.3, "link.d1>d0": 0.1}
    assert bound(util, B200) == "latency"


def test_the_busiest_resource_wins_across_units_and_instances():
    util = {"mm": 0.8, "memory": 0.4, "memory.d0": 0.79, "memory.d1": 0.01}
    assert bound(util, B200) == "compute"
    util["memory.d0"] = 0.81
    assert bound(util, B200) == "memory"
