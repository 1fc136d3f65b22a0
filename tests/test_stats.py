"""`dsc stats`: parameters, active parameters, KV-cache and weight bytes, FLOPs per token.

Expected values are computed by hand from each model's published configuration, written here
as formulas, and weight bytes are recomputed from the graph independently of Format.nbytes.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from compiler.cli.main import main
from compiler.frontend import load_model
from compiler.stats import active_fraction, model_stats

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# -- DeepSeek-V3 published configuration ------------------------------------------------------
DIM = 7168
VOCAB = 129280
N_LAYERS = 61
N_DENSE = 3
DENSE_INTER = 18432
N_EXPERTS = 256
N_SHARED = 1
TOP_K = 8
MOE_INTER = 2048
HEADS = 128
Q_LORA_RANK = 1536
KV_LORA_RANK = 512
QK_NOPE = 128
QK_ROPE = 64
V_HEAD = 128

# Bits per element and per scale, from the format definitions (OCP FP8/MX, IEEE, bfloat16).
BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "fp8_e4m3": 8, "fp8_e5m2": 8, "fp6_e2m3": 6,
        "fp6_e3m2": 6, "fp4_e2m1": 4, "int8": 8, "i32": 32, "ue8m0": 8}


def deepseek_counts(n_layers: int = N_LAYERS) -> tuple[int, int]:
    """(total, active per token) parameters of DeepSeek-V3 with `n_layers` layers."""
    attention = (DIM * Q_LORA_RANK + Q_LORA_RANK                       # wq_a, q norm
                 + Q_LORA_RANK * HEADS * (QK_NOPE + QK_ROPE)            # wq_b
                 + DIM * (KV_LORA_RANK + QK_ROPE) + KV_LORA_RANK        # wkv_a, kv norm
                 + KV_LORA_RANK * HEADS * (QK_NOPE + V_HEAD)            # w_uk and w_uv (wkv_b)
                 + HEADS * V_HEAD * DIM)                                # wo
    norms = 2 * DIM                                                     # attention + FFN norms
    dense_ffn = 3 * DIM * DENSE_INTER
    routed = N_EXPERTS * 3 * DIM * MOE_INTER
    moe_rest = DIM * N_EXPERTS + N_EXPERTS + N_SHARED * 3 * DIM * MOE_INTER   # gate, bias, shared
    outer = VOCAB * DIM + DIM * VOCAB + DIM                             # embedding, head, norm
    n_moe = n_layers - N_DENSE
    common = outer + n_layers * (attention + norms) + N_DENSE * dense_ffn + n_moe * moe_rest
    total = common + n_moe * routed
    active = common + n_moe * routed * TOP_K // N_EXPERTS
    return total, active


def stats_json(capsys, model: str, *sets: str) -> dict:
    argv = ["stats", str(EXAMPLES / model), "--json"]
    for s in sets:
        argv += ["--set", s]
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def hand_nbytes(shape: tuple[int, ...], fmt) -> int:
    """Packed element bytes (rounded up) + one scale per block of the last two dims."""
    nbytes = math.ceil(math.prod(shape) * BITS[fmt.dtype] / 8)
    if fmt.scaling is not None:
        rows, cols = (1, 1) if not shape else (1, shape[0]) if len(shape) == 1 else shape[-2:]
        lead = math.prod(shape[:-2]) if len(shape) > 2 else 1
        r, c = fmt.scaling.block
        blocks = lead * math.ceil(rows / r) * math.ceil(cols / c)
        nbytes += blocks * BITS[fmt.scaling.dtype] // 8
        if fmt.scaling.tensor_dtype:
            nbytes += BITS[fmt.scaling.tensor_dtype] // 8
    return nbytes


def weights(graph):
    return [n for n in graph.nodes() if n.op == "weight"]


@pytest.fixture(scope="module")
def deepseek():
    graph = load_model(str(EXAMPLES / "deepseek_v3.ds"), unroll=True)   # counted by hand
    return graph, model_stats(graph)


@pytest.fixture(scope="module")
def deepseek_mxfp4():
    graph = load_model(str(EXAMPLES / "deepseek_v3.ds"), {"weights": "mxfp4"}, unroll=True)
    return graph, model_stats(graph)


# -- DeepSeek-V3 -----------------------------------------------------------------------------


def test_deepseek_params_about_671b(deepseek):
    _, stats = deepseek
    assert stats.params == pytest.approx(671e9, rel=0.01)


def test_deepseek_active_params_about_37b(deepseek):
    _, stats = deepseek
    assert stats.active_params == pytest.approx(37e9, rel=0.03)


def test_deepseek_params_match_the_configuration_exactly(deepseek):
    _, stats = deepseek
    total, active = deepseek_counts()
    assert stats.params == total
    assert stats.active_params == active


def test_deepseek_active_fraction_by_weight(deepseek):
    """Embedding, head, attention, dense and shared-expert weights are fully active; routed
    expert weights top_k / experts; found by dataflow, whatever the names."""
    graph, _ = deepseek
    fraction = active_fraction(graph)
    for name in ("embed", "head", "layer.0.mla_absorbed.wq_a", "layer.0.swiglu.w1"):
        assert fraction.get(graph.by_name(name).id, 1.0) == 1.0, name
    # Expert weights [experts, ...]; the absorbed MLA's per-head [heads, ...] weights are dense.
    routed = [n for n in weights(graph) if len(n.type.shape) == 3 and n.type.shape[0] == N_EXPERTS]
    assert len(routed) == 3 * (N_LAYERS - N_DENSE)
    assert all(fraction[n.id] == TOP_K / N_EXPERTS for n in routed)
    partial = {nid for nid, f in fraction.items() if f != 1.0}
    assert partial == {n.id for n in routed}


def test_deepseek_kv_cache_bytes_per_token(deepseek):
    _, stats = deepseek
    # per layer and token: the 512-wide latent plus the 64-wide shared rope key, in bf16
    assert stats.kv_cache_bytes_per_token == N_LAYERS * (KV_LORA_RANK + QK_ROPE) * 2 == 70272


def test_deepseek_weight_bytes_recomputed_from_the_graph(deepseek):
    graph, stats = deepseek
    assert stats.weight_bytes == sum(hand_nbytes(n.type.shape, n.type.format)
                                     for n in weights(graph))


def test_deepseek_weight_bytes_by_hand_for_one_weight(deepseek):
    graph, _ = deepseek
    wo = graph.by_name("layer.0.mla_absorbed.wo")
    K, N = HEADS * V_HEAD, DIM
    assert wo.type.shape == (K, N)
    # fp8 elements + one fp32 scale per 128x128 block
    assert wo.type.nbytes == K * N + (K // 128) * (N // 128) * 4


def test_deepseek_stats_cli_agrees(capsys, deepseek):
    _, stats = deepseek
    assert stats_json(capsys, "deepseek_v3.ds") == stats.contract()


def test_deepseek_fewer_layers_same_structure():
    stats = model_stats(load_model(str(EXAMPLES / "deepseek_v3.ds"), {"n_layers": "5"}))
    total, active = deepseek_counts(n_layers=5)
    assert (stats.params, stats.active_params) == (total, active)
    assert stats.kv_cache_bytes_per_token == 5 * (KV_LORA_RANK + QK_ROPE) * 2


def _policy_split(graph):
    """Weights typed by the policy (fp8 128x128 by default) and explicitly typed ones."""
    policy_fmt = graph.policy["weights"]
    typed = [n for n in weights(graph) if n.type.format == policy_fmt]
    explicit = [n for n in weights(graph) if n.type.format != policy_fmt]
    return typed, explicit


def test_deepseek_policy_and_explicit_weights(deepseek):
    graph, _ = deepseek
    typed, explicit = _policy_split(graph)
    leaves = {n.name.rsplit(".", 1)[-1] for n in explicit}
    assert leaves == {"embed", "head", "w", "w_gate", "gate_bias"}
    assert {n.type.format.dtype for n in explicit} == {"bf16", "fp32"}
    assert {n.name.rsplit(".", 1)[-1] for n in typed} == {
        "wq_a", "wq_b", "wkv_a", "w_uk", "w_uv", "wo", "w1", "w2", "w3"}


def test_mxfp4_weights_change_bytes_as_the_format_implies(deepseek, deepseek_mxfp4):
    graph, stats = deepseek
    graph4, stats4 = deepseek_mxfp4
    typed, explicit = _policy_split(graph)
    typed_ids = {n.id for n in typed}
    old = {n.id: n for n in weights(graph)}
    new = weights(graph4)
    assert [n.name for n in new] == [n.name for n in weights(graph)]

    expected_delta = 0
    for n in new:
        before = old[n.id] if n.id in old else None
        assert before is not None and before.name == n.name and before.type.shape == n.type.shape
        if n.id in typed_ids:
            *lead, K, N = n.type.shape                # [.., K, N]: K is the reduction axis
            # fp4 elements (half a byte) + one ue8m0 byte per 32 elements along K
            mx = math.ceil(math.prod(n.type.shape) * 4 / 8) + math.prod(lead) * math.ceil(K / 32) * N
            assert n.type.nbytes == mx, n.name
            expected_delta += mx - before.type.nbytes
        else:
            assert n.type == before.type, n.name       # explicitly typed: unchanged
    assert stats4.weight_bytes == stats.weight_bytes + expected_delta
    assert expected_delta < 0
    assert (stats4.params, stats4.active_params) == (stats.params, stats.active_params)
    assert stats4.kv_cache_bytes_per_token == stats.kv_cache_bytes_per_token


def test_mxfp4_weights_are_blocked_along_the_reduction_axis(deepseek_mxfp4):
    graph4, _ = deepseek_mxfp4
    wq_a = graph4.by_name("layer.0.mla_absorbed.wq_a")
    assert wq_a.type.format.dtype == "fp4_e2m1"
    assert wq_a.type.format.scaling.dtype == "ue8m0"
    assert wq_a.type.format.scaling.block == (32, 1)
    K, N = DIM, Q_LORA_RANK
    assert wq_a.type.nbytes == K * N // 2 + (K // 32) * N


def test_mxfp4_weight_bytes_by_hand_from_the_configuration(deepseek, deepseek_mxfp4):
    """Total weight bytes under mxfp4: bf16/fp32 weights as before, every [K, N] policy weight
    at K*N/2 + (K/32)*N bytes."""
    _, stats4 = deepseek_mxfp4

    def mx(K, N, copies=1):
        return copies * (K * N // 2 + (K // 32) * N)

    attention = (mx(DIM, Q_LORA_RANK) + mx(Q_LORA_RANK, HEADS * (QK_NOPE + QK_ROPE))
                 + mx(DIM, KV_LORA_RANK + QK_ROPE) + mx(KV_LORA_RANK, HEADS * (QK_NOPE + V_HEAD))
                 + mx(HEADS * V_HEAD, DIM))
    dense = 2 * mx(DIM, DENSE_INTER) + mx(DENSE_INTER, DIM)
    experts = 2 * mx(DIM, MOE_INTER, N_EXPERTS) + mx(MOE_INTER, DIM, N_EXPERTS)
    shared = 2 * mx(DIM, N_SHARED * MOE_INTER) + mx(N_SHARED * MOE_INTER, DIM)
    bf16 = 2 * (2 * VOCAB * DIM + DIM + N_LAYERS * (2 * DIM + Q_LORA_RANK + KV_LORA_RANK)
                + (N_LAYERS - N_DENSE) * DIM * N_EXPERTS)
    fp32 = 4 * (N_LAYERS - N_DENSE) * N_EXPERTS                        # gate biases
    expected = (bf16 + fp32 + N_LAYERS * attention + N_DENSE * dense
                + (N_LAYERS - N_DENSE) * (experts + shared))
    assert stats4.weight_bytes == expected


def test_mxfp4_through_the_cli(capsys, deepseek_mxfp4):
    _, stats4 = deepseek_mxfp4
    assert stats_json(capsys, "deepseek_v3.ds", "weights=mxfp4") == stats4.contract()


# -- Llama-3-8B ------------------------------------------------------------------------------

L_DIM = 4096
L_VOCAB = 128256
L_LAYERS = 32
L_HEADS = 32
L_KV_HEADS = 8
L_HEAD_DIM = 128
L_FFN = 14336


@pytest.fixture(scope="module")
def llama():
    graph = load_model(str(EXAMPLES / "llama3_8b.ds"), unroll=True)
    return graph, model_stats(graph)


def test_llama_params_by_hand(llama):
    _, stats = llama
    per_layer = (L_DIM * L_HEADS * L_HEAD_DIM                    # q
                 + 2 * L_DIM * L_KV_HEADS * L_HEAD_DIM           # k, v
                 + L_HEADS * L_HEAD_DIM * L_DIM                  # o
                 + 3 * L_DIM * L_FFN                             # w1, w3, w2
                 + 2 * L_DIM)                                    # two norms
    expected = L_VOCAB * L_DIM + L_DIM * L_VOCAB + L_LAYERS * per_layer + L_DIM
    assert stats.params == expected
    assert stats.active_params == stats.params
    assert stats.params == pytest.approx(8.03e9, rel=1e-3)


def test_llama_kv_cache_and_weight_bytes(llama):
    graph, stats = llama
    # keys and values, 8 KV heads of 128, bf16, per layer
    assert stats.kv_cache_bytes_per_token == L_LAYERS * 2 * L_KV_HEADS * L_HEAD_DIM * 2 == 131072
    assert stats.weight_bytes == 2 * stats.params                     # all bf16, unscaled
    assert stats.weight_bytes == sum(hand_nbytes(n.type.shape, n.type.format)
                                     for n in weights(graph))


def test_llama_stats_cli(capsys, llama):
    _, stats = llama
    assert stats_json(capsys, "llama3_8b.ds") == stats.contract()


# -- gemm ------------------------------------------------------------------------------------

M, N, K = 4096, 7168, 2048


def test_gemm_stats(capsys):
    stats = stats_json(capsys, "gemm.ds")
    assert stats["params"] == K * N
    assert stats["active_params"] == K * N
    assert stats["flops_per_token"] == 2 * K * N                     # tokens = M rows of a
    assert stats["kv_cache_bytes_per_token"] == 0
    assert stats["weight_bytes"] == K * N + (K // 128) * (N // 128) * 4


def test_gemm_tokens_follow_m(capsys):
    stats = model_stats(load_model(str(EXAMPLES / "gemm.ds"), {"M": "64"}))
    assert stats.tokens == 64
    assert stats.flops == 2 * 64 * N * K
    assert stats.flops_per_token == 2 * K * N


def test_grouped_stats():
    G, GM, GN, GK = 4, 256, 4096, 7168
    stats = model_stats(load_model(str(EXAMPLES / "grouped.ds")))
    assert stats.params == G * GK * GN
    assert stats.weight_bytes == G * GK * GN + G * (GK // 128) * (GN // 128) * 4
    assert stats.flops == 2 * G * GM * GN * GK
