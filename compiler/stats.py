"""`dsc stats`: parameter counts, active parameters, FLOPs and KV-cache bytes per token.

Routed experts are found by dataflow, not by name: values computed from a `dispatch` output
(up to the `combine` that gathers them back) are in the expert layout, and a weight multiplied
with such a value is split across the experts, so per token only top_k of its `experts` slices
are active.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from compiler.ir.graph import Graph, Node
from compiler.ir.ops import OPS


@dataclass(frozen=True)
class ModelStats:
    params: int
    active_params: int
    flops_per_token: float
    kv_cache_bytes_per_token: int | float
    weight_bytes: int
    tokens: int
    flops: float

    def contract(self) -> dict:
        """The JSON of `dsc stats`: the KV bytes per token as the contract's int (rounded; a
        compressed cache makes it fractional) and exactly."""
        kv = self.kv_cache_bytes_per_token
        return {"params": self.params, "active_params": self.active_params,
                "flops_per_token": self.flops_per_token,
                "kv_cache_bytes_per_token": math.floor(kv + 0.5),
                "kv_cache_bytes_per_token_exact": float(kv),
                "weight_bytes": self.weight_bytes}


def _expert_layout(graph: Graph) -> dict[int, Node]:
    """Value id -> the dispatch whose expert layout it is in."""
    layout: dict[int, Node] = {}
    for node in graph.nodes():
        if node.op == "dispatch":
            layout[node.id] = node
        elif node.op != "combine":
            for i in node.inputs:
                if i in layout and graph.node(i).op != "weight":
                    layout[node.id] = layout[i]
                    break
    return layout


def active_fraction(graph: Graph) -> dict[int, float]:
    """Weight id -> fraction of it a token uses (top_k / experts for routed expert weights)."""
    layout = _expert_layout(graph)
    fraction: dict[int, float] = {}
    for node in graph.nodes():
        if OPS[node.op].category != "contraction":
            continue
        routed = [layout[i] for i in node.inputs if i in layout]
        for i in node.inputs:
            if graph.node(i).op == "weight" and routed:
                dispatch = routed[0]
                top_k = graph.node(dispatch.inputs[1]).type.shape[-1]
                fraction[i] = min(fraction.get(i, 1.0), top_k / dispatch.attr("experts"))
    return fraction


def token_count(graph: Graph) -> int:
    """Tokens one evaluation processes: batch x seq when declared, else an input's rows."""
    if "batch" in graph.sizes and "seq" in graph.sizes:
        return graph.sizes["batch"] * graph.sizes["seq"]
    inputs = [n for n in graph.nodes() if n.op == "input"]
    if not inputs:
        return 1
    return max(1, math.prod(inputs[0].type.shape[:-1]))


def model_stats(graph: Graph, grown: Graph | None = None) -> ModelStats:
    """The model's figures. The KV-cache bytes per token are those of one position of every
    cache, or, given `grown` (the same model with GROWTH more tokens of context), what the
    caches grow by per token of context and sequence (kv_growth)."""
    fraction = active_fraction(graph)
    params = active = weight_bytes = kv = 0
    flops = 0.0
    for node in graph.nodes():
        copies = graph.copies(node.name)        # a steady iteration's for each it stands for
        if node.op == "weight":
            params += node.type.numel * copies
            active += round(node.type.numel * fraction.get(node.id, 1.0)) * copies
            weight_bytes += node.type.nbytes * copies
        elif node.op == "cache":
            kv += node.type.format.nbytes(node.type.shape[2:]) * copies
        ins = [graph.node(i).type for i in node.inputs]
        if OPS[node.op].category != "source":
            flops += float(OPS[node.op].flops(ins, node.type, node.attr_dict)) * copies
    tokens = token_count(graph)
    if grown is not None:
        kv = kv_growth(graph, grown)
    return ModelStats(params, active, flops / tokens, kv, weight_bytes, tokens, flops)


# Tokens of context between the two builds kv_growth compares: a multiple of every
# compression ratio a cache may use (one entry per 4 or 128 tokens), so the growth is exact.
GROWTH = 1 << 16


def _cache_bytes_per_sequence(graph: Graph) -> Fraction:
    return sum((Fraction(n.type.nbytes * graph.copies(n.name), n.type.shape[0])
                for n in graph.nodes() if n.op == "cache"), Fraction(0))


def kv_growth(graph: Graph, grown: Graph) -> int | float:
    """KV-cache bytes per token of context: how much one sequence's caches grow between
    `graph` and `grown`, built with GROWTH more tokens of context. Unlike the bytes of one
    position, this is right for caches that do not hold one entry per token: a sliding
    window (fixed, 0 per token), a compressed memory of one entry per r tokens (1/r of an
    entry), a compressor's state. An int when whole."""
    per_token = (_cache_bytes_per_sequence(grown) - _cache_bytes_per_sequence(graph)) / GROWTH
    return int(per_token) if per_token.denominator == 1 else float(per_token)


def stats_of_model(path: str, overrides: dict[str, str]) -> ModelStats:
    """`dsc stats`: the model's figures, its KV bytes per token by growth when it has a
    context size `ctx` (not overridden by a --set of a non-integer, which load_model
    refuses)."""
    from compiler.frontend import load_model
    graph = load_model(path, overrides)
    if "ctx" not in graph.sizes:
        return model_stats(graph)
    grown = load_model(path, {**overrides, "ctx": str(graph.sizes["ctx"] + GROWTH)})
    return model_stats(graph, grown)
