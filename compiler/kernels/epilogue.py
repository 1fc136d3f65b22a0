"""What a GEMM's fused epilogue needs on chip, from the IR alone (no tensors placed yet).

The tile search (passes/tile.py, gemm_estimate.py) and the GEMM template both read this, so
the buffers a tile is checked against are exactly the buffers the kernel declares. Values are
seen as [G, M, C]: the product's rows, or one broadcast row.

On a target with a fixed pipe, the accumulator drains through the pipe: the longest prefix of
epilogue ops the pipe supports runs there (decided by the target's list of pipe ops alone),
the rest on the vector unit — reached directly, or through memory when the target's matrix
results reach the vector unit only that way.

Through memory, the matrix core hands one tile over: the pipe's last result, or the product
itself — converted on the way out when the pipe has `cvt`, else the raw FP32 accumulator,
written by the pipe or, without one, by the core's store engine (`drain_store`). When the
vector cores must convert and store the product themselves (no `cvt` on the pipe), that
raw tile is the one handed over, so nothing else runs on the pipe.

Scales that factor out of the GEMM's K sum (operand_plan.py: per-token A, per-channel B) are
the epilogue's first step, applied once to the product's tile: by the pipe where it lists the
op (`OUTPUT_SCALE_OPS`), else by the vector unit. On split cores the vector unit sees the
product only after the hand-over, so a scale it applies makes the pipe hand over the raw
(FP32) tile with only its own scales applied, and every later op runs on the vector cores.
"""
from __future__ import annotations

import math

from compiler.ir.graph import Graph, Node
from compiler.kernels.groups import Group
from compiler.kernels.rows import is_whole_row, tile_cols

# Per operand whose scales the epilogue applies: (the fixed-pipe op that applies them where the
# target's pipe lists it, the vector op otherwise, the buffer they are loaded into). A's scales
# run down the product's rows (one per token), B's along its columns (one per channel); the
# pipe's `dequant` takes a scalar or per-channel scale, as Ascend's FixPipe documents.
OUTPUT_SCALE_OPS = {"a": ("rowscale", "rowscale", "srow"), "b": ("dequant", "colscale", "scol")}


def drain_store(target) -> str:
    """The instruction that writes a tile of the matrix unit's results to memory: the fixed
    pipe's store, or without a pipe the core's own store engine."""
    return "fix.st" if target.fixed_pipe else "st.tile"


def pipe_op(node: Node, graph: Graph) -> str:
    """The fixed-pipe operation an epilogue node would be (bias: adding a broadcast row)."""
    if node.op == "cast":
        return "quant" if node.type.format.scaling else "cvt"
    if node.op == "add" and any(math.prod(graph.node(i).type.shape[:-1]) == 1
                                for i in node.inputs):
        return "bias"
    return node.op


class Epilogue:
    def __init__(self, group: Group, graph: Graph, head: Node, G: int, M: int, target=None,
                 scales: dict | None = None):
        self.graph, self.head, self.G, self.M = graph, head, G, M
        self.nodes = [n for n in group.nodes if n.id != head.id]
        pipe = target.fixed_pipe.ops if target is not None and target.fixed_pipe else None
        split = target is not None and target.matrix.results_to_vector == "memory"
        self.pipe = pipe is not None
        self.scales = dict(scales or {})       # operand -> the Scaling applied to the product
        self.pipe_scales = [o for o in self.scales if pipe and OUTPUT_SCALE_OPS[o][0] in pipe]
        self.vector_scales = [o for o in self.scales if o not in self.pipe_scales]
        # A scale the split vector cores apply comes after the hand-over: the raw tile crosses.
        self.raw_for_vector = split and bool(self.vector_scales)
        self.store_head = head in group.outputs or not self.nodes
        self.pipe_converts = self.pipe and "cvt" in pipe and not self.raw_for_vector
        self.head_on_pipe = self.store_head and self.pipe_converts
        self.on_pipe = []
        raw_handoff = split and self.store_head and not self.pipe_converts
        for n in self.nodes if pipe and not raw_handoff and not self.raw_for_vector else []:
            if is_whole_row(n) or pipe_op(n, graph) not in pipe:
                break
            self.on_pipe.append(n)
        self.on_vector = [n for n in self.nodes if n not in self.on_pipe]
        self.through_memory = split and bool(self.on_vector or raw_handoff)
        self.inside = {n.id for n in group.nodes}
        operands = set(head.inputs)
        self.inputs = [v for v in group.inputs if v.op != "const" and
                       (v.id not in operands or any(v.id in n.inputs for n in self.nodes))]
        self.outputs = list(group.outputs)
        self.whole_rows = any(is_whole_row(n) for n in self.nodes)
        # Buffers are named by position, so the same group in another layer is the same kernel.
        self.buf = {v.id: f"e{k}" for k, v in enumerate(self.inputs)}
        self.buf.update({n.id: f"v{k}" for k, n in enumerate(self.nodes)})

    def view_shape(self, v: Node) -> tuple[int, int, int]:
        """[G, M, C] for a value with the product's rows, [1, 1, C] for a broadcast row. A
        product of one column ("bsht,bsh->bst": N = 1) keeps its rows last, [B, S, T]: each
        row's single element in row order, so [G, M, 1] too."""
        rows = self.G * self.M
        if math.prod(v.type.shape[:-1]) == rows:                # also when M is 1
            return (self.G, self.M, v.type.shape[-1])
        if math.prod(self.head.type.shape) == rows == math.prod(v.type.shape):
            return (self.G, self.M, 1)
        return (1, 1, v.type.shape[-1])

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

    def role(self, n: Node) -> str:
        """Where a value's tile lives: in the pipe's path out of the accumulator, or with the
        vector unit."""
        return "accumulator" if n in self.on_pipe else "vector"

    def buffers(self) -> tuple:
        """(name, dtype or (scale dtype, block), cols or 0 for bn, one broadcast row, role)."""
        specs = [(self.buf[v.id], v.type.format.dtype, self.cols(v), self.view_shape(v)[1] == 1,
                  "vector") for v in self.inputs]
        specs += [(self.buf[n.id], n.type.format.dtype, self.cols(n), False, self.role(n))
                  for n in self.nodes]
        specs += [(self.buf[n.id] + "s", (n.type.format.scaling.dtype, n.type.format.scaling.block),
                   self.cols(n), False, self.role(n)) for n in self.quantised]
        specs += [self.scale_buffer(o) for o in self.scales]
        if self.through_memory:                  # the hand-over tile, arriving at the vector unit
            specs.append(("h", self.handoff_dtype, self.cols(self.on_pipe[-1])
                          if self.on_pipe else 0, False, "vector"))
        return tuple(specs)

    @property
    def late_inputs(self) -> list[Node]:
        """Inputs the split vector cores load themselves, with the handed-over tile."""
        pipe_side = {i for n in self.on_pipe for i in n.inputs}
        return [v for v in self.inputs if self.through_memory and v.id not in pipe_side]

    @property
    def late_scales(self) -> list[str]:
        """Scales the split vector cores load themselves, with the handed-over tile."""
        return self.vector_scales if self.through_memory else []

    @property
    def loads_early(self) -> bool:
        """Something is loaded before the accumulator is ready (token `epi_loaded`)."""
        return len(self.inputs) > len(self.late_inputs) or len(self.scales) > len(self.late_scales)

    def scale_buffer(self, operand: str) -> tuple:
        """The buffer one operand's scales are loaded into, once per output tile: a column of
        row scales or a row of column scales. The pipe reads its scales from the cube core's
        own buffer (Ascend stages them in L1, as the operands); the vector unit from its own."""
        scaling = self.scales[operand]
        name = OUTPUT_SCALE_OPS[operand][2]
        role = "vector" if operand in self.vector_scales else f"matrix_{operand}"
        if operand == "a":
            return (name, (scaling.dtype, (scaling.block[0], 1)), 1, False, role)
        return (name, (scaling.dtype, (1, scaling.block[1])), 0, True, role)

    @property
    def handoff_dtype(self) -> str:
        """The format of the tile handed over through memory: the pipe's last result, the
        product converted by the pipe, or the raw FP32 accumulator."""
        if self.on_pipe:
            return self.on_pipe[-1].type.format.dtype
        return self.head.type.format.dtype if self.pipe_converts else "fp32"
