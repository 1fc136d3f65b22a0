"""Random sentences of the .ds grammar (compiler/frontend/ds.lark), read with lark itself.

The walker expands rules at random; past a depth budget it takes the expansion that ends
soonest, so every sentence is finite and small. Terminals defined by a regular expression get
values from pools that mix names the language knows (ops, stdlib blocks, dtypes, keywords)
with edge values, so the sentences reach the builder's checks, not only the parser's.
"""
from __future__ import annotations

import functools
import random
from pathlib import Path

from lark import Lark

from benchmarks.fuzzing.mutate import INTERESTING_INTS

GRAMMAR = Path(__file__).resolve().parents[2] / "compiler" / "frontend" / "ds.lark"

NAMES = ("x", "y", "h", "w", "a", "b", "B", "S", "T", "d", "n", "k", "M", "N", "K", "layer",
         "batch", "ctx", "dim", "inter", "experts", "matmul", "einsum", "add", "mul", "silu",
         "softmax", "rmsnorm", "rope", "reshape", "transpose", "slice", "concat", "sum",
         "max", "mean", "topk", "split", "dispatch", "combine", "embedding", "cast",
         "causal_mask", "cache_write", "sqrt", "min", "ceil_div", "norm", "swiglu", "moe",
         "gqa", "mla_absorbed", "bf16", "fp32", "fp8_e4m3", "fp4_e2m1", "mxfp4", "nvfp4",
         "ue8m0", "i32", "int8", "default", "weights", "activations", "kv_cache", "devices",
         "attn", "moe", "ep", "dp", "tp2", "micro_batches", "a2a", "node", "size", "input",
         "weight", "output", "repeat", "model", "block", "import", "scaled", "_", "x1")
STRINGS = ('"std/nn.ds"', '"std/moe.ds"', '"std/attention.ds"', '"bm,mn->bn"',
           '"bshn,bthn->bhst"', '"ab,bc->ac"', '"bf16"', '"mxfp4"', '"fp8_e4m3 scaled(fp32, 1x128)"',
           '""', '"."', '"std/"', '"../x.ds"', '"a,b->"', '"->"')
BLOCKS = ("1x128", "128x128", "1x32", "32x1", "1x16", "0x0", "0x128", "99999999999x1")
FLOATS = ("0.0", "1e-6", "2.5", "10000.0", "1e308", "1e999", "3.", "0.5e-3")
IGNORED = ("WS", "COMMENT")


@functools.lru_cache(maxsize=1)
def _grammar():
    parser = Lark(GRAMMAR.read_text(), parser="lalr")
    rules: dict[str, list[tuple]] = {}
    for rule in parser.rules:
        rules.setdefault(rule.origin.name, []).append(tuple(rule.expansion))
    literals = {t.name: t.pattern.value for t in parser.terminals if t.pattern.type == "str"}
    return rules, literals, _heights(rules)


def _heights(rules) -> dict[str, int]:
    """Least derivation height of each rule (terminals count 0), by fixed-point iteration."""
    inf = 10**9
    height = {name: inf for name in rules}
    changed = True
    while changed:
        changed = False
        for name, expansions in rules.items():
            best = min(1 + max([height.get(s.name, 0) if not s.is_term else 0 for s in exp],
                               default=0) for exp in expansions)
            if best < height[name]:
                height[name], changed = best, True
    return height


def _terminal(rng: random.Random, name: str, literals) -> str:
    if name in literals:
        return literals[name]
    if name == "NAME":
        return rng.choice(NAMES)
    if name == "INT":
        return str(rng.choice((1, 2, 4, 8, 16, 64, 128)) if rng.random() < 0.8
                   else abs(rng.choice(INTERESTING_INTS)))
    if name == "FLOAT":
        return rng.choice(FLOATS)
    if name == "STRING":
        return rng.choice(STRINGS)
    if name == "BLOCK":
        return rng.choice(BLOCKS)
    raise KeyError(name)


def grammar_sentence(rng: random.Random, start: str = "start", budget: int = 9) -> str:
    """A random sentence derived from `start`, at most about `budget` rules deep."""
    rules, literals, heights = _grammar()
    out: list[str] = []

    def expand(name: str, depth: int) -> None:
        options = rules[name]
        if depth >= budget:
            least = min(_exp_height(e, heights) for e in options)
            options = [e for e in options if _exp_height(e, heights) == least]
        if "_star_" in name or "_plus_" in name:        # repetition: lists of 1 to ~6
            longer = [e for e in options if any(s.name == name for s in e)]
            if longer and depth < budget and rng.random() < 0.75:
                options = longer
        for sym in rng.choice(options):
            if sym.is_term:
                if sym.name not in IGNORED:
                    out.append(_terminal(rng, sym.name, literals))
            else:
                expand(sym.name, depth + 1)
        if name in ("body", "block_def", "model_def") or name.startswith("_stmt"):
            out.append("\n")

    expand(start, 0)
    return " ".join(out).replace(" \n ", "\n")


def _exp_height(expansion, heights) -> int:
    return max([0 if s.is_term else heights[s.name] for s in expansion], default=0)
