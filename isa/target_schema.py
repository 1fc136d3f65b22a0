"""The target description schema: one frozen dataclass per TOML table.

Every key is a dataclass field whose metadata carries its documentation, unit and valid range;
the loader (target_loader.py) validates a TOML file against these classes and the reference page
(`dsc targets schema`) is rendered from them, so the documentation cannot drift from the code.
Secondary quantities (bytes per cycle, latencies in cycles, peak FLOP/s) are derived in exactly
one place: the properties of `Target`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from isa.formats import ELEMENT_DTYPES


def key(doc: str, unit: str = "", minimum: float | None = None, maximum: float | None = None,
        choices: tuple[str, ...] | None = None, **default):
    """A schema field: documentation, unit and range travel with the field definition."""
    meta = {"doc": doc, "unit": unit, "min": minimum, "max": maximum, "choices": choices}
    return field(metadata=meta, **default)


@dataclass(frozen=True)
class Chip:
    dies: int = key("number of dies in the package", minimum=1, maximum=8)
    cores_per_die: int = key("compute cores (SMs, AI cores) per die", minimum=1)


@dataclass(frozen=True)
class MatrixFormat:
    shape: tuple[int, int, int] = key(
        "granularity M x N x K of the matrix instruction: tile dims round up to multiples of it",
        minimum=1)
    flops_per_cycle: int = key("dense FLOPs per cycle per core in this format (2 per multiply-add)",
                               minimum=1)
    accumulator_bits: int | None = key(
        "mantissa bits the accumulator keeps for products in this format, when fewer than FP32's "
        "23; the compiler then promotes partial sums to FP32 on the vector unit",
        minimum=1, maximum=23, default=None)
    block_scales: tuple[str, ...] = key(
        "scale formats the unit applies itself, as SCALE_DTYPE:ROWSxCOLS "
        "(e.g. ue8m0:1x32); other scaled formats are rescaled on the vector unit",
        default=())


@dataclass(frozen=True)
class Matrix:
    formats: dict[str, MatrixFormat] = key("per input dtype: instruction shape and throughput")
    promotion_interval: int = key(
        "elements of K after which limited-precision partial sums are promoted to FP32",
        minimum=1, default=128)
    results_to_vector: str = key(
        "how accumulator results reach the vector unit: 'direct' (same core, e.g. GPU "
        "registers) or 'memory' (split cube/vector cores exchange through L2 and global memory)",
        choices=("direct", "memory"), default="direct")


@dataclass(frozen=True)
class Vector:
    lanes: int = key("simple FP32 operations (add, mul, fma, compare, convert) per cycle per core",
                     minimum=1)
    special_lanes: int = key("transcendental operations (exp, rsqrt, reciprocal) per cycle per core",
                             minimum=1)


@dataclass(frozen=True)
class FixedPipe:
    ops: tuple[str, ...] = key("epilogue operations the pipe applies on the way out of the "
                               "accumulator (e.g. dequant, quant, bias, relu, add, silu)")
    elements_per_cycle: int = key("elements per cycle per core", minimum=1)


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


@dataclass(frozen=True)
class L2:
    bytes: int = key("capacity per die", unit="B", minimum=0)
    bytes_per_cycle: float = key("bandwidth between L2 and all cores of a die", unit="B/cycle",
                                 minimum=0.001)
    latency_cycles: int = key("load latency of an L2 hit", unit="cycles", minimum=0)


@dataclass(frozen=True)
class Memory:
    bytes: int = key("off-chip memory capacity per die", unit="B", minimum=1)
    bandwidth_gbs: float = key("peak off-chip bandwidth per die", unit="GB/s", minimum=0.001)
    latency_ns: float = key("extra latency of a load that misses L2", unit="ns", minimum=0)


@dataclass(frozen=True)
class DieLink:
    bandwidth_gbs: float = key("die-to-die bandwidth each way", unit="GB/s", minimum=0.001)
    latency_ns: float = key("latency of a die-to-die crossing", unit="ns", minimum=0)


@dataclass(frozen=True)
class Link:
    bandwidth_gbs: float = key("bandwidth per device, each way", unit="GB/s", minimum=0.001)
    latency_us: float = key("latency of one message", unit="us", minimum=0)


@dataclass(frozen=True)
class System:
    devices_per_node: int = key("devices joined by the intra-node link", minimum=1)
    intra_node: Link = key("device-to-device link inside a node (e.g. NVLink)")
    inter_node: Link = key("network between nodes, per device (e.g. one InfiniBand NIC)")


@dataclass(frozen=True)
class Target:
    name: str = key("target name used on the command line")
    description: str = key("one line describing the chip")
    clock_ghz: float = key("core clock at which the throughputs below hold", unit="GHz",
                           minimum=0.001)
    launch_overhead_us: float = key("time from one kernel's end to the next kernel's start",
                                    unit="us", minimum=0)
    chip: Chip = key("dies and cores")
    matrix: Matrix = key("the per-core matrix unit")
    vector: Vector = key("the per-core vector unit")
    buffers: dict[str, Buffer] = key("on-chip buffers per core, by name")
    dma: Dma = key("per-core data movement engines")
    l2: L2 = key("the last-level on-chip cache")
    memory: Memory = key("off-chip memory")
    fixed_pipe: FixedPipe | None = key("optional post-processing unit behind the matrix unit",
                                       default=None)
    die_link: DieLink | None = key("die-to-die link (required when chip.dies > 1)", default=None)
    system: System | None = key("how devices of this kind are joined into a system", default=None)

    # -- derived quantities: the only place units are converted --

    @cached_property
    def machine(self):
        """The memories and links of the chip as one graph (isa/machine.py), built once."""
        from isa.machine import build_machine
        return build_machine(self)

    @property
    def clock_hz(self) -> float:
        return self.clock_ghz * 1e9

    @property
    def cores(self) -> int:
        return self.chip.dies * self.chip.cores_per_die

    @property
    def launch_overhead_cycles(self) -> float:
        return self.launch_overhead_us * 1e-6 * self.clock_hz

    @property
    def memory_bytes_per_cycle(self) -> float:
        """Off-chip bandwidth of one die in bytes per core clock."""
        return self.memory.bandwidth_gbs * 1e9 / self.clock_hz

    @property
    def memory_latency_cycles(self) -> float:
        return self.memory.latency_ns * 1e-9 * self.clock_hz

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
        """Dense matrix FLOP/s of the whole chip in `dtype` (0 when unsupported)."""
        fmt = self.matrix.formats.get(dtype)
        return fmt.flops_per_cycle * self.cores * self.clock_hz if fmt else 0.0

    def link_bytes_per_cycle(self, link: str) -> float:
        """Bandwidth of one device's link ("nvlink": system.intra_node, "network":
        system.inter_node), each way, in bytes per core clock."""
        return self._link(link).bandwidth_gbs * 1e9 / self.clock_hz

    def link_latency_cycles(self, link: str) -> float:
        """Latency of one message over a device link ("nvlink" or "network") in core clocks."""
        return self._link(link).latency_us * 1e-6 * self.clock_hz

    def _link(self, link: str) -> Link:
        if self.system is None:
            raise ValueError(f"target {self.name} has no [system] table, so no {link} link")
        return self.system.intra_node if link == "nvlink" else self.system.inter_node

    @property
    def peak_memory_bandwidth(self) -> float:
        """Off-chip bytes per second of the whole chip."""
        return self.memory.bandwidth_gbs * 1e9 * self.chip.dies

    def buffer_for(self, role: str) -> tuple[str, Buffer]:
        """The first buffer (in file order) that holds `role`."""
        for name, buf in self.buffers.items():
            if role in buf.holds:
                return name, buf
        raise KeyError(role)


SUPPORTED_MATRIX_DTYPES = ELEMENT_DTYPES
