"""`dsc serve`: a service's figures composed by hand from its two simulated steps."""
from __future__ import annotations

import json
import math

import pytest

from cli_helpers import dsc, in_repo_root  # noqa: F401  (autouse fixture)
from deployment_helpers import H800_TEXT, assert_user_error, link_figures

from isa.serving import Phase, Service

TINY = """serve tiny {{
  prefill "{root}/examples/tiny_moe.ds" {{
    devices 4
    attn dp
    moe ep
    batch 2
  }}
  decode "{root}/examples/tiny_moe.ds" {{
    devices 8
    attn dp
    moe ep
    micro_batches 2
    batch 4
  }}
  prompt 24
  output 16
  kv_hit 0.25
  request_rate {rate}
  gpu_hour 3.0
}}
"""


def serve_file(tmp_path, text: str) -> str:
    path = tmp_path / "svc_serve.ds"
    path.write_text(text)
    return str(path)


def tiny(tmp_path, rate=50000, *extra):
    import os
    path = serve_file(tmp_path, TINY.format(root=os.getcwd(), rate=rate))
    return path, *extra


def run_json(capsys, path, *sets):
    args = [a for s in sets for a in ("--set", s)]
    code, out, err = dsc(capsys, "serve", path, "--target", "h800", "--json", "-", *args)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("drafts, acceptance, tokens", [
    (0, 0.9, 1.0), (1, 0.85, 1.85), (2, 0.5, 1.75), (1, 0.0, 1.0), (1, 1.0, 2.0)])
def test_mtp_tokens_per_step(drafts, acceptance, tokens):
    """Drafts are checked in order: the second counts only when the first was accepted."""
    sizes = {"n_mtp": str(drafts)} if drafts else {}
    phase = Phase("decode", "m.ds", 8, "attn=dp", None, sizes)
    service = Service("s", phase, phase, prompt=100, output=10, acceptance=acceptance)
    assert service.tokens_per_step == pytest.approx(tokens)
    assert service.phase_sizes(phase)["seq"] == str(1 + drafts)
    assert service.phase_sizes(phase)["ctx"] == "105"                 # prompt + output / 2


def test_prefill_computes_the_uncached_tokens_over_the_cached():
    phase = Phase("prefill", "m.ds", 8, "attn=dp", None, {"batch": "2"})
    service = Service("s", phase, phase, prompt=4096, output=1, kv_hit=0.563)
    assert service.phase_sizes(phase) == {"batch": "2", "seq": "1790", "ctx": "2306"}


def test_service_figures_by_hand(capsys, tmp_path):
    """Prompts of 24 tokens, 6 cached: a prefill step runs seq 18 over ctx 6 for 2 prompts per
    device; TTFT is that step; each device's 2 x 24 tokens of KV entries leave over its 50 GB/s
    NIC; a decode step (4 sequences per device, one token each) is the TPOT. 50,000
    requests/s need whole clusters of each phase; the cost is their devices' price per hour
    over the tokens served."""
    d = run_json(capsys, *tiny(tmp_path))
    p, dc, load = d["prefill"], d["decode"], d["load"]
    assert d["requests"]["cached_tokens"] == 6
    assert p["requests_per_device"] == 2 and dc["requests_per_device"] == 4
    assert p["deployment"]["tokens_per_device"] == 2 * 18
    assert d["ttft_ms"] == pytest.approx(p["step_s"] * 1e3)
    assert d["tpot_ms"] == pytest.approx(dc["step_s"] * 1e3)
    f = link_figures(H800_TEXT)
    kv_per_token = 4 * (32 + 8) * 2                 # 4 layers' latent + rope entries, bf16
    seconds = (2 * 24 * kv_per_token / f["R_net"] + f["L_net"]) / f["clock"]
    assert p["kv_transfer_ms"] == pytest.approx(seconds * 1e3)
    assert p["input_tokens_per_s_per_device"] == pytest.approx(2 * 24 / p["step_s"])
    assert p["requests_per_s"] == pytest.approx(4 * 2 / p["step_s"])
    assert dc["requests_per_s"] == pytest.approx(8 * 4 / (16 * dc["step_s"]))
    assert dc["output_tokens_per_s_per_node"] == pytest.approx(8 * 4 / dc["step_s"])
    clusters = {"prefill": math.ceil(50000 / p["requests_per_s"]),
                "decode": math.ceil(50000 / dc["requests_per_s"])}
    assert load["clusters"] == clusters
    assert load["devices"] == {"prefill": 4 * clusters["prefill"],
                               "decode": 8 * clusters["decode"]}
    assert load["total_nodes"] == clusters["prefill"] + clusters["decode"]   # one node each
    cost = d["cost"]
    assert cost["usd_per_m_input"] == pytest.approx(
        4 * clusters["prefill"] * 3.0 / (50000 * 24 * 3600) * 1e6)
    assert cost["usd_per_m_output"] == pytest.approx(
        8 * clusters["decode"] * 3.0 / (50000 * 16 * 3600) * 1e6)


def test_without_a_rate_one_cluster_of_each_at_full_load(capsys, tmp_path):
    d = run_json(capsys, *tiny(tmp_path, 0))
    assert d["load"]["clusters"] == {"prefill": 1, "decode": 1}
    assert d["cost"]["usd_per_m_output"] == pytest.approx(
        3.0 / (d["decode"]["output_tokens_per_s_per_device"] * 3600) * 1e6)


def test_sets_reach_settings_and_phases(capsys, tmp_path):
    d = run_json(capsys, *tiny(tmp_path), "prompt=32", "decode.batch=2", "decode.devices=4")
    assert d["requests"]["prompt"] == 32
    assert d["decode"]["requests_per_device"] == 2 and d["decode"]["devices"] == 4


def test_the_text_report(capsys, tmp_path):
    path, = tiny(tmp_path)
    code, out, err = dsc(capsys, "serve", path, "--target", "h800")
    assert code == 0, err
    assert out.startswith("serve tiny on h800\nservice:\n")
    for words in ("TTFT", "TPOT", "one token per step, no MTP", "input tokens/s",
                  "output tokens/s", "nodes for 50,000 requests/s", "cost at 3 per device-hour",
                  "TPOT bound if compute hid", "prefill step:", "decode step:"):
        assert words in out


def test_the_v3_bound_is_the_papers_arithmetic(capsys):
    """ISCA'25: (1 + 2) bytes x 32 tokens x 9 experts x 7K / 50 GB/s per micro-batch, two
    micro-batches a layer. With V3's dim of 7168 (the paper rounds it to 7000): 64 x 3 x 9 x
    7168 / 50e9 = 247.73 us a layer; four layers here."""
    d = run_json(capsys, "examples/deepseek_v3_serve.ds", "decode.batch=64", "decode.n_mtp=0",
                 "prefill.n_layers=4", "decode.n_layers=4", "prompt=256")
    b = d["comm_bound"]
    assert (b["tokens_per_device"], b["dispatch_bytes"], b["combine_bytes"], b["experts"],
            b["dim"], b["link_gbs"], b["layers"]) == (64, 1, 2, 9, 7168, 50, 4)
    assert b["per_layer_us"] == pytest.approx(64 * 3 * 9 * 7168 / 50e9 * 1e6)
    assert b["tpot_ms"] == pytest.approx(4 * b["per_layer_us"] / 1e3)
    assert 32 * 3 * 9 * 7000 / 50e9 * 2 * 61 * 1e3 == pytest.approx(14.76, abs=0.005)


@pytest.mark.parametrize("edit, message, where", [
    (("  prompt 24\n", "  prompt 24\n  prompts 3\n"), "unknown serve setting 'prompts' "
     "(did you mean 'prompt'?)", ":16:3"),
    (("  kv_hit 0.25\n", "  kv_hit 1.5\n"), "serve kv_hit 1.5: expected a number from 0 to 1",
     ":17:3"),
    (("  prompt 24\n", ""), "does not say 'prompt'", ":1:1"),
    (("    batch 2\n", "    batch 2\n    seq 7\n"), "prefill size 'seq' is set by the service",
     ":7:5"),
    (("    moe ep\n", "    moe xp\n"), "moe=xp", ":5:5"),
    (("tiny_moe.ds\" {\n    devices 8", "nope.ds\" {\n    devices 8"),
     "decode model 'nope.ds' cannot be read", ":8:10"),
])
def test_bad_serve_files_get_one_located_error(capsys, tmp_path, edit, message, where):
    import os
    text = TINY.format(root=os.getcwd(), rate=1)
    if edit[0].startswith("tiny_moe"):
        text = text.replace(f"{os.getcwd()}/examples/" + edit[0], edit[1])
    else:
        text = text.replace(edit[0], edit[1], 1)
    path = serve_file(tmp_path, text)
    code, _, err = dsc(capsys, "serve", path, "--target", "h800")
    assert_user_error(code, err)
    assert message in err
    assert f"{path}{where}" in err


def test_a_serve_file_is_not_a_model(capsys):
    code, _, err = dsc(capsys, "run", "examples/deepseek_v3_serve.ds", "--target", "h800")
    assert_user_error(code, err)
    assert "describes a service (serve deepseek_v3), not a model" in err


def test_a_set_of_no_phase_is_refused(capsys, tmp_path):
    path, = tiny(tmp_path)
    code, _, err = dsc(capsys, "serve", path, "--target", "h800", "--set", "decod.batch=2")
    assert_user_error(code, err)
    assert "'decod' is not a phase" in err


def test_the_html_report_has_the_same_rows(capsys, tmp_path):
    path, = tiny(tmp_path)
    page = tmp_path / "serve.html"
    code, out, err = dsc(capsys, "serve", path, "--target", "h800", "--html", str(page))
    assert code == 0, err
    html = page.read_text()
    assert html.startswith("<!doctype html>") and "<td>TTFT</td>" in html
    ttft = next(line for line in out.splitlines() if line.strip().startswith("TTFT"))
    assert ttft.split(None, 1)[1] in html


def test_a_bad_set_value_is_named_as_given(capsys, tmp_path):
    path, = tiny(tmp_path)
    code, _, err = dsc(capsys, "serve", path, "--target", "h800", "--set", "kv_hit=abc")
    assert_user_error(code, err)
    assert "serve kv_hit abc: expected a number from 0 to 1" in err


def test_a_step_that_does_not_fit_says_which_phase(capsys, tmp_path):
    path, = tiny(tmp_path)
    code, _, err = dsc(capsys, "serve", path, "--target", "h800", "--set",
                       "decode.batch=100000000")
    assert_user_error(code, err)
    assert "note: in the decode step of serve tiny" in err


def test_the_queue_of_batch_slots_by_hand():
    """Erlang C for 2 servers offered 1 Erlang is 1/3 (B = 0.5 / 2.5 = 0.2, C = 0.2 / (1 -
    0.5 x 0.8)); M/D/c waits half of M/M/c's: 1/3 x S / (2 - 1) / 2 = S / 6. One server:
    Pollaczek-Khinchine, rho S / (2 (1 - rho))."""
    from runtime.queueing import erlang_c, md_c_wait
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert md_c_wait(0.5, 2.0, 2) == pytest.approx(2.0 / 6)
    assert md_c_wait(0.3, 2.0, 1) == pytest.approx(0.6 * 2.0 / (2 * 0.4))
    assert md_c_wait(1.0, 2.0, 2) == math.inf                  # at capacity
    assert 0 < erlang_c(9216, 9000.0) < erlang_c(9216, 9200.0) < 1


def test_the_curve_sweeps_the_fleets_capacity(capsys, tmp_path):
    """The fleet the load sizes, offered 10% .. 98% of the capacity of its busier phase: each
    phase's slots (2 prompts x 4 devices per prefill cluster, 4 sequences x 8 devices per
    decode cluster) held a prefill step, or 16 tokens' decode steps."""
    from runtime.queueing import md_c_wait
    d = run_json(capsys, *tiny(tmp_path))
    p, dc, clusters = d["prefill"], d["decode"], d["load"]["clusters"]
    slots = {"prefill": 8 * clusters["prefill"], "decode": 32 * clusters["decode"]}
    hold = {"prefill": p["step_s"], "decode": 16 * dc["step_s"]}
    capacity = min(slots[x] / hold[x] for x in slots)
    curve = d["curve"]
    assert [c["load"] for c in curve][0] == 0.1 and curve[-1]["load"] == 0.98
    for c in curve:
        assert c["request_rate"] == pytest.approx(c["load"] * capacity)
        wait = {x: md_c_wait(c["request_rate"], hold[x], slots[x]) for x in slots}
        assert c["ttft_ms"] == pytest.approx((wait["prefill"] + p["step_s"]) * 1e3)
        assert c["latency_s"] == pytest.approx(wait["prefill"] + p["step_s"] + wait["decode"]
                                               + hold["decode"] + p["kv_transfer_ms"] / 1e3)
        assert c["output_tokens_per_s_per_node"] == pytest.approx(
            c["request_rate"] * 16 / d["load"]["total_nodes"])
    latencies = [c["latency_s"] for c in curve]
    assert latencies == sorted(latencies) and latencies[-1] > latencies[0]


def test_the_critical_path_adds_up_to_the_step(capsys, tmp_path):
    """Each step's critical path, walked back from its last launch, accounts for the whole
    step; a prefill step whose cores wait for its all-to-alls has a link on it."""
    d = run_json(capsys, *tiny(tmp_path))
    for phase in ("prefill", "decode"):
        path = d[phase]["critical_path"]
        assert sum(e["us"] for e in path) == pytest.approx(d[phase]["step_ms"] * 1e3, rel=1e-9)
        assert [e["us"] for e in path] == sorted((e["us"] for e in path), reverse=True)
    prefill = d["prefill"]
    assert prefill["deployment"]["exposed_comm_us"] > 0
    assert any(e["block"] == "communication" and e["resource"] in ("nvlink", "network")
               for e in prefill["critical_path"])


def test_the_html_report_draws_the_curve(capsys, tmp_path):
    path, = tiny(tmp_path)
    page = tmp_path / "serve.html"
    code, out, err = dsc(capsys, "serve", path, "--target", "h800", "--html", str(page))
    assert code == 0, err
    html = page.read_text()
    assert html.count("<svg") == 2 and html.count("<polyline") == 2
    points = html.split('<polyline points="')[1].split('"')[0].split()
    assert len(points) == 12
    xs = [float(p.split(",")[0]) for p in points]
    assert xs == sorted(xs)                                 # throughput grows along the sweep
    assert "critical path" in out and "critical path" in html


@pytest.mark.parametrize("span, step", [(47, 10), (0.23, 0.05), (1200, 500), (5, 1), (0, 1.0)])
def test_chart_ticks_are_one_two_or_five_times_a_power_of_ten(span, step):
    from runtime.report.svg_chart import nice_step
    assert nice_step(span) == pytest.approx(step)
