"""Collectives between the devices of a deployment (inserted by the shard pass).

Per-device semantics in an SPMD program: every device runs the same graph on its own data.
`all_to_all` splits its input along `split` into `devices` equal chunks (the last padded),
sends chunk j to device j and concatenates what it receives along `concat` (the same axis as
`split`: block j of the result came from device j); `size` clips the concatenated dim (the
experts when they do not divide evenly). `all_gather` sends its whole input to every device
and concatenates the `devices` inputs along `axis`. An expert all-to-all with `route_k` k > 0
moves [experts, rows, ...] rows that are k routed copies of each token, and crosses nodes once
per token and node (its lowering says how). The tensor-parallel reductions are built
from these (compiler/passes/tensor_parallel.py): reduce-scatter is an all-to-all along one axis
and a sum over the received blocks, all-reduce a reduce-scatter and an all-gather. The numpy
references evaluate device 0 of a symmetric deployment, where every device holds the same
values: it receives chunk 0 (or the whole input) from everyone.
"""
import math

import numpy as np

from compiler.ir.ops import REQUIRED, OpDef, check, dims, norm_axis, register


def chunk(n: int, devices: int) -> int:
    return math.ceil(n / devices)


def _all_to_all_shape(ins, a):
    x = ins[0]
    split, concat = norm_axis(a["split"], x.rank), norm_axis(a["concat"], x.rank)
    check(a["devices"] >= 2, f"all_to_all needs at least 2 devices, got {a['devices']}")
    shape = list(x.shape)
    shape[split] = chunk(x.shape[split], a["devices"])
    joined = a["devices"] * shape[concat]
    size = a["size"] or joined
    check(0 < size <= joined, f"all_to_all size {size} exceeds the {joined} received along "
                              f"axis {concat} of {dims(x.shape)}")
    shape[concat] = size
    return tuple(shape)


def _all_to_all_ref(ins, a):
    x = ins[0].astype(np.float32)
    split, concat = a["split"] % x.ndim, a["concat"] % x.ndim
    part = np.take(x, range(min(chunk(x.shape[split], a["devices"]), x.shape[split])), axis=split)
    pad = [(0, 0)] * x.ndim
    pad[split] = (0, chunk(x.shape[split], a["devices"]) - part.shape[split])
    part = np.pad(part, pad)
    joined = np.concatenate([part] * a["devices"], axis=concat)
    return np.take(joined, range(a["size"] or joined.shape[concat]), axis=concat)


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
                      "route_k": 0}))
register(OpDef("all_gather", "collective", 1, infer=_all_gather_shape, result="input",
               reference=_all_gather_ref,
               doc="every device's input to every device, joined along `axis`",
               attrs={"devices": REQUIRED, "axis": REQUIRED}))
