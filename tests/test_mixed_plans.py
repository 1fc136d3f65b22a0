"""Tensor parallelism mixed with data and expert parallelism: attention over a group of 4 with
the experts over all devices (DeepSeek-V3's prefill plan), data-parallel attention with a
tensor-parallel dense FFN, and the collectives each boundary needs."""
from __future__ import annotations

import math

import pytest

from cli_helpers import in_repo_root  # noqa: F401  (autouse fixture)
from deployment_helpers import E32, TINY, run_tiny

from compiler.driver import compile_model
from compiler.passes.shard import Shard, weight_parts
from compiler.frontend import load_model

SETS = tuple(E32.items())            # 32 routed experts: 4 per device on 8 devices


def _graph(plan: str, devices: int = 8, sets=SETS):
    graphs = {}
    compile_model(TINY, "h800", dict(sets), devices=devices, plan=plan, measure=False,
                  check_fit=False, passes=[Shard()], unroll=True,
                  after=lambda name, g: graphs.setdefault(name, g))
    return graphs["shard"]


def _by_name(graph):
    return {n.name: n for n in graph.nodes()}


def test_weights_are_told_apart_by_their_block():
    parts = {n.name: p for i, p in weight_parts(load_model(TINY, {})).items()
             for n in [load_model(TINY, {}).node(i)]}
    assert parts["layer.0.mla_absorbed.wq_a"] == parts["head"] == parts["embed"] == "attn"
    assert parts["layer.0.swiglu.w1"] == "ffn"
    assert parts["layer.1.moe.w1"] == parts["layer.1.moe.w_gate"] == "moe"
    assert parts["layer.1.moe.shared_experts.0.swiglu.w1"] == "moe"


def test_tensor_parallel_attention_beside_expert_parallel_experts():
    """attn=tp4,moe=ep on 8 devices: attention's heads split 4 ways (tiny_moe has 4 heads:
    one each), the attention output all-reduced in the group; each device takes a quarter of
    the group's 8 tokens into the MoE block, whose routed experts are spread over all 8
    devices (4 each), and the block's result is gathered back."""
    g = _by_name(_graph("attn=tp4,moe=ep"))
    assert g["layer.1.mla_absorbed.wo"].type.shape == (4 * 16 // 4, 64)    # rows: heads
    assert g["layer.1.mla_absorbed.w_uk"].type.shape[0] == 1
    part = g["layer.1.tokens_in.part"]
    assert part.op == "slice" and part.type.shape == (8 // 4, 64)
    assert g["layer.1.moe.w_gate"].type.shape == (64, 32)                 # whole
    assert g["layer.1.moe.w1"].type.shape[0] == 32 // 8
    a2a = g["layer.1.moe.xe.a2a"]
    assert a2a.attr("devices") == 8
    # each of the 8 devices routes its 2 tokens x top-2: 8 x 2 x 2 / 32 = 1 row per expert
    assert a2a.type.shape == (4, 1, 64)
    gather = g["layer.1.moe.shared_experts.0.y.gather"]
    assert gather.op == "all_gather" and gather.attr("axis") == 0 and gather.attr("devices") == 4
    assert gather.type.shape == (8, 64)
    # attention's output is reduced over the group (the all-to-all of a reduce-scatter)
    assert g["layer.1.mla_absorbed.matmul_3.a2a"].attr("devices") == 4


def test_data_parallel_attention_beside_a_tensor_parallel_ffn():
    """attn=dp,ffn=tp8: each device attends over its own 2 requests (its own cache); the
    dense FFN gathers the 8 devices' normed tokens, runs an eighth of its columns, and
    reduce-scatters the result back to each device's requests."""
    g = _by_name(_graph("attn=dp,ffn=tp8"))
    assert g["tokens"].type.shape == (2, 4)
    assert g["layer.0.mla_absorbed.wq_a"].type.shape == (64, 32)         # whole
    assert g["layer.0.mla_absorbed.kv_cache"].type.shape[0] == 2          # its own requests
    gathered = g["layer.0.norm_1.rmsnorm.gather"]
    assert (gathered.op, gathered.attr("axis"), gathered.type.shape) == ("all_gather", 0,
                                                                         (16, 4, 64))
    assert g["layer.0.swiglu.w1"].type.shape == (64, 128 // 8)
    assert g["layer.0.swiglu.w2"].type.shape == (128 // 8, 64)
    back = g["layer.0.swiglu.matmul_2.a2a"]
    assert (back.attr("split"), back.attr("concat"), back.attr("devices")) == (0, 0, 8)
    assert g["layer.0.swiglu.matmul_2.reduced"].type.shape == (2, 4, 64)
    assert g["logits"].type.shape == (2, 4, 256)                           # its own logits


@pytest.mark.parametrize("plan, per_device", [
    ("attn=tp4,moe=ep", 8 // 4),          # a group of 4 shares one replica's 8 tokens
    ("attn=dp,ffn=tp8,moe=ep", 8),        # each device its own 8
    ("attn=dp,ffn=tp4,moe=ep,mb=2", 8),
])
def test_mixed_plans_run(plan, per_device):
    compiled, run = run_tiny("h800", SETS, 8, plan)
    from runtime.report.deployment import deployment_dict
    d = deployment_dict(run)
    assert d["tokens_per_device"] == per_device
    streams = {r.stream for r in run.launches}
    assert {"compute", "nvlink"} <= streams
    assert run.cycles > 0
    one = run_tiny("h800", SETS)[1]
    assert not math.isclose(run.cycles, one.cycles)
