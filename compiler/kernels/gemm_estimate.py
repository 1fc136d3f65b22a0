"""The GEMM problem a contraction (and its epilogue) poses, built from the IR alone.

The GEMM template, the tile pass and the fuse pass's cost decisions all start here, so they
reason about the same buffers, formats and promotion.
"""
from __future__ import annotations

from dataclasses import replace

from compiler.ir.graph import Graph, Node
from compiler.ir.ops.contraction import Contraction, contraction_of
from compiler.kernels import gemm_tiles
from compiler.kernels.epilogue import Epilogue
from compiler.kernels.groups import Group
from compiler.kernels.operand_plan import OperandPlan, plan_operands
from isa.program import TensorDecl
from isa.target_schema import Target


def contraction_dims(graph: Graph, node: Node) -> tuple[Contraction, int, int, int, int]:
    c = contraction_of([graph.node(i).type for i in node.inputs], node.attr_dict)
    return c, c.size(c.batch), c.size(c.m), c.size(c.n), c.size(c.k)


def operand_decls(graph: Graph, node: Node) -> tuple[TensorDecl, TensorDecl]:
    """The contraction's operands as [G, M, K] and [G, K, N] tensors with their scaling."""
    a, b = graph.inputs_of(node)
    c, G, M, N, K = contraction_dims(graph, node)
    a_idx, b_idx = c.spec.split("->")[0].split(",")
    return (TensorDecl(a.name, a.type.format.dtype, (G, M, K), "temp",
                       _oriented(a.type.format.scaling, a_idx, c.m, c.k)),
            TensorDecl(b.name, b.type.format.dtype, (G, K, N), "temp",
                       _oriented(b.type.format.scaling, b_idx, c.k, c.n)))


def _oriented(scaling, index: str, rows: str, cols: str):
    """An operand's scale block as [rows, cols] of its canonical view: one stored with its
    columns' dim before its rows' (a key cache [T, D] read as B = [D, T]) has its block turned,
    as the lowering's transposed view turns it (compiler/lower/tensors.py)."""
    if scaling is None or len(index) < 2 or not (index[-2] in cols and index[-1] in rows):
        return scaling
    return replace(scaling, block=scaling.block[::-1])


def output_scales(plan: OperandPlan, da: TensorDecl, db: TensorDecl) -> dict:
    """Operand -> the scaling the epilogue applies to the product (scales constant along K)."""
    return {o: d.scaling for o, d in (("a", da), ("b", db)) if o in plan.epilogue_scales}


def gemm_problem(graph: Graph, node: Node, target: Target,
                 **extra) -> tuple[gemm_tiles.GemmProblem, OperandPlan]:
    _, G, M, N, K = contraction_dims(graph, node)
    da, db = operand_decls(graph, node)
    plan = plan_operands(da, db, target)
    needs = lambda conv: plan.scaled or plan.hw_scaled or conv == "dequant"
    a_scaling = da.scaling if needs(plan.a_conv) else None
    b_scaling = db.scaling if needs(plan.b_conv) else None
    tensor_scales = tuple(o for o, sc in (("a", a_scaling), ("b", b_scaling))
                          if sc is not None and sc.tensor_dtype)
    split = target.matrix.results_to_vector == "memory" and bool(plan.a_conv or plan.b_conv)
    out = output_scales(plan, da, db)
    out_blocks = (out["a"].block[0] if "a" in out else 1, out["b"].block[1] if "b" in out else 1)
    problem = gemm_tiles.GemmProblem(
        G, M, N, K, da.dtype, db.dtype, node.type.format.dtype, plan.fmt, plan.k_step,
        plan.promote, plan.a_conv, plan.b_conv, a_scaling, b_scaling,
        tensor_scales=tensor_scales, hw_scaled=plan.hw_scaled, split=split,
        out_blocks=out_blocks, promote_every=plan.promote_every if plan.promote else 0,
        scaled_promotion=plan.promote and plan.scaled, **extra)
    return problem, plan


def group_problem(group: Group, graph: Graph, target: Target):
    """(problem, operand plan, epilogue) of a GEMM kernel group."""
    head = group.nodes[0]
    _, G, M, _, _ = contraction_dims(graph, head)
    da, db = operand_decls(graph, head)
    epi = Epilogue(group, graph, head, G, M, target,
                   output_scales(plan_operands(da, db, target), da, db))
    problem, plan = gemm_problem(graph, head, target, store_acc=epi.store_head,
                                 epilogue=epi.buffers(), whole_rows=epi.whole_rows,
                                 n_align=epi.n_align)
    return problem, plan, epi


def gemm_cycles(problem: gemm_tiles.GemmProblem, target: Target) -> float:
    """The estimate of the tile the search would choose; infinite when no tile fits."""
    try:
        tile, scored = gemm_tiles.choose(problem, target)
    except ValueError:
        return float("inf")
    return dict(scored)[tile]
