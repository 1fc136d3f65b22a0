"""Dual-die chips: UMA interleaves memory over the dies (half of the traffic crosses the link);
NUMA places work and data per die, so only replicated activations cross."""
import json
from pathlib import Path

import pytest

from compiler.cli.main import main
from compiler.driver import compile_model
from isa.assembler import parse_listing
from isa.listing import render
from runtime.interpreter import run_program
from runtime.report.summary import unit_totals

MODEL = "examples/deepseek_v3.ds"
ONE_LAYER = {"n_layers": "1", "n_dense": "0"}


def _run(target, mode, overrides=ONE_LAYER):
    compiled = compile_model(MODEL, target, overrides, die_mode=mode, check_fit=False)
    return compiled, run_program(compiled.program, compiled.target)


def _moved(run, resource):
    return sum(r.result.resource_bytes.get(resource, 0.0) for r in run.launches)


@pytest.fixture(scope="module")
def uma():
    return _run("b200", "uma")


@pytest.fixture(scope="module")
def numa():
    return _run("b200", "numa")


def test_uma_sends_about_half_of_all_traffic_over_the_link(uma):
    _, run = uma
    # Interleaved memory: a core finds half of what it reads or writes on the other die.
    assert 0.45 <= _moved(run, "link") / _moved(run, "l2") <= 0.55


def test_numa_keeps_data_on_its_die(uma, numa):
    compiled, run = numa
    assert _moved(run, "link") < 0.05 * _moved(uma[1], "link")
    tensors = compiled.program.tensor_table()
    assert tensors["layer.0.moe.w1"].home == "split:0"              # experts split across dies
    assert all(k.die_var for k in compiled.program.kernels if k.grid)
    util = unit_totals(run)
    d0, d1 = util["memory.d0"]["utilization"], util["memory.d1"]["utilization"]
    assert abs(d0 - d1) < 0.1 * max(d0, d1)


def test_a_narrow_link_costs_uma_not_numa(tmp_path, uma, numa):
    text = Path("isa/targets/b200.toml").read_text()
    start = text.index("[die_link]")
    line = next(l for l in text[start:].splitlines() if l.startswith("bandwidth_gbs"))
    narrow = tmp_path / "b200_narrow.toml"
    narrow.write_text(text.replace(line, "bandwidth_gbs = 200", 1))
    _, uma_narrow = _run(str(narrow), "uma")
    _, numa_narrow = _run(str(narrow), "numa")
    # UMA streams half of everything over the link; NUMA only its replicated activations.
    assert uma_narrow.cycles > 3 * uma[1].cycles
    assert numa_narrow.cycles < 1.2 * numa[1].cycles


def test_placement_round_trips_through_the_listing(numa):
    program = numa[0].program
    text = render(program)
    assert " home=split:" in text and "\n  dies " in text
    assert parse_listing(text) == program


def test_single_die_targets_ignore_the_mode():
    assert compile_model(MODEL, "h800", ONE_LAYER, die_mode="numa").program == \
        compile_model(MODEL, "h800", ONE_LAYER, die_mode="uma").program


def test_report_shows_link_traffic_and_per_die_use(capsys):
    code = main(["run", MODEL, "--target", "b200", "--die-mode", "numa", "--json", "-",
                 *[f"--set={k}={v}" for k, v in ONE_LAYER.items()]])
    assert code == 0
    units = json.loads(capsys.readouterr().out)["units"]
    for key in ("link", "memory.d0", "memory.d1", "mm@d0", "mm@d1"):
        assert key in units and 0 <= units[key]["utilization"] <= 1


@pytest.mark.parametrize("mode", ["uma", "numa"])
def test_whole_model_runs_in_both_modes(mode):
    compiled, run = _run("b200", mode, {})
    assert len(run.launches) > 1000 and run.cycles > 0
