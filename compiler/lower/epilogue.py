"""What a GEMM's fused epilogue needs on chip, from the IR alone (no tensors placed yet).

The tile search (passes/tile.py, gemm_estimate.py) and the GEMM template both read this, so
the buffers a tile is checked against are exactly the buffers the kernel declares. Values are
seen as [G, M, C]: the product's rows, or one broadcast row.
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph, Node
from compiler.lower.groups import Group
from compiler.lower.templates.tile_ops import is_whole_row, tile_cols


class Epilogue:
    def __init__(self, group: Group, graph: Graph, head: Node, G: int, M: int):
        self.graph, self.head, self.G, self.M = graph, head, G, M
        self.nodes = [n for n in group.nodes if n.id != head.id]
        self.inside = {n.id for n in group.nodes}
        operands = set(head.inputs)
        self.inputs = [v for v in group.inputs if v.op != "const" and
                       (v.id not in operands or any(v.id in n.inputs for n in self.nodes))]
        self.outputs = list(group.outputs)
        self.whole_rows = any(is_whole_row(n) for n in self.nodes)
        self.store_head = head in group.outputs or not self.nodes
        # Buffers are named by position, so the same group in another layer is the same kernel.
        self.buf = {v.id: f"e{k}" for k, v in enumerate(self.inputs)}
        self.buf.update({n.id: f"v{k}" for k, n in enumerate(self.nodes)})

    def view_shape(self, v: Node) -> tuple[int, int, int]:
        """[G, M, C] for a value with the product's rows, [1, 1, C] for a broadcast row."""
        rows = self.M if math.prod(v.type.shape[:-1]) == self.G * self.M else 1
        return (self.G if rows > 1 else 1, rows, v.type.shape[-1])

    def cols(self, v: Node) -> int:
        """0 (the tile's bn) for values as wide as the product, else their own width."""
        width = tile_cols(v, self.graph) if v.id in self.inside else v.type.shape[-1]
        return width if self.whole_rows or width == 1 else 0

    @property
    def quantised(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "cast" and n.type.format.scaling]

    @property
    def n_align(self) -> int:
        """Quantisation blocks must not straddle tiles: bn a multiple of their columns."""
        return max([n.type.format.scaling.block[1] for n in self.quantised], default=1)

    def buffers(self) -> tuple:
        """(name, dtype or (scale dtype, block), cols or 0 for bn, one broadcast row)."""
        specs = [(self.buf[v.id], v.type.format.dtype, self.cols(v), self.view_shape(v)[1] == 1)
                 for v in self.inputs]
        specs += [(self.buf[n.id], n.type.format.dtype, self.cols(n), False) for n in self.nodes]
        specs += [(self.buf[n.id] + "s", (n.type.format.scaling.dtype, n.type.format.scaling.block),
                   self.cols(n), False) for n in self.quantised]
        return tuple(specs)
