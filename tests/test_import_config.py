"""`dsc import`: Hugging Face config.json files shipped in tests/hf_configs become .ds models
whose statistics equal the hand-written examples'; bad configs get one clear error."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli_helpers import assert_one_error, dsc, in_repo_root  # noqa: F401  (fixture)
from compiler.frontend import load_model
from compiler.stats import model_stats

CONFIGS = Path(__file__).resolve().parent / "hf_configs"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# config -> the hand-written example with the same published configuration
PAIRS = [("llama3_8b", "llama3_8b"), ("qwen3_30b_a3b", "qwen3_30b_a3b"),
         ("qwen3_235b_a22b", "qwen3_235b_a22b"), ("mixtral_8x7b", "mixtral_8x7b"),
         ("deepseek_v3", "deepseek_v3"), ("deepseek_v32", "deepseek_v32")]


def imported(capsys, tmp_path, config: str, name: str = "model") -> Path:
    out = tmp_path / f"{name}.ds"
    code, stdout, err = dsc(capsys, "import", str(CONFIGS / f"{config}.json"), "-o", str(out))
    assert code == 0, err
    assert stdout == ""
    return out


def contract(path: Path) -> dict:
    return model_stats(load_model(str(path))).contract()


@pytest.mark.parametrize("config, example", PAIRS)
def test_import_reproduces_the_examples_statistics(capsys, tmp_path, config, example):
    path = imported(capsys, tmp_path, config)
    assert contract(path) == contract(EXAMPLES / f"{example}.ds")


def test_the_imported_text_names_the_config_fields(capsys, tmp_path):
    text = imported(capsys, tmp_path, "qwen3_30b_a3b", "qwen3").read_text()
    assert "model qwen3 {" in text
    for line in ("hidden_size", "num_hidden_layers", "moe_intermediate_size"):
        assert f"  {line} " in text
    assert "  moe_intermediate_size = 768\n" in text
    assert 'import "std/moe.ds"' in text
    assert "gqa_qk_norm(" in text and "moe_softmax(" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_import_is_deterministic_and_writes_stdout_without_o(capsys, tmp_path):
    written = imported(capsys, tmp_path, "deepseek_v3", "deepseek_v3").read_text()
    outs = [dsc(capsys, "import", str(CONFIGS / "deepseek_v3.json")) for _ in range(2)]
    assert outs[0] == outs[1] == (0, written, "")      # the name: the config file's


def test_deepseek_fp8_checkpoint_gives_the_fp8_policy(capsys, tmp_path):
    text = imported(capsys, tmp_path, "deepseek_v3").read_text()
    assert "weights     fp8_e4m3 scaled(fp32, 128x128)" in text
    assert "activations fp8_e4m3 scaled(fp32, 1x128)" in text
    assert "multi-token-prediction" in text            # said, not silently dropped


def test_tied_embeddings_count_once(capsys, tmp_path):
    cfg = json.loads((CONFIGS / "llama3_8b.json").read_text())
    cfg["tie_word_embeddings"] = True
    src = tmp_path / "config.json"
    src.write_text(json.dumps(cfg, indent=2))
    out = tmp_path / "tied.ds"
    assert dsc(capsys, "import", str(src), "-o", str(out))[0] == 0
    untied = contract(EXAMPLES / "llama3_8b.ds")
    assert contract(out)["params"] == untied["params"] - 4096 * 128256


def edited(tmp_path, config: str, **changes) -> Path:
    cfg = json.loads((CONFIGS / f"{config}.json").read_text())
    for key, value in changes.items():
        if value is KeyError:
            del cfg[key]
        else:
            cfg[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


@pytest.mark.parametrize("config, changes, message", [
    ("llama3_8b", {"model_type": "gpt_bigcode"}, "unknown model_type 'gpt_bigcode'"),
    ("llama3_8b", {"frobnicate": 3}, "unsupported config field for model_type 'llama': 'frobnicate'"),
    ("mixtral_8x7b", {"sliding_window": 4096}, "unsupported value of config field 'sliding_window'"),
    ("llama3_8b", {"hidden_act": "gelu"}, "unsupported value of config field 'hidden_act'"),
    ("llama3_8b", {"num_hidden_layers": KeyError}, "config field 'num_hidden_layers' is missing"),
    ("llama3_8b", {"num_hidden_layers": "32"}, "'num_hidden_layers' must be a positive integer"),
    ("llama3_8b", {"num_key_value_heads": 5}, "not a multiple of num_key_value_heads"),
    ("qwen3_30b_a3b", {"mlp_only_layers": [0, 1]}, "'mlp_only_layers'"),
    ("deepseek_v3", {"scoring_func": "softmax"}, "'scoring_func'"),
    ("deepseek_v3", {"quantization_config": {"quant_method": "gptq"}}, "quantization_config"),
])
def test_bad_config_one_error_naming_the_field(capsys, tmp_path, config, changes, message):
    src = edited(tmp_path, config, **changes)
    out = tmp_path / "m.ds"
    code, stdout, err = dsc(capsys, "import", str(src), "-o", str(out))
    assert_one_error(code, stdout, err)
    assert message in err
    assert str(src) in err                        # at its position in the file
    assert not out.exists()


def test_unreadable_configs(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"model_type": "llama",\n "hidden_size": }')
    assert_one_error(*dsc(capsys, "import", str(bad)))
    code, out, err = dsc(capsys, "import", str(bad))
    assert f"{bad}:2:" in err and "not valid JSON" in err
    assert_one_error(*dsc(capsys, "import", str(tmp_path / "missing.json")))
    assert_one_error(*dsc(capsys, "import", str(tmp_path)))
    (tmp_path / "list.json").write_text("[1, 2]")
    assert_one_error(*dsc(capsys, "import", str(tmp_path / "list.json")))


def _dense(d, layers, heads, kv_heads, head_dim, inter, vocab, qkv_bias=False, qk_norm=False):
    """(parameters, KV bytes per token) of a dense GQA + SwiGLU model, untied, bf16."""
    attention = (2 * d * heads * head_dim + 2 * d * kv_heads * head_dim
                 + (heads + 2 * kv_heads) * head_dim * qkv_bias + 2 * head_dim * qk_norm)
    params = layers * (attention + 3 * d * inter + 2 * d) + 2 * vocab * d + d
    return params, layers * 2 * kv_heads * head_dim * 2


# Published: Qwen2-7B 7.62B, Qwen3-8B 8.19B, Mistral-7B-v0.3 7.25B, Llama-3.1-70B 70.6B (its
# llama3 rope_scaling changes only the rotary tables), Qwen1.5-MoE-A2.7B 14.3B
# with 2.7B active (60 experts of 1408, top-4, a gated shared expert of 5632).
QWEN2_7B = _dense(3584, 28, 28, 4, 128, 18944, 152064, qkv_bias=True)
QWEN3_8B = _dense(4096, 36, 32, 8, 128, 12288, 151936, qk_norm=True)
MISTRAL_7B = _dense(4096, 32, 32, 8, 128, 14336, 32768)
LLAMA31_70B = _dense(8192, 80, 64, 8, 128, 28672, 128256)


def _qwen15_moe():
    d, layers, experts, top_k, inter, shared, vocab = 2048, 24, 60, 4, 1408, 5632, 151936
    attention = 4 * d * d + 3 * d                          # 16 heads of 128, q/k/v biases
    common = attention + d * experts + 3 * d * shared + d + 2 * d   # router, shared + gate, norms
    outer = 2 * vocab * d + d
    total = layers * (common + experts * 3 * d * inter) + outer
    active = layers * (common + top_k * 3 * d * inter) + outer
    return total, active, layers * 2 * 16 * 128 * 2


@pytest.mark.parametrize("config, params, active, kv", [
    ("qwen2_7b", QWEN2_7B[0], QWEN2_7B[0], QWEN2_7B[1]),
    ("qwen3_8b", QWEN3_8B[0], QWEN3_8B[0], QWEN3_8B[1]),
    ("mistral_7b_v0.3", MISTRAL_7B[0], MISTRAL_7B[0], MISTRAL_7B[1]),
    ("llama3.1_70b", LLAMA31_70B[0], LLAMA31_70B[0], LLAMA31_70B[1]),
    ("qwen1.5_moe_a2.7b", *_qwen15_moe()),
])
def test_other_families_by_hand(capsys, tmp_path, config, params, active, kv):
    stats = contract(imported(capsys, tmp_path, config, config))   # a name with dots
    assert (stats["params"], stats["active_params"], stats["kv_cache_bytes_per_token"]) == (
        params, active, kv)


def test_the_hand_figures_are_the_published_sizes():
    assert QWEN2_7B[0] == 7_615_616_512 and QWEN3_8B[0] == 8_190_735_360
    assert MISTRAL_7B[0] == 7_248_023_552
    assert LLAMA31_70B == (70_553_706_496, 327_680)
    assert _qwen15_moe()[:2] == (14_315_784_192, 2_689_173_504)


def _deepseek_v2(d, layers, heads, q_rank, dense_inter, experts, top_k, inter, vocab):
    """(parameters, active, KV bytes) of DeepSeek-V2 by hand: MLA (kv_lora_rank 512, heads of
    128 + 64 rope, values 128), one dense layer, then MoE layers with 2 shared experts."""
    kv_rank, nope, rope, v = 512, 128, 64, 128
    q = d * q_rank + q_rank + q_rank * heads * (nope + rope) if q_rank else d * heads * (nope + rope)
    attention = (q + d * (kv_rank + rope) + kv_rank + kv_rank * heads * (nope + v)
                 + heads * v * d)
    expert = 3 * d * inter
    moe_common = d * experts + 2 * expert                         # router, 2 shared experts
    outer = 2 * vocab * d + d
    common = outer + layers * (attention + 2 * d) + 3 * d * dense_inter + (layers - 1) * moe_common
    total = common + (layers - 1) * experts * expert
    active = common + (layers - 1) * top_k * expert
    return total, active, layers * (kv_rank + rope) * 2


V2_LITE = _deepseek_v2(2048, 27, 16, None, 10944, 64, 6, 1408, 102400)


def test_deepseek_v2_lite_by_hand(capsys, tmp_path):
    assert V2_LITE[0] == 15_706_484_224                                     # "15.7B"
    path = imported(capsys, tmp_path, "deepseek_v2_lite")
    stats = contract(path)
    assert (stats["params"], stats["active_params"], stats["kv_cache_bytes_per_token"]) == V2_LITE
    text = path.read_text()
    assert "mla_absorbed_direct(" in text and "shared=n_shared_experts" in text


def test_deepseek_v2_group_limited_routing(capsys, tmp_path):
    """DeepSeek-V2's group_limited_greedy: the groups ranked by their best expert (group_best
    1 in the topk op; DeepSeek-V3 sums its two best). Routing changes no parameter count."""
    src = edited(tmp_path, "deepseek_v2_lite", topk_method="group_limited_greedy", n_group=8,
                 topk_group=3)
    code, out, err = dsc(capsys, "import", str(src), "-o", str(tmp_path / "v2.ds"))
    assert code == 0, err
    text = (tmp_path / "v2.ds").read_text()
    assert "groups=n_group" in text and "topk_groups=topk_group" in text
    stats = contract(tmp_path / "v2.ds")
    assert (stats["params"], stats["active_params"], stats["kv_cache_bytes_per_token"]) == V2_LITE
    graph = load_model(str(tmp_path / "v2.ds"))
    topks = [n for n in graph.nodes() if n.op == "topk"]
    assert topks and all((n.attr("groups"), n.attr("topk_groups"), n.attr("group_best"))
                         == (8, 3, 1) for n in topks)