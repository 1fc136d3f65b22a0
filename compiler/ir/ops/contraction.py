"""Contractions: `matmul` (the @ operator) and two-operand `einsum`.

Both are described by an einsum spec (`contraction_spec`), so FLOPs, lowering and tiling see
one kind of op: indices in A, B and the output are batch dims, in A and the output M dims, in B
and the output N dims, in A and B only the reduction (K) dims.
"""
import math
import string
from dataclasses import dataclass
from functools import lru_cache

from isa.lazy_numpy import np

from compiler.ir.ops import REQUIRED, OpDef, check, dims, register


def matmul_spec(a_rank: int, b_rank: int, a_shape, b_shape) -> str:
    """Einsum spec of numpy-style a @ b, where b's leading dims must match a's or be absent."""
    check(a_rank >= 2 and b_rank >= 2, f"@ needs operands of rank >= 2, got "
          f"{dims(a_shape)} @ {dims(b_shape)}")
    letters = iter(string.ascii_lowercase)
    a_lead = [next(letters) for _ in range(a_rank - 2)]
    b_extra = b_rank - 2 - len(a_lead)
    check(b_extra <= 0, f"b has more leading dims than a in {dims(a_shape)} @ {dims(b_shape)}")
    b_lead = a_lead[len(a_lead) - (b_rank - 2):] if b_rank > 2 else []
    m, k, n = next(letters), next(letters), next(letters)
    return f"{''.join(a_lead)}{m}{k},{''.join(b_lead)}{k}{n}->{''.join(a_lead)}{m}{n}"


@dataclass(frozen=True)
class Contraction:
    """Index roles of a two-operand contraction and the size of every index."""
    spec: str
    sizes: dict
    batch: str
    m: str
    n: str
    k: str

    def size(self, letters: str) -> int:
        return math.prod(self.sizes[c] for c in letters)

    @property
    def flops(self) -> int:
        return 2 * math.prod(self.sizes.values())


def contraction(spec: str, a_shape, b_shape) -> Contraction:
    return _contraction(spec, tuple(a_shape), tuple(b_shape))


@lru_cache(maxsize=4096)
def _contraction(spec: str, a_shape, b_shape) -> Contraction:
    if spec.count("->") != 1 or spec.split("->")[0].count(",") != 1:
        raise ValueError(f"spec '{spec}' is not of the form 'A,B->C' (each operand's indices, "
                         "then the output's)")
    lhs, out = spec.split("->")
    a_idx, b_idx = lhs.split(",")
    check(len(a_idx) == len(a_shape), f"einsum operand 1 has rank {len(a_shape)} but "
          f"'{a_idx}' names {len(a_idx)} indices")
    check(len(b_idx) == len(b_shape), f"einsum operand 2 has rank {len(b_shape)} but "
          f"'{b_idx}' names {len(b_idx)} indices")
    sizes: dict[str, int] = {}
    for idx, shape in ((a_idx, a_shape), (b_idx, b_shape)):
        for c, d in zip(idx, shape):
            check(sizes.setdefault(c, d) == d,
                  f"index '{c}' is {sizes[c]} in one operand and {d} in the other "
                  f"({dims(a_shape)}, {dims(b_shape)})")
    for c in out:
        check(c in sizes, f"output index '{c}' does not appear in the operands")
    check(len(set(out)) == len(out), f"output indices '{out}' repeat")
    order = lambda cs: "".join(sorted(set(cs), key=(a_idx + b_idx).index))
    batch = order(c for c in out if c in a_idx and c in b_idx)
    m = order(c for c in out if c in a_idx and c not in b_idx)
    n = order(c for c in out if c in b_idx and c not in a_idx)
    k = order(c for c in a_idx + b_idx if c in a_idx and c in b_idx and c not in out)
    extra = [c for c in sizes if c not in out and not (c in a_idx and c in b_idx)]
    check(not extra, f"index '{extra[0] if extra else ''}' is summed over one operand only; "
          "reduce it with sum() first")
    return Contraction(spec, sizes, batch, m, n, k)


def contraction_of(ins, attrs) -> Contraction:
    spec = attrs.get("spec") or matmul_spec(ins[0].rank, ins[1].rank, ins[0].shape, ins[1].shape)
    return contraction(spec, ins[0].shape, ins[1].shape)


def _infer(ins, attrs):
    c = contraction_of(ins, attrs)
    return tuple(c.sizes[i] for i in c.spec.split("->")[1])


def _check_matmul(ins, attrs):
    a, b = ins[0].shape, ins[1].shape
    check(len(a) >= 2 and len(b) >= 2, f"@ needs operands of rank >= 2, got {dims(a)} @ {dims(b)}")
    check(a[-1] == b[-2], f"inner dimensions differ: {dims(a)} @ {dims(b)} "
          f"({a[-1]} != {b[-2]})")
    lead = min(len(a), len(b)) - 2
    check(len(b) - 2 <= len(a) - 2 and a[len(a) - 2 - lead:-2] == b[len(b) - 2 - lead:-2],
          f"batch dimensions of {dims(a)} @ {dims(b)} differ (b's leading dims must equal a's)")
    return _infer(ins, attrs)


def _reference(ins, attrs):
    c = contraction_of([_Shape(x.shape) for x in ins], attrs)
    return np.einsum(c.spec, ins[0].astype(np.float32), ins[1].astype(np.float32),
                     dtype=np.float32)


@dataclass(frozen=True)
class _Shape:
    shape: tuple

    @property
    def rank(self):
        return len(self.shape)


register(OpDef("matmul", "contraction", 2, infer=_check_matmul, reference=_reference,
               flops=lambda ins, out, a: contraction_of(ins, a).flops,
               doc="a @ b, batched over leading dims"))
register(OpDef("einsum", "contraction", 2, infer=_infer, reference=_reference,
               flops=lambda ins, out, a: contraction_of(ins, a).flops,
               doc="two-operand einsum given by attribute `spec`", attrs={"spec": REQUIRED}))
