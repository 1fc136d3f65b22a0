"""Elementwise ops: numpy broadcasting, one vector operation per output element.

Their cost and semantics are the vector-op catalogue's (isa/vector_ops.py); this module only
adds the shape rule. `causal_mask` is elementwise too: its value depends on the element's
position, not on its neighbours.
"""
from isa.lazy_numpy import np

from compiler.ir.ops import REQUIRED, OpDef, ShapeError, check, dims, numel, register
from isa.vector_ops import VECTOR_OPS


def broadcast(ins, attrs):
    try:
        return tuple(np.broadcast_shapes(*[t.shape for t in ins]))
    except ValueError:
        raise ShapeError("cannot broadcast " + " with ".join(dims(t.shape) for t in ins)) from None


def _elementwise(name: str, arity: int, doc: str, attrs=None, infer=broadcast):
    vop = VECTOR_OPS[name]
    register(OpDef(
        name, "elementwise", arity, infer=infer,
        reference=lambda ins, a, f=vop.semantics: f(*ins, **a),
        flops=lambda ins, out, a, c=vop.alu + vop.special: c * numel(out.shape),
        doc=doc, attrs=attrs or {}))


for _name in ("add", "sub", "mul", "div"):
    _elementwise(_name, 2, VECTOR_OPS[_name].doc)
for _name in ("neg", "relu", "exp", "sqrt", "softplus", "sigmoid", "silu", "gelu", "gelu_tanh"):
    _elementwise(_name, 1, VECTOR_OPS[_name].doc)


def _mask_shape(ins, attrs):
    check(ins[0].rank >= 2, f"causal_mask needs scores [..., queries, keys], got {dims(ins[0].shape)}")
    return ins[0].shape


def _mask_ref(ins, a):
    x = ins[0]
    rows = x.reshape(-1, x.shape[-1])
    out = VECTOR_OPS["causal_mask"].semantics(rows, offset=a["offset"], inner=1, seq=x.shape[-2])
    return out.reshape(x.shape)


vop = VECTOR_OPS["causal_mask"]
register(OpDef("causal_mask", "elementwise", 1, infer=_mask_shape, reference=_mask_ref,
               flops=lambda ins, out, a: (vop.alu + vop.special) * numel(out.shape),
               doc="scores [..., S, T]: keys after query position + offset -> -inf",
               attrs={"offset": 0}))

register(OpDef(
    "cast", "elementwise", 1, infer=lambda ins, a: ins[0].shape,
    reference=lambda ins, a: ins[0].astype(np.float32),
    flops=lambda ins, out, a: 0.0, result="attr",
    doc="convert to the format in attribute `format` (quantise / dequantise / re-scale)",
    attrs={"format": REQUIRED}))
