"""One K step's operand tiles on their way to the matrix unit: loads, then conversions.

Tiles in the MMA format are loaded by the cube's load engine straight into its operand
buffers. A tile in another format (plan.a_conv / b_conv) is converted on the vector unit:

    same core (GPU)     ld raw (+ scales)      wait(free)     signal(loaded)
                        vec cvt/dequant        wait(loaded)   signal(ready)
    split cores         vld raw (+ scales)     wait(cvt_free)    signal(cvt_loaded)
    (Ascend)            vec cvt/dequant        wait(cvt_loaded)  signal(cvt_done)
                        vst -> scratch         wait(cvt_done)    signal(cvt_handed, cvt_free)
                        ld scratch -> cube     wait(cvt_handed)  signal(ready)

On split cores the vector core cannot write the cube's buffers, so converted tiles cross
through a per-core workspace that stays in L2 (workspace.py); the vector side runs up to
`stages` steps ahead.
The MMA then waits for `loaded` (tiles loaded as they are) and `ready` (converted ones).
"""
from __future__ import annotations

from dataclasses import dataclass

from isa.program import Box, Buf


@dataclass(frozen=True)
class OperandTile:
    name: str                     # "a" or "b": buffers s{name}, ss{name}, c{name}, v{name}
    box: Box                      # the raw tile
    mcast: int
    scale_box: Box | None         # its block scales, when loaded
    conv: str | None              # None, "cvt" or "dequant"
    block: tuple[int, int] | None  # scale block, for dequant
    elems: int
    scratch: object = None        # split cores: the Workspace converted tiles cross through
    pair: int = 1                 # 2: the cores of a two-core instruction each load half


def emit_operand_tiles(kb, tiles: list[OperandTile], slot, split: bool) -> tuple[Buf, Buf, tuple]:
    """Emit a K step's loads and conversions; returns the MMA's operands and its waits."""
    cube = [t for t in tiles if not (split and t.conv)]
    vector = [t for t in tiles if split and t.conv]
    loads = []
    for t in cube:
        sharing = {"mcast": t.mcast, "pair": t.pair}
        loads.append((Buf(f"s{t.name}", slot), t.box, sharing))
        if t.scale_box is not None:
            loads.append((Buf(f"ss{t.name}", slot), t.scale_box, sharing))
    _emit_loads(kb, "ld.tile", loads, "free", "loaded")
    vloads = []
    for t in vector:
        vloads.append((Buf(f"s{t.name}", slot), t.box, {}))
        if t.scale_box is not None:
            vloads.append((Buf(f"ss{t.name}", slot), t.scale_box, {}))
    _emit_loads(kb, "vld.tile", vloads, "cvt_free", "cvt_loaded")
    converted = [t for t in tiles if t.conv]
    opened = "cvt_loaded" if split else "loaded"
    closed = "cvt_done" if split else "ready"
    for i, t in enumerate(converted):
        dst = Buf(f"v{t.name}" if split else f"c{t.name}", slot)
        wait = (opened,) if i == 0 else ()
        signal = (closed,) if i == len(converted) - 1 else ()
        if t.conv == "dequant":
            kb.emit("vec.dequant", dst, Buf(f"s{t.name}", slot), Buf(f"ss{t.name}", slot),
                    wait=wait, signal=signal, n=t.elems, block=t.block)
        else:
            kb.emit("vec.cvt", dst, Buf(f"s{t.name}", slot), wait=wait, signal=signal,
                    n=t.elems)
    if split:
        for i, t in enumerate(vector):
            last = i == len(vector) - 1
            kb.emit("vst.tile", t.scratch.box(slot), Buf(f"v{t.name}", slot),
                    wait=("cvt_done",) if i == 0 else (),
                    signal=("cvt_handed", "cvt_free") if last else ())
        for i, t in enumerate(vector):
            kb.emit("ld.tile", Buf(f"c{t.name}", slot), t.scratch.box(slot),
                    wait=(("cvt_handed",) + (() if cube else ("free",))) if i == 0 else (),
                    signal=("ready",) if i == len(vector) - 1 else ())
    operand = lambda t: Buf(f"c{t.name}" if t.conv else f"s{t.name}", slot)
    if not converted:
        waits = ("loaded",)
    elif split:                   # the cube's own loads, and the tiles that crossed over
        waits = (("loaded",) if cube else ()) + ("ready",)
    else:                         # the conversions waited for the loads
        waits = ("ready",)
    return operand(tiles[0]), operand(tiles[1]), waits


def operand_tokens(kb, tiles_convert: bool, split: bool, stages: int, cube_loads: bool) -> None:
    kb.token("free", stages)
    if cube_loads:
        kb.token("loaded")
    if tiles_convert:
        kb.token("ready")
    if tiles_convert and split:
        for tok, initial in (("cvt_free", stages), ("cvt_loaded", 0), ("cvt_done", 0),
                             ("cvt_handed", 0)):
            kb.token(tok, initial)


def _emit_loads(kb, op: str, loads: list, opening: str, closing: str) -> None:
    for i, (buf, box, sharing) in enumerate(loads):
        extra = {key: n for key, n in sharing.items() if n > 1}
        kb.emit(op, buf, box, wait=(opening,) if i == 0 else (),
                signal=(closing,) if i == len(loads) - 1 else (), **extra)
