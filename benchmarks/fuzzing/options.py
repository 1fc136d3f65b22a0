"""Command-line values: `--set`, `--plan`, `--devices`, `--die-mode` and the other options of
every subcommand, valid and not, including the absurd sizes users try."""
from __future__ import annotations

import random

from benchmarks.fuzzing.mutate import INTERESTING_INTS, INTERESTING_TEXT, mutate_chars

FORMAT_VALUES = ("bf16", "fp32", "mxfp4", "nvfp4", "mxfp8", "fp8_e4m3 scaled(fp32, 128x128)",
                 "fp8_e4m3 scaled(ue8m0, 1x32)", "fp4_e2m1 scaled(fp8_e4m3, 1x16, fp32)",
                 "fp8_e4m3 scaled(fp32, 0x0)", "fp8_e4m3 scaled(fp32, 3x5)", "scaled(", "mxfp",
                 "bf16 scaled(fp32, 1x128)", "i32", "", "fp8_e4m3 scaled(bf16, 1x128)")
ROLES = ("default", "weights", "activations", "kv_cache")
SET_VALUES = tuple(str(v) for v in INTERESTING_INTS) + (
    "1000000", "10000000", "10000", "", " ", "x", "1e3", "2.5", "0x10", "1_000", "+5", "-0",
    "007", " 4 ", "4 4", "nan", "inf", "١٢", "99999999999999999999999999999999999999")
PLAN_KEYS = ("attn", "ffn", "moe", "mb", "a2a", "nope", "")
PLAN_VALUES = ("dp", "ep", "tp1", "tp2", "tp4", "tp8", "tp3", "tp0", "tp-1", "tp", "tp99999999",
               "1", "2", "3", "0", "node", "direct", "", "x")
DEVICE_VALUES = ("1", "2", "4", "8", "16", "32", "144", "3", "7", "0", "-1", "1000000",
                 "2147483648", "x", "", "1.5")
PASS_NAMES_SAMPLE = ("precision", "fuse", "tile", "plan", "place", "shard", "rewrite",
                     "micro_batch", "tensor_parallel", "nope")
ABSURD_SETS = ("batch=1000000", "ctx=10000000", "n_layers=10000", "n_experts=1000000",
               "seq=1000000", "dim=1000000", "vocab=1000000000", "M=1000000", "N=10000000",
               "K=100000000", "G=1000000", "heads=100000", "moe_inter=10000000")


def set_option(rng: random.Random, names: list[str]) -> str:
    """One `NAME=VALUE` for --set: a size of the model or a precision role, mostly well
    formed, sometimes not."""
    r = rng.random()
    if r < 0.15:
        return f"{rng.choice(ROLES)}={rng.choice(FORMAT_VALUES)}"
    if r < 0.25:
        return rng.choice(ABSURD_SETS)
    if r < 0.3:
        return rng.choice(("", "=", "=4", "batch", "batch==4", "batch= 4", " batch =4",
                           "BATCH=4", "1=2", "a b=3", "x" * 200 + "=1"))
    name = rng.choice(names) if names and rng.random() < 0.9 else mutate_chars(rng, "batch", 1)
    return f"{name}={rng.choice(SET_VALUES)}"


def plan_option(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return rng.choice(INTERESTING_TEXT + ("attn=dp,,moe=ep", ",", "attn=dp;moe=ep",
                                              "attn=dp,attn=tp2", "ATTN=DP", "attn = dp"))
    items = [f"{rng.choice(PLAN_KEYS)}={rng.choice(PLAN_VALUES)}"
             for _ in range(rng.randint(1, 4))]
    return ",".join(items)


def deployment_options(rng: random.Random) -> list[str]:
    out: list[str] = []
    if rng.random() < 0.6:
        out += ["--devices", rng.choice(DEVICE_VALUES)]
    if rng.random() < 0.6:
        out += ["--plan", plan_option(rng)]
    if rng.random() < 0.3:
        out += ["--ignore-capacity"]
    if rng.random() < 0.3:
        out += ["--die-mode", rng.choice(("uma", "numa", "UMA", "", "both"))]
    return out


def model_options(rng: random.Random, names: list[str]) -> list[str]:
    """--set, deployment and die options for a model-taking command."""
    out: list[str] = []
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        out += ["--set", set_option(rng, names)]
    return out + deployment_options(rng)
