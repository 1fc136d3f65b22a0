"""Tile choice for batched GEMMs [G, M, K] x [G, K, N]: buffers, candidates, a cost estimate.

`gemm_buffers` is the one list of on-chip buffers a tile needs: the template declares exactly
these, and a candidate is kept only if they fit each target buffer space. The estimate is the
larger of the per-wave time (compute, tile loads at the core's share of port and L2 bandwidth,
vector promotion spread over the K steps of its interval, or one buffer slot's round trip
divided over the pipeline stages) times the waves, and the time to move the unique bytes
through off-chip memory. Cache and memory figures
are those of the machine's route from the cores to where tensors live (isa/machine.py), the
ones the interpreter shares bandwidth over. Every term is a target figure or a cycle formula
of the instructions; nothing is fitted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from isa.formats import DTYPES, Scaling
from isa.target_schema import Target
from isa.vector_ops import VECTOR_OPS


@dataclass(frozen=True)
class GemmProblem:
    groups: int
    m: int
    n: int
    k: int
    a_dtype: str
    b_dtype: str
    out_dtype: str
    fmt: str                          # matrix input format
    k_step: int                       # bk is a multiple of this (instruction k or scale block)
    promote: bool                     # partial sums promoted on the vector unit
    a_conv: str | None = None         # "cvt"/"dequant": A converted to fmt after loading
    b_conv: str | None = None
    a_scaling: Scaling | None = None  # scales loaded with A (promotion or dequantisation)
    b_scaling: Scaling | None = None
    store_acc: bool = True            # the product itself leaves the chip (converted to out_dtype)
    # Fused epilogue tiles: (buffer, dtype, columns or 0 for bn, one row only (broadcast), role).
    epilogue: tuple[tuple, ...] = ()
    whole_rows: bool = False          # an epilogue op needs whole rows: one tile spans N
    n_align: int = 1                  # bn a multiple of this (an epilogue's quantisation block)
    tensor_scales: tuple[str, ...] = ()   # operands ("a", "b") with a per-tensor scale (NVFP4)
    hw_scaled: bool = False           # the matrix unit applies the loaded block scales
    split: bool = False               # conversions cross from vector to cube cores via memory
    out_blocks: tuple[int, int] = (1, 1)  # rows x columns of the product per scale the
                                          # epilogue applies (operand_plan's epilogue_scales)
    promote_every: int = 0            # K per promotion when promoting: bk divides it
    scaled_promotion: bool = False    # the promotion applies block scales (vec.promote)


@dataclass(frozen=True)
class GemmTile:
    bm: int
    bn: int
    bk: int
    stages: int
    cluster_m: int = 1        # cores along M that receive each B tile from one multicast load
    cluster_n: int = 1        # cores along N that receive each A tile from one multicast load
    swap: int = 0             # 1: operands exchanged (C^T = B^T A^T), the rows ride the N side
    persistent: int = 0       # 1: one worker per core walks the tiles, two accumulators
    raster: int = 1           # rows of tiles per group: the grid walks a group's rows fastest

    def __str__(self) -> str:
        text = f"{self.bm}x{self.bn}x{self.bk} (bm x bn x bk), {self.stages} stages"
        if self.cluster_m * self.cluster_n > 1:
            text += f", cluster {self.cluster_m}x{self.cluster_n}"
        if self.raster > 1:
            text += f", tiles walked in groups of {self.raster} rows"
        return text

    @property
    def sched(self) -> tuple[int, ...]:
        """The tile as the IR's `tile=[...]` annotation (swap, persistent and raster only when
        set)."""
        fields = (self.bm, self.bn, self.bk, self.stages, self.cluster_m, self.cluster_n)
        if self.raster > 1:
            return fields + (self.swap, self.persistent, self.raster)
        if self.persistent:
            return fields + (self.swap, 1)
        return fields + ((1,) if self.swap else ())


def two_core(t: GemmTile, fmt: str, target: Target) -> bool:
    """Whether the tile's cluster pair along M issues the format's two-core instruction
    (Blackwell's cta_group::2): each core holds its own rows of A and half of the pair's B
    tile, which the instruction reads from both cores, so each core loads half of B."""
    unit = target.matrix.formats[fmt]
    im = unit.instruction(t.bm, t.bn, bool(t.swap))[0]
    return t.cluster_m == 2 and 2 * im in unit.pair_m and not t.swap


def instruction_text(t: GemmTile, fmt: str, target: Target) -> str:
    """The matrix instruction a tile runs as, and its orientation, for the kernel header."""
    unit = target.matrix.formats[fmt]
    im, inn, ik = unit.instruction(t.bm, t.bn, bool(t.swap))
    text = f"instruction m{im}n{inn}k{ik}"
    if two_core(t, fmt, target):
        text += f" (two-core form m{2 * im} over the cluster pair, each core loading half of B)"
    if t.swap:
        return text + " swapped (C^T = B^T A^T: the weight's columns on M, the rows on N)"
    return text + " (rows on M)"


@dataclass(frozen=True)
class BufferSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]
    role: str
    slots: int

    @property
    def nbytes(self) -> int:
        return math.ceil(math.prod(self.shape) * DTYPES[self.dtype].bits / 8) * self.slots


def gemm_buffers(p: GemmProblem, t: GemmTile) -> list[BufferSpec]:
    S, bm, bn, bk = t.stages, t.bm, t.bn, t.bk
    # Raw tiles converted on split cores land in the vector core's buffers; scales go where
    # the unit applying them reads (the matrix unit, or the vector unit).
    raw_role = lambda conv, role: "vector" if p.split and conv else role
    scale_role = lambda role: role if p.hw_scaled else "vector"
    out = [BufferSpec("sa", p.a_dtype, (bm, bk), raw_role(p.a_conv, "matrix_a"), S),
           BufferSpec("sb", p.b_dtype, (bk, bn), raw_role(p.b_conv, "matrix_b"), S)]
    if p.a_scaling:
        out.append(BufferSpec("ssa", p.a_scaling.dtype,
                              (1, math.ceil(bm / p.a_scaling.block[0]),
                               math.ceil(bk / p.a_scaling.block[1])), scale_role("matrix_a"), S))
    if p.b_scaling:
        out.append(BufferSpec("ssb", p.b_scaling.dtype,
                              (1, math.ceil(bk / p.b_scaling.block[0]),
                               math.ceil(bn / p.b_scaling.block[1])), scale_role("matrix_b"), S))
    for name, conv, shape, role in (("a", p.a_conv, (bm, bk), "matrix_a"),
                                    ("b", p.b_conv, (bk, bn), "matrix_b")):
        if conv and p.split:
            out.append(BufferSpec(f"v{name}", p.fmt, shape, "vector", S))
        if conv:
            out.append(BufferSpec(f"c{name}", p.fmt, shape, role, S))
    # A persistent kernel's two accumulators: one tile's epilogue drains one while the next
    # tile's main loop fills the other.
    out.append(BufferSpec("acc", "fp32", (bm, bn), "accumulator", 2 if t.persistent else 1))
    if p.promote:
        out.append(BufferSpec("part", "fp32", (bm, bn), "accumulator", 2))
    for operand in p.tensor_scales:
        out.append(BufferSpec(f"ts{operand}", "fp32", (1,), "vector", 1))
    if p.store_acc:
        out.append(BufferSpec("out", p.out_dtype, (bm, bn), "vector", 1))
    for name, dtype, cols, one_row, role in p.epilogue:
        shape = (1 if one_row else bm, cols or bn)
        if isinstance(dtype, tuple):          # a quantised value's scales: (dtype, block)
            dtype, block = dtype
            shape = (math.ceil(shape[0] / block[0]), math.ceil(shape[1] / block[1]))
        out.append(BufferSpec(name, dtype, shape, role, 1))
    return out


def fits(buffers: list[BufferSpec], target: Target) -> bool:
    used: dict[str, int] = {}
    for b in buffers:
        space = target.buffer_for(b.role)[0]
        used[space] = used.get(space, 0) + b.nbytes
    return all(n <= target.buffers[space].bytes for space, n in used.items())


def _smallest_need(p: GemmProblem, target: Target) -> str:
    """Bytes per space of the smallest tile, against what the target has."""
    im, in_, ik = target.matrix.formats[p.fmt].shape
    n = _round_up(p.n, in_) if p.whole_rows else in_
    tile = GemmTile(im, n, math.lcm(ik, p.k_step), 2)
    used: dict[str, int] = {}
    for b in gemm_buffers(p, tile):
        space = target.buffer_for(b.role)[0]
        used[space] = used.get(space, 0) + b.nbytes
    return ", ".join(f"{n:,} bytes of {s} (has {target.buffers[s].bytes:,})"
                     for s, n in sorted(used.items()))


# Tile sides tried, as multiples of the instruction: powers of two and the multiples of 64
# between them (a 192- or 224-wide tile can leave a smaller last wave than 128 or 256).
_SIDES = (16, 32, 64, 96, 128, 160, 192, 224, 256)


def orientations(p: GemmProblem, target: Target) -> list[int]:
    """0 (rows on the instruction's M) and, when the rows pad less on the N side, 1 (operands
    swapped: a few tokens ride the N step, the weight's columns fill M). Needs whole-tile
    epilogues (a whole-row op reads rows across the tile's N, which swapping would transpose)."""
    im, in_, _ = target.matrix.formats[p.fmt].shape
    swap_pays = _round_up(p.m, in_) < _round_up(p.m, im) and not p.whole_rows
    return [0, 1] if swap_pays else [0]


def steps_per_promotion(p: GemmProblem, t: GemmTile) -> int:
    """K steps whose MMAs add into one partial sum before the vector unit promotes it: the
    promotion interval over the K tile (which divides it), at most the whole K loop."""
    if not p.promote:
        return 1
    return max(1, min(p.promote_every // t.bk, math.ceil(p.k / t.bk)))


def promotion_ops(p: GemmProblem) -> float:
    """Vector operations an element of one promotion: vec.promote's (it applies the scales)
    or vec.accumulate's."""
    return VECTOR_OPS["promote" if p.scaled_promotion else "accumulate"].per_element({})[0]


def k_tiles(p: GemmProblem, target: Target) -> list[int]:
    """K tiles to try: one, two and four times the granule (the instruction's K and the scale
    block the tile must hold whole), up to K; a promoting GEMM's must divide its interval."""
    step = math.lcm(target.matrix.formats[p.fmt].shape[2], p.k_step)
    bks = [b for b in (step, 2 * step, 4 * step) if b <= max(step, _round_up(p.k, step))]
    if not p.promote:
        return bks
    if p.promote_every % step:
        raise ValueError(f"partial sums promoted every {p.promote_every} of K cannot be: K "
                         f"tiles are multiples of {step} (the instruction's K and the scale "
                         "block), and one must divide the promotion interval")
    return [b for b in bks if p.promote_every % b == 0]


def candidates(p: GemmProblem, target: Target) -> list[GemmTile]:
    im, in_, ik = target.matrix.formats[p.fmt].shape
    bks = k_tiles(p, target)
    out = []
    for swap in orientations(p, target):
        gm, gn = (in_, im) if swap else (im, in_)      # granules of the rows and the columns
        # A tile holds whole scale blocks or lies within one (its scale boxes and promotion
        # assume it).
        m_block = p.a_scaling.block[0] if p.a_scaling else p.out_blocks[0]
        n_block = p.b_scaling.block[1] if p.b_scaling else p.out_blocks[1]
        nests = lambda b, block: b % block == 0 or block % b == 0
        bms = [b for b in _multiples(gm, p.m, (8,) + _SIDES if swap else _SIDES)
               if nests(b, m_block) or b >= p.m]
        bns = [_round_up(p.n, gn)] if p.whole_rows else [
            b for b in _multiples(gn, p.n, _SIDES)
            if (b % p.n_align == 0 and nests(b, n_block)) or b >= p.n]
        for bm in bms:
            for bn in bns:
                for bk in bks:
                    for stages in (2, 3, 4):
                        for cm, cn in _clusters(p, bm, bn, target.dma.multicast):
                            tile = _schedule(p, GemmTile(bm, bn, bk, stages, cm, cn, swap),
                                             target)
                            if tile is not None:
                                out.append(tile)
    return out


def _schedule(p: GemmProblem, t: GemmTile, target: Target) -> GemmTile | None:
    """The tile as a persistent kernel when it has more tiles than cores, the target's matrix
    unit overlaps an epilogue with the next tile's accumulation and two accumulators fit;
    else as one work item per tile; None when it does not fit at all. Either way walked in
    the raster that keeps a wave's operand strips smallest."""
    t = replace(t, raster=raster_rows(p, t, target))
    if tile_count(p, t) > target.cores and target.matrix.epilogue == "overlapped":
        persistent = replace(t, persistent=1)
        if fits(gemm_buffers(p, persistent), target):
            return persistent
    return t if fits(gemm_buffers(p, t), target) else None


def tile_count(p: GemmProblem, t: GemmTile) -> int:
    return p.groups * math.ceil(p.m / t.bm) * math.ceil(p.n / t.bn)


def raster_rows(p: GemmProblem, t: GemmTile, target: Target) -> int:
    """Rows of tiles per group of the walk (1: row by row, the grid's plain order). A wave's
    tiles read their rows' strips of A and their columns' strips of B over all of K, and a
    later wave re-reads them from the cache only if they fit in it. When the row-by-row
    walk's strips do not fit, walking groups of R rows column by column (as CUTLASS's
    swizzled rasters and DeepGEMM's grouped scheduler do) makes a wave a block of R rows by
    about W/R columns; the R with the smallest strips wins (ties: fewer rows). R divides the
    rows of tiles so that the grid stays exact."""
    m_tiles, n_tiles = math.ceil(p.m / t.bm), math.ceil(p.n / t.bn)
    cache = target.machine.reach().cache
    strips = lambda r: strip_bytes(p, t, *wave_block(r, m_tiles, n_tiles, target.cores))
    if cache is None or strips(1) <= cache.bytes:
        return 1
    rows = [r for r in (1, 2, 4, 8, 16, 32, 64) if r <= m_tiles and m_tiles % r == 0]
    return min(rows, key=lambda r: (strips(r), r))


def strip_bytes(p: GemmProblem, t: GemmTile, rows: int, cols: int) -> float:
    """Bytes of A and B a block of rows x cols tiles reads over all of K."""
    return p.k * (rows * t.bm * DTYPES[p.a_dtype].bits + cols * t.bn * DTYPES[p.b_dtype].bits) / 8


def wave_block(raster: int, m_tiles: int, n_tiles: int, cores: int) -> tuple[int, int]:
    """Rows and columns of tiles one wave covers: `cores` consecutive tiles of a walk in
    groups of `raster` rows, column by column within a group (one group of the grid's
    batch; a wave longer than a group covers whole groups)."""
    wave = min(cores, m_tiles * n_tiles)
    group = raster * n_tiles
    if wave >= group:
        return min(m_tiles, raster * math.ceil(wave / group)), n_tiles
    return min(raster, wave), math.ceil(wave / raster)


def _clusters(p: GemmProblem, bm: int, bn: int, multicast: int) -> list[tuple[int, int]]:
    """Cluster shapes (cores along M, along N) that split the grid evenly; each load is shared
    by the cores of one cluster row or column, so each side is at most `multicast`."""
    m_tiles, n_tiles = math.ceil(p.m / bm), math.ceil(p.n / bn)
    sides = [s for s in (1, 2, 4, 8, 16) if s <= multicast]
    return [(cm, cn) for cm in sides for cn in sides if m_tiles % cm == 0 and n_tiles % cn == 0]


def _multiples(granule: int, size: int, preferred: tuple[int, ...]) -> list[int]:
    """Tile sizes to try: preferred multiples of the granule below one whole dim, and the
    largest useful size (the whole dim rounded up, capped at the largest preferred size)."""
    limit = _round_up(size, granule)
    sizes = {s for s in preferred if s % granule == 0 and s < limit}
    sizes.add(_round_up(min(limit, max(preferred)), granule))
    return sorted(sizes)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def real_extent(t: GemmTile, m: int, n: int) -> tuple[int, int]:
    """Rows of an A tile and columns of a B tile that hold data, for the conversions on the
    vector unit: a GEMM smaller than its tile converts only its own rows (a decode GEMM of 4
    tokens in a 64-row tile, 4); a larger one's last partial tile is charged whole, since an
    instruction's element count is the same in every work item."""
    return min(t.bm, m), min(t.bn, n)


def estimate_cycles(p: GemmProblem, t: GemmTile, target: Target) -> float:
    bits = lambda d: DTYPES[d].bits
    tiles = p.groups * math.ceil(p.m / t.bm) * math.ceil(p.n / t.bn)
    waves = math.ceil(tiles / target.cores)
    active = min(tiles, target.cores)
    k_steps = math.ceil(p.k / t.bk)
    mma = target.matrix.formats[p.fmt].mma_cycles(t.bm, t.bn, t.bk, bool(t.swap))
    a_bytes, b_bytes = t.bm * t.bk * bits(p.a_dtype) / 8, t.bk * t.bn * bits(p.b_dtype) / 8
    l2_bytes = a_bytes / t.cluster_n + b_bytes / t.cluster_m
    reach = target.machine.reach()           # the cache and memory tensors live behind
    b_halves = 2 if two_core(t, p.fmt, target) else 1
    port = (a_bytes + b_bytes / b_halves) / target.dma.load_bytes_per_cycle
    l2 = l2_bytes / (reach.hit_bytes_per_cycle / active)
    rows, cols = real_extent(t, p.m, p.n)
    converted = (rows * t.bk if p.a_conv else 0) + (t.bk * cols if p.b_conv else 0)
    # One promotion per interval, spread over its K steps (the vector unit runs it while the
    # matrix unit goes on with the next interval's MMAs into the other partial sum).
    every = steps_per_promotion(p, t)
    promote = t.bm * t.bn * promotion_ops(p) / every / target.vector.lanes if p.promote else 0
    vec = converted / target.vector.lanes + promote
    latency = reach.hit_latency + reach.miss_latency
    # A buffer slot comes back every `stages` steps, after its load, latency, MMA and, when
    # the promotion frees it (one K step an interval: it reads the step's scales), promotion.
    round_trip = max(port, l2) + latency + mma + vec - (promote if every > 1 else 0)
    step = max(mma, port, l2, vec, round_trip / t.stages)
    epilogue = t.bm * t.bn * (1 / target.vector.lanes
                              + bits(p.out_dtype) / 8 / target.dma.store_bytes_per_cycle)
    per_wave = k_steps * step + latency + epilogue
    if t.persistent:            # each tile's fill and epilogue hide under the next main loop
        per_wave -= (latency + epilogue) * (waves - 1) / waves
    return max(waves * per_wave, memory_bytes(p, t, tiles, k_steps, reach, active)
               / reach.miss_bytes_per_cycle)


def memory_bytes(p: GemmProblem, t: GemmTile, tiles: int, k_steps: int, reach,
                 wave: int) -> float:
    """Bytes the GEMM moves through off-chip memory, by the interpreter's rule for the cache
    (runtime/kernel_sim.py): each operand's re-reads hit while what they meet in between
    fits in the cache, and miss in proportion as it outgrows it; the tiles of one wave
    reading the same box at once fetch it once (a wave's tiles of one row share
    their A box, those of one column their B box), and a re-read meets at most what one wave
    reads in between (its strips of A and B over all of K)."""
    bits = lambda d: DTYPES[d].bits
    m_tiles, n_tiles = math.ceil(p.m / t.bm), math.ceil(p.n / t.bn)
    rows, cols = wave_block(t.raster, m_tiles, n_tiles, wave)
    in_wave = min(wave, m_tiles * n_tiles)
    share_a, share_b = in_wave / rows, in_wave / cols     # a wave's tiles per A, per B box
    unique_a = p.groups * p.m * p.k * bits(p.a_dtype) / 8
    unique_b = p.groups * p.k * p.n * bits(p.b_dtype) / 8
    loaded_a = tiles * k_steps * t.bm * t.bk * bits(p.a_dtype) / 8 / max(t.cluster_n, share_a)
    loaded_b = tiles * k_steps * t.bk * t.bn * bits(p.b_dtype) / 8 / max(t.cluster_m, share_b)
    room = reach.cache.bytes if reach.cache is not None else 0
    window = min(unique_a + unique_b, strip_bytes(p, t, rows, cols))
    spill = 0.0 if window <= room else 1 - room / window
    again = max(0.0, loaded_a - unique_a) + max(0.0, loaded_b - unique_b)
    return unique_a + unique_b + again * spill + p.groups * p.m * p.n * bits(p.out_dtype) / 8


_CHOICES: dict[tuple[GemmProblem, str], tuple] = {}


def target_key(target: Target) -> str:
    """The target's description as text, but for what joins devices (a GEMM sends nothing):
    equal targets, loaded twice or differing only in their network, share decisions."""
    return target.on_device_key


def choose(p: GemmProblem, target: Target) -> tuple[GemmTile, list[tuple[GemmTile, float]]]:
    """The cheapest candidate by estimate (ties: fewer stages, smaller clusters, larger tiles),
    and all scores. Memoised per problem and target: a model repeats a GEMM in every layer."""
    key = (p, target_key(target))
    if key not in _CHOICES:
        _CHOICES[key] = _choose(p, target)
    return _CHOICES[key]


def _choose(p: GemmProblem, target: Target):
    scored = [(t, estimate_cycles(p, t, target)) for t in candidates(p, target)]
    if not scored:
        raise ValueError(f"no GEMM tile fits the on-chip buffers: the smallest needs "
                         f"{_smallest_need(p, target)}")
    best = min(scored, key=lambda ts: rank(p, ts[0], ts[1], target))
    return best[0], scored


def rank(p: GemmProblem, t: GemmTile, estimate: float, target: Target) -> tuple:
    """Candidates in order of preference: estimate, then fewer stages, smaller clusters, less
    padded matrix work (a memory-bound GEMM need not waste the unit), larger tiles."""
    tiles = p.groups * math.ceil(p.m / t.bm) * math.ceil(p.n / t.bn)
    padded = tiles * target.matrix.formats[p.fmt].mma_cycles(t.bm, t.bn, p.k, bool(t.swap))
    return (round(estimate, 3), t.stages, t.cluster_m * t.cluster_n, round(padded, 3),
            -t.bm * t.bn, -t.bk, t.cluster_m, t.swap)
