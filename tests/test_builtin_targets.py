"""The builtin targets, a user's own chip, and the `dsc targets` commands.

Derived figures are compared with hand computations from the public datasheet numbers the
target files cite (peak TFLOPS, memory bandwidth, L2), within the rounding each file documents.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path

import pytest

from cli_helpers import dsc, in_repo_root  # noqa: F401  (autouse fixture)

from compiler.driver import compile_model
from isa.target_loader import BUILTIN_DIR, builtin_names, load_target
from isa.target_reference import MARKER, render_reference
from isa.target_schema import Target
from runtime.interpreter import run_program

ROOT = Path(__file__).resolve().parent.parent
BUILTINS = ("a100", "ascend910b", "ascend910c", "b200", "cloudmatrix384", "gb200", "h20", "h800",
            "rtx5090", "wse3")
NPU256 = ROOT / "examples" / "targets" / "npu256.toml"
DOCS = ROOT / "docs" / "targets.md"
T = 1e12


def simulated_seconds(model: str, target: str, overrides: dict[str, str]) -> float:
    compiled = compile_model(model, target, overrides)
    run = run_program(compiled.program, compiled.target)
    return run.cycles / compiled.target.clock_hz


# -- every builtin ---------------------------------------------------------------------------


def test_the_builtins_ship():
    assert tuple(builtin_names()) == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_loads_under_its_own_name(name):
    target = load_target(name)
    assert isinstance(target, Target)
    assert target.name == name
    assert target.description


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_runs_the_gemm_example(name):
    seconds = simulated_seconds("examples/gemm.ds", name, {"M": "512"})
    flops = 2 * 512 * 7168 * 2048
    target = load_target(name)
    peak = max(target.peak_flops(d) for d in target.matrix.formats)
    assert flops / peak <= seconds < 1.0


# -- hand computations from the datasheet figures --------------------------------------------


def test_h20_figures():
    t = load_target("h20")
    assert t.cores == 78
    # 1024 BF16 FLOP/cycle/SM x 78 SMs x 1.83 GHz = 146.2 TFLOPS; quoted "about 148"
    assert t.peak_flops("bf16") == pytest.approx(1024 * 78 * 1.83e9, rel=1e-12)
    assert t.peak_flops("bf16") == pytest.approx(148 * T, rel=0.02)
    assert t.peak_flops("fp8_e4m3") == pytest.approx(296 * T, rel=0.02)
    assert t.peak_memory_bandwidth == pytest.approx(4.0 * T, rel=1e-12)
    assert t.memory.bytes == 96e9
    assert t.l2.bytes == 60e6
    assert t.system.intra_node.bandwidth_gbs == 900 / 2
    # same Hopper SM as h800: shared memory, registers, vector lanes, wgmma shapes
    h800 = load_target("h800")
    assert t.buffers == h800.buffers and t.vector == h800.vector
    assert {d: f.shape for d, f in t.matrix.formats.items()} == {
        d: f.shape for d, f in h800.matrix.formats.items()}


def test_a100_figures_and_no_fp8():
    t = load_target("a100")
    assert t.cores == 108
    assert t.peak_flops("bf16") == pytest.approx(312 * T, rel=5e-3)
    assert t.peak_flops("fp16") == pytest.approx(312 * T, rel=5e-3)
    assert not any(d.startswith(("fp8", "fp6", "fp4")) for d in t.matrix.formats)
    assert t.peak_flops("fp8_e4m3") == 0.0
    assert t.matrix.formats["bf16"].shape == (16, 8, 16)
    assert t.buffer_for("matrix_a")[1].bytes == 164 * 1024
    assert t.peak_memory_bandwidth == pytest.approx(2039e9, rel=1e-12)
    assert t.l2.bytes == 40e6 and t.l2.bytes_per_cycle == 5120
    assert t.system.intra_node.bandwidth_gbs == 600 / 2


def test_b200_is_dual_die_with_block_scaled_low_precision():
    t = load_target("b200")
    assert t.chip.dies == 2 and t.cores == 148
    assert t.die_link is not None
    assert t.die_link.bandwidth_gbs == 10000 / 2       # 10 TB/s read as both directions summed
    assert t.peak_flops("fp4_e2m1") == pytest.approx(9000 * T, rel=5e-3)
    assert t.peak_flops("fp8_e4m3") == pytest.approx(4500 * T, rel=5e-3)
    assert t.peak_flops("bf16") == pytest.approx(2250 * T, rel=5e-3)
    assert t.peak_memory_bandwidth == pytest.approx(8 * T, rel=1e-12)
    assert t.memory.bytes * t.chip.dies == 180e9
    assert t.l2.bytes * t.chip.dies == 126e6
    for dtype in ("fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp6_e3m2", "fp4_e2m1"):
        assert "ue8m0:1x32" in t.matrix.formats[dtype].block_scales
    assert "fp8_e4m3:1x16" in t.matrix.formats["fp4_e2m1"].block_scales
    assert t.system.intra_node.bandwidth_gbs == 900


def test_ascend910b_has_cube_vector_and_fixed_pipe():
    t = load_target("ascend910b")
    assert t.cores == 24                                 # clusters of 1 cube + 2 vector cores
    assert t.matrix.results_to_vector == "memory"
    assert t.fixed_pipe is not None
    assert {"dequant", "quant", "bias", "relu", "layout"} <= set(t.fixed_pipe.ops)
    assert not {"exp", "softmax", "silu"} & set(t.fixed_pipe.ops)
    assert "fix" in t.units
    assert t.matrix.formats["fp16"].shape == (16, 16, 16)
    assert t.matrix.formats["fp16"].flops_per_cycle == 2 * 16 * 16 * 16
    assert t.matrix.formats["int8"].flops_per_cycle == 2 * t.matrix.formats["fp16"].flops_per_cycle
    # 8192 x 24 x 1.8 GHz = 354 TFLOPS, inside the third-party 313-376 range
    assert 313 * T <= t.peak_flops("fp16") <= 376 * T
    assert t.buffer_for("matrix_a")[1].bytes == 512 * 1024
    assert t.buffer_for("accumulator")[1].bytes == 128 * 1024
    assert t.buffer_for("vector")[1].bytes == 2 * 192 * 1024
    assert t.l2.bytes == 192 * 2**20
    assert t.peak_memory_bandwidth == pytest.approx(1.6 * T, rel=1e-12)


def test_gb200_is_a_b200_with_its_share_of_grace_memory_over_c2c():
    t, m = load_target("gb200"), load_target("gb200").machine
    assert t.peak_flops("bf16") == pytest.approx(2500 * T, rel=1e-4)   # 148 x 8192 x 2.062 GHz
    assert t.peak_flops("fp8_e4m3") == pytest.approx(5000 * T, rel=1e-4)
    assert t.peak_flops("fp4_e2m1") == pytest.approx(10000 * T, rel=1e-4)
    assert m.bytes_of("memory") == 186e9 and t.peak_memory_bandwidth == pytest.approx(8 * T)
    assert m.bytes_of("host") == 480e9 / 2                         # half a Grace's LPDDR5X
    assert m.bandwidth_of("host") * t.clock_hz == pytest.approx(512e9 / 2)
    route = m.route(0, m.memory("host", 0))
    assert route.cache.id == "l2.d0" and [l.id for l in route.far] == ["c2c.cpu>d0"]
    assert route.miss_bytes_per_cycle * t.clock_hz == pytest.approx(900e9 / 4)   # the link binds
    assert t.system.devices_per_node == 72 and m.placeable == ("memory", "host")
    b200 = load_target("b200")
    assert t.buffers == b200.buffers and t.vector == b200.vector and t.matrix == b200.matrix


def test_rtx5090_figures():
    t = load_target("rtx5090")
    assert t.cores == 170
    assert t.peak_flops("bf16") == pytest.approx(209.5 * T, rel=2e-3)
    assert t.peak_flops("fp4_e2m1") == 4 * t.peak_flops("bf16")
    assert t.peak_memory_bandwidth == pytest.approx(1792e9)
    assert t.memory.bytes == 32 * 2**30 and t.l2.bytes == 96 * 2**20
    pcie = t.machine.link_for("node")
    assert pcie.id == "pcie" and pcie.bytes_per_cycle * t.clock_hz == pytest.approx(0.8 * 64e9)
    assert t.system.devices_per_node == 8


def test_ascend910c_is_two_910b_class_dies_and_cloudmatrix_one_flat_network():
    c, m = load_target("ascend910c"), load_target("cloudmatrix384")
    b = load_target("ascend910b")
    assert c.chip.dies == 2 and c.cores == 48
    assert c.peak_flops("bf16") == pytest.approx(752 * T, rel=2e-3)
    assert c.peak_memory_bandwidth == pytest.approx(3.2 * T) and c.machine.bytes_of() == 128e9
    assert (c.matrix, c.vector, c.buffers, c.fixed_pipe) == (b.matrix, b.vector, b.buffers,
                                                            b.fixed_pipe)
    assert m.system.devices_per_node == 384                         # no NPU remote in it
    assert m.system.intra_node.bandwidth_gbs == 392
    assert (m.matrix, m.memory, m.l2, m.die_link) == (c.matrix, c.memory, c.l2, c.die_link)


def test_wse3_keeps_everything_in_sram():
    t = load_target("wse3")
    m = t.machine
    assert [u.id for u in m.memories] == ["sram.d0"] and m.reach().cache is None
    assert t.peak_flops("fp16") == pytest.approx(15.84e15, rel=1e-9)    # 16 x 900,000 x 1.1 GHz
    on_wafer = m.bytes_of() + t.cores * t.buffers["sram"].bytes
    assert on_wafer == pytest.approx(44e9, rel=1e-3)                 # 44 GB of SRAM in all
    assert t.peak_memory_bandwidth == pytest.approx(21e15)
    assert m.link_for("node") is None and m.link_for("network").id == "network"


# -- a user's chip ---------------------------------------------------------------------------


def test_npu256_is_consistent():
    t = load_target(str(NPU256))
    assert t.matrix.formats["bf16"].flops_per_cycle == 2 * 256 * 256
    assert t.peak_flops("fp8_e4m3") == 2 * t.peak_flops("bf16")
    # the load ports of all cores together match the off-chip bandwidth
    assert t.dma.load_bytes_per_cycle * t.cores == pytest.approx(
        t.machine.memory("memory", 0).bytes_per_cycle, rel=0.05)


def test_npu256_runs_deepseek():
    seconds = simulated_seconds("examples/deepseek_v3.ds", str(NPU256), {"n_layers": "4"})
    assert seconds > 0


def test_changed_figures_move_the_time_the_right_way(tmp_path):
    text = (BUILTIN_DIR / "h800.toml").read_text()

    def variant(old: str, new: str) -> str:
        assert text.count(old) == 1
        path = tmp_path / f"{new.split()[0]}.toml"
        path.write_text(text.replace(old, new))
        return str(path)

    half_cores = variant("cores_per_die = 132", "cores_per_die = 66")
    fast_memory = variant("bandwidth_gbs = 3350", "bandwidth_gbs = 6700")
    big = simulated_seconds("examples/gemm.ds", "h800", {})
    assert simulated_seconds("examples/gemm.ds", half_cores, {}) > big      # compute-bound
    small = {"M": "64"}                                                      # memory-bound
    assert simulated_seconds("examples/gemm.ds", fast_memory, small) < simulated_seconds(
        "examples/gemm.ds", "h800", small)


# -- dsc targets -----------------------------------------------------------------------------


def test_targets_lists_every_builtin_with_figures(capsys):
    code, out, err = dsc(capsys, "targets")
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert tuple(sorted(rows)) == BUILTINS
    assert "1,979" in rows["h800"] and "989" in rows["h800"]       # FP8 and BF16 TFLOPS
    assert "2 x 74" in rows["b200"] and "8 TB/s" in rows["b200"]
    assert " - " in rows["a100"]                                    # no FP8


@pytest.mark.parametrize("name", BUILTINS)
def test_targets_check_builtin(capsys, name):
    path = str(BUILTIN_DIR / f"{name}.toml")
    code, out, err = dsc(capsys, "targets", "check", path)
    assert (code, out, err) == (0, f"{path}: ok ({name})\n", "")


def test_targets_check_broken_file_names_file_and_line(capsys, tmp_path):
    text = (BUILTIN_DIR / "b200.toml").read_text()
    path = tmp_path / "broken.toml"
    path.write_text(text.replace("cores_per_die = 74", "cores_per_dei = 74"))
    line = 1 + text.splitlines().index(
        next(s for s in text.splitlines() if s.startswith("cores_per_die")))
    code, out, err = dsc(capsys, "targets", "check", str(path))
    assert code == 1 and out == ""
    assert err.startswith(f"{path}:{line}: error: chip.cores_per_dei"), err
    assert "did you mean 'cores_per_die'" in err


def test_targets_show_appends_derived_figures_as_comments(capsys, tmp_path):
    code, out, err = dsc(capsys, "targets", "show", "b200")
    assert code == 0, err
    text = (BUILTIN_DIR / "b200.toml").read_text()
    assert out.startswith(text)
    derived = out[len(text):]
    assert all(not line or line.startswith("#") for line in derived.splitlines())
    assert "peak fp4_e2m1: 9,001.0 TFLOP/s" in derived
    # the whole output is still a valid target file describing the same chip
    copy = tmp_path / "copy.toml"
    copy.write_text(out)
    assert load_target(str(copy)) == load_target("b200")
    assert tomllib.loads(out) == tomllib.loads(text)


def test_targets_schema_prints_the_reference(capsys):
    code, out, err = dsc(capsys, "targets", "schema")
    assert code == 0, err
    assert out == render_reference()


# -- the reference page ----------------------------------------------------------------------


def _schema_classes(cls=Target, seen=None):
    seen = seen if seen is not None else []
    if cls in seen:
        return seen
    seen.append(cls)
    for hint in typing.get_type_hints(cls).values():
        for inner in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(inner):
                _schema_classes(inner, seen)
    return seen


def test_reference_documents_every_key():
    page = render_reference()
    for cls in _schema_classes():
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in page, f.name
            assert f.metadata["doc"] in page, f.name
    for heading in ("`[matrix.formats.DTYPE]`", "`[buffers.NAME]`", "`[system.inter_node]`",
                    "`[fixed_pipe]` (optional)", "`[die_link]` (optional)"):
        assert f"### {heading}" in page
    assert "| `peak_flops(dtype)` |" in page
    assert "`launch_overhead_us * 1e-6 * clock_hz`" in page
    assert "| `route.hit_latency` |" in page


def test_docs_page_is_the_generated_reference(golden):
    """docs/targets.md: a hand-written intro, the marker, then exactly render_reference()."""
    intro, marker, _ = DOCS.read_text().partition(MARKER)
    assert marker, f"{DOCS} lost its marker line"
    golden(DOCS, intro + MARKER + "\n" + render_reference())
