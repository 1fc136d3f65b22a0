"""How an IR node becomes a vector instruction on on-chip tiles (shared by every template).

A tile holds `br` rows of a value laid out as [rows, last dim]. Elementwise nodes work on the
tile as it is; whole-row nodes (row-wise ops, reductions, top-k, concat) need every column of a
row in the tile. Constants become immediates (`imm0`, `imm1`). An op writing into another
operand's storage (a cache append) reads only the value it writes, converted to the target's
format like a cast.
"""
from __future__ import annotations

from compiler.ir.graph import Graph, Node
from compiler.ir.ops import OPS, read_operands
from compiler.ir.ops.rowwise import rows_layout
from compiler.kernels.rows import is_whole_row
from isa.expr import Expr
from isa.program import Buf


def vector_op(node: Node) -> tuple[str, dict]:
    """The vec.OP mnemonic suffix and attributes (other than positions and sizes)."""
    a = node.attr_dict
    if OPS[node.op].writes_into:        # the written value converted to the target's format
        return ("quant" if node.type.format.scaling else "cvt"), {}
    table = {
        "cast": lambda: ("quant" if node.type.format.scaling else "cvt", {}),
        "rmsnorm": lambda: ("rmsnorm", {"eps": a["eps"]}),
        "layernorm": lambda: ("layernorm", {"eps": a["eps"]}),
        "rope": lambda: ("rope", {"offset": a["offset"], "theta": a["theta"]}),
        "causal_mask": lambda: ("causal_mask", {"offset": a["offset"]}),
        "topk": lambda: ("topk", {"k": a["k"], "groups": a["groups"],
                                  "topk_groups": a["topk_groups"],
                                  # DeepSeek-V3's two best is the instruction's default
                                  **({"group_best": a["group_best"]} if a["groups"] > 1
                                     and a["group_best"] != 2 else {})}),
        "topk_weights": lambda: ("route_weights", {"norm": a["norm"], "scale": a["scale"]}),
    }
    return table[node.op]() if node.op in table else (node.op, {})


def positions(node: Node, row0: Expr) -> dict:
    """Row-position attributes for ops whose value depends on a row's sequence position."""
    if node.op == "rope":
        return {"row0": row0, **rows_layout(node.type.shape, node.attr("axis"))}
    if node.op == "causal_mask":
        return {"row0": row0, **rows_layout(node.type.shape, len(node.type.shape) - 2)}
    return {}


def emit_node(kb, graph: Graph, node: Node, dst: list[Buf], sources: dict[int, Buf],
              rows: int, cols: int, row0: Expr, wait=(), signal=()) -> None:
    """One vec instruction computing `node` on a tile of `rows` rows; `sources` maps each
    non-constant input id to the buffer holding its tile. Concat places each part."""
    if node.op == "concat":
        _emit_concat(kb, graph, node, dst[0], sources, rows, wait, signal)
        return
    name, attrs = vector_op(node)
    srcs, imms = [], {}
    operands = read_operands(node)
    for k, i in enumerate(operands):
        producer = graph.node(i)
        if producer.op == "const":
            imms[f"imm{k}"] = float(producer.attr("value"))
        else:
            srcs.append(sources[i])
    width = max([cols] + [graph.node(i).type.shape[-1] for i in operands
                          if graph.node(i).type.shape]) if is_whole_row(node) else cols
    kb.emit(f"vec.{name}", *dst, *srcs, wait=wait, signal=signal, n=rows * width,
            **attrs, **imms, **positions(node, row0))


def _emit_concat(kb, graph, node, dst, sources, rows, wait, signal) -> None:
    offset = 0
    parts = node.inputs
    for k, i in enumerate(parts):
        width = graph.node(i).type.shape[-1]
        kb.emit("vec.place", dst, sources[i], wait=wait if k == 0 else (),
                signal=signal if k == len(parts) - 1 else (), n=rows * width, col=offset)
        offset += width
