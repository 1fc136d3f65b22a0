"""What a kernel's matrix instructions read: each operand's format as loaded, and whether it
reached the matrix unit as it is (native) or was converted on the vector unit first.

Read off the instructions alone, so a listing read back from a file reports the same as the
compiled program: an `mm.mma` operand written by `vec.cvt` or `vec.dequant` from a buffer the
kernel loaded was loaded in that buffer's format and widened (or dequantised); on split
cube/vector cores the converted tile crosses through memory (`vst.tile` to a tensor the kernel
then loads with `ld.tile`), which is followed back the same way. An operand the kernel
computed (attention's probabilities) is reported in its own format, unconverted.
"""
from __future__ import annotations

from dataclasses import dataclass

from isa.program import Box, Buf, Instr, Kernel, walk

_CONVERSIONS = {"vec.cvt": "cvt", "vec.dequant": "dequant"}
_LOADS = ("ld.tile", "vld.tile", "ld.gather")


@dataclass(frozen=True)
class MmaOperands:
    fmt: str                     # the instruction's format
    a: str                       # A's format as loaded (or computed)
    b: str
    a_conv: str | None           # None (read as it is), "cvt" or "dequant"
    b_conv: str | None

    @property
    def native(self) -> bool:
        return self.a_conv is None and self.b_conv is None

    def as_dict(self) -> dict:
        return {"format": self.fmt, "a": self.a, "b": self.b, "a_conversion": self.a_conv,
                "b_conversion": self.b_conv, "native": self.native}

    def text(self) -> str:
        """e.g. 'fp8_e4m3 x fp4_e2m1 on fp8_e4m3, native'."""
        return f"{self.a} x {self.b} on {self.fmt}, {self.how()}"

    def how(self) -> str:
        """'native', or which operands were widened (dequantised) on the vector unit."""
        converted = [(d, c) for d, c in ((self.a, self.a_conv), (self.b, self.b_conv)) if c]
        if not converted:
            return "native"
        verb = {"cvt": "widened", "dequant": "dequantised"}
        return " and ".join(f"{d} {verb[c]}" for d, c in dict.fromkeys(converted)) + \
            " on the vector unit"

    @property
    def same_format(self) -> bool:
        """Both operands in the instruction's own format, read as they are."""
        return self.native and self.a == self.b == self.fmt


def mma_operands(kernel: Kernel) -> list[MmaOperands]:
    """One record per distinct (format, operands, conversions) among the kernel's `mm.mma`."""
    return list(dict.fromkeys(MmaOperands(fmt, a[0], b[0], a[1], b[1])
                              for fmt, a, b in _traced(kernel)))


def mma_sources(kernel: Kernel) -> list[tuple[str, str | None, str | None]]:
    """(format, A's param, B's param) per distinct `mm.mma`: the kernel parameters its operands
    were loaded from (None for one the kernel computed)."""
    return list(dict.fromkeys((fmt, a[2], b[2]) for fmt, a, b in _traced(kernel)))


def _traced(kernel: Kernel):
    """(format, A's origin, B's origin) of every `mm.mma`; an origin is (format as loaded,
    conversion, the param loaded from)."""
    dtypes = {b.name: b.dtype for b in kernel.buffers}
    body = list(walk(kernel.body))
    writers: dict[str, Instr] = {}
    stores: dict[str, Instr] = {}
    for ins in body:
        first = ins.args[0] if ins.args else None
        if isinstance(first, Buf):
            writers.setdefault(first.name, ins)
        elif isinstance(first, Box) and ins.op.endswith("st.tile"):
            stores.setdefault(first.tensor, ins)
    for ins in body:
        if ins.op == "mm.mma":
            a, b = (_origin(arg.name, dtypes, writers, stores) for arg in ins.operands[1:3])
            yield ins.attr("fmt"), a, b


def _origin(buf: str, dtypes, writers, stores,
            depth: int = 0) -> tuple[str, str | None, str | None]:
    """(format as loaded, conversion, param loaded from) of the data in `buf`."""
    ins = writers.get(buf)
    if ins is None or depth > 4:
        return dtypes[buf], None, None
    if ins.op in _CONVERSIONS:
        src = ins.args[1].name
        if _loaded(src, writers):
            return dtypes[src], _CONVERSIONS[ins.op], _param(writers[src])
        return dtypes[buf], None, None
    if ins.op == "ld.tile" and isinstance(ins.args[1], Box) and ins.args[1].tensor in stores:
        crossed = stores[ins.args[1].tensor].args[1].name     # split cores: through memory
        return _origin(crossed, dtypes, writers, stores, depth + 1)
    return dtypes[buf], None, _param(ins)


def _param(load: Instr) -> str | None:
    src = load.args[1] if len(load.args) > 1 else None
    return src.tensor if load.op in _LOADS and isinstance(src, Box) else None


def _loaded(buf: str, writers) -> bool:
    ins = writers.get(buf)
    return ins is not None and ins.op in _LOADS
