"""Builtin composites: calls that expand to several op nodes and give several values.

- `split(x, [sizes], axis=-1)`: one `slice` per size; the sizes must add up to the dim.
- `topk(s, k, bias=none, groups=1, topk_groups=1, norm=true, scale=1.0, group_best=2)`: a
  `topk` node (the chosen experts' indices, selected on s + bias with group-limited routing,
  a group ranked by the sum of its `group_best` best scores) and a
  `topk_weights` node (their scores, normalised if `norm`, times `scale`); gives
  (weights, indices).

`hints` are the names of a destructuring assignment `a, b = split(...)`, one per result.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from compiler.errors import DscError
from compiler.frontend.opcalls import CONVERT
from compiler.frontend.signature import Param, Signature
from compiler.frontend.values import Tensor, describe, expect_int, expect_tensor
from compiler.ir.ops import dims


@dataclass(frozen=True)
class Composite:
    signature: Signature
    expand: Callable


def _hint(hints, i: int):
    return hints[i] if isinstance(hints, tuple) and i < len(hints) else None


def _split(b, frame, bound, loc, hints):
    x = expect_tensor(bound["x"].value, bound["x"].loc, "operand 'x' of 'split'")
    sizes = CONVERT["ints"](bound["sizes"], "'sizes' of 'split'")
    axis_arg = bound.get("axis")
    axis = expect_int(axis_arg.value, axis_arg.loc, "'axis' of 'split'") if axis_arg else -1
    rank = len(x.shape)
    if not -rank <= axis < rank:
        raise DscError(f"split axis {axis} is out of range for {dims(x.shape)}",
                       axis_arg.loc if axis_arg else loc, f"an axis in {-rank}..{rank - 1}")
    dim = x.shape[axis]
    if any(s <= 0 for s in sizes) or sum(sizes) != dim:
        raise DscError(f"shape mismatch in 'split': sizes {list(sizes)} add up to "
                       f"{sum(sizes)}, but dim {axis % rank} of {dims(x.shape)} is {dim}",
                       bound["sizes"].loc, f"positive sizes that add up to {dim}")
    pieces, start = [], 0
    for i, size in enumerate(sizes):
        attrs = {"axis": axis, "start": start, "stop": start + size}
        pieces.append(b.emit(frame, "slice", [x], attrs, loc, _hint(hints, i), SPLIT.text()))
        start += size
    return tuple(pieces)


def _topk(b, frame, bound, loc, hints):
    s = expect_tensor(bound["s"].value, bound["s"].loc, "operand 's' of 'topk'")
    inputs = [s]
    bias = bound.get("bias")
    if bias is not None and bias.value is not None:
        inputs.append(expect_tensor(bias.value, bias.loc, "'bias' of 'topk'"))
    select = {k: CONVERT["int"](bound[k], f"'{k}' of 'topk'")
              for k in ("k", "groups", "topk_groups", "group_best") if k in bound}
    weigh = {"norm": CONVERT["bool"](bound["norm"], "'norm' of 'topk'") if "norm" in bound
             else True,
             "scale": CONVERT["float"](bound["scale"], "'scale' of 'topk'") if "scale" in bound
             else 1.0}
    idx = b.emit(frame, "topk", inputs, select, loc, _hint(hints, 1), TOPK.text())
    weights = b.emit(frame, "topk_weights", [s, idx], weigh, loc, _hint(hints, 0), TOPK.text())
    return weights, idx


SPLIT = Signature("composite", "split", (Param("x"), Param("sizes"), Param("axis", -1)))
TOPK = Signature("composite", "topk", (
    Param("s"), Param("k"), Param("bias", None), Param("groups", 1), Param("topk_groups", 1),
    Param("norm", True), Param("scale", 1.0), Param("group_best", 2)))

COMPOSITES: dict[str, Composite] = {
    "split": Composite(SPLIT, _split),
    "topk": Composite(TOPK, _topk),
}


def call_composite(b, frame, name: str, args, kwargs, loc, hint):
    composite = COMPOSITES[name]
    bound = composite.signature.bind(args, kwargs, loc)
    return composite.expand(b, frame, bound, loc, hint)
