"""`dsc stats` of the Qwen3 and Mixtral examples against their published configurations.

Each expected count is written out from the configuration (Hugging Face config.json fields in
the comments), independently of the .ds files; the published totals (30.5B / 3.3B, 235B / 22B,
46.7B / 12.9B) are checked too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from compiler.cli.main import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BF16 = 2


@dataclass(frozen=True)
class MoeConfig:
    """The fields of a GQA + routed-MoE decoder that set its size."""
    dim: int                 # hidden_size
    layers: int              # num_hidden_layers
    heads: int               # num_attention_heads
    kv_heads: int            # num_key_value_heads
    head_dim: int            # head_dim
    experts: int             # num_experts / num_local_experts
    top_k: int               # num_experts_per_tok
    inter: int               # moe_intermediate_size / intermediate_size
    vocab: int               # vocab_size (embedding and head not tied)
    qk_norm: bool            # Qwen3: RMSNorm [head_dim] on queries and keys

    def counts(self) -> tuple[int, int, int]:
        """(parameters, active parameters per token, KV bytes per token)."""
        attention = (self.dim * self.heads * self.head_dim               # wq
                     + 2 * self.dim * self.kv_heads * self.head_dim      # wk, wv
                     + self.heads * self.head_dim * self.dim             # wo
                     + (2 * self.head_dim if self.qk_norm else 0))       # q_norm, k_norm
        norms = 2 * self.dim                                             # attention + FFN norms
        router = self.dim * self.experts
        expert = 3 * self.dim * self.inter                               # w1, w3, w2
        outer = 2 * self.vocab * self.dim + self.dim                     # embed, head, final norm
        common = outer + self.layers * (attention + norms + router)
        total = common + self.layers * self.experts * expert
        active = common + self.layers * self.top_k * expert
        kv = self.layers * 2 * self.kv_heads * self.head_dim * BF16      # keys and values
        return total, active, kv


QWEN3_30B = MoeConfig(dim=2048, layers=48, heads=32, kv_heads=4, head_dim=128, experts=128,
                      top_k=8, inter=768, vocab=151936, qk_norm=True)
QWEN3_235B = MoeConfig(dim=4096, layers=94, heads=64, kv_heads=4, head_dim=128, experts=128,
                       top_k=8, inter=1536, vocab=151936, qk_norm=True)
MIXTRAL = MoeConfig(dim=4096, layers=32, heads=32, kv_heads=8, head_dim=128, experts=8,
                    top_k=2, inter=14336, vocab=32000, qk_norm=False)

CASES = [("qwen3_30b_a3b", QWEN3_30B, 30.5e9, 3.3e9),
         ("qwen3_235b_a22b", QWEN3_235B, 235e9, 22e9),
         ("mixtral_8x7b", MIXTRAL, 46.7e9, 12.9e9)]


def stats(capsys, name: str) -> dict:
    capsys.readouterr()
    assert main(["stats", str(EXAMPLES / f"{name}.ds"), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_hand_arithmetic_gives_the_exact_figures():
    """The formulas above, evaluated once by hand per model (per-layer pieces in comments)."""
    # Qwen3-30B-A3B: attention 2048*4096 + 2*2048*512 + 4096*2048 + 2*128 = 18,874,624;
    # expert 3*2048*768 = 4,718,592; router 128*2048 = 262,144; embed/head 151936*2048 each.
    assert QWEN3_30B.counts() == (
        48 * (18_874_624 + 4_096 + 262_144 + 128 * 4_718_592) + 2 * 311_164_928 + 2_048,
        48 * (18_874_624 + 4_096 + 262_144 + 8 * 4_718_592) + 2 * 311_164_928 + 2_048,
        48 * 2_048)
    assert QWEN3_30B.counts() == (30_532_122_624, 3_353_032_704, 98_304)
    # Qwen3-235B-A22B: attention 71,303,424; expert 3*4096*1536 = 18,874,368; router 524,288.
    assert QWEN3_235B.counts() == (235_093_634_560, 22_190_763_520, 192_512)
    # Mixtral-8x7B: attention 2*4096^2 + 2*4096*1024 = 41,943,040; expert 3*4096*14336 =
    # 176,160,768; router 8*4096 = 32,768; embed/head 32000*4096 = 131,072,000 each.
    assert MIXTRAL.counts() == (
        32 * (41_943_040 + 8_192 + 32_768 + 8 * 176_160_768) + 2 * 131_072_000 + 4_096,
        32 * (41_943_040 + 8_192 + 32_768 + 2 * 176_160_768) + 2 * 131_072_000 + 4_096,
        32 * 4_096)
    assert MIXTRAL.counts() == (46_702_792_704, 12_879_925_248, 131_072)


@pytest.mark.parametrize("name, config, published, published_active", CASES)
def test_stats_match_the_configuration(capsys, name, config, published, published_active):
    total, active, kv = config.counts()
    got = stats(capsys, name)
    assert (got["params"], got["active_params"], got["kv_cache_bytes_per_token"]) == (
        total, active, kv)
    assert got["weight_bytes"] == BF16 * total                 # every weight bf16, unscaled
    assert got["params"] == pytest.approx(published, rel=0.01)
    assert got["active_params"] == pytest.approx(published_active, rel=0.02)


def test_gpt3_175b_by_hand(capsys):
    """GPT-3 175B (Brown et al. 2020, table 2.1): 96 layers, d 12288, 96 heads of 128,
    FFN 4d, vocab 50257, 2048 learned positions, head tied to the embedding."""
    d, layers, vocab, n_ctx, heads, head_dim = 12288, 96, 50257, 2048, 96, 128
    attention = 4 * d * heads * head_dim + 3 * heads * head_dim + d    # wq wk wv wo, 4 biases
    mlp = 2 * d * 4 * d + 4 * d + d                                     # w1 w2, b1 b2
    norms = 2 * 2 * d                                                   # two LayerNorms, w + b
    total = layers * (attention + mlp + norms) + vocab * d + n_ctx * d + 2 * d
    assert total == 174_604_259_328                                    # "175B"
    got = stats(capsys, "gpt3_175b")
    assert (got["params"], got["active_params"]) == (total, total)
    assert got["kv_cache_bytes_per_token"] == layers * 2 * heads * head_dim * BF16 == 4_718_592
