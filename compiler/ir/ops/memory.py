"""Ops that write memory in a particular place: `concat` and the KV-cache append."""
from isa.lazy_numpy import np

from compiler.ir.ops import OpDef, WritesInto, check, dims, norm_axis, register


def _concat(ins, attrs):
    axis = norm_axis(attrs["axis"], ins[0].rank)
    first = ins[0].shape
    for t in ins[1:]:
        check(t.rank == len(first) and all(a == b for i, (a, b) in enumerate(zip(first, t.shape))
                                          if i != axis),
              f"concat along axis {axis} needs equal other dims, got {dims(first)} and {dims(t.shape)}")
    shape = list(first)
    shape[axis] = sum(t.shape[axis] for t in ins)
    return tuple(shape)


def _cache_write(ins, attrs):
    cache, new = ins
    check(cache.rank >= 2 and new.rank == cache.rank,
          f"cache_write needs new entries of the cache's rank: cache {dims(cache.shape)}, "
          f"new {dims(new.shape)}")
    check(new.shape[0] == cache.shape[0] and new.shape[2:] == cache.shape[2:],
          f"new entries {dims(new.shape)} do not match cache {dims(cache.shape)} "
          "outside the positions axis")
    check(attrs["offset"] + new.shape[1] <= cache.shape[1],
          f"writing {new.shape[1]} positions at {attrs['offset']} overflows the cache's "
          f"{cache.shape[1]} positions")
    return cache.shape


def _cache_write_ref(ins, attrs):
    cache, new = ins
    out = cache.astype(np.float32).copy()
    out[:, attrs["offset"]:attrs["offset"] + new.shape[1]] = new
    return out


def _positions_written(ins, attrs):
    """The new entries land at positions offset .. offset + S of the cache (axis 1)."""
    return 1, attrs["offset"], attrs["offset"] + ins[1].shape[1]


register(OpDef("concat", "memory", None, infer=_concat,
               reference=lambda ins, a: np.concatenate([x.astype(np.float32) for x in ins],
                                                       axis=a["axis"]),
               doc="join tensors along `axis`", attrs={"axis": -1}))
register(OpDef("cache_write", "memory", 2, infer=_cache_write, reference=_cache_write_ref,
               bytes_read=lambda ins, out, a: ins[1].nbytes,
               bytes_written=lambda ins, out, a: ins[0].format.nbytes(ins[1].shape),
               doc="write new positions into a KV cache at `offset`; the result is the cache "
                   "(same storage), read by attention", attrs={"offset": 0}, result="input",
               writes_into=WritesInto(target=0, value=1, region=_positions_written)))
