"""The key block of an attention kernel: K (and V) tiles loaded, and block-scaled ones
dequantised with their scales, or ones the matrix format does not read widened, before the
matrix unit reads them.

A block-scaled KV cache (e.g. FP8 with one FP32 scale per 1x32 or 1x128 of a token's row) means
nothing without its scales, and the score product Q K^T mixes each key row's blocks, so no
single factor can be applied to the accumulator afterwards (nor can the queries, unscaled,
share a hardware block-scaled product). As production FP8-cache kernels do (FlashMLA's FP8
decode), each tile is loaded with its scale tile and dequantised (`vec.dequant`: element x
its block's scale) into the matrix format before the MMAs:

    same core (GPU)   ld raw + scales               wait(kv_free)       signal(kv_raw)
                      vec dequant -> c tile         wait(kv_raw)        signal(kv_full)
    split cores       vld raw + scales              wait(kvv_free)      signal(kvv_loaded)
    (Ascend)          vec dequant                   wait(kvv_loaded)    signal(kvv_done)
                      vst -> workspace (L2)         wait(kvv_done, kv_ws_free)
                                                                    signal(kv_handed, kvv_free)
                      ld workspace -> cube          wait(kv_handed, kv_free)
                                                                    signal(kv_full, kv_ws_free)

An unscaled tile in a dtype the matrix format does not read as it is (an FP8 cache against
BF16 queries: the product runs in BF16) takes the same path with `vec.cvt` for `vec.dequant`
and no scales, as FP8-cache kernels on BF16 tensor cores widen each tile after loading it.
Other tiles are loaded straight into the matrix unit's buffers (`wait(kv_free) ...
signal(kv_full)` when nothing is converted). The scale loads and the dequantisation are
ordinary instructions, so their bytes and vector cycles are in the listing and the timing.

Keys gathered by index (sparse attention over the cache rows a selection chose) are loaded
with `ld.gather`: the block's indices first (`ld.tile sidx`, signalling `kv_idx`), then the
selected rows of the cache (and of its scales) from the sequence's slab (`base`). On split
cores the vector core gathers the scaled ones itself (`vld.tile sidx` signalling `kvv_idx`,
then `vld.gather`), as Ascend's sparse-attention kernels gather the selected FP8 rows on the
vector core before the cube multiplies them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.lower.templates.workspace import Workspace
from isa.expr import Const, floordiv, mul
from isa.formats import DTYPES
from isa.program import Box, Buf, TensorDecl, TensorRef

STAGES = 2
SAME_CORE_TOKENS = (("kv_raw", 0),)
SPLIT_TOKENS = (("kvv_free", STAGES), ("kvv_loaded", 0), ("kvv_done", 0),
                ("kv_ws_free", STAGES), ("kv_handed", 0))


@dataclass(frozen=True)
class KeyTile:
    """One tensor a key block reads: K term i (stem "k{i}") or V (stem "v")."""
    stem: str
    decl: TensorDecl                 # viewed [Gk, T, D]
    batch: str                       # the batch letters it holds
    scales: TensorDecl | None        # its block scales, viewed [Gk, T / rows, D / cols]
    gathered: object = None          # flash.Gathered: rows chosen by index from a cache
    widened: bool = False            # unscaled, in a dtype the matrix format does not read

    @property
    def converted(self) -> bool:
        """Dequantised or widened on the vector unit before the matrix unit reads it."""
        return self.scales is not None or self.widened

    @property
    def cols(self) -> int:
        return self.decl.shape[-1]

    def scale_tile(self, bt: int) -> tuple[int, int]:
        block = self.decl.scaling.block
        return math.ceil(bt / block[0]), math.ceil(self.cols / block[1])


def key_tiles(att) -> list[KeyTile]:
    tiles = [KeyTile(f"k{i}", d, att.k_batch[i], att.k_scales[i], att.k_gathers[i],
                     att.k_scales[i] is None and att.widens(d)) for i, d in enumerate(att.ks)]
    if att.v is not None:
        tiles.append(KeyTile("v", att.v, att.v_batch, att.v_scales, None,
                             att.v_scales is None and att.widens(att.v)))
    return tiles


def scaled_bytes(att, bt: int) -> tuple[float, float, float]:
    """On-chip bytes of the converted tiles, all stages: (raw elements, tiles in the matrix
    format, scales)."""
    byte = lambda d: DTYPES[d].bits / 8
    tiles = [t for t in key_tiles(att) if t.converted]
    raw = sum(bt * t.cols * byte(t.decl.dtype) for t in tiles)
    dequantised = sum(bt * t.cols * byte(att.fmt) for t in tiles)
    scales = sum(math.prod(t.scale_tile(bt)) * byte(t.scales.dtype) for t in tiles
                 if t.scales is not None)
    return STAGES * raw, STAGES * dequantised, STAGES * scales


def block_costs(att, bt: int, vector_lanes: int) -> tuple[float, float]:
    """(bytes loaded, vector-unit cycles of conversion) of one key block."""
    byte = lambda d: DTYPES[d].bits / 8
    loaded, cycles = 0.0, 0.0
    for t in key_tiles(att):
        loaded += bt * t.cols * byte(t.decl.dtype)
        if t.scales is not None:
            loaded += math.prod(t.scale_tile(bt)) * byte(t.scales.dtype)
        if t.converted:            # vec.dequant (a multiply) or vec.cvt: one operation each
            cycles += bt * t.cols / vector_lanes
    return loaded, cycles


class KeyBlocks:
    """Parameters, buffers and per-block instructions of an attention's key tiles."""

    def __init__(self, kb, att, tmap, name: str):
        self.kb, self.att, self.tmap, self.name = kb, att, tmap, name
        self.tiles = key_tiles(att)
        self.scaled = [t for t in self.tiles if t.scales is not None]
        self.converted = [t for t in self.tiles if t.converted]
        self.params = {}
        for t in self.tiles:
            if t.gathered:
                self.params[t.stem] = kb.param(t.stem, t.gathered.table)
                self.params[f"{t.stem}_idx"] = kb.param(f"{t.stem}_idx", t.gathered.idx)
            else:
                self.params[t.stem] = kb.param(t.stem, t.decl)
        self.split = False
        self.spaces: dict[str, Workspace] = {}

    def declare_scale_params(self) -> None:
        for t in self.scaled:
            self.params[f"{t.stem}_scale"] = self.kb.param(f"{t.stem}_scale", t.scales)

    def declare_buffers(self, bt: int, split: bool = False) -> None:
        """sTILE [bt, D] per tile; for a scaled one also its scales ssTILE; for a converted one
        the cTILE the matrix unit reads (and, on split cores, the vector core's vTILE and an
        L2 workspace)."""
        kb, fmt = self.kb, self.att.fmt
        self.bt, self.split = bt, split
        for t in self.tiles:
            if t.scales is not None:
                _check_rows(t, bt)
            if t.gathered:
                kb.buffer(f"sidx{t.stem}", "i32", (1, bt), "vector", STAGES)
            raw_role = "vector" if split and t.converted else "matrix_b"
            kb.buffer(f"s{t.stem}", t.decl.dtype, (bt, t.cols), raw_role, STAGES)
        for t in self.scaled:
            kb.buffer(f"ss{t.stem}", t.scales.dtype, t.scale_tile(bt), "vector", STAGES)
        for t in self.converted:
            if split:
                kb.buffer(f"v{t.stem}", fmt, (bt, t.cols), "vector", STAGES)
                self.spaces[t.stem] = Workspace(kb, self.tmap, f"{self.name}.{t.stem}_deq", fmt,
                                                bt, t.cols, STAGES, f"{t.stem}_deq")
            kb.buffer(f"c{t.stem}", fmt, (bt, t.cols), "matrix_b", STAGES)

    def declare_tokens(self) -> None:
        gathered = [t for t in self.tiles if t.gathered]
        if any(not t.converted or not self.split for t in gathered):
            self.kb.token("kv_idx", 0)              # the cube's gathers
        if any(t.converted and self.split for t in gathered):
            self.kb.token("kvv_idx", 0)             # the vector core's
        if self.converted:
            for tok, initial in (SPLIT_TOKENS if self.split else SAME_CORE_TOKENS):
                self.kb.token(tok, initial)

    def operand(self, stem: str, slot) -> Buf:
        converted = any(t.stem == stem for t in self.converted)
        return Buf(f"c{stem}" if converted else f"s{stem}", slot)

    def value(self, slot) -> Buf:
        att = self.att
        return self.operand(f"k{att.v_in_k}" if att.v is None else "v", slot)

    def load(self, g, slot, key0) -> None:
        """One key block's tiles, ready for the MMAs when `kv_full` is signalled."""
        if self.split and self.converted:
            self._load_split(g, slot, key0)
            return
        gathered = [t for t in self.tiles if t.gathered]
        chain(self.kb, "ld.tile", [(Buf(f"sidx{t.stem}", slot), self._idx_box(t, g, key0))
                                    for t in gathered], ("kv_free",), ("kv_idx",))
        loads = [(Buf(f"s{t.stem}", slot), self._box(t, g, key0)) for t in self.tiles]
        loads += [(Buf(f"ss{t.stem}", slot), self._scale_box(t, g, key0)) for t in self.scaled]
        self._moves(loads, slot, g, ("kv_idx",) if gathered else ("kv_free",),
                    ("kv_raw",) if self.converted else ("kv_full",))
        self._dequantise(slot, "kv_raw", "c", "kv_full")

    def _load_split(self, g, slot, key0) -> None:
        """The vector core loads (or gathers) and converts the converted tiles and hands them
        to the cube through the workspace; the cube loads the others itself."""
        kb = self.kb
        self._gathers("vld", [t for t in self.converted if t.gathered], slot, g, key0,
                      ("kvv_free",), "kvv_idx")
        vloads = [(Buf(f"s{t.stem}", slot), self._box(t, g, key0)) for t in self.converted]
        vloads += [(Buf(f"ss{t.stem}", slot), self._scale_box(t, g, key0)) for t in self.scaled]
        opened = ("kvv_idx",) if any(t.gathered for t in self.converted) else ("kvv_free",)
        self._moves(vloads, slot, g, opened, ("kvv_loaded",), "vld")
        self._dequantise(slot, "kvv_loaded", "v", "kvv_done")
        handed = [(self.spaces[t.stem].box(slot), Buf(f"v{t.stem}", slot))
                  for t in self.converted]
        chain(kb, "vst.tile", handed, ("kvv_done", "kv_ws_free"), ("kv_handed", "kvv_free"))
        plain = [t for t in self.tiles if not t.converted]
        self._gathers("ld", [t for t in plain if t.gathered], slot, g, key0,
                      ("kv_handed", "kv_free"), "kv_idx")
        loads = [(Buf(f"c{t.stem}", slot), self.spaces[t.stem].box(slot))
                 for t in self.converted]
        loads += [(Buf(f"s{t.stem}", slot), self._box(t, g, key0)) for t in plain]
        opened = ("kv_idx",) if any(t.gathered for t in plain) else ("kv_handed", "kv_free")
        self._moves(loads, slot, g, opened, ("kv_full", "kv_ws_free"))

    def _gathers(self, unit: str, tiles: list, slot, g, key0, opening, closing: str) -> None:
        """Load the key block's indices of the tiles gathered by index (on `unit`)."""
        chain(self.kb, f"{unit}.tile", [(Buf(f"sidx{t.stem}", slot), self._idx_box(t, g, key0))
                                         for t in tiles], opening, (closing,))

    def _dequantise(self, slot, opened: str, prefix: str, closed: str) -> None:
        """Each converted tile into the matrix format: with its scales, or only widened."""
        for i, t in enumerate(self.converted):
            sync = {"wait": (opened,) if i == 0 else (),
                    "signal": (closed,) if i == len(self.converted) - 1 else ()}
            dst, src = Buf(f"{prefix}{t.stem}", slot), Buf(f"s{t.stem}", slot)
            if t.scales is None:
                self.kb.emit("vec.cvt", dst, src, n=self.bt * t.cols, **sync)
                continue
            self.kb.emit("vec.dequant", dst, src, Buf(f"ss{t.stem}", slot),
                         n=self.bt * t.cols, block=t.decl.scaling.block, **sync)

    def _moves(self, loads: list, slot, g, opening: tuple, closing: tuple,
               unit: str = "ld") -> None:
        """Box loads, or gathers of the rows a block's indices name, on `unit`."""
        for i, (buf, box) in enumerate(loads):
            wait = opening if i == 0 else ()
            signal = closing if i == len(loads) - 1 else ()
            t = self._gathered_tile(box.tensor)
            if t is None:
                self.kb.emit(f"{unit}.tile", buf, box, wait=wait, signal=signal)
                continue
            base = mul(self.att.sub_g(g, t.gathered.letter), Const(t.gathered.slab))
            self.kb.emit(f"{unit}.gather", buf, TensorRef(box.tensor), Buf(f"sidx{t.stem}", slot),
                         wait=wait, signal=signal, rows=self.bt, base=base)

    def _gathered_tile(self, param: str) -> KeyTile | None:
        return next((t for t in self.tiles if t.gathered
                     and param in (self.params[t.stem], self.params.get(f"{t.stem}_scale"))),
                    None)

    def _idx_box(self, t: KeyTile, g, key0) -> Box:
        return Box(self.params[f"{t.stem}_idx"], (self.att.sub_g(g, t.batch), key0),
                   (1, self.bt))

    def _box(self, t: KeyTile, g, key0) -> Box:
        return Box(self.params[t.stem], (self.att.sub_g(g, t.batch), key0, Const(0)),
                   (1, self.bt, t.cols))

    def _scale_box(self, t: KeyTile, g, key0) -> Box:
        rows = t.decl.scaling.block[0]
        return Box(self.params[f"{t.stem}_scale"],
                   (self.att.sub_g(g, t.batch), floordiv(key0, rows), Const(0)),
                   (1, *t.scale_tile(self.bt)))


def _check_rows(t: KeyTile, bt: int) -> None:
    """A key block must hold whole scale blocks, or lie inside one (its rows are aligned)."""
    rows = t.decl.scaling.block[0]
    if t.gathered and rows != 1:
        raise ValueError(f"{t.decl.name}: rows gathered by index cannot share scale blocks of "
                         f"{rows} rows")
    if bt % rows and rows % bt:
        raise ValueError(f"{t.decl.name}: a key block of {bt} rows cuts its scale blocks of "
                         f"{rows} rows")


def chain(kb, op: str, moves: list, opening: tuple, closing: tuple) -> None:
    """`op` over (destination, source) pairs in order: the first waits for `opening`, the
    last signals `closing`."""
    for i, (a, b) in enumerate(moves):
        kb.emit(op, a, b, wait=opening if i == 0 else (),
                signal=closing if i == len(moves) - 1 else ())
