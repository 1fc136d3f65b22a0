"""The IR verifier: checks that a Graph is well formed, and says where it is not.

Run between passes in tests (explicitly: nothing switches it on behind your back). It raises
the first problem as a DscError located at the offending node's `.ds` position, so a pass bug
or a bad model reads like any other user error. One walk over the nodes in topological order,
each node checked against its OpDef: linear in the graph's size.

Checked, in order:
  structure  every input is a node of the graph, no cycles, edges agree with node inputs
  per node   unique name (the text form refers to nodes by name), known op, arity,
             attributes (names from the OpDef, value kinds from its defaults), positive
             dims, shape = OpDef.infer(...), fixed result formats
  outputs    every output is a node
"""
from __future__ import annotations

import numbers

from compiler.errors import DscError
from compiler.ir.graph import Graph, Node
from compiler.ir.ops import OPS, OpDef, ShapeError, dims
from isa.formats import Format

# Result rules that let a pass choose the format; any other rule fixes it (a dtype, "attr").
_FREE_FORMAT_RULES = ("default", "input", "declared")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


# What an attribute value must be, by the type of the OpDef's default for it. A default of
# None says nothing about the value, so those attributes are checked by `infer` alone.
_ATTR_KINDS = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", _is_int),
    float: ("a number", _is_number),
    str: ("a string", lambda v: isinstance(v, str)),
    tuple: ("a list", lambda v: isinstance(v, tuple)),
}


def verify(g: Graph) -> None:
    """Raise a DscError for the first problem found; return None for a well-formed graph."""
    _check_structure(g)
    names: dict[str, Node] = {}
    for node in g.nodes():
        _check_name(node, names)
        _check_node(g, node)
    _check_outputs(g)


def _fail(node: Node, message: str, expected: str | None = None) -> DscError:
    return DscError(f"%{node.name} = {node.op}(...): {message}", node.loc, expected)


# ---------------------------------------------------------------------------- whole graph

def _check_structure(g: Graph) -> None:
    nodes = [g.node(i) for i in g.ids()]
    for node in nodes:
        missing = [i for i in node.inputs if i not in g]
        if missing:
            raise _fail(node, f"reads node #{missing[0]}, which is not in the graph")
        if any(node.id not in g.user_ids(i) for i in node.inputs):
            raise _fail(node, "graph edges disagree with the node's inputs")
    for node in nodes:                  # and no user recorded that does not read the node
        stray = [u for u in g.user_ids(node.id) if node.id not in g.node(u).inputs]
        if stray:
            raise _fail(g.node(stray[0]), "graph edges disagree with the node's inputs")
    if len(list(g.nodes())) < len(g):
        cycle = _a_cycle(g)
        path = " -> ".join(f"%{n.name}" for n in cycle + cycle[:1])
        raise _fail(cycle[0], f"is on a cycle: {path}")


def _a_cycle(g: Graph) -> list[Node]:
    """Nodes of one cycle, in data order: walk back through inputs off the topological order
    (every such node reads one) until a node repeats."""
    ordered = {n.id for n in g.nodes()}
    node = next(g.node(i) for i in g.ids() if i not in ordered)
    path: list[Node] = []
    while node not in path:
        path.append(node)
        node = g.node(next(i for i in node.inputs if i not in ordered))
    cycle = path[path.index(node):]
    return cycle[::-1]


def _check_name(node: Node, seen: dict[str, Node]) -> None:
    first = seen.setdefault(node.name, node)
    if first is not node:
        where = f" at {first.loc}" if first.loc else ""
        raise _fail(node, f"the name %{node.name} is already used by node #{first.id}{where}")


def _check_outputs(g: Graph) -> None:
    for i, nid in enumerate(g.outputs):
        if nid not in g:
            raise DscError(f"output {i} of model '{g.model}' is node #{nid}, "
                           "which is not in the graph")


# ------------------------------------------------------------------------------- one node

def _check_node(g: Graph, node: Node) -> None:
    op = OPS.get(node.op)
    if op is None:
        raise _fail(node, f"unknown op '{node.op}'", ", ".join(sorted(OPS)))
    _check_arity(node, op)
    attrs = _check_attrs(node, op)
    _check_dims(node)
    ins = [g.node(i).type for i in node.inputs]
    _check_shape(node, op, ins, attrs)
    _check_format(node, op, ins, attrs)


def _check_arity(node: Node, op: OpDef) -> None:
    n = len(node.inputs)
    if op.arity is None and n == 0:
        raise _fail(node, "takes one or more operands, got none")
    if op.arity is not None and n != op.arity:
        raise _fail(node, f"takes {op.arity} operand{'s' * (op.arity != 1)}, got {n}")


def _check_attrs(node: Node, op: OpDef) -> dict:
    given = node.attr_dict
    try:
        attrs = op.full_attrs(given)
    except KeyError as e:
        raise _fail(node, e.args[0]) from None
    for key, value in given.items():
        kind = _ATTR_KINDS.get(type(op.attrs[key]))
        if kind and not kind[1](value):
            raise _fail(node, f"attribute '{key}' must be {kind[0]}, got {value!r}")
    return attrs


def _check_dims(node: Node) -> None:
    shape = node.type.shape
    if not all(_is_int(d) and d > 0 for d in shape):
        raise _fail(node, f"result shape {dims(shape)} has a dimension that is not positive")


def _check_shape(node: Node, op: OpDef, ins, attrs: dict) -> None:
    if op.result == "declared":
        return      # inputs, weights and caches are what their declaration says
    try:
        shape = tuple(op.infer(ins, attrs))
    except ShapeError as e:
        raise _fail(node, str(e)) from None
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError) as e:
        # A missing or ill-typed attribute that the OpDef's defaults could not catch: the
        # registry marks required attributes with a default of None.
        unset = [k for k, v in sorted(attrs.items()) if v is None]
        if unset:
            raise _fail(node, f"needs attribute '{unset[0]}' to infer its shape") from None
        raise _fail(node, f"cannot infer the result shape from attributes "
                          f"{_show_attrs(attrs)} ({type(e).__name__}: {e})") from None
    if shape != node.type.shape:
        raise _fail(node, f"result shape is {dims(node.type.shape)} but the operands give "
                          f"{dims(shape)}")


def _check_format(node: Node, op: OpDef, ins, attrs: dict) -> None:
    if op.result in _FREE_FORMAT_RULES:
        return
    expected = op.result_format(ins, attrs, default=None)
    if not isinstance(expected, Format):
        raise _fail(node, f"attribute 'format' must be a format, got {expected!r}",
                    'format("DTYPE [scaled(SCALE_DTYPE, ROWSxCOLS)]")')
    if node.type.format != expected:
        raise _fail(node, f"result format must be {expected}, got {node.type.format}")


def _show_attrs(attrs: dict) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in sorted(attrs.items())) + "}"
