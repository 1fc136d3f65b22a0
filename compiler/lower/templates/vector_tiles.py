"""The tiles of a vector kernel (templates/vector.py): how many rows (and columns) a tile holds
so its double-buffered tiles fit the vector buffer, where one iteration's tile starts, and which
buffer holds each value's tile on chip.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.ir.graph import Graph, Node
from compiler.kernels.rows import STAGES, is_whole_row, row_view_base, tile_cols
from isa.expr import Bin, Const, Expr, floordiv, mul
from isa.formats import DTYPES
from isa.program import Box, Buf, TensorDecl
from isa.target_schema import Target


@dataclass
class Io:
    """A [rows, cols] view the kernel loads or stores, its parameter, and its scales' parameter
    once declared (a block-scaled view)."""
    param: str
    decl: TensorDecl
    scales: str | None = None


@dataclass(frozen=True)
class Tiling:
    rows: int            # of a tile
    cols: int            # of a tile: the width, unless rows are split into column tiles
    width: int           # the widest row in the group
    col_tiles: int
    count: int           # tiles in all
    per_item: int        # tiles a work item walks

    def cols_of(self, cols: int) -> int:
        """A tile's columns of a value `cols` wide: split like the rows' widest values."""
        return self.cols if self.col_tiles > 1 and cols == self.width else cols

    def shape_of(self, decl: TensorDecl) -> tuple[int, int]:
        """A tile of `decl`: a broadcast (one-row) operand is one row whatever the tile."""
        return min(self.rows, decl.shape[0]), self.cols_of(decl.shape[-1])


def choose_tiling(nodes: list[Node], computed: list[Node], loaded: dict[int, Io],
                  dequantised: list[int], stored: list[tuple[Node, Io]], graph: Graph,
                  target: Target, R: int) -> Tiling:
    """The largest tile whose buffers fit: a row's bytes are its loaded tiles, each computed
    member's tile, an FP32 copy of each dequantised input and the scales of the block-scaled ones;
    broadcast inputs count once whatever the rows. Raises ValueError when one row does not fit."""
    elementwise_only = not any(is_whole_row(n) for n in nodes)
    inputs = [io.decl for io in loaded.values()]
    width = max([d.shape[-1] for d in inputs] + [tile_cols(n, graph) for n in nodes])
    row_bytes = sum(d.bits * d.shape[-1] / 8 for d in inputs if d.shape[0] > 1) \
        + sum(n.type.format.bits * tile_cols(n, graph) / 8 for n in computed)
    fixed = sum(d.bits * d.shape[-1] / 8 for d in inputs if d.shape[0] == 1)
    fp32_copies = [loaded[vid].decl for vid in dequantised]
    row_bytes += sum(4 * d.shape[-1] for d in fp32_copies if d.shape[0] > 1)
    fixed += sum(4 * d.shape[-1] for d in fp32_copies if d.shape[0] == 1)
    scaled = [io.decl for _, io in stored if io.decl.scaling is not None] \
        + [d for d in inputs if d.scaling is not None]
    # Scale tiles: one scale per block of each scaled input and each computed scaled value.
    scale_rows = [(d.scaling, d.shape[-1], d.shape[0] == 1) for d in inputs if d.scaling] \
        + [(n.type.format.scaling, tile_cols(n, graph), False) for n in computed
           if n.type.format.scaling]
    for scaling, cols, broadcast in scale_rows:
        per_row = DTYPES[scaling.dtype].bits / 8 * math.ceil(cols / scaling.block[1]) \
            / scaling.block[0]
        if broadcast:
            fixed += per_row
        else:
            row_bytes += per_row
    # Scale blocks span whole rows of a tile, so columns are split only when nothing is scaled.
    rows, cols = _tile_shape(row_bytes, fixed, target.buffer_for("vector")[1].bytes, R, width,
                             elementwise_only and not scaled, target.cores, target.vector.lanes)
    for d in scaled:
        rows = max(rows, d.scaling.block[0])
    # A tile holds at most the group's rows: a loaded tile holds no more (shape_of), and every
    # tile of one iteration must have the same rows (concat places its parts side by side).
    rows = min(rows, R)
    col_tiles = math.ceil(width / cols)
    count = math.ceil(R / rows) * col_tiles
    return Tiling(rows, cols, width, col_tiles, count, math.ceil(count / target.cores))


def _tile_shape(row_bytes: float, fixed_bytes: float, capacity: int, rows: int, cols: int,
                split_cols: bool, cores: int, lanes: int):
    """(rows, cols) of a tile whose pipelined buffers fit: up to 256 whole rows (a power of two,
    or all the rows when fewer), or, when one row is too wide and the group is elementwise, a
    power-of-two split of the columns. `fixed_bytes` are one-row (broadcast) tiles, whatever
    the row count.

    The cores are filled before tiles grow: while a finer split still runs in one wave (no
    more tiles than cores), tiles take fewer rows (down to one), then an elementwise group
    splits its columns (down to the vector unit's lanes, a cycle's work). A GPU does the same
    (one block per row of a norm, a few hundred elements per block of an elementwise op); a
    few large tiles would leave the kernel bound by a few cores' ports and load latency."""
    fits = lambda br, bc: STAGES * (br * row_bytes + fixed_bytes) * bc / cols <= capacity
    bc = cols
    while not fits(1, bc):
        if not split_cols or bc == 1:
            raise ValueError(f"one row of tiles needs {STAGES * (row_bytes + fixed_bytes):,.0f} "
                             f"bytes double-buffered; the vector buffer has {capacity:,}")
        bc = (bc + 1) // 2
    br = 256
    while br > 1 and not fits(br, bc):
        br //= 2
    br = min(br, rows)
    tiles = lambda br, bc: math.ceil(rows / br) * math.ceil(cols / bc)
    while br > 1 and tiles(br // 2, bc) <= cores:
        br //= 2
    while split_cols and (bc + 1) // 2 >= lanes and tiles(br, (bc + 1) // 2) <= cores:
        bc = (bc + 1) // 2
    return br, bc


def blocks(shape, block) -> tuple[int, int]:
    """Scale entries of a [rows, cols] tile: one per block, partial blocks included."""
    return math.ceil(shape[0] / block[0]), math.ceil(shape[1] / block[1])


@dataclass(frozen=True)
class TileOrigin:
    """Where one iteration's tile starts, and the boxes of the kernel's tensors there."""
    tiling: Tiling
    row0: Expr
    col0: Expr

    @classmethod
    def of(cls, tiling: Tiling, tile: Expr) -> TileOrigin:
        """Tile number `tile`, numbered along the columns first when rows are split."""
        if tiling.col_tiles > 1:
            return cls(tiling, mul(floordiv(tile, tiling.col_tiles), Const(tiling.rows)),
                       mul(Bin("%", tile, Const(tiling.col_tiles)), Const(tiling.cols)))
        return cls(tiling, mul(tile, Const(tiling.rows)), Const(0))

    def box(self, io: Io) -> Box:
        decl, t = io.decl, self.tiling
        r = self.row0 if decl.shape[0] > 1 else Const(0)
        c = self.col0 if t.col_tiles > 1 and decl.shape[-1] == t.width else Const(0)
        return Box(io.param, (r, c), t.shape_of(decl))

    def loaded_scale_box(self, io: Io) -> Box:
        """The scales of the rows a tile of a loaded view covers (no column split)."""
        block = io.decl.scaling.block
        rows = min(self.tiling.rows, io.decl.shape[0])
        first = floordiv(self.row0, block[0]) if io.decl.shape[0] > 1 else Const(0)
        return Box(io.scales, (first, Const(0)), blocks((rows, io.decl.shape[-1]), block))

    def stored_scale_box(self, io: Io) -> Box:
        """The scales of a stored tile's rows (every row of the group's: no broadcast)."""
        block = io.decl.scaling.block
        return Box(io.scales, (floordiv(self.row0, block[0]), Const(0)),
                   (math.ceil(self.tiling.rows / block[0]),
                    math.ceil(io.decl.shape[-1] / block[1])))


class OnChip:
    """The buffer holding each value's tile in one iteration: `elements` are what ops read (a
    dequantised input's FP32 copy), `as_loaded` the tiles as they came, `scales` the block
    scales of a scaled value (loaded, or made by a member that quantises)."""

    def __init__(self, graph: Graph, loaded: dict[int, Io], slot: Expr):
        self.as_loaded = _RowViews(graph, {vid: Buf(f"s_{io.param}", slot)
                                           for vid, io in loaded.items()})
        self.elements = _RowViews(graph, dict(self.as_loaded))
        self.scales = _RowViews(graph, {vid: Buf(f"s_{io.param}s", slot)
                                        for vid, io in loaded.items() if io.scales})

    def made(self, vid: int, elements: Buf, scales: Buf | None = None) -> None:
        self.elements[vid] = elements
        if scales is not None:
            self.scales[vid] = scales

    def forward(self, vid: int, source: int) -> None:
        """`vid`'s tile is `source`'s as it came, scales and all: a copy takes no instruction."""
        loaded = self.as_loaded.find(source)
        self.elements[vid] = loaded if loaded is not None else self.elements[source]
        scales = self.scales.find(source)
        if scales is not None:
            self.scales[vid] = scales

    def scales_of(self, node: Node) -> Buf:
        found = self.scales.find(node.id)
        if found is None:
            raise ValueError(f"'{node.name}' {node.type} is stored with block scales, but "
                             "nothing in its kernel makes them")
        return found


class _RowViews(dict):
    """Tile buffers by value id, where a reshape keeping rows whole reads its base's tile."""

    def __init__(self, graph: Graph, items: dict):
        super().__init__(items)
        self.graph = graph

    def __missing__(self, vid: int):
        base = row_view_base(self.graph, self.graph.node(vid))
        if base is None:
            raise KeyError(vid)
        return self[base]

    def find(self, vid: int):
        try:
            return self[vid]
        except KeyError:
            return None
