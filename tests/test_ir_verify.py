"""The IR verifier: valid graphs pass; each kind of problem is caught with its message and at
the node's source position."""
from __future__ import annotations

import time

import pytest

from compiler.errors import DscError, Loc
from compiler.ir.graph import Graph
from compiler.ir.text import parse_graph
from compiler.ir.verify import verify
from isa.formats import parse_format
from test_ir_text import EXAMPLES, T, every_op_graph, gemm_graph, load_example


def test_valid_graphs_pass():
    verify(every_op_graph())
    verify(gemm_graph())
    verify(Graph("empty"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_pass(path):
    verify(load_example(path))


def test_a_big_graph_verifies_in_linear_time():
    g = Graph("deep")
    x = g.add("input", [], T([4, 8]), "x")
    w = g.add("weight", [], T([8, 8]), "w")
    for i in range(3000):
        x = g.add("matmul", [x.id, w.id], T([4, 8]), f"layer.{i}")
    start = time.perf_counter()
    verify(g)
    assert time.perf_counter() - start < 5      # quadratic would take minutes


# ------------------------------------------------------------------------------ error classes

HEAD = """model m
%x = input() : bf16[4,8] @ "m.ds":1:1
%w = weight() : bf16[8,16] @ "m.ds":2:1
%s = input() : fp32[4,16] @ "m.ds":3:1
"""


@pytest.mark.parametrize("line, message", [
    ('%y = frobnicate(%x) : bf16[4,8] @ "m.ds":9:5', "unknown op 'frobnicate'"),
    ('%y = neg(%x, %x) : bf16[4,8] @ "m.ds":9:5', "takes 1 operand, got 2"),
    ('%y = matmul(%x) : bf16[4,16] @ "m.ds":9:5', "takes 2 operands, got 1"),
    ('%y = concat() : bf16[4,8] @ "m.ds":9:5', "takes one or more operands, got none"),
    ('%y = neg(%x) {bogus=1} : bf16[4,8] @ "m.ds":9:5',
     "'neg' has no attribute 'bogus' (attributes: none)"),
    ('%y = softmax(%x) {axes=1} : bf16[4,8] @ "m.ds":9:5',
     "'softmax' has no attribute 'axes' (attributes: axis)"),
    ('%y = rmsnorm(%x, %x) {eps="small"} : bf16[4,8] @ "m.ds":9:5',
     "attribute 'eps' must be a number, got 'small'"),
    ('%y = sum(%x) {keepdims=1} : bf16[4] @ "m.ds":9:5',
     "attribute 'keepdims' must be true or false, got 1"),
    ('%y = softmax(%x) {axis=1.0} : bf16[4,8] @ "m.ds":9:5',
     "attribute 'axis' must be an integer, got 1.0"),
    ('%y = topk(%s) : i32[4,2] @ "m.ds":9:5', "'topk' needs attribute 'k'"),
    ('%y = topk(%s) {k="2"} : i32[4,2] @ "m.ds":9:5', "cannot infer the result shape from "
     "attributes {group_best=2, groups=1, k='2', topk_groups=1} (TypeError: '<' not "
     "supported between instances of 'int' and 'str')"),
    ('%y = matmul(%x, %x) : bf16[4,8] @ "m.ds":9:5',
     "inner dimensions differ: [4, 8] @ [4, 8] (8 != 4)"),
    ('%y = matmul(%x, %w) : bf16[4,8] @ "m.ds":9:5',
     "result shape is [4, 8] but the operands give [4, 16]"),
    ('%y = add(%x, %s) : bf16[4,16] @ "m.ds":9:5', "cannot broadcast [4, 8] with [4, 16]"),
    ('%y = neg(%x) : bf16[4,0] @ "m.ds":9:5',
     "result shape [4, 0] has a dimension that is not positive"),
    ('%y = input() : bf16[-1] @ "m.ds":9:5',
     "result shape [-1] has a dimension that is not positive"),
    ('%y = topk(%s) {k=2} : bf16[4,2] @ "m.ds":9:5', "result format must be i32, got bf16"),
    ('%y = const() {value=1.0} : bf16[] @ "m.ds":9:5', "result format must be fp32, got bf16"),
    ('%y = cast(%x) {format=format("fp8_e4m3")} : bf16[4,8] @ "m.ds":9:5',
     "result format must be fp8_e4m3, got bf16"),
    ('%y = cast(%x) : bf16[4,8] @ "m.ds":9:5', "'cast' needs attribute 'format'"),
])
def test_node_errors_are_located_at_the_node(line, message):
    g = parse_graph(HEAD + line + "\n")
    with pytest.raises(DscError) as info:
        verify(g)
    err = info.value
    assert err.loc == Loc("m.ds", 9, 5)
    op = line.split("=", 1)[1].split("(")[0].strip()
    assert err.message == f"%y = {op}(...): {message}"


def test_unknown_op_lists_the_known_ones():
    g = parse_graph(HEAD + "%y = nope(%x) : bf16[4,8]\n")
    with pytest.raises(DscError) as info:
        verify(g)
    assert "matmul" in info.value.expected.split(", ")


def test_duplicate_names():
    g = Graph("m")
    g.add("input", [], T([2]), "x", loc=Loc("m.ds", 1, 1))
    g.add("input", [], T([2]), "x", loc=Loc("m.ds", 2, 7))
    with pytest.raises(DscError) as info:
        verify(g)
    assert info.value.loc == Loc("m.ds", 2, 7)
    assert info.value.message == ("%x = input(...): the name %x is already used by node #0 "
                                  "at m.ds:1:1")


def test_input_that_is_not_a_node():
    g = Graph("m")
    x = g.add("input", [], T([2]), "x")
    g.add("neg", [x.id + 5], T([2]), "y", loc=Loc("m.ds", 3, 4))
    with pytest.raises(DscError) as info:
        verify(g)
    assert info.value.loc == Loc("m.ds", 3, 4)
    assert info.value.message == "%y = neg(...): reads node #5, which is not in the graph"


def test_cycle():
    g = Graph("m")
    x = g.add("input", [], T([2]), "x")
    a = g.add("neg", [x.id], T([2]), "a", loc=Loc("m.ds", 2, 1))
    b = g.add("neg", [a.id], T([2]), "b", loc=Loc("m.ds", 3, 1))
    g.replace_node(a, inputs=(b.id,))
    with pytest.raises(DscError, match=r"is on a cycle: %(a|b) -> %(a|b) -> %(a|b)"):
        verify(g)


def test_edges_that_disagree_with_inputs():
    g = Graph("m")
    x = g.add("input", [], T([2]), "x")
    y = g.add("neg", [x.id], T([2]), "y", loc=Loc("m.ds", 2, 1))
    g.user_ids(x.id).discard(y.id)        # the users index forgets y
    with pytest.raises(DscError, match="graph edges disagree with the node's inputs"):
        verify(g)


def test_output_that_is_not_a_node():
    g = gemm_graph()
    g.outputs.append(42)
    with pytest.raises(DscError) as info:
        verify(g)
    assert info.value.loc is None
    assert info.value.message == "output 1 of model 'gemm' is node #42, which is not in the graph"


def test_errors_read_like_user_errors():
    g = Graph("m")
    a = g.add("input", [], T([4, 8]), "a", loc=Loc("m.ds", 1, 1))
    g.add("matmul", [a.id, a.id], T([4, 8]), "c", loc=Loc("m.ds", 2, 12))
    with pytest.raises(DscError) as info:
        verify(g)
    assert str(info.value).splitlines()[0] == (
        "m.ds:2:12: error: %c = matmul(...): inner dimensions differ: [4, 8] @ [4, 8] (8 != 4)")


def test_passes_may_choose_formats_where_the_rule_is_not_fixed():
    g = gemm_graph()
    c = g.by_name("c")
    g.replace_node(c, type=c.type.with_format(parse_format("fp8_e4m3 scaled(fp32, 1x128)")))
    verify(g)
