"""The instruction set: every instruction defined once, as one record (`InstrDef`).

A record gives everything known about an instruction: the mnemonic, the unit that executes it,
its operand kinds (checked by the assembler), the attributes it takes, its documentation, its
cost formula (as code, and as text for `dsc isa`), what kind of work it is (compute, a load, a
store, a send, a fence), what it does when executed (`semantics`: runtime/functional executes
that kind; a vector or fixed-pipe op runs the numpy semantics of the isa/vector_ops.py op it
`computes_as`), and what a target must offer for it (`needs`). Nothing else keys a table on
mnemonics: the assembler, the verifier, the interpreter, the functional run and the lowering
ask the record.

Most records are in `INSTRUCTIONS` (any target with their unit); the fixed pipe's ops are made
per op name (`fix.OP`, for the ops a target's pipe lists), and the fixed pipe's store and the
vector cores' own loads and stores are records only some targets offer.

Costs come in three kinds, which the interpreter turns into time:
  Compute(cycles)            the unit is busy for `cycles`
  Transfer(bytes, tensor)    bytes move between off-chip memory and a buffer (or, for a send,
                             to another device over a link), at the rate the shared memory
                             system and links give the transfer (see runtime/bandwidth.py)
  Fence()                    completes when every earlier instruction of its unit has completed
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from isa.expr import Bin, Const, Var
from isa.program import Attr, Box, Buf, Instr, TensorRef
from isa.target_schema import Target
from isa.vector_ops import VECTOR_OPS


@dataclass(frozen=True)
class Compute:
    cycles: float


@dataclass(frozen=True)
class Transfer:
    bytes: int
    tensor: str
    direction: str       # "load", "store", or "send" (to another device)
    multicast: int = 1   # cores receiving the same bytes; L2 and memory see them once
    link: str = ""       # a send's link: one of the target's device links, or "local"
    run: int = 0         # bytes of its longest contiguous run (0: one run), for access sizes
    dtype: str = ""      # the element type moved, for links that convert it on the way


@dataclass(frozen=True)
class Fence:
    pass


@dataclass(frozen=True)
class CostContext:
    """What a cost formula may look at: the target, and sizes resolved for one work item."""
    target: Target
    box_bytes: Callable[[Box], int]          # in-bounds bytes of a box (edge tiles are clipped)
    buffer_bytes: Callable[[str], int]       # bytes of one slot of a buffer
    row_bytes: Callable[[str], int]          # bytes of one row (last dim) of a tensor
    run_bytes: Callable[[Box], int] = lambda box: 0   # longest contiguous run of a box
    dtype: Callable[[str], str] = lambda tensor: ""   # element type of a tensor


@dataclass(frozen=True)
class InstrDef:
    mnemonic: str
    unit: str
    operands: tuple[str, ...]        # kinds in order: "buf", "box", "tensor"; a "?" suffix marks
                                     # an optional last operand, "*" one or more
    attrs: tuple[str, ...]           # attribute keys it requires
    doc: str
    formula: str                     # the cost formula as text, for the ISA reference
    cost: Callable[[Instr, CostContext], object]
    optional_attrs: tuple[str, ...] = ()
    writes: int = 0                  # its first `writes` buffer operands are written, the rest
                                     # read (the static checks of isa/verify need to know)
    kind: str = "compute"            # "compute" keeps its unit busy until done; a transfer
                                     # ("load", "store", or "send" to another device) frees it
                                     # once its bytes moved; a "fence" holds it until the
                                     # unit's earlier instructions are done
    semantics: str = ""              # what executing it does (runtime/functional): "load" a box
                                     # into a buffer, "store" a buffer into a box, "gather" or
                                     # "scatter" rows by an index buffer, "mma", "vector" (the
                                     # numpy semantics of `computes_as`), "quant", "order"
                                     # (nothing but ordering); "" none (sends: one device only)
    computes_as: str = ""            # vec.OP and fix.OP: the isa/vector_ops.py op it computes
    needs: str = "unit"              # what a target must offer for it: a key of NEEDS

    def offered_on(self, target: Target) -> bool:
        return NEEDS[self.needs](self, target)

    def buffer_and_box(self, ins: Instr) -> tuple[Buf, Box] | None:
        """A box load's or store's on-chip buffer and off-chip box (None for other kinds)."""
        if self.semantics == "load":
            return ins.args[0], ins.args[1]
        if self.semantics == "store":
            return ins.args[1], ins.args[0]
        return None


# What a target must have for an instruction to exist on it: the unit that executes it (a
# target has "fix" with a fixed pipe, "vld"/"vst" with split cube/vector cores), and for a
# fixed-pipe op, a pipe that lists the op.
NEEDS: dict[str, Callable[[InstrDef, Target], bool]] = {
    "unit": lambda d, t: d.unit in t.units,
    "pipe_op": lambda d, t: d.unit in t.units and d.mnemonic[4:] in t.fixed_pipe.ops,
}


def _box_transfer(direction: str, box_index: int):
    def cost(ins: Instr, ctx: CostContext):
        box = ins.args[box_index]
        # pair=2: this core moves its half of the box, the other core of its pair the rest.
        return Transfer(ctx.box_bytes(box) / ins.attr("pair", 1), box.tensor, direction,
                        ins.attr("mcast", 1),
                        run=ctx.run_bytes(box), dtype=ctx.dtype(box.tensor))
    return cost


def _gather(ins: Instr, ctx: CostContext):
    src = ins.args[1]
    return Transfer(ins.attr("rows") * ctx.row_bytes(src.tensor), src.tensor, "load",
                    run=ctx.row_bytes(src.tensor), dtype=ctx.dtype(src.tensor))


def _scatter(ins: Instr, ctx: CostContext):
    dst = ins.args[0]
    return Transfer(ins.attr("rows") * ctx.row_bytes(dst.tensor), dst.tensor, "store",
                    run=ctx.row_bytes(dst.tensor), dtype=ctx.dtype(dst.tensor))


LINKS = ("nvlink", "network", "local")


def _send(ins: Instr, ctx: CostContext):
    """Every device of an exchange sends its source box and receives a box shaped like its
    destination: the busier direction sets the time."""
    dst, src = ins.args[0], ins.args[1]
    return Transfer(max(ctx.box_bytes(src), ctx.box_bytes(dst)), src.tensor, "send",
                    link=ins.attr("link"), run=ctx.run_bytes(src), dtype=ctx.dtype(src.tensor))


def _mma(ins: Instr, ctx: CostContext):
    m, n, k = ins.attr("shape")
    unit = ctx.target.matrix.formats[ins.attr("fmt")]
    return Compute(unit.mma_cycles(m, n, k, swap=bool(ins.attr("swap"))))


def vector_cycles(name: str, n: int, attrs: dict, target) -> float:
    """Cycles of `vec.NAME` over n elements: its per-element work on the vector lanes."""
    alu, special = VECTOR_OPS[name].per_element(attrs)
    vec = target.vector
    return max(n * alu / vec.lanes, n * special / vec.special_lanes)


def _vector(name: str):
    def cost(ins: Instr, ctx: CostContext):
        return Compute(vector_cycles(name, ins.attr("n"), _attr_dict(ins), ctx.target))
    return cost


def _fixed(ins: Instr, ctx: CostContext):
    return Compute(ins.attr("n") / ctx.target.fixed_pipe.elements_per_cycle)


def _attr_dict(ins: Instr) -> dict:
    return {a.key: a.value for a in ins.args if isinstance(a, Attr)}


# ---- attribute values: what each key must hold for the cost formulas and the semantics

EXACT = 2 ** 53         # integers above this are not exact in the float arithmetic of costs


@dataclass(frozen=True)
class AttrKind:
    text: str                                # what the value must be, for messages
    accepts: Callable[[object], bool]


def _integer(v, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= EXACT


def _number(v) -> bool:                      # a constant operand: any finite float value
    if isinstance(v, int) and not isinstance(v, bool):
        return abs(v) < 2.0 ** 1023
    return isinstance(v, float) and math.isfinite(v)


def _index(v) -> bool:                       # a constant or an index expression
    return isinstance(v, (Const, Var, Bin)) or (_integer(v, -EXACT))


def _sizes(n: int):
    return lambda v: isinstance(v, tuple) and len(v) == n and all(_integer(x, 1) for x in v)


_COUNT = AttrKind("an integer >= 0", _integer)
_POSITIVE = AttrKind("an integer >= 1", lambda v: _integer(v, 1))
_INDEX = AttrKind("an integer or an index expression", _index)
_NUMBER = AttrKind("a finite number", _number)
_FLAG = AttrKind("true, false, 0, 1 or an index expression",
                 lambda v: isinstance(v, bool) or v in (0, 1) or isinstance(v, (Var, Bin)))
_BLOCK = AttrKind("ROWSxCOLS, two integers >= 1", _sizes(2))

# Every attribute key an instruction takes (the tests check the table covers them all).
ATTRIBUTES: dict[str, AttrKind] = {
    "n": _COUNT, "rows": _COUNT, "capacity": _COUNT, "keys": _COUNT,
    "mcast": _POSITIVE, "pair": _POSITIVE, "k": _POSITIVE, "groups": _POSITIVE, "topk_groups": _POSITIVE,
    "group_best": _POSITIVE,
    "experts": _POSITIVE, "block_cols": _POSITIVE, "block_rows": _POSITIVE, "width": _POSITIVE,
    "inner": _POSITIVE,
    "seq": _POSITIVE,
    "expert": _INDEX, "row0": _INDEX, "offset": _INDEX, "col": _INDEX, "col0": _INDEX,
    "slot0": _INDEX, "base": _INDEX,
    "eps": _NUMBER, "theta": _NUMBER, "scale": _NUMBER, "imm0": _NUMBER, "imm1": _NUMBER,
    "first": _FLAG, "trans_b": _FLAG, "norm": _FLAG,
    "swap": AttrKind("0 or 1", lambda v: v in (0, 1) and not isinstance(v, bool)),
    "shape": AttrKind("MxNxK, three integers >= 1", _sizes(3)),
    "block": _BLOCK, "block_a": _BLOCK, "block_b": _BLOCK,
    "fmt": AttrKind("an element dtype name", lambda v: isinstance(v, str)),
    "link": AttrKind("a link name", lambda v: isinstance(v, str)),
}


def attr_problem(key: str, value) -> str | None:
    """What is wrong with an attribute's value (None when the key's kind accepts it)."""
    kind = ATTRIBUTES.get(key)
    return None if kind is None or kind.accepts(value) else f"expected {kind.text}"


_TABLE = [
    InstrDef("ld.tile", "ld", ("buf", "box"), (), "load a box of an off-chip tensor into a buffer; "
             "with mcast=C the cores of a C-core cluster receive the same box from one L2 read; "
             "with pair=2 the box is the B tile of a two-core matrix instruction, of which "
             "this core loads half and its pair the other half (the instruction reads both)",
             "bytes(box)/pair at the transfer's share of port, L2 and memory bandwidth (L2 "
             "and memory carry bytes/pair/mcast), + latency", _box_transfer("load", 1),
             optional_attrs=("mcast", "pair"), writes=1, kind="load", semantics="load"),
    InstrDef("ld.gather", "ld", ("buf", "tensor", "buf"), ("rows",),
             "load `rows` rows of a tensor, the row numbers taken from an index buffer (-1: zeros) "
             "plus `base` (the first row of the slab they count in, e.g. a sequence's cache)",
             "rows * row_bytes(tensor) as a transfer", _gather, optional_attrs=("base",),
             writes=1, kind="load", semantics="gather"),
    InstrDef("st.tile", "st", ("box", "buf"), (), "store a buffer into a box of an off-chip tensor",
             "bytes(box) as a transfer out", _box_transfer("store", 0), kind="store",
             semantics="store"),
    InstrDef("st.scatter", "st", ("tensor", "buf", "buf"), ("rows",),
             "store `rows` rows of a buffer to the rows of a tensor named by an index buffer "
             "(-1: skipped)", "rows * row_bytes(tensor) as a transfer out", _scatter,
             kind="store", semantics="scatter"),
    InstrDef("net.send", "net", ("box", "box"), ("link",),
             "send a box of a local tensor into a box of a tensor on other devices (SPMD: every "
             "device sends alike, so each also receives a box shaped like dst); link= "
             "nvlink (inside a node), network (to other nodes) or local (this device)",
             "max(bytes(src), bytes(dst)) at the transfer's share of the link's bandwidth "
             "each way (local: of L2 and memory), + the link's latency", _send, kind="send"),
    InstrDef("mm.mma", "mm", ("buf", "buf", "buf", "buf?", "buf?"), ("shape", "fmt", "first"),
             "acc = (first ? 0 : acc) + a @ b (a @ b^T with trans_b=1) for an MxNxK tile in input "
             "format fmt; operands are read from their leading M x K and K x N corners. With "
             "scale operands sa, sb (block_a, block_b) the unit applies the block scales itself",
             "2 * pad(M) * pad(N) * pad(K) / flops_per_cycle(fmt), dims padded to the "
             "matrix instruction granularity (swap=1: operands exchanged, C^T = B^T A^T, so M "
             "pads to the instruction's N step and N to its M)", _mma,
             optional_attrs=("trans_b", "block_a", "block_b", "swap"), writes=1, semantics="mma"),
]
_TABLE += [
    InstrDef(f"vec.{name}", "vec", vop.operands, ("n",),
             vop.doc, "max(n * alu / lanes, n * special / special_lanes) with "
             f"alu={vop.alu if not callable(vop.alu) else 'f(attrs)'}, special={vop.special}",
             _vector(name), optional_attrs=vop.attrs, writes=vop.outputs,
             semantics="quant" if name == "quant" else "vector", computes_as=name)
    for name, vop in VECTOR_OPS.items()
]
_TABLE += [
    InstrDef(f"sync.{unit}", unit, (), (), f"a fence on the {unit} unit: completes when every "
             "earlier instruction of the unit has completed (carries wait/signal tokens)",
             "0 cycles; waits for the unit's outstanding instructions", lambda ins, ctx: Fence(),
             kind="fence", semantics="order")
    for unit in ("ld", "st", "mm", "vec", "fix", "net")
]

INSTRUCTIONS: dict[str, InstrDef] = {d.mnemonic: d for d in _TABLE}


# What a fixed-pipe op computes, as a vector op of the same meaning (bias is an add of a row;
# dequant multiplies by a scale per output column, or one for all: Ascend's FixPipe
# dequantises with a scalar or per-channel scale).
_PIPE_COMPUTES_AS = {"bias": "add", "layout": "cvt", "dequant": "colscale"}


def fixed_pipe_instruction(op: str) -> InstrDef:
    """`fix.OP`: an epilogue op applied by the fixed pipe on the way out of the accumulator.
    Pipe ops are named by targets, so their records are made per name; an op no vector op
    means has no semantics (a functional run refuses it)."""
    computes_as = _PIPE_COMPUTES_AS.get(op, op)
    semantics = "quant" if computes_as == "quant" else "vector" if computes_as in VECTOR_OPS \
        else ""
    return InstrDef(f"fix.{op}", "fix", ("buf", "buf*"), ("n",),
                    f"{op} applied by the fixed pipe while draining the accumulator "
                    f"(computes as vec.{computes_as})",
                    "n / fixed_pipe.elements_per_cycle", _fixed,
                    optional_attrs=tuple(dict.fromkeys(("imm0", "imm1") + (
                        VECTOR_OPS[computes_as].attrs if semantics == "vector" else ()))),
                    writes=1, semantics=semantics,
                    computes_as=computes_as if semantics else "", needs="pipe_op")


# Instructions of units only some targets have: the fixed pipe's store, and the vector cores'
# own loads and stores where matrix results reach them through memory.
_SOME_TARGETS = [
    InstrDef("fix.st", "fix", ("box", "buf"), (), "the fixed pipe writes a drained tile to memory",
             "bytes(box) as a transfer out on the pipe's write path", _box_transfer("store", 0),
             kind="store", semantics="store"),
    InstrDef("vld.tile", "vld", ("buf", "box"), (),
             "a vector core loads a box into its buffer (split cube/vector designs)",
             "as ld.tile, on the vector core's load engine", _box_transfer("load", 1),
             writes=1, kind="load", semantics="load"),
    InstrDef("vld.gather", "vld", ("buf", "tensor", "buf"), ("rows",),
             "a vector core gathers rows by index into its buffer, as ld.gather (split "
             "cube/vector designs: e.g. selected cache rows it dequantises for the cube)",
             "as ld.gather, on the vector core's load engine", _gather,
             optional_attrs=("base",), writes=1, kind="load", semantics="gather"),
    InstrDef("vst.tile", "vst", ("box", "buf"), (),
             "a vector core stores a buffer into a box (split cube/vector designs)",
             "as st.tile, on the vector core's store engine", _box_transfer("store", 0),
             kind="store", semantics="store"),
]
_ON_SOME_TARGETS = {d.mnemonic: d for d in _SOME_TARGETS}


def lookup_any(mnemonic: str) -> InstrDef | None:
    """The record of a mnemonic, whichever targets offer it (for reading a listing without
    one)."""
    found = INSTRUCTIONS.get(mnemonic) or _ON_SOME_TARGETS.get(mnemonic)
    if found is None and mnemonic.startswith("fix."):
        found = fixed_pipe_instruction(mnemonic[4:])
    return found


def lookup(mnemonic: str, target: Target | None = None) -> InstrDef | None:
    """The record of a mnemonic on a target: every record of the common table (whether the
    target has its unit is for the caller to say), the others when the target offers them."""
    if mnemonic in INSTRUCTIONS:
        return INSTRUCTIONS[mnemonic]
    found = lookup_any(mnemonic) if target is not None else None
    return found if found is not None and found.offered_on(target) else None


OPERAND_TYPES = {"buf": Buf, "box": Box, "tensor": TensorRef}


def available(target: Target) -> list[InstrDef]:
    """Every instruction the target offers, in table order: those of the units it has, then
    the fixed pipe's ops, then the instructions only some targets have."""
    pipe_ops = [fixed_pipe_instruction(op) for op in target.fixed_pipe.ops] \
        if target.fixed_pipe else []
    candidates = [*INSTRUCTIONS.values(), *pipe_ops, *_SOME_TARGETS]
    return [d for d in candidates if d.offered_on(target)]
