"""What each kind of instruction does to buffers and tensors: one function per kind.

An instruction's record (isa/instructions.py) says which kind of execution it is (its
`semantics`: load, store, gather, scatter, mma, vector, quant, order); `semantics_of(record)`
gives the function for it, and a vector or fixed-pipe op runs the numpy semantics of the
vector op its record `computes_as`. A record without semantics is an error that names the
instruction: nothing is skipped silently. Every function has the signature `(ctx, ins)`,
where `ctx` is the launch context of machine.py (buffers, tensors, the work item's variables).

Vector ops reuse the numpy `semantics` of isa/vector_ops.py, so the math of an op exists once.
The rules that are the functional mode's own (quantisation blocks, the limited accumulator,
buffer shapes) are stated in docs/functional.md.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from isa.formats import Format
from isa.instructions import InstrDef
from isa.program import Instr
from isa.vector_ops import VECTOR_OPS
from runtime.functional.storage import FunctionalError
from runtime.numerics import decode, quantize, round_to_mantissa_bits
from runtime.numerics.matmul import MMA_K

Semantics = Callable[[object, Instr], None]


# ---- data movement --------------------------------------------------------------------------

def ld_tile(ctx, ins: Instr) -> None:
    """Load a box of a tensor (zero outside the tensor) into a buffer, zero-padded to it."""
    dst, box = ins.args[0], ins.args[1]
    name = ctx.tensor(box.tensor)
    values = ctx.memory.read_box(name, ctx.starts(box), box.sizes)
    ctx.note_read(name)
    ctx.write(dst, values, pad=True)


def st_tile(ctx, ins: Instr) -> None:
    """Store the leading corner of a buffer, shaped like the box, into its in-bounds part."""
    box, src = ins.args[0], ins.args[1]
    values = ctx.corner(src, box.sizes)
    ctx.memory.write_box(ctx.tensor(box.tensor), ctx.starts(box), box.sizes, values)


def ld_gather(ctx, ins: Instr) -> None:
    """Rows of a tensor (seen as [rows, last dim]) by the first `rows` entries of an index
    buffer, row-major; index -1 gives a row of zeros."""
    dst, src, index = ins.operands
    rows = ctx.attrs(ins)["rows"]
    name = ctx.tensor(src.tensor)
    table = ctx.memory.read(name)
    ctx.note_read(name)
    table = table.reshape(-1, table.shape[-1] if table.ndim else 1)
    idx = ctx.read(index).reshape(-1)[:rows].astype(np.int64)
    if len(idx) < rows:
        raise FunctionalError(f"{ins.op} in kernel {ctx.kernel.name}: index buffer "
                              f"{index.name} holds {len(idx)} entries, rows={rows}")
    idx = np.where(idx >= 0, idx + int(ctx.attrs(ins).get("base", 0)), idx)
    if np.any(idx >= table.shape[0]) or np.any(idx < -1):
        raise FunctionalError(f"{ins.op} in kernel {ctx.kernel.name}: row index out of range "
                              f"[-1, {table.shape[0]}) for tensor {name}")
    out = np.where((idx >= 0)[:, None], table[np.maximum(idx, 0)], 0).astype(table.dtype)
    ctx.write(dst, out, pad=True)


def st_scatter(ctx, ins: Instr) -> None:
    """The first `rows` rows of a buffer (seen as rows of the tensor's last dim) to the rows
    of a tensor named by an index buffer; index -1 skips the row."""
    dst, src, index = ins.operands
    rows = ctx.attrs(ins)["rows"]
    name = ctx.tensor(dst.tensor)
    width = ctx.memory.decl(name).shape[-1]
    data = ctx.read(src)
    if data.ndim >= 2 and data.shape[-1] >= width:
        values = data.reshape(-1, data.shape[-1])[:rows, :width]
    else:
        values = data.reshape(-1)[:rows * width].reshape(-1, width)
    idx = ctx.read(index).reshape(-1)[:rows].astype(np.int64)
    if len(idx) < rows or len(values) < rows:
        raise FunctionalError(f"{ins.op} in kernel {ctx.kernel.name}: buffers {src.name} and "
                              f"{index.name} hold fewer than rows={rows} rows")
    keep = idx >= 0
    ctx.memory.write_rows(name, idx[keep], values[keep])


# ---- matrix unit ----------------------------------------------------------------------------

def mma(ctx, ins: Instr) -> None:
    """acc[:m,:n] = (first ? 0 : acc) + a[:m,:k] @ b[:k,:n] (b[:n,:k]^T with trans_b=1).

    Products are exact (float64). With the format's `accumulator_bits` the sum is the limited
    accumulator of runtime/numerics/matmul.py: every group of MMA_K products along K is added
    and the running sum rounded to that many mantissa bits. Otherwise it is summed in float64
    and rounded once, to the destination buffer's dtype.
    """
    dst, a_buf, b_buf, *scale_bufs = ins.operands
    attrs = ctx.attrs(ins)
    m, n, k = attrs["shape"]
    a = _matrix(ctx.read(a_buf))
    b = _matrix(ctx.read(b_buf))
    if scale_bufs:                 # block scales the matrix unit applies itself
        a = a * _blocks(ctx.read(scale_bufs[0]), attrs["block_a"], a.shape)
        b = b * _blocks(ctx.read(scale_bufs[1]), attrs["block_b"], b.shape)
    a = a[:m, :k].astype(np.float64)
    b = (b[:n, :k].T if attrs.get("trans_b") else b[:k, :n]).astype(np.float64)
    if a.shape != (m, k) or b.shape != (k, n):
        raise FunctionalError(f"mm.mma {m}x{n}x{k} in kernel {ctx.kernel.name}: operands "
                              f"{a_buf.name} {list(a.shape)} and {b_buf.name} {list(b.shape)} "
                              "are smaller than the instruction shape")
    acc = np.zeros((m, n)) if attrs["first"] else _matrix(ctx.read(dst))[:m, :n].astype(np.float64)
    bits = ctx.accumulator_bits(attrs["fmt"])
    if bits is None:
        acc = acc + a @ b
    else:
        for g in range(0, k, MMA_K):
            acc = round_to_mantissa_bits(acc + a[:, g:g + MMA_K] @ b[g:g + MMA_K, :], bits)
    ctx.write(dst, acc)
    ctx.note_mma(attrs["fmt"], dst, k, bool(attrs["first"]))


def _blocks(scales: np.ndarray, block, shape) -> np.ndarray:
    """A tile's block scales spread over the tile (one per block of its last two dims)."""
    scales = scales.reshape(scales.shape[-2:])
    return np.repeat(np.repeat(scales, block[0], axis=0), block[1], axis=1)[:shape[0], :shape[1]]


def _matrix(x: np.ndarray) -> np.ndarray:
    """A buffer as a matrix: leading unit dims dropped."""
    while x.ndim > 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise FunctionalError(f"a matrix operand must be 2-D, not {list(x.shape)}")
    return x


# ---- vector unit ----------------------------------------------------------------------------

_PROMOTING = ("promote", "accumulate")
# One result element per source element: a source wider than the destination (a GEMM's
# accumulator padded to the tile width) is read at its leading corner of the destination's shape.
ELEMENTWISE = frozenset({"cvt", "add", "sub", "mul", "div", "neg", "relu", "exp", "sqrt",
                         "softplus", "sigmoid", "silu"})


def crop(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The leading corner of `x` no larger than `shape` (broadcast dims of 1 stay 1)."""
    if x.ndim != len(shape):
        return x
    return x[tuple(slice(0, n) for n in shape)]


def vector(name: str) -> Semantics:
    """`vec.NAME` from VECTOR_OPS: destinations first; with `reads_dst` their old values are
    the first arguments; `immK` stands for the missing K-th source operand."""
    vop = VECTOR_OPS[name]

    def run(ctx, ins: Instr) -> None:
        operands = ins.operands
        dsts, srcs = operands[:vop.outputs], list(operands[vop.outputs:])
        attrs = ctx.attrs(ins)
        attrs.pop("n", None)
        imms = {k: attrs.pop(f"imm{k}") for k in range(vop.arity) if f"imm{k}" in attrs}
        args = []
        for k in range(len(srcs) + len(imms)):       # topk's optional bias is an extra source
            args.append(np.float32(imms[k]) if k in imms else ctx.read(srcs.pop(0)))
        if name in _PROMOTING:
            ctx.note_promote(operands[1])
        if name in ELEMENTWISE:
            args = [a if np.ndim(a) == 0 else crop(a, ctx.buffer_decl(dsts[0].name).shape)
                    for a in args]
        old = [ctx.read(d) for d in dsts] if vop.reads_dst else []
        with np.errstate(all="ignore"):
            result = vop.semantics(*old, *args, **attrs)
        results = result if vop.outputs > 1 else (result,)
        for d, r in zip(dsts, results):
            ctx.write(d, np.asarray(r))
    run.__doc__ = vop.doc
    return run


def quant(ctx, ins: Instr) -> None:
    """Quantise a tile into the block-scaled format of the tensor its elements are stored to.

    Format: the element dtype is the element buffer's dtype; the scaling (scale dtype, block,
    per-tensor scale) is that of the tensor a store of this kernel (`st.tile`, `fix.st`)
    writes the element buffer to. Blocks are laid over the buffer from its corner (a partial block at its edge,
    zero padding changes no amax), so the scale buffer holds scale_shape(buffer) scales; the
    scale rule is runtime.numerics' default for the scaling. A per-tensor scale (NVFP4) is
    taken from the tile, the only data the instruction sees, and folded into the scales.
    """
    elements, scales, src = ins.operands
    scaling = ctx.quant_scaling(elements.name)
    dtype = ctx.buffer_decl(elements.name).dtype
    x = crop(ctx.read(src), ctx.buffer_decl(elements.name).shape)
    expected = scaling.scale_shape(x.shape)
    have = ctx.buffer_decl(scales.name).shape
    if len(have) != len(expected) or any(h < e for h, e in zip(have, expected)):
        raise FunctionalError(f"vec.quant in kernel {ctx.kernel.name}: {scales.name} "
                              f"{list(have)} cannot hold the {list(expected)} scales of a "
                              f"{list(x.shape)} tile in blocks of {scaling.block}")
    if scaling.tensor_dtype:
        raise FunctionalError(f"vec.quant in kernel {ctx.kernel.name}: quantising on chip to a "
                              "format with a per-tensor scale needs the whole tensor's amax")
    q = quantize(x, Format(dtype, scaling))
    ctx.write(elements, decode(q.codes, dtype))
    ctx.write(scales, q.scales)


def _no_op(ctx, ins: Instr) -> None:
    """sync.UNIT: ordering only; program order already is a valid order."""


# The kinds of execution there are; a record names one.
BY_KIND: dict[str, Semantics] = {
    "load": ld_tile, "store": st_tile, "gather": ld_gather, "scatter": st_scatter, "mma": mma,
    "quant": quant, "order": _no_op,
}
_VECTOR = {name: vector(name) for name in VECTOR_OPS}


def semantics_of(definition: InstrDef) -> Semantics:
    """The function executing an instruction; FunctionalError names one without semantics."""
    if definition.semantics == "vector":
        return _VECTOR[definition.computes_as]
    if definition.semantics in BY_KIND:
        return BY_KIND[definition.semantics]
    raise FunctionalError(f"instruction '{definition.mnemonic}' has no functional semantics "
                          f"(what runs is: {', '.join(BY_KIND)} and the vector ops of "
                          "isa/vector_ops.py)")
