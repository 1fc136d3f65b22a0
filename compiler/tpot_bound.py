"""The TPOT bound of DeepSeek's ISCA'25 paper ("Insights into DeepSeek-V3: Scaling Challenges
and Reflections on Hardware for AI Architectures", section 2.3.2), from a decode model and a
target: if compute hides entirely behind communication (two micro-batches), a decode step
takes as long as each device's network link needs to dispatch its tokens to their experts
and combine them back, in every layer:

    per layer = tokens x (dispatch bytes + combine bytes) x (top_k + shared) x dim / link rate
    TPOT      = layers x per layer

For V3 on H800 with 32 tokens in each of two micro-batches: (1 + 2) B x 32 x 9 x 7168 /
50 GB/s = 120.96 us per micro-batch, 241.92 us per layer, x 61 layers = 14.76 ms. The paper
counts every expert as remote and every layer (V3's first three are dense) and leaves out the scales of FP8 rows; dsc's simulated
all-to-alls send each token once to each device it reaches and only over the links it
crosses, which is why the two differ.
"""
from __future__ import annotations

from compiler.errors import DscError
from compiler.ir.graph import Graph
from isa.target_schema import Target


def tpot_bound(graph: Graph, sharded: Graph, target: Target, tokens: float) -> dict:
    """The paper's arithmetic for `tokens` per device per step: the model's experts and
    layers from `graph`, the formats its all-to-alls send from the compiled `sharded`."""
    dispatch = next((n for n in graph.nodes() if n.op == "dispatch"), None)
    link = target.machine.link_for("network")
    if dispatch is None or link is None:
        raise DscError(f"the TPOT bound needs routed experts and a network link; model "
                       f"{graph.model} on {target.name} has "
                       + ("no dispatch" if dispatch is None else "no network link"))
    x, idx = (graph.node(i).type for i in dispatch.inputs[:2])
    a2a = [n for n in sharded.nodes() if n.op == "all_to_all"]
    out = next((n for n in a2a if sharded.node(n.inputs[0]).op == "dispatch"), None)
    back = next((n for n in a2a if sharded.node(n.inputs[0]).op != "dispatch"), None)
    if out is None or back is None:
        raise DscError(f"the TPOT bound needs the expert all-to-alls of an expert-parallel "
                       f"plan; the {graph.model} step has none")
    scope = dispatch.name.rsplit(".", 1)[0]
    inter = next(n.type.shape[-1] for n in graph.nodes()
                 if n.op == "weight" and n.name.startswith(scope + ".")
                 and len(n.type.shape) == 3)
    shared = sum(n.type.shape[-1] for n in graph.nodes() if n.op == "weight"
                 and n.name.startswith(scope + ".shared") and n.name.endswith(".w1")) // inter
    layers = sum(graph.copies(n.name) for n in graph.nodes() if n.op == "cache")
    rate = link.bytes_per_cycle / link.achievable * target.clock_hz   # the NIC's line rate,
    # as the paper takes it (400 Gb/s), not the share of it the simulated sends sustain
    sent = out.type.format.bits / 8 + back.type.format.bits / 8
    per_layer = tokens * sent * (idx.shape[-1] + shared) * x.shape[-1] / rate
    return {"tokens_per_device": tokens, "dispatch_bytes": out.type.format.bits / 8,
            "combine_bytes": back.type.format.bits / 8, "experts": idx.shape[-1] + shared,
            "dim": x.shape[-1], "link_gbs": rate / 1e9, "layers": layers,
            "per_layer_us": per_layer * 1e6, "tpot_ms": per_layer * layers * 1e3,
            "tokens_per_s": 1 / (per_layer * layers)}
