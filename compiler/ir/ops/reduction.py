"""Reductions over one axis."""
from isa.lazy_numpy import np

from compiler.ir.ops import OpDef, norm_axis, numel, register


def _shape(ins, attrs):
    axis = norm_axis(attrs["axis"], ins[0].rank)
    shape = list(ins[0].shape)
    if attrs["keepdims"]:
        shape[axis] = 1
    else:
        del shape[axis]
    return tuple(shape)


for _name in ("sum", "max", "mean"):
    register(OpDef(_name, "reduction", 1, infer=_shape,
                   reference=lambda ins, a, f=_name: getattr(np, f)(
                       ins[0].astype(np.float32), axis=a["axis"],
                       keepdims=a["keepdims"]).astype(np.float32),
                   flops=lambda ins, out, a: numel(ins[0].shape),
                   doc=f"{_name} over `axis`", attrs={"axis": -1, "keepdims": False}))
