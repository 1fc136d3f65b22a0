"""Split-KV attention's partial outputs and the kernel that combines them.

Each work item of a split attention streams one piece of the keys and stores, for its bm rows,
the normalised output of that piece (fp32) and its rows' running max and sum: partial tensors
[G * S, M, Dv] and [G * S, M, 1], slab g * S + s. The combine kernel (one item per row block
of each G) folds the S pieces with `vec.merge_split`, the online softmax's rescaling over
pieces instead of key blocks, and stores the normalised result:

    loop s:  ld  part, max, sum of piece s      wait(free)  signal(loaded)
             vec merge_split acc, m, l          wait(loaded) signal(free)
    vec normalize out = acc / l;  st out
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.lower.kernel_builder import KernelBuilder
from isa.expr import Bin, Const, add, mul
from isa.formats import DTYPES
from isa.program import Box, Buf
from isa.target_schema import Target


@dataclass
class PartialOutputs:
    splits: int
    out: object                  # the attention's output tensor
    tensors: dict                # "o", "m", "l" -> scratch TensorDecl
    params: dict                 # the same -> the split kernel's parameter names

    @classmethod
    def declare(cls, kb: KernelBuilder, att, splits: int, tmap) -> "PartialOutputs":
        shapes = {"o": att.Dv, "m": 1, "l": 1}
        tensors = {k: tmap.scratch(f"{att.out.name}.split_{k}", "fp32",
                                   (att.G * splits, att.M, cols)) for k, cols in shapes.items()}
        params = {k: kb.param(f"part_{k}", t, output=True) for k, t in tensors.items()}
        return cls(splits, att.out, tensors, params)

    def store(self, kb: KernelBuilder, g, piece, m, bm: int, out: str) -> None:
        """The split item's epilogue: `out` = o / l (fp32; `out` is the accumulator itself
        where the partial is stored from it), then out, max and sum stored."""
        dv = self.tensors["o"].shape[-1]
        kb.emit("vec.normalize", Buf(out), Buf("o"), Buf("rsum"), wait=("o_final",),
                signal=("out_ready",), n=bm * dv)
        slab = add(mul(g, Const(self.splits)), piece)
        row0 = mul(m, Const(bm))
        for i, (key, buf, cols) in enumerate((("o", out, dv), ("m", "rmax", 1),
                                              ("l", "rsum", 1))):
            kb.emit("st.tile", Box(self.params[key], (slab, row0, Const(0)), (1, bm, cols)),
                    Buf(buf), wait=("out_ready",) if i == 0 else ())

    def combine(self, att, bm: int, target: Target):
        """The combine kernel: one item per row block of each G folds the S pieces."""
        S, dv = self.splits, att.Dv
        bm = _combine_rows(bm, dv, att.out.dtype, target)
        kb = KernelBuilder("flash_combine", target)
        kb.note(f"split-KV combine: {S} pieces of {att.G} x {att.M} rows x {dv}, "
                f"{bm} rows per item")
        ins = {k: kb.param(f"part_{k}", t) for k, t in self.tensors.items()}
        out = kb.param("o", att.out, output=True)
        g = kb.grid_dim("g", att.G)
        m = kb.grid_dim("m", math.ceil(att.M / bm))
        for key, cols in (("o", dv), ("m", 1), ("l", 1)):
            kb.buffer(f"p{key}", "fp32", (bm, cols), "vector", 2)
        kb.buffer("acc", "fp32", (bm, dv), "vector")
        kb.buffer("rmax", "fp32", (bm, 1), "vector")
        kb.buffer("rsum", "fp32", (bm, 1), "vector")
        kb.buffer("out", att.out.dtype, (bm, dv), "vector")
        for tok, initial in (("free", 2), ("loaded", 0), ("out_ready", 0)):
            kb.token(tok, initial)
        row0 = mul(m, Const(bm))
        with kb.loop("s", S) as s:
            slot = Bin("%", s, Const(2))
            slab = add(mul(g, Const(S)), s)
            for i, (key, cols) in enumerate((("o", dv), ("m", 1), ("l", 1))):
                kb.emit("ld.tile", Buf(f"p{key}", slot),
                        Box(ins[key], (slab, row0, Const(0)), (1, bm, cols)),
                        wait=("free",) if i == 0 else (), signal=("loaded",) if i == 2 else ())
            kb.emit("vec.merge_split", Buf("acc"), Buf("rmax"), Buf("rsum"), Buf("po", slot),
                    Buf("pm", slot), Buf("pl", slot), wait=("loaded",), signal=("free",),
                    n=bm * dv, first=Bin("==", s, Const(0)))
        kb.emit("vec.normalize", Buf("out"), Buf("acc"), Buf("rsum"), signal=("out_ready",),
                n=bm * dv)
        kb.emit("st.tile", Box(out, (g, row0, Const(0)), (1, bm, dv)), Buf("out"),
                wait=("out_ready",))
        return kb.build()


def _combine_rows(most: int, dv: int, out_dtype: str, target: Target) -> int:
    """The most rows per combine item (at most the attention's, halving) whose buffers fit
    the vector unit's space: two slots of a piece, the running sum and the output tile."""
    space = target.buffers[target.buffer_for("vector")[0]].bytes
    out_bytes = DTYPES[out_dtype].bits / 8
    rows = most
    while rows > 1 and rows * (dv * (3 * 4 + out_bytes) + 8 * 4) > space:
        rows //= 2
    return rows
