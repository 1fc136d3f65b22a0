"""Today's timing figures, pinned: every example on every builtin target (and the example user
target) at small sizes, a NUMA run, and the flagship deployment.

A change that should not move any figure (a refactor of how the machine is described, of how
the runtime finds its routes) keeps this test green; a change that should (a new timing rule)
rewrites the file with `pytest --update-golden` and says why in its commit. Figures compare to
a relative 1e-9: a re-association of a sum may move the last bits, nothing else may.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from compiler.driver import compile_model
from runtime.interpreter import run_program

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "pinned_timing.json"
TARGETS = ("h800", "h20", "a100", "b200", "ascend910b", "examples/targets/npu256.toml")
MODELS = {
    "gemm": {}, "grouped": {}, "tiny_moe": {}, "llama3_8b": {"n_layers": "1"},
    "deepseek_v3": {"n_layers": "4"},
    "deepseek_v3_prefill": {"n_layers": "4", "seq": "256"},
}


def _cases() -> dict[str, tuple[str, str, dict, dict]]:
    cases = {}
    for target in TARGETS:
        short = Path(target).stem
        for model, sets in MODELS.items():
            cases[f"{model}@{short}"] = (model, target, sets, {"check_fit": False, "devices": 1})
    for model in ("tiny_moe", "deepseek_v3"):
        cases[f"{model}@b200/numa"] = (model, "b200", MODELS[model],
                                       {"check_fit": False, "devices": 1, "die_mode": "numa"})
    cases["flagship@h800/144"] = ("deepseek_v3", "h800", {},
                                  {"devices": 144, "plan": "attn=dp,moe=ep,mb=2"})
    cases["deepseek_v3@h800/tp16"] = ("deepseek_v3", "h800", {"n_layers": "4"},
                                      {"devices": 16, "plan": "attn=tp16,moe=tp16"})
    cases["deepseek_v3_prefill@b200/32"] = ("deepseek_v3_prefill", "b200",
                                            {"n_layers": "4", "seq": "256"}, {})
    return cases


CASES = _cases()


def figures(case: str) -> dict:
    """Total cycles, each distinct launch's cycles with how many launches took them, and the
    bytes of each resource that carried any, summed over launches."""
    model, target, sets, options = CASES[case]
    compiled = compile_model(str(ROOT / "examples" / f"{model}.ds"), target, sets, **options)
    run = run_program(compiled.program, compiled.target)
    moved: dict[str, float] = {}
    for rec in run.launches:
        for resource, nbytes in rec.result.resource_bytes.items():
            moved[resource] = moved.get(resource, 0.0) + nbytes
    counted: dict[tuple, int] = {}              # (kernel, stream, cycles) -> launches, in order
    for rec in run.launches:
        key = (rec.kernel, rec.stream, rec.result.cycles)
        counted[key] = counted.get(key, 0) + 1
    return {"total_cycles": run.cycles,
            "launches": [[*key, n] for key, n in counted.items()],
            "resource_bytes": {r: b for r, b in sorted(moved.items()) if b}}


@pytest.fixture(scope="module")
def pinned(request):
    update = request.config.getoption("--update-golden")
    table = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    yield table, update
    if update:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for case, fig in sorted(table.items()):
            rows = ",\n  ".join(json.dumps(row) for row in fig["launches"])
            lines.append(f'"{case}": {{"total_cycles": {fig["total_cycles"]!r},\n'
                         f' "resource_bytes": {json.dumps(fig["resource_bytes"])},\n'
                         f' "launches": [\n  {rows}]}}')
        GOLDEN.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_figures_are_pinned(case, pinned):
    table, update = pinned
    got = figures(case)
    if update:
        table[case] = got
        return
    assert case in table, f"{case} is not pinned; run pytest --update-golden"
    want = table[case]
    assert _close(got["total_cycles"], want["total_cycles"]), \
        f"{case}: total {got['total_cycles']!r} cycles, pinned {want['total_cycles']!r}"
    assert len(got["launches"]) == len(want["launches"]), f"{case}: distinct launches changed"
    for g, w in zip(got["launches"], want["launches"]):
        assert g[:2] == w[:2] and _close(g[2], w[2]) and g[3] == w[3], \
            f"{case}: {g[0]} on {g[1]}: {g[3]} x {g[2]!r} cycles, pinned {w[3]} x {w[2]!r}"
    assert sorted(got["resource_bytes"]) == sorted(want["resource_bytes"]), \
        f"{case}: resources {sorted(got['resource_bytes'])} vs {sorted(want['resource_bytes'])}"
    for resource, nbytes in want["resource_bytes"].items():
        assert _close(got["resource_bytes"][resource], nbytes), \
            f"{case}: {resource} moved {got['resource_bytes'][resource]!r} bytes, pinned {nbytes!r}"
