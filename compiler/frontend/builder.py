"""Build the IR graph of a model: load files, read overrides and policy, run the model body.

`Builder` holds what the whole build shares: the graph, the namer, the policy, the `--set`
overrides and the stack of active block calls. `emit` is the one place a computed node is
made: it asks the op registry for the attributes, the shape (a ShapeError becomes a DscError
at the call) and the result format.
"""
from __future__ import annotations

from compiler.errors import DscError, Loc
from compiler.frontend import ast, opcalls, statements
from compiler.frontend.arith import check_broadcast
from compiler.frontend.composites import COMPOSITES
from compiler.frontend.expr import evaluate_single
from compiler.frontend.loader import BlockRef, Loader, Unit
from compiler.frontend.overrides import Overrides, read_overrides
from compiler.frontend.deploy import build_deploy, deploy_locations
from compiler.frontend.policy import build_policy
from compiler.frontend.scope import Frame, Namer, join
from compiler.frontend.values import Tensor
from compiler.ir.graph import Graph, TensorType
from compiler.ir.ops import OPS, ShapeError
from isa.formats import Format

# Failures of an op's shape rule on arguments it did not foresee; reported at the call.
INFER_FAILURES = (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, AttributeError)


class Builder:
    def __init__(self, model: ast.ModelDef, overrides: Overrides, policy: dict[str, Format],
                 windows: bool = True):
        self.graph = Graph(model.name, policy=policy)
        self.windows = windows                    # model-level repeats built as windows
        self.policy = policy
        self.overrides = overrides
        self.namer = Namer()
        self.active: list[BlockRef] = []          # block calls in progress, outermost first
        self.top_defined: set[str] = set()        # model-level names already defined once
        self.unbuilt_ops = 0                      # operations of iterations windows left out

    def frame(self, unit: Unit, scope: str, block: str | None = None) -> Frame:
        self.constants(unit)
        return Frame(unit, scope, block)

    def constants(self, unit: Unit) -> dict:
        """Evaluate a file's constants once, in order, each seeing the ones before it."""
        if unit.consts_ready:
            return unit.consts
        unit.consts_ready = True
        frame = Frame(unit, "", constant=True)
        for item in unit.module.items:
            if not isinstance(item, ast.ConstDef):
                continue
            if item.name in unit.consts:
                raise DscError(f"duplicate declaration: constant '{item.name}' is defined twice",
                               item.loc, "one definition per constant")
            unit.consts[item.name] = evaluate_single(self, frame, item.value,
                                                     f"constant '{item.name}'")
        return unit.consts

    def emit(self, frame: Frame, op: str, inputs: list[Tensor], attrs: dict, loc: Loc,
             hint: str | None = None, signature: str | None = None) -> Tensor:
        """Add a computed node named `scope.hint` (or `scope.op`), checked by the registry."""
        if frame.constant:
            raise DscError("a file-level constant must be a number, a string or a list", loc,
                           "tensor computations inside a model or a block")
        opdef = OPS[op]
        expected = f"{signature or opcalls.signature(op).text()}: {opdef.doc}"
        try:
            full = opdef.full_attrs(attrs)
        except KeyError as err:
            raise DscError(str(err.args[0]), loc, expected) from None
        types = [t.type for t in inputs]
        try:
            shape = tuple(opdef.infer(types, full))
        except ShapeError as err:
            raise DscError(f"shape mismatch in '{op}': {err}", loc, expected) from None
        except INFER_FAILURES as err:
            raise DscError(f"invalid arguments to '{op}': {err}", loc, expected) from None
        check_broadcast(op, [t.shape for t in types], shape, loc)
        fmt = opdef.result_format(types, full, self.policy["default"])
        name = self.namer.unique(join(frame.scope, hint if isinstance(hint, str) else op))
        node = self.graph.add(op, [t.id for t in inputs], TensorType(shape, fmt), name, full, loc)
        return Tensor(node.id, node.type)

    def source(self, frame: Frame, kind: str, name: str, type_: TensorType, loc: Loc) -> Tensor:
        node = self.graph.add(kind, (), type_, self.namer.unique(join(frame.scope, name)),
                              {}, loc)
        return Tensor(node.id, node.type)

    def rename(self, tensor: Tensor, name: str, type_: TensorType | None = None) -> Tensor:
        node = self.graph.node(tensor.id)
        changes = {"type": type_} if type_ is not None else {}
        if node.name != name:
            changes["name"] = self.namer.unique(name)
            built_by = self.graph.calls_to(node.name)[:1]   # a block's result keeps its call
            if built_by:
                self.graph.where[Graph.call_key(changes["name"])] = built_by[0][1]
        if changes:
            node = self.graph.replace_node(node, **changes)
        return Tensor(node.id, node.type)


def build(path: str, overrides: dict[str, str] | None = None, unroll: bool = False) -> Graph:
    try:
        return _build(path, overrides, unroll)
    except RecursionError:
        raise DscError(f"'{path}' is nested too deeply to build",
                       expected="fewer nested expressions or block calls") from None


def _build(path: str, overrides: dict[str, str] | None, unroll: bool) -> Graph:
    loader = Loader(reserved=set(OPS) | set(COMPOSITES))
    main = loader.load_main(path)
    model = _the_model(main)
    given = read_overrides(model, overrides)
    builder = Builder(model, given, build_policy(model, given.roles), windows=not unroll)
    builder.graph.deploy = build_deploy(model)
    builder.graph.where.update(deploy_locations(model))
    statements.run(builder, builder.frame(main, ""), model.body)
    if not builder.graph.outputs:
        raise DscError(f"model '{model.name}' has no outputs", model.loc,
                       "at least one 'output NAME = expr'")
    return builder.graph


def _the_model(unit: Unit) -> ast.ModelDef:
    models = unit.models()
    if not models:
        serve = next((i for i in unit.module.items if isinstance(i, ast.ServeDef)), None)
        if serve is not None:
            raise DscError(f"'{unit.file}' describes a service (serve {serve.name}), not a "
                           "model", serve.loc, f"dsc serve {unit.file} --target T")
        raise DscError(f"no model in '{unit.file}'", Loc(unit.file, 1, 1),
                       "one 'model NAME { ... }' in the file given")
    if len(models) > 1:
        raise DscError(f"a second model '{models[1].name}' in one file (the first is "
                       f"'{models[0].name}' at {models[0].loc})", models[1].loc,
                       "exactly one model per file")
    return models[0]
