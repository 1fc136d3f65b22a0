"""Collectives between the devices of a deployment (inserted by the shard pass).

Per-device semantics in an SPMD program: every device runs the same graph on its own data.
`all_to_all` splits its input along `split` into `devices` equal chunks (the last padded),
sends chunk j to device j and concatenates what it receives along `concat` (the same axis as
`split`: block j of the result came from device j); `size` clips the concatenated dim (the
experts when they do not divide evenly) and `part`, when given, the chunk taken along `split`.
`all_gather` sends its whole input to every device and concatenates the `devices` inputs
along `axis`. An expert all-to-all (inserted by expert parallelism) moves routed rows between
a device's tokens and the hottest device's expert slots: `part` and `size` are those slots
and the rows they receive (compiler/expert_load.py), and `wire_local`, `wire_node` and
`wire_network` the rows each link carries, each token once per device (or node) it reaches;
`counts` marks a dispatch whose senders first exchange their counts. The tensor-parallel
reductions are built
from these (compiler/passes/tensor_parallel.py): reduce-scatter is an all-to-all along one axis
and a sum over the received blocks, all-reduce a reduce-scatter and an all-gather. The numpy
references evaluate device 0 of a symmetric deployment, where every device holds the same
values: it receives chunk 0 (or the whole input) from everyone.
"""
import math

from isa.lazy_numpy import np

from compiler.ir.ops import REQUIRED, OpDef, check, dims, norm_axis, register


def chunk(n: int, devices: int) -> int:
    return math.ceil(n / devices)


def _all_to_all_shape(ins, a):
    x = ins[0]
    split, concat = norm_axis(a["split"], x.rank), norm_axis(a["concat"], x.rank)
    check(a["devices"] >= 2, f"all_to_all needs at least 2 devices, got {a['devices']}")
    check(a["part"] >= 0 and a["size"] >= 0, "all_to_all part and size must be >= 0")
    shape = list(x.shape)
    shape[split] = a["part"] or chunk(x.shape[split], a["devices"])
    shape[concat] = a["size"] or a["devices"] * shape[concat]
    return tuple(shape)


def _all_to_all_ref(ins, a):
    x = ins[0].astype(np.float32)
    split, concat = a["split"] % x.ndim, a["concat"] % x.ndim
    size = a["part"] or chunk(x.shape[split], a["devices"])
    joined = np.concatenate([_fit(x, split, size)] * a["devices"], axis=concat)
    return _fit(joined, concat, a["size"] or joined.shape[concat])


def _fit(x, axis: int, size: int):
    """The first `size` entries of `axis`, padded with zeros past its end."""
    part = np.take(x, range(min(size, x.shape[axis])), axis=axis)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - part.shape[axis])
    return np.pad(part, pad)


def _all_gather_shape(ins, a):
    x = ins[0]
    axis = norm_axis(a["axis"], x.rank)
    check(a["devices"] >= 2, f"all_gather needs at least 2 devices, got {a['devices']}")
    return tuple(d * a["devices"] if i == axis else d for i, d in enumerate(x.shape))


def _all_gather_ref(ins, a):
    return np.concatenate([ins[0].astype(np.float32)] * a["devices"], axis=a["axis"])


def link_bytes(x_bytes: int, devices: int) -> float:
    """Bytes a device sends to other devices: all chunks but its own."""
    return x_bytes * (devices - 1) / devices


register(OpDef("all_to_all", "collective", 1, infer=_all_to_all_shape, result="input",
               reference=_all_to_all_ref,
               doc="exchange chunks between devices: split along `split`, chunk j to device j, "
                   "received chunks joined along `concat` (clipped to `size`)",
               attrs={"devices": REQUIRED, "split": REQUIRED, "concat": REQUIRED, "size": 0,
                      "part": 0, "wire_local": 0.0, "wire_node": 0.0, "wire_network": 0.0,
                      "counts": False}))
register(OpDef("all_gather", "collective", 1, infer=_all_gather_shape, result="input",
               reference=_all_gather_ref,
               doc="every device's input to every device, joined along `axis`",
               attrs={"devices": REQUIRED, "axis": REQUIRED}))
