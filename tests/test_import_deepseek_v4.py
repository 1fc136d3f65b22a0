"""`dsc import` of DeepSeek-V4 configs (tests/hf_configs/deepseek_v4_{flash,pro}.json, the
published configuration's fields and values: DeepSeek-V4's Hugging Face config and inference
config): the imported model's statistics are the hand-written examples' and the counts
computed by hand in test_deepseek_v4.py; what V4's config says that dsc cannot build is one
error naming the field."""
from __future__ import annotations

import pytest

from cli_helpers import assert_one_error, dsc, in_repo_root  # noqa: F401  (fixture)
from compiler.frontend import load_model
from compiler.stats import stats_of_model
from test_deepseek_v4 import FLASH, PRO, by_hand, ratios
from test_import_config import edited, imported

STEP = {"batch": "64"}        # the examples' step: the experts' padded rows depend on it


@pytest.mark.parametrize("config, example", [("deepseek_v4_flash", FLASH),
                                             ("deepseek_v4_pro", PRO)])
def test_import_reproduces_the_v4_examples(capsys, tmp_path, config, example):
    path = imported(capsys, tmp_path, config)
    got = stats_of_model(str(path), STEP).contract()      # KV bytes by the caches' growth
    assert got == stats_of_model(example, STEP).contract()
    params, active, kv = by_hand(example)
    assert (got["params"], got["active_params"], got["kv_cache_bytes_per_token_exact"]) == \
        (params, active, kv)
    assert ratios(str(path)) == ratios(example)      # the config's list, MTP entry last


@pytest.mark.parametrize("config, example", [("deepseek_v4_flash", FLASH),
                                             ("deepseek_v4_pro", PRO)])
def test_the_imported_mtp_block_is_the_examples(capsys, tmp_path, config, example):
    path = imported(capsys, tmp_path, config)
    draft = {**STEP, "n_mtp": "1", "seq": "2"}
    got = stats_of_model(str(path), draft).contract()
    assert got == stats_of_model(example, draft).contract()
    assert got["params"] > by_hand(example)[0]        # its count: test_deepseek_v4.py


def test_the_imported_v4_reads_like_the_example(capsys, tmp_path):
    path = imported(capsys, tmp_path, "deepseek_v4_flash", "v4")
    text = path.read_text()
    for piece in ('import "std/compressed.ds"', 'import "std/hyper.ds"', "compress_ratios[layer]",
                  "moe_hash(", "moe_sqrt_softplus(", "hc_expand(", "hc_head(",
                  "kv_cache    fp8_e4m3 scaled(ue8m0, 1x64)", "Sinkhorn", "swiglu_limit",
                  "size n_mtp = 0", "compress_ratios[num_hidden_layers + mtp]"):
        assert piece in text, piece
    assert max(len(line) for line in text.splitlines()) <= 100
    constants = [line.split() for line in text.splitlines()]
    assert ["num_hash_layers", "=", "3"] in constants
    assert ["n_routed_experts", "=", "256"] in constants
    graph = load_model(str(path))                # the layer list keeps the repeat compiled once
    layers = {n.name.split(".")[1] for n in graph.nodes() if n.name.startswith("layer.")}
    assert len(layers) == 11 and [s.period for s in graph.steady] == [2]


@pytest.mark.parametrize("changes, message", [
    ({"compress_ratios": [4, 128]}, "'compress_ratios' must list 44 entries"),
    ({"compress_ratios": [0, 0, 8] + [4] * 41}, "each one of 0, 4, 128"),
    ({"expert_dtype": "fp8"}, "unsupported value of config field 'expert_dtype'"),
    ({"scoring_func": "sigmoid"}, "unsupported value of config field 'scoring_func'"),
    ({"num_key_value_heads": 8}, "unsupported value of config field 'num_key_value_heads'"),
    ({"hc_mult": KeyError}, "config field 'hc_mult' is missing"),
    ({"num_nextn_predict_layers": 2, "compress_ratios": [0] * 45},
     "unsupported value of config field 'num_nextn_predict_layers'"),
    ({"attn_sink_init": 0.0}, "unsupported config field for model_type 'deepseek_v4': "
                              "'attn_sink_init'"),
])
def test_bad_v4_config_one_error_naming_the_field(capsys, tmp_path, changes, message):
    src = edited(tmp_path, "deepseek_v4_flash", **changes)
    out = tmp_path / "m.ds"
    code, stdout, err = dsc(capsys, "import", str(src), "-o", str(out))
    assert_one_error(code, stdout, err)
    assert message in err and str(src) in err
    assert not out.exists()
