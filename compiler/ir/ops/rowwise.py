"""Row-wise ops: each output row depends on one whole input row (last dim), so a tile must hold
full rows. Cost and semantics are the vector-op catalogue's."""
from compiler.ir.ops import OpDef, check, dims, numel, register
from isa.vector_ops import VECTOR_OPS


def _flops(name):
    vop = VECTOR_OPS[name]
    return lambda ins, out, a: (vop.alu + vop.special) * numel(out.shape)


def _softmax_shape(ins, attrs):
    check(attrs["axis"] in (-1, ins[0].rank - 1), "softmax runs over the last axis only")
    return ins[0].shape


def _rmsnorm_shape(ins, attrs):
    x, w = ins
    check(w.shape == (x.shape[-1],), f"rmsnorm weight must be [{x.shape[-1]}] for input "
          f"{dims(x.shape)}, got {dims(w.shape)}")
    return x.shape


def _layernorm_shape(ins, attrs):
    x, w, b = ins
    for name, t in (("weight", w), ("bias", b)):
        check(t.shape == (x.shape[-1],), f"layernorm {name} must be [{x.shape[-1]}] for input "
              f"{dims(x.shape)}, got {dims(t.shape)}")
    return x.shape


def _rope_shape(ins, attrs):
    x = ins[0]
    check(x.shape[-1] % 2 == 0, f"rope needs an even last dim, got {dims(x.shape)}")
    check(-x.rank <= attrs["axis"] < x.rank - 1,
          f"rope position axis {attrs['axis']} must be a dim before the last of {dims(x.shape)}")
    return x.shape


register(OpDef("softmax", "rowwise", 1, infer=_softmax_shape,
               reference=lambda ins, a: VECTOR_OPS["softmax"].semantics(ins[0]),
               flops=_flops("softmax"), doc=VECTOR_OPS["softmax"].doc, attrs={"axis": -1}))
register(OpDef("rmsnorm", "rowwise", 2, infer=_rmsnorm_shape,
               reference=lambda ins, a: VECTOR_OPS["rmsnorm"].semantics(*ins, eps=a["eps"]),
               flops=_flops("rmsnorm"), doc=VECTOR_OPS["rmsnorm"].doc, attrs={"eps": 1e-6}))
register(OpDef("layernorm", "rowwise", 3, infer=_layernorm_shape,
               reference=lambda ins, a: VECTOR_OPS["layernorm"].semantics(*ins, eps=a["eps"]),
               flops=_flops("layernorm"), doc=VECTOR_OPS["layernorm"].doc, attrs={"eps": 1e-5}))


def rows_layout(shape, axis: int) -> dict:
    """How rows of `shape` flattened to [rows, last] map to positions along `axis`."""
    axis %= len(shape)
    return {"inner": numel(shape[axis + 1:-1]), "seq": shape[axis]}


def _rope_ref(ins, a):
    x = ins[0]
    rows = x.reshape(-1, x.shape[-1])
    out = VECTOR_OPS["rope"].semantics(rows, offset=a["offset"], theta=a["theta"],
                                       **rows_layout(x.shape, a["axis"]))
    return out.reshape(x.shape)


register(OpDef("rope", "rowwise", 1, infer=_rope_shape, reference=_rope_ref,
               flops=_flops("rope"), doc=VECTOR_OPS["rope"].doc + "; positions start at offset",
               attrs={"offset": 0, "theta": 10000.0, "axis": 1}))
