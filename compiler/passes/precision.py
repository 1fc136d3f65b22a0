"""precision: give the activations of low-precision GEMMs their policy format.

Before:  %y = matmul(%x, %w)            %x: bf16[128,7168]  %w: fp8_e4m3[..] scaled(fp32, 128x128)
After:   %x.q = cast(%x) {format=...}   %x.q: fp8_e4m3[128,7168] scaled(fp32, 1x128)
         %y = matmul(%x.q, %w)

Rules, applied to a fixed point:
- quantise_gemm_input: a contraction whose weight operand is 8 bits or narrower reads its
  activation operand in the policy's `activations` format, when the operand's last dim is the
  reduction (blocks run along K) and the target's matrix unit takes that element format;
  one cast per (value, format), shared by every GEMM reading it.
- quantise_before_movement: a dispatch or all-to-all whose every user casts to the same format
  moves the cast before it, so tokens travel (are copied, cross between devices) narrow.
Weights in a format the matrix unit lacks are dequantised inside their GEMM; the pass records
that as a note for the report rather than changing the graph.
"""
from __future__ import annotations

from dataclasses import dataclass

from compiler.errors import DscError
from compiler.ir.graph import Node, TensorType
from compiler.ir.ops import OPS
from compiler.ir.ops.contraction import contraction_of
from compiler.passes import PassContext
from compiler.passes.rewrite import Rewriter, apply_rules
from compiler.kernels.operand_plan import read_natively, unusable
from isa.formats import DTYPES


def _through_views(graph, node: Node) -> Node:
    while OPS[node.op].category == "view":
        node = graph.node(node.inputs[0])
    return node


def quantise_gemm_input(node: Node, rw: Rewriter) -> int | None:
    if OPS[node.op].category != "contraction":
        return None
    graph, target = rw.old, rw.ctx.target
    a, b = graph.inputs_of(node)
    weight = _through_views(graph, b)
    fmt = graph.policy.get("activations")
    if (weight.op != "weight" or DTYPES[b.type.format.dtype].bits > 8 or fmt is None
            or a.type.format.scaling is not None or a.type.format == fmt
            or DTYPES[a.type.format.dtype].bits <= 8):
        return None
    c = contraction_of([a.type, b.type], node.attr_dict)
    if c.spec.split(",")[0][-1] not in c.k:
        return None                           # blocks would not run along the reduction
    why = unusable(target, fmt.dtype)
    if why:
        rw.ctx.notes.append(f"{node.name}: activations stay {a.type.format.dtype}: {why}")
        return None
    key = (a.id, str(fmt))
    cache = rw.memo.setdefault("casts", {})
    if key not in cache:
        cache[key] = rw.add("cast", [rw.new_id[a.id]], TensorType(a.type.shape, fmt),
                            f"{a.name}.q", {"format": fmt}, node.loc)
    inputs = rw.inputs(node)
    inputs[0] = cache[key]
    return rw.copy(node, inputs=inputs)


MOVERS = ("dispatch", "all_to_all")      # ops that only move rows: they keep any format


def quantise_before_movement(node: Node, rw: Rewriter) -> int | None:
    """cast(move(x)) -> move(cast(x)) when every user of the move casts to one format, so the
    rows travel (are copied, or cross between devices) in the narrow format."""
    graph = rw.old
    if node.op != "cast":
        return None
    mover = graph.node(node.inputs[0])
    users = graph.users(mover.id)
    if mover.op not in MOVERS or any(u.op != "cast" or u.type.format != node.type.format
                                     for u in users):
        return None
    x = graph.node(mover.inputs[0])
    key = (mover.op, mover.id)
    cache = rw.memo.setdefault("hoisted", {})
    if key not in cache:
        fmt = node.type.format
        xq = rw.add("cast", [rw.new_id[x.id]], TensorType(x.type.shape, fmt), f"{x.name}.q",
                    {"format": fmt}, node.loc)
        cache[key] = rw.add(mover.op, [xq] + [rw.new_id[i] for i in mover.inputs[1:]],
                            TensorType(mover.type.shape, fmt), mover.name, mover.attrs,
                            mover.loc)
    return cache[key]


RULES = [quantise_gemm_input, quantise_before_movement]


@dataclass(frozen=True)
class Precision:
    name: str = "precision"

    def run(self, graph, ctx: PassContext):
        _note_unsupported_weights(graph, ctx)
        out = apply_rules(graph, RULES, ctx)
        _refuse_tensor_scaled_quantisation(out)
        return out


def _refuse_tensor_scaled_quantisation(graph) -> None:
    """A per-tensor scale (NVFP4) is set from the amax of the whole tensor, which a kernel
    quantising tile by tile does not know: such formats suit weights and inputs quantised
    ahead of time, not values made on chip."""
    for node in graph.nodes():
        fmt = node.type.format
        if node.op in ("cast", "cache_write") and fmt.scaling and fmt.scaling.tensor_dtype:
            raise DscError(f"'{node.name}' would be quantised on chip to {fmt}, whose per-tensor "
                           "scale needs the whole tensor's amax",
                           node.loc, expected="nvfp4 for weights or inputs only; mxfp4 (or another "
                           "block-only format) for activations and the KV cache")


def _note_unsupported_weights(graph, ctx: PassContext) -> None:
    seen = set()
    for node in graph.nodes():
        if OPS[node.op].category != "contraction":
            continue
        w = graph.node(node.inputs[1])
        dtype = w.type.format.dtype
        why = unusable(ctx.target, dtype)
        if why and dtype not in seen and not read_natively(ctx.target, dtype):
            seen.add(dtype)
            ctx.notes.append(f"{why}: weights in {dtype} are up-cast on the vector unit inside "
                             "their GEMMs")
