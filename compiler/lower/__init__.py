"""Lowering: the IR graph to an ISA program, one kernel per op through a template registry.

Sources, constants and views produce no kernel (views become view tensors). Every other op
is lowered by the template registered for its name or, failing that, its category.
"""
from __future__ import annotations

from compiler.errors import DscError
from compiler.ir.graph import Graph
from compiler.ir.ops import OPS
from compiler.lower.schedule import KernelTable, fold_layers, layer_of, order_tensors
from compiler.lower.templates.copy import lower_cache_write, lower_concat
from compiler.lower.templates.gemm import lower_contraction
from compiler.lower.templates.routing import lower_combine, lower_dispatch, lower_embedding
from compiler.lower.templates.vector import lower_vector
from compiler.lower.tensors import TensorMap
from isa.program import Launch, Program
from isa.target_schema import Target

TEMPLATES = {
    "contraction": lower_contraction,
    "elementwise": lower_vector,
    "rowwise": lower_vector,
    "reduction": lower_vector,
    "topk": lower_vector,
    "topk_weights": lower_vector,
    "dispatch": lower_dispatch,
    "combine": lower_combine,
    "embedding": lower_embedding,
    "cache_write": lower_cache_write,
    "concat": lower_concat,
}
NO_KERNEL = ("source", "view")


def lower(graph: Graph, target: Target) -> Program:
    tmap = TensorMap(graph)
    table = KernelTable()
    launches = []
    for node in graph.nodes():
        category = OPS[node.op].category
        if category in NO_KERNEL:
            continue
        template = TEMPLATES.get(node.op) or TEMPLATES.get(category)
        if template is None:
            raise DscError(f"no lowering for op '{node.op}'", node.loc)
        try:
            kernel, args = template(node, graph, tmap, target)
        except ValueError as exc:
            raise DscError(f"cannot lower '{node.name}' for target {target.name}: {exc}",
                           node.loc) from None
        name = table.add(kernel)
        ins = [n.type for n in graph.inputs_of(node)]
        flops = float(OPS[node.op].flops(ins, node.type, node.attr_dict))
        launches.append((Launch(name, args, f"{node.name} = {node.op}", flops),
                         layer_of(node.name)))
    return Program(graph.model, target.name, order_tensors(tmap.tensors()), tuple(table.kernels),
                   tuple(fold_layers(launches)), tuple(graph.sizes.items()))
