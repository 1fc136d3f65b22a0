"""The machine graph built from a target file: resources, their capacities, routes."""
from __future__ import annotations

import pytest

from isa.target_loader import load_target


@pytest.fixture(scope="module")
def b200():
    return load_target("b200", peak=True)     # datasheet figures, as the file writes them


def test_resources_of_a_two_die_chip(b200):
    m = b200.machine
    assert list(m.resources) == ["memory.d0", "memory.d1", "l2.d0", "l2.d1", "link.d0>d1",
                                 "link.d1>d0", "nvlink", "network"]
    assert m.capacity["memory.d1"] == pytest.approx(4000e9 / 1.856e9)
    assert m.capacity["link.d0>d1"] == pytest.approx(5000e9 / 1.856e9)
    assert m.capacity["nvlink"] == pytest.approx(900e9 / 1.856e9)
    assert m.resource("link.d1>d0").label == "die link 1\u21920"
    assert m.family_totals == {"memory": ("memory.d0", "memory.d1"), "l2": ("l2.d0", "l2.d1"),
                               "link": ("link.d0>d1", "link.d1>d0")}


def test_a_remote_load_crosses_the_link_into_the_home_dies_cache(b200):
    m = b200.machine
    load = m.route(0, m.memory("memory", 1))
    assert (load.cache.id, [l.id for l in load.near], load.far) == ("l2.d1", ["link.d1>d0"], ())
    store = m.route(0, m.memory("memory", 1), inward=False)
    assert [l.id for l in store.near] == ["link.d0>d1"]
    local = m.route(1, m.memory("memory", 1))
    assert (local.cache.id, local.near) == ("l2.d1", ())


def test_parts_interleave_replicate_and_home(b200):
    m = b200.machine
    ids = lambda parts: [(u.id, s) for u, s in parts]
    assert ids(m.parts("memory", None, 0)) == [("memory.d0", 0.5), ("memory.d1", 0.5)]
    assert ids(m.parts("memory", -1, 1)) == [("memory.d1", 1.0)]
    assert ids(m.parts("memory", -1, 1, store=True)) == [("memory.d0", 1.0), ("memory.d1", 1.0)]
    assert ids(m.parts("memory", 0, 1)) == [("memory.d0", 1.0)]


def test_one_die_names_its_resources_without_a_die():
    m = load_target("h800").machine
    assert [r.label for r in m.resources.values()] == ["memory", "L2", "nvlink", "network"]
    assert m.family_totals == {"memory": ("memory.d0",), "l2": ("l2.d0",)}
