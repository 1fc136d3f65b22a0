"""The target description schema: one frozen dataclass per TOML table.

Every key is a dataclass field whose metadata carries its documentation, unit and valid range;
the loader (target_loader.py) validates a TOML file against these classes and the reference page
(`dsc targets schema`) is rendered from them, so the documentation cannot drift from the code.
Secondary quantities (bytes per cycle, latencies in cycles, peak FLOP/s) are derived in exactly
one place: the properties of `Target`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from functools import cached_property

from isa.formats import ELEMENT_DTYPES


# The largest figure a target may give in each unit, and for a count (cores, lanes, FLOPs per
# cycle, instruction shapes): far beyond any chip (8 PB, an exabyte per second, a second of
# latency, a million cores per die), low enough that no derived figure overflows or loses
# exactness. With the minimum of each key (no zero rate or size: they would divide by zero)
# they keep out the values no chip has.
UNIT_MAXIMA = {"B": 2**53, "B/cycle": 2**40, "GB/s": 1e9, "1/ns": 1e9, "ns": 1e9, "us": 1e6,
               "cycles": 1e12, "GHz": 1000}
COUNT_MAXIMUM = 2**20

# Sustained figures sit next to the datasheet peaks they qualify, each with the public
# measurement it comes from; a run uses them unless it asks for peaks (`figures = "peak"`).
ACHIEVABLE_DOC = ("fraction of the datasheet bandwidth transfers sustain (a published "
                  "measurement over the peak); used unless the run asks for peaks")
ACHIEVABLE_SOURCE_DOC = ("the public measurement the achievable fraction comes from (required "
                         "when it is below 1)")


def key(doc: str, unit: str = "", minimum: float | None = None, maximum: float | None = None,
        choices: tuple[str, ...] | None = None, **default):
    """A schema field: documentation, unit and range travel with the field definition; a
    field with a unit and no maximum of its own takes its unit's (UNIT_MAXIMA)."""
    maximum = UNIT_MAXIMA.get(unit) if maximum is None else maximum
    meta = {"doc": doc, "unit": unit, "min": minimum, "max": maximum, "choices": choices}
    return field(metadata=meta, **default)


@dataclass(frozen=True)
class Chip:
    dies: int = key("number of dies in the package", minimum=1, maximum=8)
    cores_per_die: int = key("compute cores (SMs, AI cores) per die", minimum=1,
                             maximum=COUNT_MAXIMUM)


@dataclass(frozen=True)
class MatrixFormat:
    shape: tuple[int, int, int] = key(
        "granularity M x N x K of the matrix instruction: its smallest M, its step in N and its "
        "K; tile dims round up to multiples of it (M on the operand the instruction takes as "
        "A, N on the other: a GEMM may swap its operands so its small side rides N)",
        minimum=1, maximum=COUNT_MAXIMUM)
    flops_per_cycle: int = key("dense FLOPs per cycle per core in this format (2 per multiply-add)",
                               minimum=1, maximum=COUNT_MAXIMUM)
    accumulator_bits: int | None = key(
        "mantissa bits the accumulator keeps for products in this format, when fewer than FP32's "
        "23; the compiler then promotes partial sums to FP32 on the vector unit",
        minimum=1, maximum=23, default=None)
    m_sizes: tuple[int, ...] = key(
        "the instruction's M sizes (multiples of shape's M; default: shape's M only), all at "
        "the format's rate", minimum=1, maximum=COUNT_MAXIMUM, default=())
    n_max: int | None = key(
        "largest N of one instruction, in steps of shape's N (default: shape's N)",
        minimum=1, maximum=COUNT_MAXIMUM, default=None)
    pair_m: tuple[int, ...] = key(
        "M sizes of a two-core form, in which a core pair runs one instruction, each core "
        "holding half of M and half of B (e.g. Blackwell cta_group::2); empty when none",
        minimum=1, maximum=COUNT_MAXIMUM, default=())
    block_scales: tuple[str, ...] = key(
        "scale formats the unit applies itself, as SCALE_DTYPE:ROWSxCOLS "
        "(e.g. ue8m0:1x32); other scaled formats are rescaled on the vector unit",
        default=())
    native_operands: tuple[str, ...] = key(
        "other element dtypes the instruction takes natively as an operand, beside one in "
        "this format or in another listed dtype, at this format's rate and shape (e.g. "
        "Blackwell's tcgen05.mma kind::f8f6f4 mixes e4m3, e5m2, e2m3, e3m2 and e2m1); an "
        "operand in such a dtype is loaded and held on chip as it is, not widened on the "
        "vector unit. Empty: both operands in this format",
        default=())

    def padded(self, m: int, n: int, k: int, swap: bool = False) -> tuple[int, int, int]:
        """An M x N x K product rounded up to whole instructions; with `swap` the operands
        are exchanged (C^T = B^T A^T), so M rounds up to the instruction's N step and N to
        its M."""
        im, in_, ik = self.shape
        gm, gn = (in_, im) if swap else (im, in_)
        return -(-m // gm) * gm, -(-n // gn) * gn, -(-k // ik) * ik

    def mma_cycles(self, m: int, n: int, k: int, swap: bool = False) -> float:
        """Cycles of the matrix unit for an M x N x K product, padded to whole instructions."""
        return 2 * math.prod(self.padded(m, n, k, swap)) / self.flops_per_cycle

    def instruction(self, m: int, n: int, swap: bool = False) -> tuple[int, int, int]:
        """The instruction an m x n tile is issued as: the largest M the unit offers that
        divides the tile's M side, the widest N (up to n_max) that divides its N side."""
        pm, pn, _ = self.padded(m, n, self.shape[2], swap)
        side_m, side_n = (pn, pm) if swap else (pm, pn)
        im = max(s for s in self.m_sizes + (self.shape[0],) if side_m % s == 0)
        step = self.shape[1]
        widest = self.n_max or step
        inn = max(s for s in range(step, min(widest, side_n) + 1, step) if side_n % s == 0)
        return im, inn, self.shape[2]


@dataclass(frozen=True)
class Matrix:
    formats: dict[str, MatrixFormat] = key("per input dtype: instruction shape and throughput")
    promotion_interval: int = key(
        "elements of K a limited-precision accumulator sums before its partial sums are "
        "promoted to FP32 (a multiple of the K of every format with accumulator_bits; "
        "independent of the K tile, which divides it); 0: never, the partial sums stay in "
        "the limited accumulator for all of K and are converted once at the end",
        minimum=0, maximum=COUNT_MAXIMUM, default=128)
    results_to_vector: str = key(
        "how accumulator results reach the vector unit: 'direct' (same core, e.g. GPU "
        "registers) or 'memory' (split cube/vector cores exchange through L2 and global memory)",
        choices=("direct", "memory"), default="direct")
    epilogue: str = key(
        "'overlapped': the unit accumulates one tile while another tile's results drain "
        "(asynchronous matrix instructions with two accumulators: Hopper's ping-pong warp "
        "groups, Blackwell's tensor memory, the Ascend cube's L0C double buffer), so a "
        "persistent kernel overlaps a tile's epilogue with the next tile's main loop; "
        "'serial': the epilogue waits for the unit (Ampere's mma.sync)",
        choices=("overlapped", "serial"), default="serial")

    def takes(self, fmt: str, dtype: str) -> bool:
        """Whether the instruction of format `fmt` reads `dtype` operands as they are."""
        return dtype == fmt or dtype in self.formats[fmt].native_operands

    def promotion_problem(self) -> str | None:
        """Why `promotion_interval` cannot be kept, if it cannot: a promotion falls between
        two instructions, so the interval is a whole number of every limited format's K."""
        every = self.promotion_interval
        for dtype, fmt in self.formats.items():
            if every and fmt.accumulator_bits is not None and every % fmt.shape[2]:
                return (f"expected 0 (never promote) or a multiple of the K of every format "
                        f"with accumulator_bits ({dtype}'s instruction K is {fmt.shape[2]}), "
                        f"got {every}: a promotion cannot fall inside an instruction")
        return None

    def applies_scales(self, fmt: str, scaling, operand: str) -> bool:
        """Whether the instruction of format `fmt` applies the block scales of `scaling` (an
        isa.formats.Scaling) itself. Block-scale specs are written as for A ([tokens, K]);
        B's block (operand "b") is the transpose."""
        rows, cols = scaling.block if operand == "a" else scaling.block[::-1]
        return f"{scaling.dtype}:{rows}x{cols}" in self.formats[fmt].block_scales


@dataclass(frozen=True)
class Vector:
    lanes: int = key("simple FP32 operations (add, mul, fma, compare, convert) per cycle per core",
                     minimum=1, maximum=COUNT_MAXIMUM)
    special_lanes: int = key("transcendental operations (exp, rsqrt, reciprocal) per cycle per core",
                             minimum=1, maximum=COUNT_MAXIMUM)


@dataclass(frozen=True)
class FixedPipe:
    ops: tuple[str, ...] = key("epilogue operations the pipe applies on the way out of the "
                               "accumulator (e.g. dequant, quant, bias, relu, add, silu)")
    elements_per_cycle: int = key("elements per cycle per core", minimum=1,
                                  maximum=COUNT_MAXIMUM)


@dataclass(frozen=True)
class Buffer:
    bytes: int = key("capacity per core", unit="B", minimum=1)
    holds: tuple[str, ...] = key(
        "what the buffer stores: matrix_a, matrix_b, accumulator, vector",
        choices=("matrix_a", "matrix_b", "accumulator", "vector"))


@dataclass(frozen=True)
class Dma:
    load_bytes_per_cycle: float = key("per-core bandwidth into on-chip buffers", unit="B/cycle",
                                      minimum=0.001)
    store_bytes_per_cycle: float = key("per-core bandwidth out of on-chip buffers", unit="B/cycle",
                                       minimum=0.001)
    multicast: int = key("cores one load can deliver the same tile to (a cluster), read from L2 "
                         "once; 1 = no multicast", minimum=1, maximum=16, default=1)
    bytes_in_flight: float | None = key(
        "bytes of loads a core keeps outstanding at most (its request slots): by Little's law "
        "a load then moves at most this many bytes per latency it waits; default: only the "
        "buffer slots the kernel fills bound it", unit="B", minimum=1, default=None)
    bytes_in_flight_source: str = key("the public figure bytes_in_flight comes from (required "
                                      "with it)", default="")


@dataclass(frozen=True)
class L2:
    bytes: int = key("capacity per die", unit="B", minimum=0)
    bytes_per_cycle: float = key("bandwidth between L2 and all cores of a die", unit="B/cycle",
                                 minimum=0.001)
    latency_cycles: int = key("load latency of an L2 hit", unit="cycles", minimum=0)
    keeps: str = key("what it keeps between kernels: 'lru' (what kernels wrote and read stays, "
                     "least recently used out first) or 'nothing' (each kernel starts empty)",
                     choices=("lru", "nothing"), default="lru")


@dataclass(frozen=True)
class Memory:
    bytes: int = key("off-chip memory capacity per die", unit="B", minimum=1)
    bandwidth_gbs: float = key("peak off-chip bandwidth per die", unit="GB/s", minimum=0.001)
    latency_ns: float = key("extra latency of a load that misses L2", unit="ns", minimum=0)
    achievable: float = key(ACHIEVABLE_DOC, minimum=0.001, maximum=1.0, default=1.0)
    achievable_source: str = key(ACHIEVABLE_SOURCE_DOC, default="")


@dataclass(frozen=True)
class DieLink:
    bandwidth_gbs: float = key("die-to-die bandwidth each way", unit="GB/s", minimum=0.001)
    latency_ns: float = key("latency of a die-to-die crossing", unit="ns", minimum=0)


@dataclass(frozen=True)
class Link:
    bandwidth_gbs: float = key("bandwidth per device, each way", unit="GB/s", minimum=0.001)
    latency_us: float = key("latency of one message, one way from one device's memory to "
                            "another's (what a small-message benchmark measures)", unit="us",
                            minimum=0)
    achievable: float = key(ACHIEVABLE_DOC, minimum=0.001, maximum=1.0, default=1.0)
    achievable_source: str = key(ACHIEVABLE_SOURCE_DOC, default="")


LAUNCH_MODES = ("stream", "graph", "dependent")


@dataclass(frozen=True)
class Launch:
    graph_us: float | None = key("the least time between the starts of two kernels when the "
                                 "step is replayed from a captured graph (default: a stream "
                                 "launch's)", unit="us", minimum=0, default=None)
    dependent_us: float | None = key(
        "the same with programmatic dependent launch, the next kernel's launch and prologue "
        "overlapping the previous kernel's tail (default: a graph launch's)", unit="us",
        minimum=0, default=None)
    boundary_us: float = key("time from one kernel's end to the next one's start on the cores "
                             "however early it was launched; a dependent launch hides it",
                             unit="us", minimum=0, default=0.0)
    source: str = key("the public measurements of these launch costs (required)", default="")


BENCHES = {"copy": "GB/s", "gemm": "TFLOPS", "attention": "TFLOPS", "mla_decode": "TFLOPS",
           "launch": "us", "ping_pong": "us", "bulk": "GB/s"}
# What each bench's `size` lists, and the benches that run the matrix unit in `dtype`.
BENCH_SIZES = {"copy": ("bytes",), "gemm": ("M", "N", "K"), "attention": ("B", "H", "S", "D"),
               "mla_decode": ("B", "H", "S_Q", "T"), "launch": (), "ping_pong": ("bytes",),
               "bulk": ("bytes",)}
MATRIX_BENCHES = ("gemm", "attention", "mla_decode")


@dataclass(frozen=True)
class Measured:
    bench: str = key("the microbenchmark `dsc validate` runs to compare: copy (a streaming "
                     "read and write of `size` bytes; GB/s counted both ways), gemm (M x N x K "
                     "in `dtype`; TFLOPS), attention (a flash attention forward, softmax(q k^T "
                     "* scale) v over q, k, v of [B, H, S, D] in `dtype`, masked per `mask`; "
                     "TFLOPS counted as FlashAttention's benchmarks count them, 4 B H S^2 D, "
                     "half of it causal), mla_decode (DeepSeek MLA decode in absorbed form, "
                     "as FlashMLA runs it: H query heads of S_Q new tokens each attend to T "
                     "cached positions of one shared 576-wide latent (512 values and a 64-wide "
                     "rope key), causally over the new tokens; TFLOPS counted as FlashMLA "
                     "counts them, 2 B S_Q H T (576 + 512)), launch (back-to-back tiny kernels "
                     "in `mode`; us per kernel), ping_pong (a `size`-byte message over `link` "
                     "and back; one-way us), bulk (a `size`-byte transfer over `link`; GB/s)",
                     choices=tuple(BENCHES))
    value: float = key("the measured figure, in the bench's unit", minimum=0)
    source: str = key("the public measurement: who measured it, where it is published")
    size: tuple[int, ...] = key("gemm: [M, N, K]; attention: [B, H, S, D] (batch, heads, "
                                "sequence, head dim); mla_decode: [B, H, S_Q, T] (batch, "
                                "query heads, new tokens, cached positions including them); "
                                "copy, ping_pong, bulk: [bytes]",
                                minimum=1, maximum=2**40, default=())
    dtype: str = key("gemm, attention, mla_decode: the operands' dtype; for gemm also a "
                     "block-scaled format (an alias such as mxfp4, or DTYPE scaled(SCALE_DTYPE, "
                     "1xC)), both operands' blocks along K", default="")
    mask: str = key("attention: 'causal' (each query attends to the keys at or before its "
                    "own position) or 'none'", choices=("none", "causal"), default="none")
    mode: str = key("launch: stream, graph or dependent", choices=("stream", "graph",
                                                                   "dependent"),
                    default="stream")
    link: str = key("ping_pong, bulk: the device link (its name: nvlink, network)", default="")


@dataclass(frozen=True)
class System:
    devices_per_node: int = key("devices joined by the intra-node link", minimum=1,
                                maximum=COUNT_MAXIMUM)
    intra_node: Link | None = key("device-to-device link inside a node (e.g. NVLink): "
                                  "shorthand for [links.nvlink] between device and node",
                                  default=None)
    inter_node: Link | None = key("network between nodes, per device (e.g. one InfiniBand "
                                  "NIC): shorthand for [links.network] between device and "
                                  "network", default=None)


# -- the memory graph: memories and links by name (isa/machine.py builds the graph) --

@dataclass(frozen=True)
class MemorySpec:
    bytes: int = key("capacity of each instance", unit="B", minimum=1)
    bandwidth_gbs: float | None = key("bandwidth of each instance (give this or "
                                      "bytes_per_cycle)", unit="GB/s", minimum=0.001,
                                      default=None)
    bytes_per_cycle: float | None = key("bandwidth of each instance in bytes per core clock "
                                        "(give this or bandwidth_gbs)", unit="B/cycle",
                                        minimum=0.001, default=None)
    latency_ns: float | None = key("latency an access that reaches it adds (give this or "
                                   "latency_cycles)", unit="ns", minimum=0, default=None)
    latency_cycles: float | None = key("the same latency in core clocks", unit="cycles",
                                       minimum=0, default=None)
    at: str = key("where it sits: 'die' (one instance on each die, reached by that die's cores "
                  "directly) or the name of a place that links join (one instance there)",
                  default="die")
    caches: tuple[str, ...] = key("makes it a cache in front of these memories (by name): "
                                  "loads hit it and only misses go on to the memory", default=())
    write: str = key("a cache's stores: 'back' (done in the cache, the memory absorbs them "
                     "later) or 'through' (each store goes on to the memory)",
                     choices=("back", "through"), default="back")
    keeps: str = key("what a cache keeps between kernels: 'lru' (what kernels wrote and read "
                     "stays, least recently used out first) or 'nothing' (each kernel starts "
                     "empty)", choices=("lru", "nothing"), default="lru")
    achievable: float = key(ACHIEVABLE_DOC, minimum=0.001, maximum=1.0, default=1.0)
    achievable_source: str = key(ACHIEVABLE_SOURCE_DOC, default="")
    access_bytes: int | None = key("smallest access: a contiguous run of bytes is moved in "
                                   "whole accesses of this size", unit="B", minimum=1,
                                   default=None)
    requests_per_ns: float | None = key("accesses each instance serves per ns (the request "
                                        "rate, with access_bytes: fine-grained gathers cost "
                                        "requests as well as bytes)", unit="1/ns",
                                        minimum=1e-6, default=None)
    label: str = key("how reports name it (default: its name)", default="")


@dataclass(frozen=True)
class LinkSpec:
    between: tuple[str, str] = key(
        "its two ends: 'die' (each die: [die, die] joins every two dies, [die, P] each die to "
        "place P), a place name, or [device, node] / [device, network] for this device's link "
        "to the other devices of its node / of other nodes")
    bandwidth_gbs: float = key("bandwidth each way (per device, for a device link)",
                               unit="GB/s", minimum=0.001)
    latency_ns: float | None = key("latency of one crossing (give this or latency_us); for a "
                                   "device link, a small message's one-way time from one "
                                   "device's memory to another's, as benchmarks measure it",
                                   unit="ns", minimum=0, default=None)
    latency_us: float | None = key("the same latency in microseconds", unit="us", minimum=0,
                                   default=None)
    achievable: float = key(ACHIEVABLE_DOC, minimum=0.001, maximum=1.0, default=1.0)
    achievable_source: str = key(ACHIEVABLE_SOURCE_DOC, default="")
    converts: tuple[str, ...] = key("conversions applied on the way, as FROM>TO dtypes (e.g. "
                                    "bf16>fp8_e4m3: bf16 data crosses as fp8, in fewer bytes)",
                                    default=())
    label: str = key("how reports name it (default: its name)", default="")


@dataclass(frozen=True)
class Target:
    name: str = key("target name used on the command line")
    description: str = key("one line describing the chip")
    clock_ghz: float = key("datasheet core clock at which the peak throughputs below hold",
                           unit="GHz", minimum=0.001)
    launch_overhead_us: float = key("the least time between the starts of two kernels "
                                    "launched one by one by the host on a stream (its launch "
                                    "rate)",
                                    unit="us", minimum=0)
    chip: Chip = key("dies and cores")
    matrix: Matrix = key("the per-core matrix unit")
    vector: Vector = key("the per-core vector unit")
    buffers: dict[str, Buffer] = key("on-chip buffers per core, by name")
    dma: Dma = key("per-core data movement engines")
    l2: L2 | None = key("the last-level on-chip cache of each die: shorthand for "
                        "[memories.l2], a cache in front of [memory]", default=None)
    memory: Memory | None = key("off-chip memory of each die: shorthand for "
                                "[memories.memory]", default=None)
    fixed_pipe: FixedPipe | None = key("optional post-processing unit behind the matrix unit",
                                       default=None)
    die_link: DieLink | None = key("die-to-die link: shorthand for [links.link] between die "
                                   "and die", default=None)
    system: System | None = key("how devices of this kind are joined into a system", default=None)
    measured: dict[str, Measured] = key("published measurements of this chip that `dsc "
                                        "validate` reproduces in simulation, by name",
                                        default_factory=dict)
    launch: Launch | None = key("cheaper launch modes than a stream launch "
                                "(launch_overhead_us): a captured graph, a dependent launch",
                                default=None)
    memories: dict[str, MemorySpec] = key("memories and caches beyond the shorthand ones, by "
                                          "name", default_factory=dict)
    links: dict[str, LinkSpec] = key("links between places and to other devices, beyond the "
                                     "shorthand ones, by name", default_factory=dict)
    sustained_clock_ghz: float | None = key(
        "the clock the cores hold under sustained matrix load (a published measurement); "
        "used unless the run asks for peaks", unit="GHz", minimum=0.001, default=None)
    sustained_clock_source: str = key("the public measurement of the sustained clock "
                                      "(required with it)", default="")
    figures: str = key("which figures a run uses: 'sustained' (the sustained clock and "
                       "achievable bandwidths where the file gives them, peaks elsewhere) or "
                       "'peak' (datasheet peaks only; `dsc run --peak`)",
                       choices=("sustained", "peak"), default="sustained")

    # -- derived quantities: the only place units are converted --

    @cached_property
    def on_device_key(self) -> str:
        """The target as text but for what joins devices ([system], links from a device): all
        that a kernel sending nothing to other devices depends on (the simulation cache's and
        the tile decisions' key)."""
        kept = [(f.name, getattr(self, f.name)) for f in fields(self)
                if f.name not in ("system", "links")]
        links = {n: link for n, link in self.links.items() if "device" not in link.between}
        return repr((kept, links))

    @cached_property
    def machine(self):
        """The memories and links of the chip as one graph (isa/machine.py), built once."""
        from isa.machine_build import build_machine
        return build_machine(self)

    @property
    def sustained(self) -> bool:
        """Whether this run uses the sustained figures (else the datasheet peaks)."""
        return self.figures == "sustained"

    @property
    def running_clock_ghz(self) -> float:
        """The clock the simulation runs at: the sustained one unless the run asks for
        peaks (or the file gives none)."""
        if self.sustained and self.sustained_clock_ghz is not None:
            return self.sustained_clock_ghz
        return self.clock_ghz

    @property
    def clock_hz(self) -> float:
        """Cycles per second of the simulation (every conversion to cycles uses it)."""
        return self.running_clock_ghz * 1e9

    @property
    def cores(self) -> int:
        return self.chip.dies * self.chip.cores_per_die

    @property
    def launch_overhead_cycles(self) -> float:
        return self.launch_overhead_us * 1e-6 * self.clock_hz

    def launch_us(self, mode: str = "stream") -> float:
        """The least time between the starts of two kernels launched in `mode`
        (LAUNCH_MODES): a mode the file gives no figure for costs what the next more general
        one does."""
        table = self.launch or Launch()
        graph = table.graph_us if table.graph_us is not None else self.launch_overhead_us
        figures = {"stream": self.launch_overhead_us, "graph": graph,
                   "dependent": table.dependent_us if table.dependent_us is not None else graph}
        return figures[mode]

    def launch_cycles(self, mode: str = "stream") -> float:
        return self.launch_us(mode) * 1e-6 * self.clock_hz

    def boundary_cycles(self, mode: str = "stream") -> float:
        """The least time from a kernel's end to the next one's start in `mode` (none for a
        dependent launch, whose prologue overlaps the previous kernel's tail)."""
        if mode == "dependent" or self.launch is None:
            return 0.0
        return self.launch.boundary_us * 1e-6 * self.clock_hz

    @property
    def units(self) -> tuple[str, ...]:
        """The per-core units instructions are issued to: loads, stores, matrix, vector; the
        fixed pipe; where matrix results reach the vector unit only through memory (split
        cube and vector cores), the vector cores' own load and store engines; and, on a chip
        that can be part of a system, the engine that sends to other devices."""
        units = ("ld", "st", "mm", "vec") + (("fix",) if self.fixed_pipe else ())
        units += ("vld", "vst") if self.matrix.results_to_vector == "memory" else ()
        return units + (("net",) if self.system else ())

    def peak_flops(self, dtype: str) -> float:
        """Datasheet dense matrix FLOP/s of the whole chip in `dtype` (0 when unsupported)."""
        fmt = self.matrix.formats.get(dtype)
        return fmt.flops_per_cycle * self.cores * self.clock_ghz * 1e9 if fmt else 0.0

    def flops_rate(self, dtype: str) -> float:
        """Dense matrix FLOP/s in `dtype` at the clock the run uses."""
        fmt = self.matrix.formats.get(dtype)
        return fmt.flops_per_cycle * self.cores * self.clock_hz if fmt else 0.0

    @property
    def memory_bandwidth(self) -> float:
        """Bytes per second of the memory tensors live in (all its instances), as the run
        uses it (achievable, unless it asks for peaks)."""
        return self.machine.bandwidth_of() * self.clock_hz

    @property
    def peak_memory_bandwidth(self) -> float:
        """Datasheet bytes per second of the memory tensors live in (all its instances)."""
        return self.machine.peak_bandwidth_of() * self.clock_hz

    def buffer_for(self, role: str) -> tuple[str, Buffer]:
        """The first buffer (in file order) that holds `role`."""
        for name, buf in self.buffers.items():
            if role in buf.holds:
                return name, buf
        raise KeyError(role)


SUPPORTED_MATRIX_DTYPES = ELEMENT_DTYPES
