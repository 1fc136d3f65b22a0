"""Which off-chip tensor holds each IR value.

Sources and outputs become tensors of their own kind; other values become temporaries named
after their node. View ops (reshape, transpose, slice) and lowering-made views become view
tensors: a base tensor plus steps, with no storage of their own. An op writing in place (a
`cache_write`) has its target's tensor: the cache itself. A block-scaled tensor `X` has its
scales in a companion tensor `X.scale`.
"""
from __future__ import annotations

from compiler.ir.graph import Graph, Node
from compiler.ir.ops import OPS
from isa.formats import Format
from isa.program import TensorDecl, ViewStep, scale_name, tensor_scale_name
from isa.views import apply_step

_KIND_OF_SOURCE = {"input": "input", "weight": "weight", "cache": "cache"}


class TensorMap:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.decls: dict[str, TensorDecl] = {}
        self._of_node: dict[int, str] = {}
        self.routes: dict[str, tuple[TensorDecl, TensorDecl]] = {}   # idx -> (slots, rows)
        outputs = set(graph.outputs)
        for node in graph.nodes():
            if node.op in _KIND_OF_SOURCE:
                self._declare(node.name, node.type.format, node.type.shape, _KIND_OF_SOURCE[node.op])
                self._of_node[node.id] = node.name
            elif node.id in outputs:
                self._declare(node.name, node.type.format, node.type.shape, "output")
                self._of_node[node.id] = node.name

    def of(self, node: Node) -> TensorDecl:
        """The tensor holding `node`'s value, declaring a temporary or view on first use."""
        if node.id not in self._of_node:
            self._of_node[node.id] = self._place(node)
        return self.decls[self._of_node[node.id]]

    def _place(self, node: Node) -> str:
        category = _category(node)
        if category == "view":
            src = self.of(self.graph.node(node.inputs[0]))
            step = _view_step(node, src.shape)
            return self.view(src, (step,), node.name, name=node.name).name
        into = OPS[node.op].writes_into
        if into:                                   # written in place: the target's storage
            return self.of(self.graph.node(node.inputs[into.target])).name
        return self._declare(node.name, node.type.format, node.type.shape, "temp").name

    def _declare(self, name: str, fmt: Format, shape, kind: str) -> TensorDecl:
        decl = TensorDecl(name, fmt.dtype, tuple(shape), kind, fmt.scaling)
        self.decls[name] = decl
        if fmt.scaling is not None:
            sname = scale_name(name)
            self.decls[sname] = TensorDecl(sname, fmt.scaling.dtype,
                                           fmt.scaling.scale_shape(tuple(shape)), "scale")
            if fmt.scaling.tensor_dtype:
                tname = tensor_scale_name(name)
                self.decls[tname] = TensorDecl(tname, fmt.scaling.tensor_dtype, (1,), "scale")
        return decl

    def view(self, src: TensorDecl, steps: tuple[ViewStep, ...], suffix: str,
             name: str | None = None) -> TensorDecl:
        """A view of `src` (itself possibly a view); identity views return `src`."""
        shape = src.shape
        kept = []
        for step in steps:
            new_shape = apply_step(shape, step)
            if not (step.op != "slice" and new_shape == shape and _identity(step)):
                kept.append(step)
            shape = new_shape
        if not kept:
            return src
        base = src.base or src.name
        name = name or f"{src.name}.{suffix}"
        if name in self.decls:
            return self.decls[name]
        src_scale = self.decls.get(scale_name(src.name))
        scaled = _scale_steps(src.shape, src.scaling, src_scale, kept) if src_scale else None
        scale_steps, scaling = scaled or (None, None)
        decl = TensorDecl(name, src.dtype, shape, "view", scaling, base, src.steps + tuple(kept))
        self.decls[name] = decl
        if scale_steps is not None:
            scale_shape = src_scale.shape
            for step in scale_steps:
                scale_shape = apply_step(scale_shape, step)
            self.decls[scale_name(name)] = TensorDecl(
                scale_name(name), src_scale.dtype, scale_shape, "view", None,
                src_scale.base or src_scale.name, src_scale.steps + scale_steps)
        return decl

    def scratch(self, name: str, dtype: str, shape) -> TensorDecl:
        """A temporary the lowering needs that no IR value holds (e.g. routing tables)."""
        if name not in self.decls:
            self.decls[name] = TensorDecl(name, dtype, tuple(shape), "temp")
        return self.decls[name]

    def tensor_scale_of(self, decl: TensorDecl) -> TensorDecl | None:
        """The per-tensor scale of a tensor or of the base of a view (NVFP4)."""
        return self.decls.get(tensor_scale_name(decl.base or decl.name))

    def scales_of(self, decl: TensorDecl) -> TensorDecl | None:
        return self.decls.get(scale_name(decl.name))

    def tensors(self) -> tuple[TensorDecl, ...]:
        return tuple(self.decls.values())


def _category(node: Node) -> str:
    return OPS[node.op].category


def _view_step(node: Node, shape) -> ViewStep:
    attrs = node.attr_dict
    if node.op == "reshape":
        return ViewStep("reshape", tuple(node.type.shape))
    if node.op == "transpose":
        rank = len(shape)
        perm = attrs.get("perm") or tuple(range(rank - 2)) + (rank - 1, rank - 2)
        return ViewStep("transpose", tuple(perm))
    axis = attrs["axis"] % len(shape)
    return ViewStep("slice", (axis, attrs["start"], attrs["stop"]))


def _identity(step: ViewStep) -> bool:
    return step.op == "reshape" or tuple(step.arg) == tuple(range(len(step.arg)))


def _scale_steps(shape, scaling, scale: TensorDecl, steps):
    """The same view on the scale tensor, and the view's scaling, when the view keeps whole
    scale blocks intact; None otherwise.

    A view may regroup, permute or slice dims the blocks do not span: never the last dim, and
    not the second-to-last either when blocks span several rows. Swapping the last two dims
    turns the blocks with them (a [T, D] key cache in 1x128 blocks read as [D, T] has 128x1
    blocks), and the scale tensor turns the same way.
    """
    out, scale_shape = [], scale.shape
    for step in steps:
        new_shape = apply_step(shape, step)
        if _swaps_last_two(step):
            scaling, scale_step = scaling.transposed(), step
        else:
            fixed = 1 if scaling.block[0] == 1 else 2
            if len(shape) < fixed or len(new_shape) < fixed or \
                    shape[-fixed:] != new_shape[-fixed:]:
                return None
            if step.op == "transpose":
                rank = len(step.arg)
                if tuple(step.arg[rank - fixed:]) != tuple(range(rank - fixed, rank)):
                    return None
                scale_step = step
            elif step.op == "slice":
                if step.arg[0] >= len(shape) - fixed:
                    return None
                scale_step = step
            else:
                scale_step = ViewStep("reshape", new_shape[:-fixed] + scale_shape[-fixed:])
        out.append(scale_step)
        scale_shape = apply_step(scale_shape, scale_step)
        shape = new_shape
    return tuple(out), scaling


def _swaps_last_two(step: ViewStep) -> bool:
    rank = len(step.arg)
    return step.op == "transpose" and rank >= 2 and \
        tuple(step.arg[rank - 2:]) == (rank - 1, rank - 2)
