"""Target descriptions: the builtin H800 and its derived figures, user files, and errors.

Every malformed file must raise TargetError (never another exception type) whose message names
the file, the line of the offending key, the dotted key and what was expected.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from isa.target_loader import BUILTIN_DIR, TargetError, builtin_names, load_target
from isa.target_schema import Target

H800_TOML = BUILTIN_DIR / "h800.toml"
H800_TEXT = H800_TOML.read_text()


def edit(old: str, new: str, text: str = H800_TEXT) -> str:
    """Replace exactly one occurrence of `old` (so a test cannot silently edit nothing)."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def line_of(text: str, pattern: str) -> int:
    """1-based number of the only line matching the regex `pattern`."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if re.search(pattern, line)]
    assert len(hits) == 1, (pattern, hits)
    return hits[0]


def write(tmp_path: Path, text: str, name: str = "chip.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(path) -> str:
    with pytest.raises(TargetError) as info:
        load_target(str(path))
    assert type(info.value) is TargetError
    return str(info.value)


def assert_located(message: str, path: Path, line: int, dotted: str) -> None:
    assert message.startswith(f"{path}:{line}:"), message
    assert dotted in message, message


# -- the builtin H800 ------------------------------------------------------------------------


def test_h800_is_builtin_and_loads():
    assert "h800" in builtin_names()
    target = load_target("h800")
    assert isinstance(target, Target)
    assert target.name == "h800"
    assert target.description


def test_h800_raw_values_are_the_published_figures():
    raw = tomllib.loads(H800_TEXT)
    assert raw["clock_ghz"] == 1.83
    assert raw["chip"] == {"dies": 1, "cores_per_die": 132}
    assert raw["matrix"]["formats"]["fp8_e4m3"]["flops_per_cycle"] == 8192
    assert raw["matrix"]["formats"]["bf16"]["flops_per_cycle"] == 4096
    assert raw["memory"]["bandwidth_gbs"] == 3350


def test_h800_derived_figures_match_hand_computation():
    """With --peak the run uses the datasheet figures as written."""
    raw = tomllib.loads(H800_TEXT)
    t = load_target("h800", peak=True)
    clock_hz = raw["clock_ghz"] * 1e9
    cores = raw["chip"]["dies"] * raw["chip"]["cores_per_die"]
    fp8 = raw["matrix"]["formats"]["fp8_e4m3"]["flops_per_cycle"]
    bf16 = raw["matrix"]["formats"]["bf16"]["flops_per_cycle"]

    assert t.clock_hz == pytest.approx(clock_hz, rel=1e-12)
    assert t.cores == cores == 132
    # peak FP8: 8192 FLOP/cycle/SM x 132 SMs x 1.83 GHz (about 1979 TFLOP/s dense)
    assert t.peak_flops("fp8_e4m3") == pytest.approx(8192 * 132 * 1.83e9, rel=1e-12)
    assert t.peak_flops("fp8_e4m3") == pytest.approx(fp8 * cores * clock_hz, rel=1e-12)
    assert t.peak_flops("fp8_e4m3") == pytest.approx(1979e12, rel=5e-3)
    assert t.flops_rate("fp8_e4m3") == t.peak_flops("fp8_e4m3")
    assert t.peak_flops("bf16") == pytest.approx(bf16 * cores * clock_hz, rel=1e-12)
    assert t.peak_flops("bf16") == pytest.approx(989e12, rel=5e-3)
    assert t.peak_flops("fp4_e2m1") == 0.0           # not a supported matrix format on H800
    # off-chip bytes per core clock: 3350 GB/s / 1.83 GHz
    assert t.machine.memory("memory", 0).bytes_per_cycle == pytest.approx(3350e9 / 1.83e9, rel=1e-12)
    assert t.machine.memory("memory", 0).bytes_per_cycle == pytest.approx(
        raw["memory"]["bandwidth_gbs"] * 1e9 / clock_hz, rel=1e-12)
    assert t.peak_memory_bandwidth == pytest.approx(3350e9, rel=1e-12)
    assert t.machine.device_link("nvlink").bytes_per_cycle == pytest.approx(200e9 / 1.83e9)
    # launch overhead: microseconds x cycles per microsecond
    assert t.launch_overhead_cycles == pytest.approx(
        raw["launch_overhead_us"] * 1e-6 * clock_hz, rel=1e-12)
    assert t.launch_overhead_cycles == pytest.approx(2.5 * 1830, rel=1e-12)
    assert t.machine.memory("memory", 0).latency_cycles == pytest.approx(
        raw["memory"]["latency_ns"] * 1e-9 * clock_hz, rel=1e-12)


def test_h800_sustained_figures_match_hand_computation():
    """By default a run uses the sustained clock (1.6 GHz, DeepSeek) and the achievable
    bandwidths (2.97 of 3.35 TB/s, 160 of 200 GB/s); the datasheet peaks stay reported."""
    t = load_target("h800")
    assert t.sustained and t.clock_hz == pytest.approx(1.6e9, rel=1e-12)
    assert t.flops_rate("fp8_e4m3") == pytest.approx(8192 * 132 * 1.6e9, rel=1e-12)
    assert t.peak_flops("fp8_e4m3") == pytest.approx(8192 * 132 * 1.83e9, rel=1e-12)
    # 3350 GB/s x 0.887 = 2971.45 GB/s, in cycles of the 1.6 GHz clock
    assert t.machine.memory("memory", 0).bytes_per_cycle == pytest.approx(2971.45e9 / 1.6e9)
    assert t.memory_bandwidth == pytest.approx(2971.45e9, rel=1e-12)
    assert t.peak_memory_bandwidth == pytest.approx(3350e9, rel=1e-12)
    assert t.machine.device_link("nvlink").bytes_per_cycle == pytest.approx(160e9 / 1.6e9)
    assert t.machine.device_link("network").bytes_per_cycle == pytest.approx(40e9 / 1.6e9)
    # 300 ns of memory latency at 1.6 GHz; a stream launch of 2.5 us
    assert t.machine.memory("memory", 0).latency_cycles == pytest.approx(480, rel=1e-12)
    assert t.launch_overhead_cycles == pytest.approx(2.5 * 1600, rel=1e-12)


def test_launch_modes_cost_what_the_target_gives():
    t = load_target("h800")
    assert [t.launch_us(m) for m in ("stream", "graph", "dependent")] == [2.5, 1.3, 0.34]
    assert [t.boundary_cycles(m) for m in ("stream", "graph", "dependent")] == \
        pytest.approx([0.96 * 1600, 0.96 * 1600, 0])
    assert t.launch_cycles("graph") == pytest.approx(1.3 * 1600, rel=1e-12)
    a100 = load_target("a100")             # no dependent launch figure: a graph launch's
    assert [a100.launch_us(m) for m in ("stream", "graph", "dependent")] == [2.6, 1.34, 1.34]
    plain = load_target("ascend910b")      # no [launch] table: every mode a stream launch
    assert {plain.launch_us(m) for m in ("stream", "graph", "dependent")} == {3.0}


@pytest.mark.parametrize("old,new,key", [
    ("achievable = 0.887 ", "achievable_source = \"\"\nachievable = 0.887 ", "achievable"),
    ('sustained_clock_source = "DeepSeek', 'xsustained_clock_source = "DeepSeek',
     "sustained_clock_ghz"),
    ('source = "RRZE-HPC gpu-benches gpu-small-kernels (stream', 'xsource = "RRZE-HPC '
     'gpu-benches gpu-small-kernels (stream', "launch.source"),
])
def test_sustained_figure_without_source_is_an_error(tmp_path, old, new, key):
    text = edit(old, new)
    if key == "achievable":     # drop the source that follows
        text = text.replace('achievable_source = "Azure', '# achievable_source = "Azure', 1)
    elif key == "sustained_clock_ghz":
        text = text.replace('xsustained_clock_source', '# sustained_clock_source', 1)
    else:
        text = text.replace('xsource = "RRZE', '# source = "RRZE', 1)      # [launch]
    with pytest.raises(TargetError) as err:
        load_target(str(write(tmp_path, text)))
    assert "source" in str(err.value) and key.split(".")[0] in str(err.value)


def test_h800_structure():
    t = load_target("h800")
    assert t.units == ("ld", "st", "mm", "vec", "net")    # no fixed pipe on a GPU; a system
    assert t.fixed_pipe is None and t.die_link is None
    assert t.matrix.formats["fp8_e4m3"].shape == (64, 8, 32)
    assert t.matrix.formats["fp8_e4m3"].accumulator_bits == 13
    assert t.matrix.formats["bf16"].accumulator_bits is None
    assert t.matrix.promotion_interval == 128
    assert t.buffer_for("accumulator")[0] == "registers"
    assert t.buffer_for("matrix_a")[0] == "smem"
    assert t.dma.multicast == 2


# -- user targets ----------------------------------------------------------------------------


def test_user_target_loads_by_path(tmp_path):
    text = edit('name = "h800"', 'name = "mychip"')
    text = edit("cores_per_die = 132", "cores_per_die = 64", text)
    text = edit("clock_ghz = 1.83", "clock_ghz = 1.5", text)
    text = edit("bandwidth_gbs = 3350", "bandwidth_gbs = 1200", text)
    path = write(tmp_path, text, "mychip.toml")
    t = load_target(str(path), peak=True)
    assert t.name == "mychip"
    assert t.cores == 64
    assert t.peak_flops("fp8_e4m3") == pytest.approx(8192 * 64 * 1.5e9, rel=1e-12)
    assert t.machine.memory("memory", 0).bytes_per_cycle == pytest.approx(1200e9 / 1.5e9, rel=1e-12)
    assert t.launch_overhead_cycles == pytest.approx(2.5e-6 * 1.5e9, rel=1e-12)


def test_user_dual_die_target_with_die_link(tmp_path):
    text = edit("dies = 1", "dies = 2") + "\n[die_link]\nbandwidth_gbs = 10000\nlatency_ns = 20\n"
    t = load_target(str(write(tmp_path, text)))
    assert t.cores == 2 * 132
    assert t.die_link.bandwidth_gbs == 10000
    assert t.peak_flops("fp8_e4m3") == pytest.approx(8192 * 264 * 1.83e9, rel=1e-12)
    assert t.peak_memory_bandwidth == pytest.approx(2 * 3350e9, rel=1e-12)


def test_optional_keys_take_their_defaults(tmp_path):
    text = edit("promotion_interval = 128", "")
    text = edit("multicast = 2", "", text)
    t = load_target(str(write(tmp_path, text)))
    assert t.matrix.promotion_interval == 128
    assert t.dma.multicast == 1


def test_user_fixed_pipe_adds_a_unit(tmp_path):
    text = H800_TEXT + '\n[fixed_pipe]\nops = ["dequant", "relu"]\nelements_per_cycle = 256\n'
    t = load_target(str(write(tmp_path, text)))
    assert t.units == ("ld", "st", "mm", "vec", "fix", "net")      # h800 has a [system]
    assert t.fixed_pipe.ops == ("dequant", "relu")


# -- errors ----------------------------------------------------------------------------------


def test_missing_required_key(tmp_path):
    text = edit("cores_per_die = 132         # SMs\n", "")
    path = write(tmp_path, text)
    msg = load_error(path)
    # the key is absent, so the error points at its table
    assert_located(msg, path, line_of(text, r"^\[chip\]"), "chip.cores_per_die")
    assert "missing" in msg


def test_wrong_type_string_for_int(tmp_path):
    text = edit("cores_per_die = 132", 'cores_per_die = "132"')
    path = write(tmp_path, text)
    msg = load_error(path)
    assert_located(msg, path, line_of(text, r"^cores_per_die"), "chip.cores_per_die")
    assert "expected int" in msg and "string" in msg


def test_wrong_type_float_for_int(tmp_path):
    text = edit("dies = 1", "dies = 1.5")
    path = write(tmp_path, text)
    msg = load_error(path)
    assert_located(msg, path, line_of(text, r"^dies"), "chip.dies")
    assert "expected int" in msg


def test_out_of_range_negative(tmp_path):
    text = edit("latency_cycles = 260", "latency_cycles = -5")
    path = write(tmp_path, text)
    msg = load_error(path)
    assert_located(msg, path, line_of(text, r"^latency_cycles"), "l2.latency_cycles")
    assert ">= 0" in msg and "-5" in msg


def test_out_of_range_above_maximum(tmp_path):
    text = edit("dies = 1", "dies = 9")
    path = write(tmp_path, text)
    msg = load_error(path)
    assert_located(msg, path, line_of(text, r"^dies"), "chip.dies")
    assert "<= 8" in msg


def test_unknown_key_suggests_the_close_one(tmp_path):
    text = edit("special_lanes = 16", "special_lanes = 16\nspecial_lane = 4")
    path = write(tmp_path, text)
    msg = load_error(path)
    assert_located(msg, path, line_of(text, r"^special_lane "), "vector.special_lane")
    assert "unknown key" in msg
    assert "did you mean 'special_lanes'" in msg


def test_unknown_top_level_key_suggests_the_close_one(tmp_path):
    text = edit("clock_ghz = 1.83", "clock_gz = 1.83")
    path = write(tmp_path, text)
    msg = load_error(path)
    assert_located(msg, path, line_of(text, r"^clock_gz"), "clock_gz")
    assert "did you mean 'clock_ghz'" in msg


def test_dual_die_without_die_link_names_the_line(tmp_path):
    text = edit("dies = 1", "dies = 2")
    path = write(tmp_path, text)
    msg = load_error(path)
    assert_located(msg, path, line_of(text, r"^dies"), "die_link")


def test_dual_die_without_die_link(tmp_path):
    text = edit("dies = 1", "dies = 2")
    path = write(tmp_path, text)
    msg = load_error(path)
    assert str(path) in msg
    assert "die_link" in msg and "required" in msg
    assert "chip.dies" in msg and "2" in msg


def test_buffer_holds_value_not_in_choices(tmp_path):
    text = edit('holds = ["accumulator"]', 'holds = ["acumulator"]')
    path = write(tmp_path, text)
    msg = load_error(path)
    assert_located(msg, path, line_of(text, r"acumulator"), "buffers.registers.holds")
    assert "acumulator" in msg
    for choice in ("matrix_a", "matrix_b", "accumulator", "vector"):
        assert choice in msg


def test_invalid_toml_syntax(tmp_path):
    text = edit("lanes = 128", "lanes = = 128")
    path = write(tmp_path, text)
    msg = load_error(path)
    line = line_of(text, r"= = 128")
    assert str(path) in msg
    assert f"{path}:{line}:" in msg or f"line {line}" in msg, msg
    assert "TOML" in msg


def test_unknown_builtin_name_suggests_the_close_one():
    with pytest.raises(TargetError) as info:
        load_target("h80")
    msg = str(info.value)
    assert "unknown target 'h80'" in msg
    assert "did you mean 'h800'" in msg
    assert "h800" in msg.split("did you mean", 1)[1]


def test_missing_target_file(tmp_path):
    path = tmp_path / "nope.toml"
    msg = load_error(path)
    assert str(path) in msg


def test_matrix_format_with_unknown_dtype(tmp_path):
    text = edit("[matrix.formats.int8]", "[matrix.formats.fp7]")
    path = write(tmp_path, text)
    msg = load_error(path)
    assert_located(msg, path, line_of(text, r"formats\.fp7"), "matrix.formats.fp7")
    assert "unknown dtype" in msg
    assert "fp8_e4m3" in msg and "bf16" in msg       # says which dtypes were expected


def test_matrix_format_with_bad_block_scale(tmp_path):
    text = edit("accumulator_bits = 13       # DeepSeek",
                'block_scales = ["fp9:1x32"]\naccumulator_bits = 13 # DeepSeek')
    path = write(tmp_path, text)
    msg = load_error(path)
    assert_located(msg, path, line_of(text, r"fp9:1x32"), "matrix.formats.fp8_e4m3.block_scales")
    assert "SCALE_DTYPE:ROWSxCOLS" in msg


def test_instruction_shape_needs_three_values(tmp_path):
    text = edit("shape = [64, 8, 16]         # wgmma", "shape = [64, 8]  # wgmma")
    path = write(tmp_path, text)
    msg = load_error(path)
    assert_located(msg, path, line_of(text, r"^shape = \[64, 8\] "), "matrix.formats.bf16.shape")
    assert "3 values" in msg


def test_table_expected(tmp_path):
    text = edit("[chip]\ndies = 1\ncores_per_die = 132         # SMs\n", "")
    text = text.replace("\n[launch]", "chip = 3\n\n[launch]", 1)       # before any table
    path = write(tmp_path, text)
    msg = load_error(path)
    assert_located(msg, path, line_of(text, r"^chip = 3"), "chip")
    assert "expected a table" in msg


# Robustness: any single-line corruption of the builtin file either loads or is a TargetError.
_VALUES = ['"x"', "-1", "0", "[]", "{}", "true", "3.5", '[1, "a"]', "1e400"]


def _corruptions():
    lines = H800_TEXT.splitlines()
    for i, line in enumerate(lines):
        code = line.split("#", 1)[0].strip()
        if not code:
            continue
        yield "\n".join(lines[:i] + lines[i + 1:]) + "\n"
        match = re.match(r"(\w+)\s*=", code)
        if match:
            for value in _VALUES:
                yield "\n".join(lines[:i] + [f"{match.group(1)} = {value}"] + lines[i + 1:]) + "\n"


def test_corrupted_files_raise_only_target_error(tmp_path):
    path = tmp_path / "fuzz.toml"
    count = 0
    for text in _corruptions():
        path.write_text(text)
        count += 1
        try:
            load_target(str(path))
        except TargetError as err:
            assert str(path) in str(err)
    assert count > 100


def test_non_utf8_file_is_a_target_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(H800_TEXT.encode().replace(b"# SMs", b"# SM\xe9"))
    msg = load_error(path)
    assert str(path) in msg


def test_nan_clock_is_out_of_range(tmp_path):
    text = edit("clock_ghz = 1.83", "clock_ghz = nan")
    path = write(tmp_path, text)
    msg = load_error(path)
    assert_located(msg, path, line_of(text, r"^clock_ghz"), "clock_ghz")


def test_unknown_subtable_names_its_header_line(tmp_path):
    text = edit("[matrix.formats.int8]", "[matrix.formatz.int8]")
    path = write(tmp_path, text)
    msg = load_error(path)
    assert "did you mean 'formats'" in msg
    assert_located(msg, path, line_of(text, r"formatz"), "matrix.formatz")


@pytest.mark.parametrize("old, new, dotted, says", [
    ("bandwidth_gbs = 3350", "bandwidth_gbs = 0", "memory.bandwidth_gbs", ">= 0.001"),
    ("bandwidth_gbs = 3350", "bandwidth_gbs = -1.0", "memory.bandwidth_gbs", ">= 0.001"),
    ("bandwidth_gbs = 3350", "bandwidth_gbs = 1e300", "memory.bandwidth_gbs", "<= 1000000000"),
    ("bandwidth_gbs = 3350", "bandwidth_gbs = inf", "memory.bandwidth_gbs", "finite"),
    ("bytes = 84900000000", "bytes = 1000000000000000000000000000000", "memory.bytes",
     "at most 2^53"),
    ("cores_per_die = 132", "cores_per_die = 1000000000", "chip.cores_per_die", "<= 1048576"),
    ("launch_overhead_us = 2.5", "launch_overhead_us = 1e300", "launch_overhead_us",
     "<= 1000000"),
    ("lanes = 128", "lanes = 0", "vector.lanes", ">= 1"),
])
def test_values_no_chip_has_are_refused(tmp_path, old, new, dotted, says):
    """Zero, negative, non-finite and overflowing figures: each would divide by zero or
    overflow a derived figure, so the loader refuses it at its line."""
    text = edit(old, new)
    path = write(tmp_path, text)
    msg = load_error(path)
    assert_located(msg, path, line_of(text, "^" + re.escape(new)), dotted)
    assert says in msg
