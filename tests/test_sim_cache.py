"""Kernel simulations kept across runs: the same result from disk as from the simulator, keyed
by everything a simulation depends on, and never a half-written or foreign file."""
from __future__ import annotations

import dataclasses
import json

import pytest

from compiler.driver import compile_model
from isa.target_loader import load_target
from runtime import sim_cache
from runtime.interpreter import run_program
from runtime.kernel_sim import simulate_kernel
from runtime.report.json_report import report_dict


@pytest.fixture
def on_disk(tmp_path, monkeypatch):
    """A fresh cache directory, and nothing remembered in this process."""
    monkeypatch.setenv("DSC_CACHE", str(tmp_path))
    sim_cache.clear_memory()
    yield tmp_path / "kernels"
    sim_cache.clear_memory()


def gemm_launch(target="h800"):
    """The GEMM of gemm.ds as the program launches it; the cache emptied after compiling it
    (the tile pass keeps its measurements there too)."""
    compiled = compile_model("examples/gemm.ds", target, {})
    program = compiled.program
    launch = program.schedule[0]
    tensors = program.tensor_table()
    kernel = program.kernel_table()[launch.kernel]
    for path in files(sim_cache.cache_dir("kernels")):
        path.unlink()
    sim_cache.clear_memory()
    return kernel, {p: tensors[t] for p, t in launch.args}, compiled.target


def files(where):
    return sorted(where.rglob("*.json")) if where and where.exists() else []


def test_a_result_read_back_is_the_simulators(on_disk):
    kernel, params, target = gemm_launch()
    first = sim_cache.simulate(kernel, params, target)
    assert first == simulate_kernel(kernel, params, target)
    assert len(files(on_disk)) == 1
    sim_cache.clear_memory()
    again = sim_cache.simulate(kernel, params, target)
    assert again == first and again is not first            # read from the file
    assert isinstance(again.token_wait, dict) and isinstance(again.slot_tokens, frozenset)
    assert all(isinstance(k, tuple) for k in again.token_wait)


def test_the_key_is_everything_but_names(on_disk):
    kernel, params, target = gemm_launch()
    sim_cache.simulate(kernel, params, target)
    renamed = {p: dataclasses.replace(d, name=f"other.{d.name}") for p, d in params.items()}
    sim_cache.simulate(dataclasses.replace(kernel, name="matmul_9"), renamed, target)
    assert len(files(on_disk)) == 1                          # names do not matter
    slower = dataclasses.replace(target, clock_ghz=target.clock_ghz / 2)
    sim_cache.simulate(kernel, params, slower)
    wider = {**params, "a": dataclasses.replace(params["a"], home="replicate")}
    sim_cache.simulate(kernel, wider, target)
    assert len(files(on_disk)) == 3                          # the target and homes do


def test_a_damaged_file_is_simulated_again(on_disk):
    kernel, params, target = gemm_launch()
    first = sim_cache.simulate(kernel, params, target)
    (path,) = files(on_disk)
    path.write_text('{"cycles": ')
    sim_cache.clear_memory()
    assert sim_cache.simulate(kernel, params, target) == first
    assert json.loads(path.read_text())["cycles"] == first.cycles


def test_off_keeps_nothing_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("DSC_CACHE", "off")
    sim_cache.clear_memory()
    kernel, params, target = gemm_launch()
    sim_cache.simulate(kernel, params, target)
    assert not list(tmp_path.rglob("*"))


def test_a_run_from_the_cache_reports_what_a_fresh_one_does(on_disk):
    compiled = compile_model("examples/tiny_moe.ds", "h800", {})
    fresh = report_dict(run_program(compiled.program, compiled.target))
    sim_cache.clear_memory()
    again = compile_model("examples/tiny_moe.ds", "h800", {})
    assert again.program == compiled.program                 # tile choices from the cache
    assert report_dict(run_program(again.program, load_target("h800"))) == fresh


def test_kernels_that_send_nothing_are_keyed_without_the_links_between_devices(monkeypatch):
    """A sweep over the network's bandwidth re-simulates only the collectives: the other
    kernels' key leaves [system] out (they never use it), and the figures are exactly those
    of a run that shares nothing."""
    from compiler.kernels import gemm_tiles
    from compiler.passes import tile
    nodes = {"system.devices_per_node": 4}          # tiny_moe's 8 experts on two nodes
    base = load_target("h800", nodes)
    network = load_target("h800", {**nodes, "system.inter_node.bandwidth_gbs": 100})
    memory = load_target("h800", {**nodes, "memory.bandwidth_gbs": 100})
    assert network.on_device_key == base.on_device_key != memory.on_device_key
    assert repr(network) != repr(base)
    options = dict(devices=8, plan="attn=dp,moe=ep")

    def rows(target):
        program = compile_model("examples/tiny_moe.ds", target, {}, **options).program
        return report_dict(run_program(program, target))["kernels"]
    rows(base)                                   # warms every cache with the base network
    shared = rows(network)
    monkeypatch.setenv("DSC_CACHE", "off")
    sim_cache.clear_memory()
    tile._DECIDED.clear()
    gemm_tiles._CHOICES.clear()
    alone = rows(network)
    assert shared == alone
    sends = [r for r in alone if r["stream"] == "network"]
    assert sends and rows(base) != alone         # the collectives did move
