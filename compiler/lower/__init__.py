"""Lowering: the IR graph to an ISA program, one kernel per kernel group (see groups.py),
through a registry of templates by group kind. Sources, constants and views produce no kernel;
views become view tensors."""
from __future__ import annotations

from importlib import import_module

from compiler.errors import DscError
from compiler.ir.graph import Graph
from compiler.ir.ops import OPS
from compiler.kernels.causal import attention_work
from compiler.kernels.groups import kernel_groups
from compiler.kernels.schedule import KernelTable, fold_layers, layer_of, order_tensors
from compiler.lower.tensors import TensorMap
from isa.instructions import lookup_any
from isa.program import Launch, Program, walk
from isa.target_schema import Target

# Group kind -> (template module, function, whether it takes the group's one node); a module
# is imported when a model first needs it.
TEMPLATES = {
    "gemm": ("gemm", "lower_gemm_group", False),
    "vector": ("vector", "lower_vector_group", False),
    "flash_attention": ("flash", "lower_flash_group", False),
    "index_logits": ("index_logits", "lower_index_logits", False),
    "dispatch": ("routing", "lower_dispatch", True),
    "combine": ("routing", "lower_combine", True),
    "embedding": ("routing", "lower_embedding", True),
    "collective": ("collective", "lower_collective", False),
}


def template(kind: str):
    """The function that lowers a kernel group of `kind`, or None."""
    if kind not in TEMPLATES:
        return None
    module, name, one_node = TEMPLATES[kind]
    lower_it = getattr(import_module(f"compiler.lower.templates.{module}"), name)
    return (lambda group, *rest: lower_it(group.nodes[0], *rest)) if one_node else lower_it


def stream_of(kernel) -> str:
    """A kernel made only of sends over one link (and the net unit's fences) runs on that
    link's stream; the rest on the cores'."""
    records = [lookup_any(ins.op) for ins in walk(kernel.body)]
    links = {ins.attr("link") for ins, d in zip(walk(kernel.body), records)
             if d.kind == "send"} - {"local"}
    if len(links) == 1 and all(d.unit == "net" for d in records):
        return links.pop()
    return "compute"


def lower(graph: Graph, target: Target) -> Program:
    tmap = TensorMap(graph)
    table = KernelTable()
    launches = []
    for group in kernel_groups(graph):
        head = group.nodes[0]
        lower_group = template(group.kind)
        if lower_group is None:
            raise DscError(f"no lowering for a '{group.kind}' kernel", head.loc)
        try:
            built = lower_group(group, graph, tmap, target)
        except ValueError as exc:
            raise DscError(f"cannot lower '{head.name}' for target {target.name}: {exc}",
                           head.loc, notes=graph.call_notes(head.name)) from None
        flops = sum(float(OPS[n.op].flops([graph.node(i).type for i in n.inputs], n.type,
                                           n.attr_dict)) for n in group.nodes)
        flops *= attention_work(group)
        shown = ", ".join(n.name for n in group.outputs) or head.name
        ops = " + ".join(n.op for n in group.nodes)
        # A template returns its kernel, or several run in order: the last does the op,
        # unless one is marked (kernel, args, True) (split-KV attention, then its combine).
        kernels = built if isinstance(built, list) else [built]
        doer = next((k for k, built_k in enumerate(kernels) if len(built_k) > 2),
                    len(kernels) - 1)
        for k, (kernel, args, *_) in enumerate(kernels):
            does = k == doer
            note = f"{shown} = {ops}" if does else f"{shown} = {ops} ({kernel.name})"
            launches.append((Launch(table.add(kernel), args, note, flops if does else 0.0,
                                    stream_of(kernel)), layer_of(head.name)))
    return Program(graph.model, target.name, order_tensors(tmap.tensors()), tuple(table.kernels),
                   tuple(fold_layers(launches)), tuple(graph.sizes.items()))
