"""Data that stays in a cache between kernels: the LRU model by hand, a chain of kernels that
reads what the one before wrote, and the old behaviour (every kernel starts empty) exactly
when the target says its cache keeps nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from compiler.driver import compile_model
from isa.program import TensorDecl
from isa.target_loader import BUILTIN_DIR, load_target
from runtime.interpreter import run_program
from runtime.residency import Residency

ROOT = Path(__file__).resolve().parent.parent


def keeping_nothing(tmp_path, name: str) -> str:
    """A builtin whose L2 keeps nothing between kernels: the model before caches kept data."""
    text = (BUILTIN_DIR / f"{name}.toml").read_text()
    text = text.replace("\n[memory]\n", '\n[memory]\n', 1)
    head, sep, rest = text.partition("\n[l2]\n")
    path = tmp_path / f"{name}_empty.toml"
    path.write_text(head + sep + 'keeps = "nothing"\n' + rest)
    return str(path)


def decl(name: str, nbytes: int) -> TensorDecl:
    return TensorDecl(name, "int8", (nbytes,), "temp")


def test_least_recently_used_tensors_leave_first_and_the_last_keeps_what_fits():
    target = load_target("h800")                         # one 50 MB L2
    room = 50_000_000
    tensors = {n: decl(n, b) for n, b in (("w", 40_000_000), ("x", 4_000_000),
                                           ("y", 8_000_000), ("z", 30_000_000))}
    r = Residency(target)
    params = {"a": tensors["w"], "b": tensors["x"], "c": tensors["y"]}
    # read w (largest first) then x, wrote y: 52 MB touched, 2 MB of w (least recent) go
    r.update({"a": (40e6, 0.0), "b": (4e6, 0.0), "c": (0.0, 8e6)}, params, tensors)
    assert dict(r.held["l2"]) == {"w": 38e6, "x": 4e6, "y": 8e6}
    assert r.shares(params, tensors) == {"a": 38 / 40, "b": 1.0, "c": 1.0}
    # reading z (30 MB) pushes out w down to what still fits: 50 - 4 - 8 - 30 = 8 MB
    r.update({"d": (30e6, 0.0)}, {"d": tensors["z"]}, tensors)
    assert list(r.held["l2"].items()) == [("w", 8e6), ("x", 4e6), ("y", 8e6), ("z", 30e6)]
    assert sum(r.held["l2"].values()) == room


def test_a_cache_that_keeps_nothing_holds_nothing(tmp_path):
    r = Residency(load_target(keeping_nothing(tmp_path, "h800")))
    assert r.capacity == {}
    t = {"x": decl("x", 100)}
    r.update({"p": (100.0, 0.0)}, {"p": t["x"]}, t)
    assert r.shares({"p": t["x"]}, t) == {}


def run(target: str, model: str = "llama3_8b", sets=None, **options):
    c = compile_model(str(ROOT / "examples" / f"{model}.ds"), target,
                      sets if sets is not None else {"n_layers": "1"}, **options)
    return run_program(c.program, c.target)


def test_decode_activations_are_read_from_l2_by_the_next_kernel(tmp_path):
    """One Llama layer: each kernel's small activations (16 tokens x 4096) are left in L2 for
    the next; the kernels read them from there, and memory carries that much less."""
    kept, empty = run("h800"), run(keeping_nothing(tmp_path, "h800"))
    hits = sum(r.result.kept_hits for r in kept.launches)
    assert hits > 16 * 4096 * 2                         # at least one activation
    assert sum(r.result.kept_hits for r in empty.launches) == 0
    memory = lambda rr: sum(r.result.resource_bytes["memory"] for r in rr.launches)
    assert memory(empty) - memory(kept) == pytest.approx(hits, rel=1e-6)
    assert kept.cycles < empty.cycles


# Figures with caches that keep nothing between kernels, as the timing model gave them when
# caches began to keep data (re-pinned when the timing model moves: sustained figures, launch
# modes, Little's law, L2 working sets, instruction shapes, persistent GEMMs, a node
# all-to-all's count exchange sized by the devices, the links' memory traffic beside compute,
# vector kernels filling the cores, signals that release their unit's whole past, the issue
# slot).
BEFORE = [("h800", "llama3_8b", {"n_layers": "1"}, {}, 1048190.8891416723),
          ("b200", "tiny_moe", {}, {"die_mode": "numa"}, 307840.8400000003),
          ("b200", "deepseek_v3_prefill", {"n_layers": "4", "seq": "256"}, {}, 4270582.79830774)]


@pytest.mark.parametrize("name, model, sets, options, cycles", BEFORE,
                         ids=[f"{m}@{n}" for n, m, *_ in BEFORE])
def test_keeping_nothing_gives_the_figures_of_empty_caches(tmp_path, name, model, sets, options,
                                                         cycles):
    got = run(keeping_nothing(tmp_path, name), model, sets, **options).cycles
    assert got == pytest.approx(cycles, rel=1e-9)
