"""Views: a new shape or window on the same storage; no kernel, no bytes moved.

Lowering resolves a chain of views to the underlying tensor and a box on it."""
from isa.lazy_numpy import np

from compiler.ir.ops import REQUIRED, OpDef, check, dims, norm_axis, numel, register


def _reshape(ins, attrs):
    shape = list(attrs["shape"])
    total = numel(ins[0].shape)
    if shape.count(-1) == 1:
        known = numel([d for d in shape if d != -1])
        check(known > 0 and total % known == 0, f"cannot reshape {dims(ins[0].shape)} to {dims(shape)}")
        shape[shape.index(-1)] = total // known
    check(all(d > 0 for d in shape) and numel(shape) == total,
          f"cannot reshape {dims(ins[0].shape)} ({total} elements) to {dims(shape)}")
    return tuple(shape)


def _perm(ins, attrs):
    rank = ins[0].rank
    perm = attrs["perm"] or tuple(range(rank - 2)) + (rank - 1, rank - 2)
    check(sorted(perm) == list(range(rank)), f"transpose perm {list(perm)} is not a permutation "
          f"of the {rank} dims of {dims(ins[0].shape)}")
    return tuple(perm)


def _slice(ins, attrs):
    shape = list(ins[0].shape)
    axis = norm_axis(attrs["axis"], len(shape))
    start, stop = attrs["start"], attrs["stop"]
    check(0 <= start < stop <= shape[axis],
          f"slice {start}:{stop} is outside dim {axis} of size {shape[axis]}")
    shape[axis] = stop - start
    return tuple(shape)


def _slice_ref(ins, attrs):
    index = [slice(None)] * ins[0].ndim
    index[attrs["axis"]] = slice(attrs["start"], attrs["stop"])
    return ins[0][tuple(index)]


register(OpDef("reshape", "view", 1, infer=_reshape,
               reference=lambda ins, a: ins[0].reshape(_reshape([_T(ins[0].shape)], a)),
               doc="same elements, new shape (-1 infers one dim)", attrs={"shape": REQUIRED},
               result="input"))
register(OpDef("transpose", "view", 1,
               infer=lambda ins, a: tuple(ins[0].shape[p] for p in _perm(ins, a)),
               reference=lambda ins, a: np.transpose(ins[0], _perm([_T(ins[0].shape)], a)),
               doc="permute dims (default: swap the last two)", attrs={"perm": None},
               result="input"))
register(OpDef("slice", "view", 1, infer=_slice, reference=_slice_ref,
               doc="window start:stop of one axis", attrs={"axis": -1, "start": REQUIRED, "stop": REQUIRED},
               result="input"))


class _T:
    def __init__(self, shape):
        self.shape = tuple(shape)
        self.rank = len(shape)
