"""What a view is: a base tensor seen through steps (reshape, transpose, slice), no storage of
its own. The shape each step gives, and the rules a declared view and a block-scaled tensor
obey, in one place: the lowering builds views with `apply_step`, the verifier checks a
listing's views with `tensor_problems` before anything reads through them.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

from isa.listing import fmt_step, fmt_type
from isa.program import TensorDecl, ViewStep, scale_name, tensor_scale_name


def apply_step(shape: tuple[int, ...], step: ViewStep) -> tuple[int, ...]:
    """The shape `step` gives a tensor of `shape` (the step assumed valid: see step_problem)."""
    if step.op == "reshape":
        return tuple(step.arg)
    if step.op == "transpose":
        return tuple(shape[p] for p in step.arg)
    axis, start, stop = step.arg
    return shape[:axis] + (stop - start,) + shape[axis + 1:]


def step_problem(shape: tuple[int, ...], step: ViewStep) -> str | None:
    """Why `step` cannot apply to a tensor of `shape`, or None."""
    rank = len(shape)
    if step.op == "reshape":
        if math.prod(step.arg) != math.prod(shape):
            return (f"{fmt_step(step)} has {math.prod(step.arg):,} elements, "
                    f"the tensor {list(shape)} has {math.prod(shape):,}")
    elif step.op == "transpose":
        if sorted(step.arg) != list(range(rank)):
            return f"{fmt_step(step)} is not a permutation of the {rank} axes of {list(shape)}"
    else:
        axis, start, stop = step.arg
        if not 0 <= axis < rank:
            return f"slice of axis {axis}, which {list(shape)} does not have"
        if not 0 <= start < stop <= shape[axis]:
            return f"slice {start}:{stop} of axis {axis} is outside [0, {shape[axis]})"
    return None


def tensor_problems(tensors: dict[str, TensorDecl]) -> Iterator[tuple[str, str]]:
    """(tensor name, problem) for each declaration the others do not support: a view's base is
    a declared tensor (not a view) of its element type, its steps apply and give its declared
    shape; a block-scaled tensor has its scales `NAME.scale` (and NVFP4's `NAME.tscale`) of
    the scale type and the shape its blocks give."""
    for decl in tensors.values():
        problem = _view_problem(decl, tensors) if decl.base is not None else None
        if problem is not None:
            yield decl.name, problem
        elif decl.scaling is not None:
            yield from _scales_problems(decl, tensors)


def _view_problem(view: TensorDecl, tensors: dict[str, TensorDecl]) -> str | None:
    base = tensors.get(view.base)
    if base is None:
        return f"view {view.name} looks into '{view.base}', which is not declared"
    if base.base is not None:
        return (f"view {view.name} looks into the view '{base.name}': a view's base is a tensor "
                f"('{base.name}' is a view of '{base.base}')")
    if view.dtype != base.dtype:
        return f"view {view.name} is {view.dtype}, its base '{base.name}' is {base.dtype}"
    if view.scaling is not None and (base.scaling is None or base.scaling.dtype != view.scaling.dtype):
        return (f"view {view.name} is {view.scaling} but its base '{base.name}' is "
                f"{base.scaling or 'not block-scaled'}")
    shape = base.shape
    for step in view.steps:
        problem = step_problem(shape, step)
        if problem is not None:
            return f"view {view.name}: {problem}"
        shape = apply_step(shape, step)
    if shape != view.shape:
        return (f"view {view.name} is declared {list(view.shape)}, but its steps give "
                f"{list(shape)}")
    return None


def _scales_problems(decl: TensorDecl, tensors: dict[str, TensorDecl]) -> Iterator[tuple[str, str]]:
    """At the scaled tensor when its scales are missing, at the scales when they disagree."""
    scaling, sname = decl.scaling, scale_name(decl.name)
    scales = tensors.get(sname)
    expected = scaling.scale_shape(decl.shape)
    if scales is None:
        yield decl.name, (f"{decl.name} is {scaling} but its scales are not declared (expected "
                          f"'tensor {sname}: {fmt_type(scaling.dtype, expected)} scale')")
    elif (scales.dtype, scales.shape) != (scaling.dtype, expected):
        yield sname, (f"the scales of {decl.name} ({scaling}) are "
                      f"{fmt_type(scaling.dtype, expected)}, but '{sname}' is "
                      f"{fmt_type(scales.dtype, scales.shape)}")
    if scaling.tensor_dtype and decl.base is None:
        tname = tensor_scale_name(decl.name)
        tscale = tensors.get(tname)
        if tscale is None:
            yield decl.name, (f"{decl.name} has a per-tensor scale ({scaling}) but '{tname}' "
                              f"is not declared (expected 'tensor {tname}: "
                              f"{fmt_type(scaling.tensor_dtype, (1,))} scale')")
        elif (tscale.dtype, tscale.shape) != (scaling.tensor_dtype, (1,)):
            yield tname, (f"the per-tensor scale of {decl.name} is "
                          f"{fmt_type(scaling.tensor_dtype, (1,))}, but '{tname}' is "
                          f"{fmt_type(tscale.dtype, tscale.shape)}")
