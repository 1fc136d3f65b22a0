"""Every target the schema accepts compiles every example, or refuses it with one clear error
naming what the target lacks.

Each builtin target is taken apart in the ways target_variants.py lists (no fixed pipe, a
pipe with fewer ops, split or joined cube and vector cores, no FP8, one die, ...) and every
example is compiled on each at small sizes through the command line, then its listing is run:
exit status 0 for both — the listing read back passes the static checks (only instructions
the target has, each unit touching only buffers it can reach) — or exit status 1 with one
error naming the target and what it lacks.
"""
from __future__ import annotations

import re

import pytest

from cli_helpers import assert_one_error, dsc, in_repo_root  # noqa: F401  (autouse fixture)
from target_variants import toml_text, variants

from isa.target_loader import builtin_names

# Small sizes: every structure of the example, little of its work.
DEEPSEEK_SMALL = ("n_layers=2", "n_dense=1", "dim=512", "vocab=1024", "dense_inter=1024",
                  "n_experts=32", "top_k=2", "moe_inter=256", "n_groups=4", "topk_groups=2",
                  "heads=4", "q_lora_rank=128")
EXAMPLES = {
    "gemm": ("M=256", "N=256", "K=512"),
    "grouped": ("G=2", "M=128", "N=256", "K=512"),
    "tiny_moe": (),
    "llama3_8b": ("n_layers=1", "batch=2", "ctx=64", "dim=512", "vocab=1024", "heads=4",
                  "kv_heads=2", "ffn_inter=1024"),
    "deepseek_v3": DEEPSEEK_SMALL + ("batch=2", "ctx=64"),
    "deepseek_v3_prefill": DEEPSEEK_SMALL + ("seq=128",),    # its deploy block: 32 devices
}
# What any refusal may name: on-chip capacity (a variant's buffers, or split cores staging
# more in them), or the [system] table a deployment needs.
CAPACITY = r"on-chip buffers|needs [\d,]+ bytes|has no \[system\] table"
NUMA = ("tiny_moe", "grouped")          # also placed per die on multi-die variants
CASES = variants()


def test_every_builtin_is_taken_apart_several_ways():
    bases = [base for base, _, _ in CASES]
    assert {name: bases.count(name) >= 3 for name in builtin_names()} == \
        {name: True for name in builtin_names()}


@pytest.mark.parametrize("base, variant, data", CASES,
                         ids=[f"{b}-{v.name}" for b, v, _ in CASES])
def test_every_example_compiles_or_is_refused_clearly(capsys, tmp_path, base, variant, data):
    target = tmp_path / f"{data['name']}.toml"
    target.write_text(toml_text(data))
    refusal = re.compile("|".join(filter(None, (CAPACITY, variant.lacks))))
    outcomes = {}
    for model, sets in EXAMPLES.items():
        for mode in ("uma", "numa") if data["chip"]["dies"] > 1 and model in NUMA else ("uma",):
            listing = tmp_path / f"{model}.{mode}.lst"
            code, out, err = dsc(capsys, "compile", f"examples/{model}.ds", "--target",
                                 str(target), "--die-mode", mode, "--ignore-capacity",
                                 "-o", str(listing), *(a for s in sets for a in ("--set", s)))
            if code == 0:
                code, out, err = dsc(capsys, "run", str(listing), "--target", str(target))
                assert code == 0, err
                outcomes[model, mode] = "ok"
                continue
            assert_one_error(code, out, err)
            assert data["name"] in err and refusal.search(err), err
            outcomes[model, mode] = err.splitlines()[0]
    if not variant.lacks:            # a variant that lacks nothing essential runs the models
        assert outcomes["tiny_moe", "uma"] == "ok", outcomes
        assert outcomes["gemm", "uma"] == "ok", outcomes
