"""Tensor parallelism (compiler/passes/tensor_parallel.py, split_rules.py): which weights,
heads and caches split, where partial sums are reduced, the gathers' time, capacity."""
from __future__ import annotations

import json
import math
import re

from cli_helpers import dsc, in_repo_root  # noqa: F401  (autouse fixture)
from deployment_helpers import (H800_TEXT, TINY, TP4, assert_user_error, compiled_tiny,
                                link_figures, run_tiny, small_memory_target)

from compiler.capacity import device_need
from compiler.driver import resolve_deployment
from compiler.frontend import load_model
from compiler.passes import PassContext
from compiler.passes.shard import Shard
from isa.assembler import parse_listing
from isa.listing import render
from isa.program import bind_name, expand_schedule
from isa.target_loader import load_target


def _sharded(devices: int, plan: str, sets: tuple = ()):
    graph = load_model(TINY, dict(sets))
    target = load_target("h800")
    dep = resolve_deployment(graph, target, devices, plan)
    return graph, Shard().run(graph, PassContext(target, deployment=dep))


def _named(graph, suffix: str):
    return [n for n in graph.nodes() if n.name.endswith(suffix)]


def test_tensor_parallel_splits_ffn_columns_then_rows_and_reduces_once():
    whole, tp = _sharded(4, TP4)
    for name, axis in (("layer.0.swiglu.w1", 1), ("layer.0.swiglu.w3", 1),
                       ("layer.0.swiglu.w2", 0), ("layer.1.moe.w1", 2), ("layer.1.moe.w2", 1),
                       ("layer.0.mla_absorbed.wq_b", 1), ("layer.0.mla_absorbed.w_uk", 0),
                       ("layer.0.mla_absorbed.wo", 0), ("head", 1)):
        before, after = _named(whole, name)[0].type.shape, _named(tp, name)[0].type.shape
        assert after[axis] * 4 == before[axis] and [
            d for i, d in enumerate(after) if i != axis] == [
            d for i, d in enumerate(before) if i != axis], name
    # low-rank down-projections and the router feed whole-row ops: left whole, not gathered
    for name in ("layer.0.mla_absorbed.wq_a", "layer.0.mla_absorbed.wkv_a", "layer.1.moe.w_gate"):
        assert _named(tp, name)[0].type.shape == _named(whole, name)[0].type.shape, name
    gathers = [n for n in tp.nodes() if n.op == "all_gather"]
    exchanges = [n for n in tp.nodes() if n.op == "all_to_all"]
    # one all-reduce (exchange + sum + gather) per attention and per FFN, the routed and shared
    # experts' partial sums added before it; one gather of the logits
    layers = tp.sizes["n_layers"]
    assert len(exchanges) == 2 * layers
    assert len(gathers) == 2 * layers + 1
    assert all(g.attr("devices") == 4 for g in gathers + exchanges)
    out = tp.node(tp.outputs[0])
    assert out.op == "all_gather" and out.type.shape == whole.node(whole.outputs[0]).type.shape
    combine = next(n for n in tp.nodes() if n.op == "combine")
    assert tp.node(combine.inputs[0]).op == "matmul"      # partials travel through the combine


def test_tensor_parallel_attention_keeps_its_heads_on_the_device():
    whole, tp = _sharded(4, TP4)
    heads = whole.sizes["heads"]
    q = _named(tp, "layer.0.mla_absorbed.q")[0]
    assert q.op == "reshape" and q.type.shape[2] == heads // 4
    scores = _named(tp, "layer.0.mla_absorbed.p")[0]
    assert scores.type.shape[1] == heads // 4
    cache = _named(tp, "layer.0.mla_absorbed.kv_cache")[0]      # the latent is every head's
    assert cache.type == _named(whole, "layer.0.mla_absorbed.kv_cache")[0].type


def test_tensor_parallel_weights_shrink_and_the_run_reports_the_group():
    one = device_need(compiled_tiny("h800", (), None, None, False).graph)
    four = device_need(compiled_tiny("h800", (), 4, TP4, False).graph)
    assert four.caches == one.caches
    assert one.weights / 4 < four.weights < one.weights / 2     # wq_a, wkv_a, router, norms whole
    compiled, run = run_tiny("h800", (), 4, TP4, False)
    report = json.loads(json.dumps(__import__("runtime.report.json_report",
                                              fromlist=["report_dict"]).report_dict(run)))
    dep = report["deployment"]
    tokens = math.prod(load_model(TINY).node(0).type.shape)
    assert dep["plan"] == "attn=tp4,ffn=tp4,moe=tp4"
    assert dep["tokens_per_device"] * 4 == tokens                # the group shares its batch
    assert {r.stream for r in run.launches} == {"compute", "nvlink"}   # a group inside a node


def test_all_gather_time_from_the_link_figures():
    compiled, run = run_tiny("h800", (("batch", "8"),), 4, TP4, False)
    f = link_figures(H800_TEXT)
    tensors = compiled.program.tensor_table()
    checked = 0
    for (launch, env), rec in zip(expand_schedule(compiled.program.schedule), run.launches):
        if not rec.kernel.startswith("all_gather_nvlink"):
            continue
        x = tensors[bind_name(dict(launch.args)["x0"], env)]
        whole = x.nbytes                         # every peer gets the whole input
        # three peers at the link's rate, its latency once; the input was just written, so
        # it may still be in L2 (docs/timing.md): between no and a full memory latency more
        low = 3 * whole / f["R_nv"] + max(f["L_nv"], whole / f["dma"] + f["L_l2"])
        assert low * (1 - 1e-9) <= rec.end - rec.start <= low + f["L_mem"], rec.name
        checked += 1
    assert checked >= 3


def test_a_dense_model_too_big_for_one_device_is_offered_tensor_parallelism(capsys, tmp_path):
    sets = ("--set", "n_experts=2", "--set", "n_groups=1", "--set", "top_k=1")
    one = device_need(compiled_tiny("h800", (("n_experts", "2"), ("n_groups", "1"),
                                         ("top_k", "1")), None, None, False).graph)
    target = small_memory_target(tmp_path, int(one.total * 0.6), "tight")
    code, _, err = dsc(capsys, "compile", TINY, "--target", target, *sets)
    assert_user_error(code, err)
    suggested = re.search(r"--devices (\d+) --plan (\S+)", err)
    assert suggested and "tp" in suggested[2], err
    code, _, err = dsc(capsys, "compile", TINY, "--target", target, *sets,
                       "--devices", suggested[1], "--plan", suggested[2])
    assert code == 0, err


def test_tensor_parallel_listing_round_trips_and_reruns(capsys, tmp_path):
    compiled, run = run_tiny("h800", (), 4, TP4, False)
    text = render(compiled.program)
    assert "kernel all_gather_nvlink" in text
    assert render(parse_listing(text, "tp.lst", load_target("h800"))) == text
    listing = tmp_path / "tp.lst"
    listing.write_text(text)
    code, out, err = dsc(capsys, "run", str(listing), "--target", "h800", "--json", "-")
    assert code == 0, err
    assert json.loads(out)["total_cycles"] == round(run.cycles)


def test_tensor_parallelism_splits_a_gqa_cache_by_heads(capsys):
    """Llama-3-8B with 256 requests: the KV cache (137 GB) does not fit one device; tensor
    parallelism splits the cache by key-value heads, so two devices suffice."""
    code, _, err = dsc(capsys, "compile", "examples/llama3_8b.ds", "--target", "h800",
                       "--set", "batch=256")
    assert_user_error(code, err)
    assert "--devices 2 --plan attn=tp2,ffn=tp2 (per device: weights 8.6 GB, KV cache 68.7 GB" in err
    whole = load_model("examples/llama3_8b.ds", {"n_layers": "2"})
    target = load_target("h800")
    dep = resolve_deployment(whole, target, 8, "attn=tp8")
    tp = Shard().run(whole, PassContext(target, deployment=dep))
    for name in ("layer.0.gqa.k_cache", "layer.0.gqa.v_cache"):
        before, after = _named(whole, name)[0].type.shape, _named(tp, name)[0].type.shape
        assert after == (*before[:2], before[2] // 8, before[3]), name
    assert not [n for n in tp.nodes() if n.op == "all_gather" and ".gqa.k" in n.name]
