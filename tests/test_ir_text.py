"""The IR text form: round trips, the golden text of a small graph, and located parse errors.

`every_op_graph` (also used by test_ir_verify.py and test_ir_evaluate.py) is a small valid
graph that uses every op in the registry, so a new op without a printable, parseable form
fails here.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from compiler.errors import DscError, Loc
from compiler.ir.graph import Graph, TensorType
from compiler.ir.ops import OPS
from compiler.ir.text import parse_graph, print_graph, print_value
from isa.formats import parse_format

GOLDEN = Path(__file__).parent / "golden" / "ir"


def T(shape, fmt: str = "bf16") -> TensorType:
    return TensorType(tuple(shape), parse_format(fmt))


class Builder:
    """Graph.add with names for operands and a fresh .ds position per node."""

    def __init__(self, model: str, file: str = "t.ds"):
        self.g = Graph(model)
        self.file = file
        self.line = 0
        self.ids: dict[str, int] = {}

    def __call__(self, name, op, inputs, type_, **attrs):
        self.line += 1
        node = self.g.add(op, [self.ids[i] for i in inputs], type_, name, attrs,
                          Loc(self.file, self.line, 3))
        self.ids[name] = node.id
        return node

    def out(self, *names):
        self.g.outputs.extend(self.ids[n] for n in names)
        return self.g


def every_op_graph() -> Graph:
    """Tokens -> embedding, a norm and a gated MoE, attention-like ops and views; all valid."""
    b = Builder("every_op")
    b.g.sizes.update(tokens=4, dim=8, experts=4)
    b.g.deploy.update(devices=2, moe="ep")
    b.g.policy.update(default=parse_format("bf16"),
                      weights=parse_format("fp8_e4m3 scaled(fp32, 128x128)"))
    b("ids", "input", [], T([4], "i32"))
    b("layer.0.table", "weight", [], T([16, 8]))
    b("x", "embedding", ["ids", "layer.0.table"], T([4, 8]))
    b("layer.0.norm", "weight", [], T([8]))
    b("h", "rmsnorm", ["x", "layer.0.norm"], T([4, 8]), eps=1e-06)
    b("layer.0.w", "weight", [], T([8, 8], "fp8_e4m3 scaled(fp32, 128x128)"))
    b("hq", "cast", ["h"], T([4, 8], "fp8_e4m3 scaled(fp32, 1x128)"),
      format=parse_format("fp8_e4m3 scaled(fp32, 1x128)"))
    b("m", "matmul", ["hq", "layer.0.w"], T([4, 8]))
    b("half", "const", [], T([], "fp32"), value=0.5)
    b("m2", "mul", ["m", "half"], T([4, 8]))
    b("d", "sub", ["m2", "h"], T([4, 8]))
    b("e", "exp", ["d"], T([4, 8]))
    b("q", "div", ["d", "e"], T([4, 8]))
    b("n", "neg", ["q"], T([4, 8]))
    b("r", "relu", ["n"], T([4, 8]))
    b("sg", "sigmoid", ["r"], T([4, 8]))
    b("sl", "silu", ["sg"], T([4, 8]))
    b("a", "add", ["sl", "x"], T([4, 8]))
    b("layer.0.gate", "weight", [], T([8, 4]))
    b("logits", "einsum", ["a", "layer.0.gate"], T([4, 4], "fp32"), spec="td,de->te")
    b("scores", "sigmoid", ["logits"], T([4, 4], "fp32"))
    b("layer.0.bias", "weight", [], T([4], "fp32"))
    b("idx", "topk", ["scores", "layer.0.bias"], T([4, 2], "i32"), k=2, groups=2,
      topk_groups=1)
    b("rw", "topk_weights", ["scores", "idx"], T([4, 2], "fp32"), norm=True, scale=2.5)
    b("xe", "dispatch", ["a", "idx"], T([4, 4, 8]), experts=4, capacity=4)
    b("xr", "all_to_all", ["xe"], T([2, 8, 8]), devices=2, split=0, concat=1, size=0)
    b("layer.0.experts", "weight", [], T([2, 8, 8]))
    b("yr", "matmul", ["xr", "layer.0.experts"], T([2, 8, 8]))
    b("ye", "all_to_all", ["yr"], T([4, 4, 8]), devices=2, split=1, concat=0, size=4)
    b("moe", "combine", ["ye", "idx", "rw"], T([4, 8]))
    b("moe.parts", "all_to_all", ["moe"], T([4, 8]), devices=2, split=1, concat=1, size=0)
    b("moe.all", "all_gather", ["moe.parts"], T([4, 16]), devices=2, axis=-1)
    b("masked", "causal_mask", ["logits"], T([4, 4], "fp32"), offset=1)
    b("p", "softmax", ["masked"], T([4, 4], "fp32"), axis=-1)
    b("ps", "sum", ["p"], T([4, 1], "fp32"), axis=-1, keepdims=True)
    b("pm", "max", ["p"], T([4], "fp32"), axis=1)
    b("pa", "mean", ["p"], T([4], "fp32"))
    b("rot", "rope", ["moe"], T([4, 8]), offset=3, theta=10000.0, axis=0)
    b("flat", "reshape", ["rot"], T([2, 16]), shape=(2, -1))
    b("tr", "transpose", ["rot"], T([8, 4]), perm=(1, 0))
    b("tr2", "transpose", ["rot"], T([8, 4]), perm=None)
    b("win", "slice", ["tr"], T([8, 2]), axis=1, start=1, stop=3)
    b("cat", "concat", ["win", "tr2"], T([8, 6]), axis=-1)
    b("kv", "cache", [], T([1, 8, 8]))
    b("new", "reshape", ["rot"], T([1, 4, 8]), shape=(1, 4, 8))
    b("kv2", "cache_write", ["kv", "new"], T([1, 8, 8]), offset=2)
    b("ln", "layernorm", ["x", "layer.0.norm", "layer.0.norm"], T([4, 8]), eps=1e-05)
    b("ge", "gelu", ["ln"], T([4, 8]))
    b("gt", "gelu_tanh", ["ge"], T([4, 8]))
    b("sp", "softplus", ["gt"], T([4, 8]))
    b("sq", "sqrt", ["sp"], T([4, 8]))
    b("chosen", "input", [], T([1, 2, 3], "i32"))
    b("rows", "gather", ["kv2", "chosen"], T([1, 2, 3, 8]))
    return b.out("cat", "kv2", "ps", "pm", "pa", "flat", "sq", "rows")


def gemm_graph() -> Graph:
    """The gemm.ds example as the front end builds it."""
    g = Graph("gemm", sizes={"M": 4096, "N": 7168, "K": 2048},
              policy={"default": parse_format("bf16")})
    a = g.add("input", [], T([4096, 2048], "fp8_e4m3 scaled(fp32, 1x128)"), "a",
              loc=Loc("gemm.ds", 5, 10))
    w = g.add("weight", [], T([2048, 7168], "fp8_e4m3 scaled(fp32, 128x128)"), "b",
              loc=Loc("gemm.ds", 6, 10))
    c = g.add("matmul", [a.id, w.id], T([4096, 7168]), "c", loc=Loc("gemm.ds", 7, 28))
    g.outputs.append(c.id)
    return g


# ---------------------------------------------------------------------------------- round trip

def test_every_op_graph_covers_the_registry():
    assert {n.op for n in every_op_graph().nodes()} == set(OPS)


@pytest.mark.parametrize("build", [every_op_graph, gemm_graph])
def test_round_trip(build):
    g = build()
    text = print_graph(g)
    assert parse_graph(text) == g
    assert print_graph(parse_graph(text)) == text


def test_printed_lines():
    text = print_graph(every_op_graph())
    lines = text.splitlines()
    assert lines[:3] == ["# dsc ir", "model every_op", "size tokens = 4"]
    assert "policy weights = fp8_e4m3 scaled(fp32, 128x128)" in lines
    assert ('%idx = topk(%scores, %layer.0.bias) {groups=2, k=2, topk_groups=1} : i32[4,2]'
            ' @ "t.ds":23:3') in lines
    assert ('%hq = cast(%h) {format=format("fp8_e4m3 scaled(fp32, 1x128)")}'
            ' : fp8_e4m3[4,8] scaled(fp32, 1x128) @ "t.ds":7:3') in lines
    assert '%half = const() {value=0.5} : fp32[] @ "t.ds":9:3' in lines
    assert '%tr2 = transpose(%rot) {perm=none} : bf16[8,4] @ "t.ds":41:3' in lines
    assert lines[-8:] == ["output %cat", "output %kv2", "output %ps", "output %pm",
                          "output %pa", "output %flat", "output %sq", "output %rows"]


def test_nodes_print_in_topological_order_and_reparse_with_fresh_ids():
    g = Graph("late")
    x = g.add("input", [], T([2]), "x")
    y = g.add("neg", [x.id], T([2]), "y")
    z = g.add("neg", [x.id], T([2]), "z")
    g.replace_node(y, inputs=(z.id,))       # y now reads a node created after it
    g.outputs.append(y.id)
    text = print_graph(g)
    assert text.splitlines()[2:] == ["%x = input() : bf16[2]", "%z = neg(%x) : bf16[2]",
                                     "%y = neg(%z) : bf16[2]", "output %y"]
    again = parse_graph(text)
    assert [n.id for n in again.nodes()] == [0, 1, 2]
    assert print_graph(again) == text


def test_names_with_other_characters_are_quoted():
    g = Graph("a model")
    x = g.add("input", [], T([2]), 'x y"z')
    g.add("neg", [x.id], T([2]), "", loc=Loc('dir/f "1".ds', 1, 2))
    g.outputs.append(1)
    text = print_graph(g)
    assert 'model "a model"' in text
    assert '%"" = neg(%"x y\\"z") : bf16[2] @ "dir/f \\"1\\".ds":1:2' in text
    assert parse_graph(text) == g


def test_big_graph_round_trips_quickly():
    b = Builder("deep")
    b("x", "input", [], T([4, 8]))
    b("w", "weight", [], T([8, 8]))
    prev = "x"
    for i in range(800):
        b(f"layer.{i}.y", "matmul", [prev, "w"], T([4, 8]))
        b(f"layer.{i}.z", "silu", [f"layer.{i}.y"], T([4, 8]))
        prev = f"layer.{i}.z"
    g = b.out(prev)
    assert parse_graph(print_graph(g)) == g


# ------------------------------------------------------------------------- attribute values

def _one_attr_graph(value) -> Graph:
    g = Graph("attrs")
    g.add("input", [], T([1]), "x", {"v": value})
    return g


@pytest.mark.parametrize("value, text", [
    (0, "0"), (-7, "-7"), (2**70, str(2**70)),
    (1e-06, "1e-06"), (10000.0, "10000.0"), (-0.5, "-0.5"), (1e300, "1e+300"),
    (5e-324, "5e-324"), (math.inf, "inf"), (-math.inf, "-inf"), (0.1, "0.1"),
    (True, "true"), (False, "false"), (None, "none"),
    ("", '""'), ('q"b\\s\n\t', '"q\\"b\\\\s\\n\\t"'), ("é€", '"\\u00e9\\u20ac"'),
    ((), "[]"), ((1, -1), "[1, -1]"), (((1, 2), (), (3,)), "[[1, 2], [], [3]]"),
    ((None, 1.5, "s", True), '[none, 1.5, "s", true]'),
    (parse_format("nvfp4"), 'format("fp4_e2m1 scaled(fp8_e4m3, 1x16, fp32)")'),
    (parse_format("bf16"), 'format("bf16")'),
])
def test_attribute_values_print_and_parse_back(value, text):
    assert print_value(value) == text
    g = _one_attr_graph(value)
    again = parse_graph(print_graph(g))
    assert again == g
    assert type(again.by_name("x").attr("v")) is type(value)


def test_numpy_scalars_print_as_python_numbers():
    assert print_value(np.int64(3)) == "3"
    assert print_value(np.float64(0.25)) == "0.25"
    assert print_value((np.int32(2), np.float32(0.5))) == "[2, 0.5]"


def test_unprintable_attribute_is_a_type_error():
    with pytest.raises(TypeError, match="cannot print attribute value"):
        print_value({1: 2})


_attr_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=8)


@settings(max_examples=100, deadline=None)
@given(name=st.text(min_size=0, max_size=8), values=st.dictionaries(
    st.from_regex(r"[a-z_]+", fullmatch=True), _attr_values, max_size=4))
def test_any_names_and_attributes_round_trip(name, values):
    g = Graph("m")
    x = g.add("input", [], T([1]), name + "0", values)
    g.add("neg", [x.id], T([1]), name + "1", loc=Loc(name, 1, 1))
    g.outputs.append(1)
    text = print_graph(g)
    assert parse_graph(text) == g
    assert print_graph(parse_graph(text)) == text


# ------------------------------------------------------------------------------------- golden

def test_golden_gemm(golden):
    golden(GOLDEN / "gemm.ir", print_graph(gemm_graph()))


def test_golden_every_op(golden):
    golden(GOLDEN / "every_op.ir", print_graph(every_op_graph()))


def test_golden_files_parse_back():
    for path in sorted(GOLDEN.glob("*.ir")):
        text = path.read_text()
        assert print_graph(parse_graph(text, str(path))) == text


def test_hand_written_text_is_accepted():
    text = ('model m  # comment\n\n'
            '# a comment line\n'
            '%x = input() : mxfp4[2, 64]\n'
            '   %y=neg( %x ) {  } :bf16[2,64]@"m.ds":3:4   \n'
            'output %y')
    g = parse_graph(text)
    assert g.by_name("x").type == T([2, 64], "mxfp4")
    assert g.by_name("y").attrs == ()
    assert g.by_name("y").loc == Loc("m.ds", 3, 4)
    assert g.outputs == [1]


# ------------------------------------------------------------------------------- parse errors

HEAD = "# dsc ir\nmodel m\n%x = input() : bf16[2]\n"


@pytest.mark.parametrize("body, line, col, message, expected", [
    ("%y = neg(%x) : bf16[2,\n", 4, 23, "unexpected end of line", "an integer"),
    ("%y = neg(%x) : bf16[2] $\n", 4, 24, "unexpected character '$'",
     "'@' or 'scaled' or 'sched' or end of line"),
    ("%y = neg(%z) : bf16[2]\n", 4, 10, "%z is not defined on an earlier line", None),
    ("%y = neg(%x) : bf16[2]\n%x = neg(%y) : bf16[2]\n", 5, 1,
     "%x is defined twice (first on line 3)", None),
    ("%y = neg(%x) : bf17[2]\n", 4, 16, "unknown dtype 'bf17'", None),
    ("%y = neg(%x) : bf16[2] scaled(fp64, 1x32)\n", 4, 31, "unknown scale dtype 'fp64'",
     None),
    ("%y = neg(%x) {a=1, b=2, a=3} : bf16[2]\n", 4, 25, "attribute 'a' is given twice", None),
    ('%y = neg(%x) {s="\\q"} : bf16[2]\n', 4, 17, "bad escape in string", None),
    ('%y = cast(%x) {format=format("fp9")} : bf16[2]\n', 4, 30, "unknown dtype 'fp9'", None),
    ("%y = neg(%x) {k=1 2} : bf16[2]\n", 4, 19, "unexpected '2'", "',' or '}'"),
    ("%y = neg(%x) : bf16[2] @ \"f.ds\":1\n", 4, 34, "unexpected end of line", "':'"),
    ("output %nope\n", 4, 8, "%nope is not defined on an earlier line", None),
    ("size n = 1\nsize n = 2\n", 5, 6, "size 'n' is given twice", None),
    ("model again\n", 4, 1, "unexpected 'model'", None),
])
def test_parse_errors_are_located(body, line, col, message, expected):
    with pytest.raises(DscError) as info:
        parse_graph(HEAD + body, "bad.ir")
    err = info.value
    assert err.loc == Loc("bad.ir", line, col)
    assert err.message.startswith(message)
    if expected:
        assert err.expected == expected


def test_parse_error_shows_the_line_with_a_caret():
    with pytest.raises(DscError) as info:
        parse_graph("model m\n%x = input() : bf16[2] ?\n")
    assert str(info.value).splitlines()[:3] == [
        "<ir>:2:24: error: unexpected character '?'",
        " 2 | %x = input() : bf16[2] ?",
        "   |                        ^",
    ]


def test_text_must_start_with_the_model_line():
    with pytest.raises(DscError) as info:
        parse_graph("# dsc ir\n%x = input() : bf16[2]\n")
    assert info.value.loc == Loc("<ir>", 2, 1)
    assert "'model'" in info.value.expected


# ---------------------------------------------------------------------- the .ds front end

EXAMPLES = sorted(p for p in (Path(__file__).parent.parent / "examples").glob("*.ds")
                  if "\nmodel " in p.read_text())          # not the serve descriptions


def load_example(path: Path) -> Graph:
    """An example model through the front end; big models are cut to 4 layers, which keeps
    their structure (dense and MoE layers) and the test quick."""
    from compiler.frontend import load_model
    overrides = {"n_layers": "4"} if "n_layers" in path.read_text() else {}
    return load_model(str(path), overrides)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_round_trip(path):
    g = load_example(path)
    text = print_graph(g)
    assert parse_graph(text) == g
    assert print_graph(parse_graph(text)) == text
