"""How dsc runs kernels the way production runs them, each mechanism hand-computed on a small
case: sustained figures next to the peaks, bytes in flight (Little's law), L2 as a working set,
launch modes, and `dsc validate`."""
from __future__ import annotations

import dataclasses
import json

import pytest

from compiler.driver import compile_model
from isa.expr import Const, Var, add, mul
from isa.listing import render
from isa.assembler import parse_listing
from isa.program import Attr, Box, Buf, BufferDecl, Instr, Kernel, Loop, Param, TensorDecl
from isa.target_loader import load_target
from runtime.interpreter import run_program
from runtime.kernel_sim import simulate_kernel
from runtime.report.json_report import report_dict
from runtime.report.text import summary_text
from tests.cli_helpers import dsc

TILE = (64, 64)                          # bf16: 8,192 bytes


def _loads(items: int, tiles: int = 1) -> tuple[Kernel, dict]:
    """Each work item loads `tiles` 64x64 bf16 tiles of x of its own, back to back (cold
    reads)."""
    rows = 64 * items * tiles
    start = (mul(add(mul(Var("m"), Const(tiles)), Var("t")), Const(64)), Const(0))
    body = (Loop("t", tiles, (Instr("ld.tile", (Buf("s"), Box("x", start, TILE))),)),)
    kernel = Kernel("ld", (Param("x", "bf16", (rows, 64)),), (("m", items),),
                    (BufferDecl("s", "bf16", TILE, 1, "smem"),), (), body)
    return kernel, {"x": TensorDecl("x", "bf16", (rows, 64), "input")}


def _with_window(target, nbytes):
    return dataclasses.replace(target, dma=dataclasses.replace(
        target.dma, bytes_in_flight=nbytes, bytes_in_flight_source="a test"))


@pytest.fixture(scope="module")
def h800_peak():
    return load_target("h800", peak=True)


# -- memory-level parallelism --------------------------------------------------------------

def test_a_core_moves_at_most_its_bytes_in_flight_per_latency(h800_peak):
    """One core, one cold 8,192-byte load. Its latency is an L2 hit (260 cycles) plus the
    miss (300 ns x 1.83 GHz = 549 cycles): 809 cycles. At its port (64 B/cycle) it takes
    8192/64 + 809 = 937 cycles; with 2,048 bytes in flight it moves 2048/809 B/cycle."""
    kernel, params = _loads(1)
    latency = 260 + 300 * 1.83
    assert simulate_kernel(kernel, params, h800_peak).cycles == pytest.approx(
        8192 / 64 + latency)
    limited = simulate_kernel(kernel, params, _with_window(h800_peak, 2048))
    assert limited.cycles == pytest.approx(8192 / (2048 / latency) + latency)


def test_a_kernel_with_few_items_cannot_draw_the_memory_roof(h800_peak):
    """Four items on four cores: by Little's law at most 4 x 16 KiB per 809 cycles, about
    81 B/cycle of the memory's 1,831; with 132 cores' worth of items the roof is reached."""
    window = 16384
    target = _with_window(h800_peak, window)
    latency = 260 + 300 * 1.83
    few = simulate_kernel(*_loads(4), target)
    assert few.cycles == pytest.approx(8192 / (window / latency) + latency)
    rate = 4 * 8192 / (few.cycles - latency)
    assert rate == pytest.approx(4 * window / latency)
    assert rate < 0.05 * target.machine.memory("memory", 0).bytes_per_cycle
    many = simulate_kernel(*_loads(132, tiles=64), target)
    memory = target.machine.memory("memory", 0).bytes_per_cycle
    assert 132 * 64 * 8192 / many.cycles > 0.9 * memory


def test_a_kernel_pays_the_memory_latency_before_its_bytes_flow(h800_peak):
    """A store-only kernel: its waves end in L2 (write-back) long before memory has absorbed
    the bytes; the kernel takes the bytes over memory bandwidth plus one memory latency (the
    first access must reach memory before anything flows): no kernel reaches the roof at
    once."""
    items = 132 * 8
    start = (mul(Var("m"), Const(64)), Const(0))
    body = (Instr("st.tile", (Box("y", start, TILE), Buf("s"))),)
    kernel = Kernel("st", (Param("y", "bf16", (items * 64, 64), True),), (("m", items),),
                    (BufferDecl("s", "bf16", TILE, 1, "smem"),), (), body)
    params = {"y": TensorDecl("y", "bf16", (items * 64, 64), "output")}
    result = simulate_kernel(kernel, params, h800_peak)
    memory = h800_peak.machine.memory("memory", 0)
    assert result.cycles == pytest.approx(items * 8192 / memory.bytes_per_cycle + 300 * 1.83)


def test_bytes_in_flight_needs_its_source(tmp_path):
    from isa.target_loader import BUILTIN_DIR, TargetError
    text = (BUILTIN_DIR / "h800.toml").read_text().replace(
        "multicast = 2 ", "bytes_in_flight = 32768\nmulticast = 2 ", 1)
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(TargetError, match="dma.bytes_in_flight: bytes in flight need"):
        load_target(str(path))


# -- L2 as a working set -------------------------------------------------------------------

def _strips(l2_tiles: int):
    """Grid (m: 4, n: 2) on 2 cores: item (m, n) loads tile m of a and tile n of b. A wave is
    (m, 0), (m, 1): they share a's tile (one fetch); b's two tiles are re-read by every wave.
    The kernel touches 6 tiles in all, a wave 3 (1 of a, 2 of b)."""
    from isa.program import Param as P
    body = (Instr("ld.tile", (Buf("s"), Box("a", (mul(Var("m"), Const(64)), Const(0)), TILE))),
            Instr("ld.tile", (Buf("s"), Box("b", (mul(Var("n"), Const(64)), Const(0)), TILE))))
    kernel = Kernel("strips", (P("a", "bf16", (256, 64)), P("b", "bf16", (128, 64))),
                    (("m", 4), ("n", 2)), (BufferDecl("s", "bf16", TILE, 1, "smem"),), (), body)
    params = {"a": TensorDecl("a", "bf16", (256, 64), "input"),
              "b": TensorDecl("b", "bf16", (128, 64), "weight")}
    h800 = load_target("h800", peak=True)
    target = dataclasses.replace(
        h800, chip=dataclasses.replace(h800.chip, cores_per_die=2),
        l2=dataclasses.replace(h800.l2, bytes=l2_tiles * 8192, keeps="nothing"))
    return simulate_kernel(kernel, params, target).resource_bytes["memory"]


def test_reuse_is_charged_by_what_a_wave_touches_not_the_whole_kernel():
    """With room for 4 tiles the wave's 3 fit: b is fetched once (2 tiles), a once per wave
    (4 tiles), though the kernel's 6 tiles would not fit. With room for 2 the wave spills a
    third: b's 6 re-reads miss a third of the time (2 + 6/3 = 4 tiles)."""
    assert _strips(4) == 6 * 8192
    assert _strips(2) == 8 * 8192


# -- sustained figures and peaks -----------------------------------------------------------

def test_a_compute_bound_kernel_runs_at_the_sustained_clock():
    """The same cycles, at 1.6 GHz instead of 1.83: 1.83/1.6 times the time."""
    mma = Instr("mm.mma", (Buf("acc"), Buf("a"), Buf("b"), Attr("shape", (128, 128, 128)),
                           Attr("fmt", "fp8_e4m3"), Attr("first", 1)))
    kernel = Kernel("mm", (), (), (), (), (mma,))
    sustained, peak = load_target("h800"), load_target("h800", peak=True)
    a, b = (simulate_kernel(kernel, {}, t).cycles for t in (sustained, peak))
    assert a == b == pytest.approx(2 * 128 ** 3 / 8192)
    assert (a / sustained.clock_hz) / (b / peak.clock_hz) == pytest.approx(1.83 / 1.6)


def test_the_report_says_which_figures_were_used(capsys):
    code, out, _ = dsc(capsys, "run", "examples/gemm.ds", "--target", "h800", "--set", "M=256",
                       "--json", "-")
    assert code == 0
    figures = json.loads(out)["figures"]
    assert figures["mode"] == "sustained" and figures["clock_ghz"] == 1.6
    assert figures["peak_clock_ghz"] == 1.83 and "FlashMLA" in figures["clock_source"]
    assert figures["bandwidths"]["memory"]["gbs"] == pytest.approx(3350 * 0.887)
    assert figures["bandwidths"]["nvlink"]["source"].startswith("Zhao et al.")
    code, out, _ = dsc(capsys, "run", "examples/gemm.ds", "--target", "h800", "--set", "M=256",
                       "--peak", "--json", "-")
    peak = json.loads(out)["figures"]
    assert peak["mode"] == "peak" and peak["clock_ghz"] == 1.83
    assert peak["bandwidths"]["memory"]["gbs"] == pytest.approx(3350)
    code, out, _ = dsc(capsys, "run", "examples/gemm.ds", "--target", "h800", "--set", "M=256")
    assert "figures: sustained" in out and "clock 1.6 of 1.83 GHz: DeepSeek" in out
    code, out, _ = dsc(capsys, "run", "examples/gemm.ds", "--target", "h800", "--set", "M=256",
                       "--peak")
    assert "figures: datasheet peaks (--peak)" in out


# -- launch modes --------------------------------------------------------------------------

@pytest.mark.parametrize("mode, us, boundary", [("stream", 2.5, 0.96), ("graph", 1.3, 0.96),
                                                ("dependent", 0.34, 0.0)])
def test_each_launch_mode_costs_what_the_target_gives(mode, us, boundary):
    """A kernel starts once the previous one ended `boundary` ago (0.96 us on h800, hidden by
    a dependent launch) and no sooner than `us` after the previous one started (the launch
    rate): the first at `us`."""
    compiled = compile_model("examples/tiny_moe.ds", "h800", {"n_layers": "2"},
                             plan=f"launch={mode}")
    run = run_program(compiled.program, compiled.target)
    interval, gap = us * 1600, boundary * 1600            # cycles at 1.6 GHz
    assert run.launches[0].start == pytest.approx(interval)
    for a, b in zip(run.launches, run.launches[1:]):
        assert b.start == pytest.approx(max(a.end + gap, a.start + interval))
    assert any(b.start - a.end > gap * 1.01 for a, b in zip(run.launches, run.launches[1:]))
    assert report_dict(run)["launch"] == {"mode": mode, "us": us}
    waiting = sum(r.launching for r in run.launches) / 1600
    assert f"{mode} launches (one per {us:g} us at most) = {waiting:,.1f} us" in summary_text(run)


def test_decode_runs_as_a_graph_and_prefill_on_a_stream_by_default():
    """tiny_moe appends 4 tokens to a cache holding 8 (decode); with ctx=0 it fills a fresh
    cache (a prefill); a single GEMM has no cache at all."""
    decode = compile_model("examples/tiny_moe.ds", "h800", {"n_layers": "2"})
    prefill = compile_model("examples/tiny_moe.ds", "h800", {"n_layers": "2", "ctx": "0"})
    gemm = compile_model("examples/gemm.ds", "h800", {"M": "256"})
    assert [c.program.deployment.launch for c in (decode, prefill, gemm)] == \
        ["graph", "stream", "stream"]


def test_the_launch_mode_survives_the_listing():
    compiled = compile_model("examples/tiny_moe.ds", "h800", {"n_layers": "2"})
    text = render(compiled.program)
    assert "deploy devices=1 per_node=1 attn=dp ffn=dp moe=ep mb=1 launch=graph" in text
    again = parse_listing(text, "tiny.lst", compiled.target)
    assert again.deployment.launch == "graph"
    assert run_program(again, compiled.target).cycles == \
        run_program(compiled.program, compiled.target).cycles


# -- dsc validate --------------------------------------------------------------------------

def test_validate_reproduces_each_bench_by_hand(tmp_path, capsys):
    """A target with one row of each bench; the link rows are hand-computed: a 64-byte
    message crosses NVLink in 3.3 us plus 64 bytes at 160 GB/s, the 1 GB transfer reaches
    160 GB/s less its latency."""
    from compiler.cli.validate import validate
    from isa.target_loader import BUILTIN_DIR
    text = (BUILTIN_DIR / "h800.toml").read_text()
    path = tmp_path / "chip.toml"
    path.write_text(text)
    target, rows = validate(str(path))
    by = {r.name: r for r in rows}
    assert set(by) == {"copy", "gemm_bf16", "gemm_fp8", "gemm_fp8_best", "attention_fa3",
                       "attention_cudnn", "launch_stream", "launch_graph", "nvlink_latency",
                       "ib_latency", "nvlink_bulk", "ib_bulk"}
    # one way: the link's latency (a message's, memory to memory, as measured) and the
    # message at 160 GB/s (0.4 ns, but a send holds its unit for at least an issue slot: one
    # cycle at 1.6 GHz)
    one_way = 3.3 + max(64 / 160e3, 1 / 1.6e3)
    assert by["nvlink_latency"].simulated == pytest.approx(one_way, rel=1e-6)
    seconds = 2**30 / 160e9 + 3.3e-6
    assert by["nvlink_bulk"].simulated == pytest.approx(2**30 / seconds / 1e9, rel=1e-6)
    assert by["launch_stream"].simulated == pytest.approx(2.5)     # tiny kernels: the rate
    assert by["nvlink_bulk"].error == pytest.approx(by["nvlink_bulk"].simulated / 160 - 1)
    assert 1000 < by["gemm_fp8"].simulated < 8192 * 132 * 1.6e9 / 1e12
    code, out, _ = dsc(capsys, "validate", str(path))
    assert code == 0 and out.startswith("h800 (sustained figures)") and "median |error|" in out
    fa3 = next(line for line in out.splitlines() if line.startswith("attention_fa3 "))
    assert "B=4 H=48 S=4096 D=128 bf16" in fa3 and " 628 " in fa3 and "tritonbench PR #1254" in fa3
    assert f"{by['attention_fa3'].simulated:,.0f}" in fa3
    code, out, _ = dsc(capsys, "validate", str(path), "--peak", "--json", "-")
    data = json.loads(out)
    assert data["figures"] == "peak" and len(data["rows"]) == 12
    assert {"name", "dsc", "measured", "unit", "error", "source"} <= set(data["rows"][0])


@pytest.mark.parametrize("row, key, message", [
    ('bench = "gemm"\ndtype = "bf16"\nsize = [1, 2]\nvalue = 1\nsource = "s"\n', "size",
     "gemm rows need size = [M, N, K]"),
    ('bench = "gemm"\ndtype = "fp9"\nsize = [1, 2, 3]\nvalue = 1\nsource = "s"\n', "dtype",
     "unknown dtype 'fp9'"),
    ('bench = "gemm"\ndtype = "mxfp4 scaled(fp32, 1x128)"\nsize = [1, 2, 3]\nvalue = 1\n'
     'source = "s"\n', "dtype", "'mxfp4' already includes its scaling"),
    ('bench = "bulk"\nlink = "nvlink"\nsize = [64]\nvalue = 1\nsource = " "\n', "source",
     "needs its source"),
    ('bench = "attention"\ndtype = "bf16"\nsize = [4, 48, 4096]\nvalue = 600\nsource = "s"\n',
     "size", "attention rows need size = [B, H, S, D]"),
    ('bench = "attention"\nsize = [4, 48, 4096, 128]\nvalue = 600\nsource = "s"\n', "dtype",
     "dtype '' is not an element format"),
    ('bench = "attention"\ndtype = "bf16"\nmask = "sliding"\nsize = [4, 48, 4096, 128]\n'
     'value = 600\nsource = "s"\n', "mask", "expected one of none, causal, got 'sliding'"),
    ('bench = "gemm"\ndtype = "bf16"\nmask = "causal"\nsize = [1, 2, 3]\nvalue = 1\n'
     'source = "s"\n', "mask", "mask applies to attention rows only, not to gemm rows"),
    ('bench = "mla_decode"\ndtype = "bf16"\nsize = [128, 64, 8192]\nvalue = 125\n'
     'source = "s"\n', "size", "mla_decode rows need size = [B, H, S_Q, T]"),
    ('bench = "mla_decode"\ndtype = "bf16"\nsize = [128, 64, 8, 4]\nvalue = 125\n'
     'source = "s"\n', "size", "T = 4 < S_Q = 8"),
])
def test_a_bad_measured_row_is_one_located_error(tmp_path, capsys, row, key, message):
    """One error naming the offending key, at its line (the table's when it is missing)."""
    from isa.target_loader import BUILTIN_DIR
    path = tmp_path / "chip.toml"
    text = (BUILTIN_DIR / "h800.toml").read_text() + "\n[measured.x]\n" + row
    path.write_text(text)
    lines = text.splitlines()
    table = lines.index("[measured.x]")
    line = 1 + next((i for i in range(table, len(lines)) if lines[i].startswith(key + " =")),
                    table)
    code, _, err = dsc(capsys, "validate", str(path))
    assert code == 1 and err.startswith(f"{path}:{line}: error: measured.x.{key}: ")
    assert message in err
    assert err.count("error") == 1 and "Traceback" not in err


def test_a_row_the_chip_cannot_run_is_listed_not_run(tmp_path, capsys):
    """A copy of h800 without FP8 and without links keeps h800's rows: those it cannot run
    say why and stay out of the median."""
    from isa.target_loader import BUILTIN_DIR
    text = (BUILTIN_DIR / "h800.toml").read_text()
    for row in ("fp8_e4m3", "fp8_e5m2"):
        start = text.index(f"[matrix.formats.{row}]")
        text = text[:start] + text[text.index("\n[", start + 1) + 1:]
    path = tmp_path / "chip.toml"
    path.write_text(text)
    code, out, _ = dsc(capsys, "validate", str(path), "--json", "-")
    rows = {r["name"]: r for r in json.loads(out)["rows"]}
    assert code == 0 and rows["gemm_fp8"]["dsc"] is None and rows["gemm_fp8"]["error"] is None
    assert rows["gemm_fp8"]["what"] == "not run: no fp8_e4m3 in the matrix unit"
    code, out, _ = dsc(capsys, "validate", str(path))
    assert "median |error|" in out and "over 10 rows" in out


SMALL_ATTENTION_ROWS = """
[measured.full]
bench = "attention"
dtype = "bf16"
size = [1, 2, 512, 64]
value = 1
source = "a test"

[measured.causal]
bench = "attention"
dtype = "bf16"
mask = "causal"
size = [1, 2, 512, 64]
value = 1
source = "a test"

[measured.mla]
bench = "mla_decode"
dtype = "bf16"
size = [2, 4, 2, 256]
value = 1
source = "a test"
"""


def _kernel_seconds(tmp_path, text: str, target_path: str) -> float:
    model = tmp_path / "model.ds"
    model.write_text(text)
    compiled = compile_model(str(model), target_path, {})
    run = run_program(compiled.program, compiled.target)
    return sum(r.end - r.start for r in run.launches) / compiled.target.clock_hz


def test_attention_benches_count_flops_as_their_benchmarks_do(tmp_path):
    """Each row's TFLOPS is the FLOPs its benchmark counts, FlashAttention's 4 B H S^2 D (half
    of it causal) and FlashMLA's 2 B S_Q H T (576 + 512), over the simulated time of the
    model the bench describes, written out here."""
    from compiler.cli.validate import validate
    from isa.target_loader import BUILTIN_DIR
    text = (BUILTIN_DIR / "h800.toml").read_text()
    path = tmp_path / "chip.toml"
    path.write_text(text[:text.index("[measured.")] + SMALL_ATTENTION_ROWS)
    by = {r.name: r for r in validate(str(path))[1]}
    attention = ("model a {{\n  size B = 1, H = 2, S = 512, D = 64\n  input q: bf16[B, H, S, D]\n"
                 "  input k: bf16[B, H, S, D]\n  input v: bf16[B, H, S, D]\n"
                 '  scores = einsum("bhsd,bhtd->bhst", q, k) * (1 / sqrt(D))\n'
                 '  output o = einsum("bhst,bhtd->bhsd", softmax({}), v)\n}}\n')
    for name, scores, flops in (("full", "scores", 4 * 2 * 512 ** 2 * 64),
                                ("causal", "causal_mask(scores, 0)", 2 * 2 * 512 ** 2 * 64)):
        seconds = _kernel_seconds(tmp_path, attention.format(scores), str(path))
        assert by[name].simulated == pytest.approx(flops / seconds / 1e12, rel=1e-9)
    assert by["causal"].what == "B=1 H=2 S=512 D=64 bf16, causal"
    mla = ("model m {\n  size B = 2, H = 4, S = 2, ctx = 254\n  input q: bf16[B, H, S, 576]\n"
           "  input c: bf16[B, ctx + S, 576]\n"
           '  p = softmax(causal_mask(einsum("bhsc,btc->bhst", q, c) * 0.05, ctx))\n'
           '  output o = einsum("bhst,btc->bhsc", p, slice(c, -1, 0, 512))\n}\n')
    seconds = _kernel_seconds(tmp_path, mla, str(path))
    flops = 2 * 2 * 2 * 4 * 256 * (576 + 512)
    assert by["mla"].simulated == pytest.approx(flops / seconds / 1e12, rel=1e-9)


def test_h20_compares_its_attention_kernels_with_their_measurements(capsys):
    code, out, _ = dsc(capsys, "validate", "h20", "--json", "-")
    rows = {r["name"]: r for r in json.loads(out)["rows"]}
    assert code == 0
    assert [rows[n]["measured"] for n in ("attention_fa3", "attention_cudnn", "mla_decode")] \
        == [126.2, 129.1, 125]
    assert rows["attention_fa3"]["what"] == "B=2 H=16 S=2048 D=128 bf16"
    assert rows["mla_decode"]["what"] == "B=128 H=64 S_Q=5 T=8192 bf16"
    assert "Dao-AILab/flash-attention #1310" in rows["attention_cudnn"]["source"]
    assert "deepseek-ai/FlashMLA #30" in rows["mla_decode"]["source"]
    for name in ("attention_fa3", "mla_decode"):           # below the chip's 148 TF peak
        assert 0 < rows[name]["dsc"] < 148 * 1.0001
        assert rows[name]["error"] == pytest.approx(rows[name]["dsc"] / rows[name]["measured"] - 1)


def test_a_block_scaled_gemm_row_runs_both_operands_scaled_along_k(tmp_path):
    """An MXFP4 row on b200: A and B are FP4 with one UE8M0 scale per 32 elements of K, which
    the tensor cores apply (the packed FP4 format, twice the FP8 rate): it runs faster than
    the same GEMM in FP8."""
    from compiler.cli.validate import validate
    from isa.target_loader import BUILTIN_DIR
    text = (BUILTIN_DIR / "b200.toml").read_text().split("\n[measured.")[0]
    path = tmp_path / "chip.toml"
    path.write_text(text + "".join(
        f'\n[measured.{name}]\nbench = "gemm"\ndtype = "{name}"\nsize = [4096, 4096, 2048]\n'
        'value = 1000\nsource = "s"\n' for name in ("mxfp4", "fp8_e4m3")))
    _, (fp4, fp8) = validate(str(path))
    assert fp4.what == "4096x4096x2048 mxfp4"
    assert 1.3 * fp8.simulated < fp4.simulated < 2 * fp8.simulated
