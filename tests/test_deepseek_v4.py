"""DeepSeek-V4 (examples/deepseek_v4_flash.ds, deepseek_v4_pro.ds): parameters, active
parameters and KV-cache bytes per token against the published configuration, computed here by
hand; the per-layer compression ratios read from one list; both examples run on h800, h20 and
b200 (deployed over devices where they do not fit one) and ascend910b (as a what-if on one
device)."""
from __future__ import annotations

import json

import pytest

from cli_helpers import assert_one_error, dsc, in_repo_root  # noqa: F401  (fixture)
from compiler.frontend import load_model

FLASH, PRO = "examples/deepseek_v4_flash.ds", "examples/deepseek_v4_pro.ds"
# (d, layers, heads, q_rank, o_groups, experts, moe_inter, index_topk) from each config.json
CONFIGS = {FLASH: (4096, 43, 64, 1024, 8, 256, 2048, 512),
           PRO: (7168, 61, 128, 1536, 16, 384, 3072, 1024)}
VOCAB, HEAD_DIM, O_RANK, INDEX_HEADS, INDEX_DIM, TOP_K, HC, N_HASH = \
    129280, 512, 1024, 64, 128, 6, 4, 3


def ratios(path: str) -> list[int]:
    text = open(path).read()
    body = text.split("compress_ratios = [", 1)[1].split("]", 1)[0]
    return [int(v) for v in body.replace("\n", " ").split(",")]


def by_hand(path: str) -> tuple[int, int, float]:
    d, layers, heads, q_rank, groups, experts, inter, _ = CONFIGS[path]
    attention = (d * q_rank + q_rank + q_rank * heads * HEAD_DIM + d * HEAD_DIM + HEAD_DIM
                 + groups * O_RANK * (heads // groups * HEAD_DIM) + groups * O_RANK * d + heads)
    csa_compressor = 4 * 2 * HEAD_DIM + 2 * d * 2 * HEAD_DIM + HEAD_DIM     # ape, kv/gate, norm
    csa_indexer = (q_rank * INDEX_HEADS * INDEX_DIM + d * INDEX_HEADS
                   + 4 * 2 * INDEX_DIM + 2 * d * 2 * INDEX_DIM + INDEX_DIM)
    hca_compressor = 128 * HEAD_DIM + 2 * d * HEAD_DIM + HEAD_DIM
    expert = 3 * d * inter
    hc_layer = 2 * (24 * 4 * d + 24 + 3)                   # (2 + hc) hc = 24 mixes per sub-layer
    by_ratio = {0: attention, 4: attention + csa_compressor + csa_indexer,
                128: attention + hca_compressor}
    total = active = 0
    schedule = ratios(path)
    assert len(schedule) == layers + 1 and schedule[-1] == 0   # the last is the MTP layer's
    for layer, r in enumerate(schedule[:layers]):
        gate = experts * d + (experts if layer >= N_HASH else 0)   # bias: score routing only
        common = by_ratio[r] + gate + hc_layer + 2 * d + expert     # + the shared expert
        total += common + experts * expert
        active += common + TOP_K * expert
    outer = 2 * VOCAB * d + (4 * 4 * d + 4 + 1) + d        # embed, head, head HC, final norm
    # KV bytes per token per layer: a cache entry is 448 FP8 values + 7 UE8M0 scales (one per
    # 64) + 64 BF16 rope values = 583 bytes (DeepSeek's layout pads it to 584); the CSA
    # indexer's key 128 FP4 values = 64 bytes + 4 bytes of scale (68). CSA keeps one entry of
    # each per 4 tokens, HCA one entry per 128, SWA only its 128-token window (0 per token).
    entry, index_key = 448 + 7 + 64 * 2, 64 + 4
    per_layer = {0: 0, 4: (entry + index_key) / 4, 128: entry / 128}
    kv = sum(per_layer[r] for r in schedule[:layers])
    return total + outer, active + outer, kv


def test_the_hand_counts_are_the_published_ones():
    flash, pro = by_hand(FLASH), by_hand(PRO)
    assert flash[:2] == (284_332_240_471, 13_799_632_471)
    assert pro[:2] == (1_572_997_201_763, 49_779_081_059)
    # 21 CSA, 20 HCA layers (Flash); 30 and 31 (Pro): 583-byte entries where the published
    # 3,514.25 and 5,031.44 bytes count 584 (the pad byte)
    assert flash[2] == 21 * 162.75 + 20 * 583 / 128 == 3508.84375
    assert pro[2] == 30 * 162.75 + 31 * 583 / 128 == 5023.6953125


@pytest.mark.parametrize("path", [FLASH, PRO])
def test_stats_match_the_configuration(capsys, path):
    code, out, err = dsc(capsys, "stats", path, "--json")
    assert code == 0, err
    got = json.loads(out)
    params, active, kv = by_hand(path)
    assert (got["params"], got["active_params"], got["kv_cache_bytes_per_token_exact"]) == \
        (params, active, kv)
    assert got["kv_cache_bytes_per_token"] == round(kv)          # the contract's int


def test_the_kv_bytes_follow_the_layers_ratios(capsys):
    # two SWA layers (windows only), then a CSA and an HCA layer
    code, out, _ = dsc(capsys, "stats", FLASH, "--json", "--set", "n_layers=4")
    assert code == 0 and json.loads(out)["kv_cache_bytes_per_token_exact"] == 162.75 + 583 / 128


def test_the_layer_list_picks_each_layers_attention():
    g = load_model(FLASH, {"n_layers": "6"})
    names = {n.name for n in g.nodes()}
    has = lambda layer, part: any(n.startswith(f"layer.{layer}.v4_attention.{part}")
                                  for n in names)
    for layer, kind in enumerate(["swa", "swa", "csa", "hca", "csa", "hca"]):
        assert has(layer, "csa.0.csa_indexer") == (kind == "csa")
        assert has(layer, "compress.0.compressor") == (kind != "swa")
        assert has(layer, "all_rows") == (kind != "csa")


RUNS = [(FLASH, "h800", ("--devices", "8", "--plan", "attn=dp,moe=ep")),
        (FLASH, "h20", ("--devices", "8", "--plan", "attn=dp,moe=ep")),
        (FLASH, "b200", ("--devices", "2", "--plan", "attn=dp,moe=ep")),
        (PRO, "h800", ("--devices", "32", "--plan", "attn=dp,moe=ep")),
        (PRO, "b200", ("--devices", "8", "--plan", "attn=dp,moe=ep"))]


@pytest.mark.parametrize("path, target, plan", RUNS, ids=[f"{p[9:-3]}-{t}" for p, t, _ in RUNS])
def test_decode_runs_deployed(capsys, path, target, plan):
    code, out, err = dsc(capsys, "run", path, "--target", target, *plan, "--set", "n_layers=6",
                         "--set", "batch=16")
    assert code == 0, err
    assert "csa_indexer" in out and "fp4_experts" in out and "hc_pre" in out


@pytest.mark.parametrize("path", [FLASH, PRO])
def test_the_full_model_does_not_fit_one_h800(capsys, path):
    code, out, err = dsc(capsys, "run", path, "--target", "h800")
    assert_one_error(code, out, err)
    assert "does not fit one h800" in err and "--devices" in err


@pytest.mark.parametrize("path", [FLASH, PRO])
def test_ascend910b_runs_every_kind_of_layer(capsys, path):
    # ascend910b's file has no interconnect figures to deploy over: a what-if on one device
    code, out, err = dsc(capsys, "run", path, "--target", "ascend910b", "--set", "n_layers=4",
                         "--set", "batch=16", "--ignore-capacity")
    assert code == 0, err
    assert "csa_indexer" in out and "all_rows" in out


def test_sqrt_softplus_scores_and_hash_routing_match_numpy(tmp_path):
    """The router's new ops against numpy, in the reference and in functional mode (full
    precision), and the hash layer's experts are its table's rows for the token ids."""
    import numpy as np

    from compiler.cli.functional import check_numerics
    from compiler.driver import compile_model
    from compiler.ir.evaluate import evaluate, random_feeds
    path = tmp_path / "router.ds"
    path.write_text("""
model router {
  size T = 16, d = 64, e = 32
  precision { default fp32 weights fp32 activations fp32 }
  input x: [T, d]
  input ids: i32[T]
  input table: i32[100, 6]
  weight w: [d, e]
  s = sqrt(softplus(x @ w))
  output scores = s
  output experts = embedding(ids, table)
}""")
    g = load_model(str(path))
    feeds = random_feeds(g, seed=3)
    got = evaluate(g, feeds)
    logits = feeds["x"].astype(np.float64) @ feeds["w"]
    np.testing.assert_allclose(got["scores"], np.sqrt(np.log1p(np.exp(logits))), rtol=1e-5)
    np.testing.assert_array_equal(got["experts"], feeds["table"][feeds["ids"]])
    compiled = compile_model(str(path), "h800", {})
    result = check_numerics(compiled)
    scores = next(o for o in result.outputs if o.name == "scores")
    assert scores.rel_error < 2e-3        # the GEMM's operands in bf16 on h800's matrix unit


@pytest.mark.parametrize("path, built", [(FLASH, 11), (PRO, 11)])
def test_the_alternating_layers_are_built_once_per_kind(path, built):
    """compress_ratios alternates 4 and 128 after the first layers: the window builds three
    cycles of (HCA, CSA) and the last layers, not every layer, and counts the same."""
    from compiler.stats import model_stats
    g = load_model(path)
    layers = {n.name.split(".")[1] for n in g.nodes() if n.name.startswith("layer.")}
    assert len(layers) == built and [s.period for s in g.steady] == [2]
    whole = load_model(path, unroll=True)
    assert model_stats(g) == model_stats(whole)


def test_the_window_compiles_to_the_unrolled_program():
    from compiler.driver import compile_model
    from isa.listing import render
    sizes = {"n_layers": "14", "batch": "16"}
    window = compile_model(FLASH, "h800", sizes, check_fit=False)
    whole = compile_model(FLASH, "h800", sizes, check_fit=False, unroll=True)
    assert window.graph.steady and not whole.graph.steady
    text = render(window.program)
    assert "step 2" in text and text == render(whole.program) and window.notes == whole.notes


@pytest.mark.parametrize("path, mtp", [(FLASH, 6_610_048_891), (PRO, 25_840_145_979)])
def test_the_mtp_block_adds_its_published_count(capsys, path, mtp):
    """The MTP block: w_e, w_h [d, d], three norms, its own head mixing and one SWA layer
    (the config's last compress_ratios entry, 0) with a score-routed MoE; the embedding and
    head are shared. Its window adds no KV bytes per token."""
    d, layers, heads, q_rank, groups, experts, inter, _ = CONFIGS[path]
    total, active, kv = by_hand(path)
    attention = (d * q_rank + q_rank + q_rank * heads * HEAD_DIM + d * HEAD_DIM + HEAD_DIM
                 + groups * O_RANK * (heads // groups * HEAD_DIM) + groups * O_RANK * d + heads)
    swa_layer = attention + experts * d + experts + 2 * (24 * 4 * d + 24 + 3) + 2 * d \
        + (experts + 1) * 3 * d * inter
    assert 2 * d * d + 3 * d + (4 * 4 * d + 4 + 1) + swa_layer == mtp
    code, out, err = dsc(capsys, "stats", path, "--json", "--set", "n_mtp=1", "--set", "seq=2")
    assert code == 0, err
    got = json.loads(out)
    assert (got["params"], got["kv_cache_bytes_per_token_exact"]) == (total + mtp, kv)


def test_decode_with_the_mtp_draft_runs(capsys):
    code, out, err = dsc(capsys, "run", FLASH, "--target", "h800", "--devices", "8", "--plan",
                         "attn=dp,moe=ep", "--set", "n_layers=4", "--set", "batch=16",
                         "--set", "n_mtp=1", "--set", "seq=2")
    assert code == 0, err
    assert "mtp.*.v4_mtp.embedding" in out and "draft" in out


def test_a_hash_layer_still_runs_the_gate_gemm():
    """DeepSeek-V4's hash layers pick their experts from tid2eid, but their routing weights
    are the sqrt(softplus) gate scores of those experts, normalised (the reference's Gate
    computes the scores before either routing): layer 0 runs the gate GEMM and no top-k,
    layer 3 (score-routed) runs both."""
    from compiler.driver import compile_model
    from isa.program import Launch
    compiled = compile_model(FLASH, "h800", {"n_layers": "4", "batch": "16"}, check_fit=False)
    notes = [item.note for item in compiled.program.schedule if isinstance(item, Launch)]
    layer = lambda i: [n.split(" = ", 1)[1] for n in notes if n.startswith(f"layer.{i}.moe")]
    hashed, scored = layer(0), layer(3)
    assert hashed[:3] == ["matmul + softplus + sqrt", "embedding", "topk_weights"]
    assert scored[:2] == ["matmul + softplus + sqrt", "topk + topk_weights"]
    assert not any("topk +" in n for n in hashed)
