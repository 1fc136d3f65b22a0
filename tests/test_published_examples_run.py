"""The Qwen3 and Mixtral examples compile and run on h800, h20, b200 and ascend910b.

Where the model does not fit one device it is refused with the plan that fits, and runs on that
plan. ascend910b's file has no [system] (no published interconnect figures), so it cannot
deploy: the small model runs there at a batch that fits, the others as a what-if with
--ignore-capacity.
"""
from __future__ import annotations

import json

import pytest

from cli_helpers import assert_one_error, dsc, in_repo_root  # noqa: F401  (fixture)

RUNS = [
    ("qwen3_30b_a3b", "h800", ()),
    ("qwen3_30b_a3b", "h20", ()),
    ("qwen3_30b_a3b", "b200", ()),
    ("qwen3_30b_a3b", "ascend910b", ("--set", "batch=4")),
    ("qwen3_235b_a22b", "h800", ("--devices", "16", "--plan", "attn=dp,moe=ep")),
    ("qwen3_235b_a22b", "h20", ("--devices", "16", "--plan", "attn=dp,moe=ep")),
    ("qwen3_235b_a22b", "b200", ("--devices", "4", "--plan", "attn=dp,moe=ep")),
    ("qwen3_235b_a22b", "ascend910b", ("--ignore-capacity",)),
    ("mixtral_8x7b", "h800", ("--devices", "2", "--plan", "attn=dp,moe=ep")),
    ("mixtral_8x7b", "h20", ("--devices", "2", "--plan", "attn=dp,moe=ep")),
    ("mixtral_8x7b", "b200", ()),
    ("mixtral_8x7b", "ascend910b", ("--ignore-capacity",)),
]


@pytest.mark.parametrize("name, target, extra", RUNS, ids=[f"{m}-{t}" for m, t, _ in RUNS])
def test_example_runs(capsys, name, target, extra):
    code, out, err = dsc(capsys, "run", f"examples/{name}.ds", "--target", target, *extra,
                         "--json", "-")
    assert code == 0, err
    report = json.loads(out)
    assert report["model"] == name and report["target"] == target
    assert report["time_s"] > 0 and report["flops"] > 0


@pytest.mark.parametrize("name, target, plan", [
    ("qwen3_235b_a22b", "h800", "--devices 16 --plan attn=dp,ffn=dp,moe=ep"),
    ("mixtral_8x7b", "h800", "--devices 2 --plan attn=dp,ffn=dp,moe=ep"),
    ("qwen3_30b_a3b", "ascend910b", None),
])
def test_too_big_for_one_device_is_refused_with_the_plan_that_fits(capsys, name, target, plan):
    code, out, err = dsc(capsys, "run", f"examples/{name}.ds", "--target", target)
    assert_one_error(code, out, err)
    assert f"{name} does not fit one {target}" in err
    if plan:
        assert plan in err


# GPT-3 175B: 350 GB of bf16 weights. Eight devices hold them; four need 8-bit weights (FP8 on
# h800, int8 on a100, which has no FP8). Its 12,288-wide LayerNorm rows are streamed.
GPT3 = [("a100", "8", ()), ("h800", "8", ()),
        ("a100", "4", ("--set", "weights=int8")),
        ("h800", "4", ("--set", "weights=fp8_e4m3 scaled(fp32, 128x128)"))]


@pytest.mark.parametrize("target, tp, extra", GPT3, ids=[f"{t}-tp{n}" for t, n, _ in GPT3])
def test_gpt3_runs_tensor_parallel(capsys, target, tp, extra):
    code, out, err = dsc(capsys, "run", "examples/gpt3_175b.ds", "--target", target,
                         "--devices", tp, "--plan", f"attn=tp{tp},ffn=tp{tp}", *extra,
                         "--json", "-")
    assert code == 0, err
    report = json.loads(out)
    assert report["deployment"]["devices"] == int(tp)
    assert any(k["kernel"].startswith("streamed_") for k in report["kernels"])
