"""The Chrome trace (runtime/report/trace.py) and the HTML report (runtime/report/html.py).

Checked on recorded runs of tiny_moe and a 4-layer DeepSeek-V3: the trace's structure (threads,
slices inside their launches, flow pairs, counters within bandwidth, level of detail), the
page's content (two inline SVGs, the kernel table, escaping, no external references), byte
determinism, and, when Chromium is installed, that a headless browser renders the page.
"""
import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from compiler.driver import compile_model
from runtime.interpreter import run_program
from runtime.report.html import html_report, kernel_rows
from runtime.report.trace import detailed_launches, trace_json

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")


def _run(model: str, sets: dict, target: str = "h800"):
    c = compile_model(str(ROOT / "examples" / model), target, sets)
    return run_program(c.program, c.target, record=True)


@pytest.fixture(scope="module")
def tiny():
    return _run("tiny_moe.ds", {})


@pytest.fixture(scope="module")
def deepseek():
    return _run("deepseek_v3.ds", {"n_layers": "4"})


@pytest.fixture(scope="module")
def tiny_trace(tiny):
    return json.loads(trace_json(tiny))


@pytest.fixture(scope="module")
def deepseek_trace(deepseek):
    return json.loads(trace_json(deepseek))


def _threads(trace) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in trace["traceEvents"]
            if e["ph"] == "M" and e["name"] == "thread_name"}


def _slices(trace, tid: int) -> list[dict]:
    return [e for e in trace["traceEvents"] if e["ph"] == "X" and e["tid"] == tid]


def _kernel_tid(trace) -> int:
    return next(tid for tid, name in _threads(trace).items() if name == "kernels")


# -- trace --

@pytest.mark.parametrize("which", ["tiny_trace", "deepseek_trace"])
def test_trace_is_trace_event_json(which, request):
    trace = request.getfixturevalue(which)
    assert isinstance(trace["traceEvents"], list) and trace["traceEvents"]
    assert trace["displayTimeUnit"] == "ns"
    assert "level_of_detail" in trace["metadata"]
    for e in trace["traceEvents"]:
        assert e["ph"] in {"M", "X", "s", "f", "C"}
        assert isinstance(e["pid"], int)
    names = [e["args"]["name"] for e in trace["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_name"]
    assert names == ["h800 die 0"]


@pytest.mark.parametrize("which,run", [("tiny_trace", "tiny"), ("deepseek_trace", "deepseek")])
def test_kernels_thread_has_one_slice_per_launch_in_order(which, run, request):
    trace, run = request.getfixturevalue(which), request.getfixturevalue(run)
    kernels = _slices(trace, _kernel_tid(trace))
    assert [e["name"] for e in kernels] == [rec.name for rec in run.launches]
    us = 1e6 / run.target.clock_hz
    for e, rec in zip(kernels, run.launches):
        assert e["ts"] == pytest.approx(rec.start * us, abs=1e-3)
        assert e["ts"] + e["dur"] == pytest.approx(rec.end * us, abs=1e-3)
        assert e["args"]["kernel"] == rec.kernel
        assert {"cycles", "flops", "bytes", "bound", "top_stall"} <= set(e["args"])
    for a, b in zip(kernels, kernels[1:]):
        assert a["ts"] + a["dur"] <= b["ts"]


@pytest.mark.parametrize("which", ["tiny_trace", "deepseek_trace"])
def test_unit_slices_lie_inside_their_launch(which, request):
    trace = request.getfixturevalue(which)
    threads = _threads(trace)
    units = {name.rsplit(" / ", 1)[1] for name in threads.values() if " / " in name}
    assert {"ld", "mm", "vec", "st"} <= units
    kernels = _slices(trace, _kernel_tid(trace))
    starts = [k["ts"] for k in kernels]
    count = 0
    for tid, name in threads.items():
        if " / " not in name:
            continue
        previous_end = -1.0
        for e in sorted(_slices(trace, tid), key=lambda e: e["ts"]):
            count += 1
            assert e["ts"] >= 0 and e["dur"] >= 0
            k = kernels[max(i for i, s in enumerate(starts) if s <= e["ts"])]
            assert k["name"] == e["args"]["launch"]
            assert e["ts"] + e["dur"] <= k["ts"] + k["dur"] + 1e-9
            assert e["args"]["start_cycle"] <= e["args"]["end_cycle"]
            assert e["args"]["cores"] >= 1 and e["args"]["wave"] == 0
            # One representative core's unit runs one instruction at a time.
            assert e["ts"] >= previous_end - 1e-9
            previous_end = e["ts"] + e["dur"]
    assert count > 0


@pytest.mark.parametrize("which", ["tiny_trace", "deepseek_trace"])
def test_flows_come_in_pairs_from_producer_to_consumer(which, request):
    trace = request.getfixturevalue(which)
    starts = {e["id"]: e for e in trace["traceEvents"] if e["ph"] == "s"}
    ends = {e["id"]: e for e in trace["traceEvents"] if e["ph"] == "f"}
    assert starts and set(starts) == set(ends)
    assert len(starts) == sum(e["ph"] == "s" for e in trace["traceEvents"])
    slices: dict[int, list[dict]] = {}
    for e in trace["traceEvents"]:
        if e["ph"] == "X":
            slices.setdefault(e["tid"], []).append(e)
    for fid, s in starts.items():
        f = ends[fid]
        assert f["bp"] == "e" and s["name"] == f["name"] and s["cat"] == f["cat"]
        assert s["ts"] <= f["ts"]
        for event in (s, f):        # each end binds to a slice of its thread
            assert any(x["ts"] <= event["ts"] <= x["ts"] + x["dur"] for x in slices[event["tid"]])


@pytest.mark.parametrize("which,run", [("tiny_trace", "tiny"), ("deepseek_trace", "deepseek")])
def test_counters_stay_within_bandwidth(which, run, request):
    trace, target = request.getfixturevalue(which), request.getfixturevalue(run).target
    counters = [e for e in trace["traceEvents"] if e["ph"] == "C"]
    memory = [e["args"]["GB/s"] for e in counters if e["name"] == "memory bandwidth"]
    l2 = [e["args"]["GB/s"] for e in counters if e["name"] == "l2 bandwidth"]
    assert memory and l2
    peak = target.peak_memory_bandwidth / 1e9
    assert all(0 <= v <= peak * (1 + 1e-6) for v in memory)
    l2_peak = target.l2.bytes_per_cycle * target.clock_hz / 1e9
    assert all(0 <= v <= l2_peak * (1 + 1e-6) for v in l2)
    assert max(memory) > 0


def test_multi_die_trace_has_a_process_and_counters_per_die():
    run = _run("tiny_moe.ds", {}, "b200")
    target = run.target
    assert target.chip.dies == 2
    trace = json.loads(trace_json(run))
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {1: "b200 die 0", 2: "b200 die 1"}
    peaks = {"memory bandwidth": target.memory.bandwidth_gbs,
             "l2 bandwidth": target.l2.bytes_per_cycle * target.clock_hz / 1e9}
    seen = set()
    for e in trace["traceEvents"]:
        if e["ph"] != "C":
            continue
        seen.add((e["pid"], e["name"]))
        peak = peaks.get(e["name"], target.die_link.bandwidth_gbs if target.die_link else 0)
        assert 0 <= e["args"]["GB/s"] <= peak * (1 + 1e-6)
    assert {(1, "memory bandwidth"), (2, "memory bandwidth")} <= seen
    assert html_report(run).count("<svg") == 2


def test_level_of_detail(deepseek, deepseek_trace):
    trace = deepseek_trace
    distinct = {id(rec.result) for rec in deepseek.launches}
    detailed = detailed_launches(deepseek)
    assert len(detailed) == len(distinct) == deepseek.simulated_kernels
    assert trace["metadata"]["launches_with_instruction_detail"] == len(detailed)
    threads = _threads(trace)
    units = [tid for tid, name in threads.items() if " / " in name]
    named = {e["args"]["launch"] for tid in units for e in _slices(trace, tid)}
    assert named == {deepseek.launches[i].name for i in detailed}
    waves = [e for t, n in threads.items() if n.startswith("waves") for e in _slices(trace, t)]
    assert len(waves) == sum(rec.result.waves for rec in deepseek.launches)

    limited = json.loads(trace_json(deepseek, detail_launches=2))
    threads = _threads(limited)
    named = {e["args"]["launch"] for tid, name in threads.items() if " / " in name
             for e in _slices(limited, tid)}
    assert named == {deepseek.launches[i].name for i in detailed[:2]}
    assert "first 2" in limited["metadata"]["level_of_detail"]

    none = json.loads(trace_json(deepseek, detail_launches=0))
    assert not any(" / " in name for name in _threads(none).values())
    assert not any(e["ph"] in "sf" for e in none["traceEvents"])
    assert len(_slices(none, _kernel_tid(none))) == len(deepseek.launches)


def test_no_thread_has_slices_that_partly_overlap(deepseek, deepseek_trace):
    """Perfetto drops a slice that starts inside another on its thread and ends after it:
    slices on one thread nest or follow each other. Waves overlap in time (a wave starts as
    cores free up), so they take several lanes."""
    by_thread: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for e in deepseek_trace["traceEvents"]:
        if e["ph"] == "X":
            a = round(e["ts"] * 1000)
            by_thread.setdefault((e["pid"], e["tid"]), []).append((a, a + round(e["dur"] * 1000)))
    for thread, slices in by_thread.items():
        open_ends: list[int] = []
        for a, b in sorted(slices, key=lambda s: (s[0], -s[1])):
            while open_ends and open_ends[-1] <= a:
                open_ends.pop()
            assert not open_ends or b <= open_ends[-1], (thread, a, b, open_ends[-1])
            open_ends.append(b)
    lanes = [n for n in _threads(deepseek_trace).values() if n.startswith("waves")]
    assert lanes[0] == "waves" and len(lanes) > 1      # this run's waves do overlap


def test_trace_is_deterministic(tiny, deepseek):
    assert trace_json(tiny) == trace_json(tiny)
    assert trace_json(deepseek, 5) == trace_json(deepseek, 5)


# -- html --

@pytest.fixture(scope="module")
def tiny_html(tiny):
    return html_report(tiny)


@pytest.fixture(scope="module")
def deepseek_html(deepseek):
    return html_report(deepseek)


@pytest.mark.parametrize("which,run", [("tiny_html", "tiny"), ("deepseek_html", "deepseek")])
def test_html_has_charts_and_kernel_table(which, run, request):
    page, run = request.getfixturevalue(which), request.getfixturevalue(run)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 2
    assert '<svg id="timeline"' in page and '<svg id="roofline"' in page
    assert "<circle" in page and "<rect" in page
    rows = kernel_rows(run)
    assert len(re.findall(r'<td class="name">', page)) >= 2 * len(rows)
    for r in rows:
        assert f'<td class="name">{r.name}</td>' in page
        assert f'<td class="name">{r.kernel}</td>' in page
    for label in ("Summary", "Timeline", "Roofline", "Kernels", "Top stall reasons"):
        assert f"<h2>{label}</h2>" in page
    assert run.program.model in page and run.target.name in page


@pytest.mark.parametrize("which", ["tiny_html", "deepseek_html"])
def test_html_is_self_contained(which, request):
    page = request.getfixturevalue(which)
    lowered = page.lower()
    for needle in ("http:", "https:", "<script", "<link", "url(", "@import", "src="):
        assert needle not in lowered, needle


def test_html_escapes_names(tiny):
    rec = tiny.launches[0]
    evil = dataclasses.replace(rec, name="<b>x</b> & 'y'")
    run = dataclasses.replace(tiny, launches=[evil] + tiny.launches[1:])
    page = html_report(run)
    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt; &amp; &#39;y&#39;" in page


def test_html_timeline_merges_launches_narrower_than_a_pixel(deepseek, deepseek_html):
    bars = re.search(r'<svg id="timeline".*?</svg>', deepseek_html, re.S).group(0)
    titles = re.findall(r"<title>(.*?)</title>", bars)
    assert 0 < len(titles) < len(deepseek.launches)
    assert any(re.match(r"\d+ launches, ", t) for t in titles)


def test_html_is_deterministic(tiny, deepseek, tiny_html, deepseek_html):
    assert html_report(tiny) == tiny_html
    assert html_report(deepseek) == deepseek_html


# -- a real browser --

def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if not CHROMIUM.exists():
        pytest.skip(f"optional tool missing: {CHROMIUM} (apt-get install chromium) renders the HTML "
                    "report in a real browser")
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, text=True, timeout=120)


def test_chromium_renders_the_page(tmp_path, tiny_html):
    page = tmp_path / "report.html"
    page.write_text(tiny_html)
    done = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert '<svg id="timeline"' in dom and '<svg id="roofline"' in dom
    assert dom.count("<svg") == 2 and "<circle" in dom


def test_chromium_screenshot(tmp_path, deepseek_html):
    page = tmp_path / "report.html"
    page.write_text(deepseek_html)
    png = tmp_path / "report.png"
    done = _chromium(tmp_path, "--hide-scrollbars", "--window-size=1280,1600",
                     f"--screenshot={png}", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert png.is_file() and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- deployments: link streams beside the kernels --

@pytest.fixture(scope="module")
def deployed():
    c = compile_model(str(ROOT / "examples" / "tiny_moe.ds"), "h800", {"n_experts": "16"}, devices=16,
                      plan="attn=dp,moe=ep,mb=2")
    return run_program(c.program, c.target, record=True)


def test_trace_puts_each_link_stream_on_its_own_thread(deployed):
    trace = json.loads(trace_json(deployed))
    threads = {name: tid for tid, name in _threads(trace).items()}
    for stream in ("compute", "nvlink", "network"):
        tid = threads["kernels" if stream == "compute" else f"{stream} launches"]
        slices = _slices(trace, tid)
        recs = [r for r in deployed.launches if r.stream == stream]
        assert [e["name"] for e in slices] == [r.name for r in recs]
        for a, b in zip(slices, slices[1:]):           # a stream runs one launch at a time
            assert a["ts"] + a["dur"] <= b["ts"] + 1e-3
    counters = {e["name"] for e in trace["traceEvents"] if e["ph"] == "C"}
    assert {"nvlink bandwidth", "network bandwidth"} <= counters


def test_html_timeline_has_a_row_per_link(deployed):
    page = html_report(deployed)
    assert "nvlink sends" in page and "network sends" in page
    assert page.count("<svg") == 2
