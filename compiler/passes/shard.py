"""shard: the graph one device runs in a deployment.

Before (one replica: 128 tokens, 256 routed experts):
    %xe = dispatch(%x, %idx) {experts=256, capacity=4} : fp8_e4m3[256,4,7168]
    %h  = matmul(%xe, %w1) : bf16[256,4,2048]              %w1 = weight() : [256,7168,2048]
    %y  = combine(%ye, %idx, %w) : bf16[128,7168]
After (--devices 32, moe=ep):
    %xe     = dispatch(%x, %idx) : fp8_e4m3[256,4,7168]    (this device's tokens, every expert)
    %xe.a2a = all_to_all(%xe) {devices=32, split=0, concat=1, part=8, size=128,
                               wire_local=..., wire_node=..., wire_network=...}
                               : fp8_e4m3[8,128,7168]
    %h      = matmul(%xe.a2a, %w1) : bf16[8,128,2048]      %w1 = weight() : [8,7168,2048]
    %ye.a2a = all_to_all(%ye) {devices=32, split=1, concat=0, part=4, size=256, ...}
                               : [256,4,7168]
    %y      = combine(%ye.a2a, %idx, %w)

Every device runs the same graph (SPMD), so the interpreter simulates one: the hottest, which
sets the pace. Under expert parallelism each device holds the expert slots the placement gives
it (ceil(experts / devices), or with redundant experts ceil((E + R) / devices)) and computes
them for the tokens every device routed there: its expert rows and the rows its links carry
come from the routing and the expert load (compiler/expert_load.py), not from the functional
layout's capacity. Attention, dense FFNs and shared experts stay data parallel: replicated
weights, each device its own requests.
"""
from __future__ import annotations

from dataclasses import dataclass

from compiler.errors import DscError
from compiler.expert_load import (MAX_PLACED_EXPERTS, ExpertTraffic, Routing, Traffic,
                                   expert_shares)
from compiler.ir.graph import Graph, Node, TensorType
from compiler.ir.ops import OPS
from compiler.ir.ops.collective import chunk
from compiler.passes import PassContext
from compiler.passes.rewrite import Rewriter
from isa.deployment import Deployment


def expert_values(graph: Graph) -> tuple[dict[int, int], dict[int, int]]:
    """(values in a dispatch's expert layout, routed-expert weights), each mapped to the
    dispatch it belongs to, found by dataflow: a value computed from a dispatch output is in
    its layout until a combine; a weight multiplied with such a value is that dispatch's
    expert weight. A model's MoE blocks may have different numbers of experts, so each
    weight keeps the slots of its own dispatch."""
    layout: dict[int, int] = {}
    weights: dict[int, int] = {}
    for node in graph.nodes():
        if node.op == "dispatch":
            layout[node.id] = node.id
        elif node.op != "combine" and (source := next(
                (layout[i] for i in node.inputs if i in layout), None)) is not None:
            layout[node.id] = source
            weights.update((i, source) for i in node.inputs if graph.node(i).op == "weight")
    return layout, weights


def _retyped(node: Node, rw: Rewriter, shape=None) -> int:
    """Copy `node` with its shape inferred again from its (possibly resized) inputs."""
    ins = [rw.new.node(i).type for i in rw.inputs(node)]
    if shape is None:
        shape = OPS[node.op].infer(ins, OPS[node.op].full_attrs(node.attr_dict))
    return rw.copy(node, type=TensorType(tuple(shape), node.type.format))


def _expert_parallel(graph: Graph, ctx: PassContext, dep: Deployment) -> Graph:
    """Routed weights keep this device's expert slots; each dispatch sends its rows to the
    experts' devices and each combine takes the results back (two all-to-alls)."""
    layout, weights = expert_values(graph)
    rw = Rewriter(graph, ctx)
    traffic = {n.id: _traffic(graph, n, dep) for n in graph.nodes() if n.op == "dispatch"}
    for node in graph.nodes():
        if node.id in weights:
            slots = traffic[weights[node.id]].slots
            rw.new_id[node.id] = _retyped(node, rw, (slots, *node.type.shape[1:]))
        elif node.op == "dispatch":
            t = traffic[node.id]
            sent = rw.copy(node)
            shape = (t.slots, t.rows_per_slot, *node.type.shape[2:])
            rw.new_id[node.id] = rw.add(
                "all_to_all", [sent], TensorType(shape, node.type.format), f"{node.name}.a2a",
                {"devices": dep.devices, "split": 0, "concat": 1, "part": t.slots,
                 "size": t.rows_per_slot, "counts": dep.a2a == "node", **_wire(t)}, node.loc)
        elif node.op == "combine":
            ye = graph.node(node.inputs[0])
            dispatch = graph.node(_dispatch_of(graph, node))
            back = rw.add("all_to_all", [rw.new_id[ye.id]], dispatch.type.with_format(
                              ye.type.format), f"{ye.name}.a2a",
                          {"devices": dep.devices, "split": 1, "concat": 0,
                           "part": dispatch.attr("capacity"), "size": dispatch.attr("experts"),
                           **_wire(traffic[dispatch.id])}, node.loc)
            inputs = rw.inputs(node)
            inputs[0] = back
            rw.new_id[node.id] = rw.copy(node, inputs=inputs)
        elif node.id in layout:
            rw.new_id[node.id] = _retyped(node, rw)
        else:
            rw.new_id[node.id] = rw.copy(node)
    hottest = max(traffic.values(), key=lambda t: t.hottest)
    ctx.expert_load = hottest.summary()
    _note_load(ctx, hottest, dep)
    return rw.finish()


def _traffic(graph: Graph, dispatch: Node, dep: Deployment) -> Traffic:
    """The hottest device's expert rows and link rows for one dispatch: its routing is the
    top-k that chose its indices, its tokens the rows it dispatches."""
    topk = graph.node(dispatch.inputs[1])
    experts = dispatch.attr("experts")
    if topk.op == "topk":
        routing = Routing(experts, topk.attr("k"), topk.attr("groups"), topk.attr("topk_groups"))
    else:
        routing = Routing(experts, topk.type.shape[-1])
    tokens = graph.node(dispatch.inputs[0]).type.shape[0]
    return ExpertTraffic(routing, dep.devices, dep.per_node, tokens,
                         expert_shares(dep.load, experts), dep.redundant,
                         dep.a2a == "node").traffic()


def _wire(t: Traffic) -> dict[str, float]:
    return {f"wire_{scope}": rows for scope, rows in t.wire}


def _note_load(ctx: PassContext, t: Traffic, dep: Deployment) -> None:
    """Say how loaded the hottest device is when routing or placement makes devices differ."""
    if dep.load == "uniform" and dep.redundant == 0:
        return
    balanced = f" after balancing {dep.redundant} redundant experts" if dep.redundant else ""
    ctx.notes.append(f"expert load {dep.load}: the hottest device receives {t.hottest:.2f}x "
                     f"the mean device's rows and the coldest {t.coldest:.2f}x{balanced} "
                     f"(placed in order: {t.hottest_before:.2f}x and {t.coldest_before:.2f}x)")


def _dispatch_of(graph: Graph, combine: Node) -> int:
    """The dispatch whose routing indices a combine shares."""
    idx = combine.inputs[1]
    return next(n.id for n in graph.nodes() if n.op == "dispatch" and n.inputs[1] == idx)


def _tensor_parallel(graph: Graph, ctx: PassContext, dep: Deployment) -> Graph:
    """The parts the plan makes tensor parallel (attn=tpN, ffn=tpN, moe=tpN), over groups of
    N devices; the others data parallel inside the group (each device its own requests) or,
    for moe=ep, expert parallel over all devices (made so by _expert_parallel afterwards, on
    this device's share of the group's tokens)."""
    parts = weight_parts(graph)
    present = set(parts.values()) | {"attn"}
    n = max(dep.tp(part) for part in present)
    if any(dep.tp(part) not in (1, n) for part in present):
        raise DscError(f"plan {dep.plan_text}: the tensor-parallel parts must share one "
                       "group size", _given(ctx, "attn", "ffn", "moe"),
                       expected=f"e.g. --plan attn=tp{n},ffn=tp{n}")
    split = {part for part in present if dep.tp(part) > 1}
    contracted = {i for node in graph.nodes() if OPS[node.op].category == "contraction"
                  for i in node.inputs}
    written = {node.inputs[0] for node in graph.nodes() if node.op == "cache_write"}
    open_sources = {i for i in contracted if parts.get(i) in split}
    presplit = {}
    if "attn" in split:
        open_sources |= written
    else:                          # attention data parallel: inputs and caches its own
        presplit = {node.id: 0 for node in graph.nodes() if node.op in ("input", "cache")}
    local = moe_scopes(graph) if dep.moe == "ep" else ()
    from compiler.passes.tensor_parallel import TensorParallel   # only tensor-parallel plans
    for _ in range(3):                 # undoing a regretted split rarely exposes another
        tp = TensorParallel(graph, ctx, n, open_sources, presplit, local)
        out = tp.run()
        if not tp.regret:
            break
        open_sources -= tp.regret
    _note_unsplit(graph, out, ctx, n, {i for i, part in parts.items() if part in split})
    return out


def moe_scopes(graph: Graph) -> tuple[str, ...]:
    """The name scopes of the blocks that route tokens to experts ("layer.3.moe.")."""
    return tuple(dict.fromkeys(n.name.rsplit(".", 1)[0] + "." for n in graph.nodes()
                               if n.op == "dispatch"))


def weight_parts(graph: Graph) -> dict[int, str]:
    """Which part of the plan each weight belongs to: "moe" inside a block that routes to
    experts (shared experts too), "attn" inside a block with a cache or a softmax (attention)
    or outside every block (embedding, head), "ffn" in any other block (dense FFNs)."""
    moe = moe_scopes(graph)
    attention = {n.name.rsplit(".", 1)[0] for n in graph.nodes()
                 if n.op in ("cache_write", "softmax")}
    parts = {}
    for node in graph.nodes():
        if node.op != "weight":
            continue
        scope = node.name.rsplit(".", 1)[0] if "." in node.name else ""
        if any(node.name.startswith(m) for m in moe):
            parts[node.id] = "moe"
        elif not scope or not _in_block(node) or any(
                scope == a or scope.startswith(a + ".") for a in attention):
            parts[node.id] = "attn"
        else:
            parts[node.id] = "ffn"
    return parts


def _in_block(node: Node) -> bool:
    """Declared inside a block call: its scope has a part other than a repeat's name and
    iteration (`layer.0.swiglu`, not `layer.0`)."""
    scope = node.name.split(".")[:-1]
    return any(not p.isdigit() and not (i + 1 < len(scope) and scope[i + 1].isdigit())
               for i, p in enumerate(scope))


def _note_unsplit(before: Graph, after: Graph, ctx: PassContext, n: int,
                  planned: set[int]) -> None:
    """Say so when the group size divides too few dims to split most of the weights the plan
    splits."""
    names = {before.node(i).name for i in planned}
    weights = lambda g: sum(x.type.nbytes * g.copies(x.name) for x in g.nodes()
                            if x.op == "weight" and x.name in names)
    whole, kept = weights(before), weights(after)
    if whole and kept > 0.5 * whole:
        ctx.notes.append(f"tensor parallelism over {n} devices splits only "
                         f"{100 * (1 - kept / whole):.0f}% of the weight bytes: {n} divides few "
                         "of the model's dims (each device holds "
                         f"{100 * kept / whole:.0f}% of them)")


def _given(ctx: PassContext, *keys: str):
    """Where the model's deploy block gives one of these plan items (None: the command line
    gave them, or nobody)."""
    return next((ctx.deploy_where[k] for k in keys if k in ctx.deploy_where), None)


@dataclass(frozen=True)
class Shard:
    name: str = "shard"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        dep: Deployment = ctx.deployment
        if dep is None or dep.devices == 1:
            return graph
        # every MoE block's experts are spread over all devices: the smallest block decides
        dispatch = min((n for n in graph.nodes() if n.op == "dispatch"),
                       key=lambda n: n.attr("experts"), default=None)
        experts = dispatch.attr("experts") if dispatch is not None else 0
        if dep.moe == "ep" and dep.devices > experts > 0:
            raise DscError(f"plan moe=ep over {dep.devices} devices: this MoE block has "
                           f"{experts} routed experts, so some devices would hold none "
                           "(devices would differ, which the one-device simulation "
                           "cannot show)", dispatch.loc, expected=f"--devices {experts} or "
                           "fewer", notes=graph.call_notes(dispatch.name))
        largest = max((n for n in graph.nodes() if n.op == "dispatch"),
                      key=lambda n: n.attr("experts"), default=None)
        if dep.moe == "ep" and largest is not None and \
                largest.attr("experts") > MAX_PLACED_EXPERTS:
            raise DscError(f"plan moe=ep: this MoE block has {largest.attr('experts'):,} routed "
                           "experts, more than dsc places on devices one by one",
                           largest.loc, expected=f"at most {MAX_PLACED_EXPERTS:,} experts",
                           notes=graph.call_notes(largest.name))
        if any(dep.tp(part) > 1 for part in ("attn", "ffn", "moe")):
            graph = _tensor_parallel(graph, ctx, dep)
        if dep.moe != "ep":
            return graph
        if not experts:
            if not any(dep.tp(part) > 1 for part in ("attn", "ffn")):
                ctx.notes.append(f"moe=ep: model '{graph.model}' has no routed experts; "
                                 "every device runs it data parallel")
            return graph
        return _expert_parallel(graph, ctx, dep)
