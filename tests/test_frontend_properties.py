"""Property tests of the front end.

- integer expressions evaluate like Python (`/` gives an int when exact);
- random valid programs (sizes and elementwise chains) build with the expected shapes;
- random garbage, character- or token-level, never raises anything but DscError.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from compiler.errors import DscError
from compiler.frontend import load_model
from compiler.frontend.expr import evaluate
from compiler.frontend.limits import MAX_INT
from compiler.frontend.parser import parse
from compiler.frontend.scope import Frame

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


class _NoConstants:
    consts: dict = {}


def eval_number(text: str):
    """Evaluate `text` as a model-level expression, without a graph."""
    stmt = parse(f"model m {{ x = {text} }}", "p.ds").items[0].body[0]
    return evaluate(None, Frame(_NoConstants(), "", constant=True), stmt.value)


def build_text(text: str, overrides=None):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.ds"
        path.write_text(text)
        return load_model(str(path), overrides)


# ---- integer expressions -----------------------------------------------------------------

@st.composite
def int_exprs(draw, depth=0):
    if depth > 3 or draw(st.booleans()):
        return str(draw(st.integers(0, 10**6)))
    kind = draw(st.sampled_from(["bin", "bin", "neg", "paren"]))
    if kind == "neg":
        return f"-{draw(int_exprs(depth + 1))}"
    if kind == "paren":
        return f"({draw(int_exprs(depth + 1))})"
    op = draw(st.sampled_from(["+", "-", "*", "//", "%"]))
    return f"{draw(int_exprs(depth + 1))} {op} {draw(int_exprs(depth + 1))}"


def _first_failure(text: str) -> str | None:
    """What stops the front end first, evaluating operands before their operation: "zero"
    (a division by zero), "overflow" (a result beyond 2^53), or None."""
    import ast as pyast
    import operator
    ops = {pyast.Add: operator.add, pyast.Sub: operator.sub, pyast.Mult: operator.mul,
           pyast.FloorDiv: operator.floordiv, pyast.Mod: operator.mod}

    class Stop(Exception):
        pass

    def value(node) -> int:
        if isinstance(node, pyast.Constant):
            return node.value
        if isinstance(node, pyast.UnaryOp):
            return -value(node.operand)
        left, right = value(node.left), value(node.right)
        if isinstance(node.op, (pyast.FloorDiv, pyast.Mod)) and right == 0:
            raise Stop("zero")
        result = ops[type(node.op)](left, right)
        if abs(result) > MAX_INT:
            raise Stop("overflow")
        return result
    try:
        value(pyast.parse(text, mode="eval").body)
    except Stop as stop:
        return stop.args[0]
    return None


@SETTINGS
@given(int_exprs())
def test_integer_expressions_evaluate_like_python(text):
    failure = _first_failure(text)
    if failure is not None:            # refused at the operation: like Python's error, or
        with pytest.raises(DscError) as info:     # beyond the float-exact integers
            eval_number(text)
        assert ("division by zero" if failure == "zero" else "overflows") in info.value.message
        return
    value = eval_number(text)
    assert value == eval(text) and type(value) is int    # noqa: S307 - digits and operators


@SETTINGS
@given(st.integers(-10**9, 10**9), st.integers(-10**4, 10**4).filter(bool))
def test_division_is_exact_int_or_float(a, b):
    value = eval_number(f"({a}) / ({b})")
    if a % b == 0:
        assert type(value) is int and value == a // b
    else:
        assert type(value) is float and value == a / b


@SETTINGS
@given(st.lists(st.integers(1, 50), min_size=1, max_size=5), st.integers(0, 4))
def test_sizes_are_recorded_and_overridable(values, pick):
    names = [f"s{i}" for i in range(len(values))]
    sizes = ", ".join(f"{n} = {v}" for n, v in zip(names, values))
    text = f"model m {{ size {sizes}  input x: [{', '.join(names)}]  output y = -x }}"
    chosen = names[pick % len(names)]
    g = build_text(text, {chosen: "7"})
    expected = dict(zip(names, values)) | {chosen: 7}
    assert g.sizes == expected
    assert g.node(g.outputs[0]).type.shape == tuple(expected[n] for n in names)


# ---- random valid programs ---------------------------------------------------------------

UNARY = ["silu", "sigmoid", "exp", "relu", "neg", "softmax"]


@st.composite
def elementwise_programs(draw):
    dims = draw(st.lists(st.integers(1, 9), min_size=1, max_size=4))
    lines = [f"size {', '.join(f'd{i} = {d}' for i, d in enumerate(dims))}",
             f"input x: [{', '.join(f'd{i}' for i in range(len(dims)))}]",
             f"weight v: [d{len(dims) - 1}]"]
    count = draw(st.integers(1, 12))
    for i in range(count):
        prev = "x" if i == 0 else f"t{i - 1}"
        kind = draw(st.sampled_from(["unary", "scalar", "rscalar", "tensor", "vector"]))
        op = draw(st.sampled_from(["+", "-", "*", "/"]))
        number = draw(st.sampled_from(["2", "0.5", "1e-3", "d0", "(d0 * 2)"]))
        expr = {"unary": f"{draw(st.sampled_from(UNARY))}({prev})",
                "scalar": f"{prev} {op} {number}",
                "rscalar": f"{number} {op} {prev}",
                "tensor": f"{prev} {op} x",
                "vector": f"{prev} {op} v"}[kind]
        lines.append(f"t{i} = {expr}")
    lines.append(f"output y = t{count - 1}")
    return tuple(dims), count, "model m {\n  " + "\n  ".join(lines) + "\n}\n"


@SETTINGS
@given(elementwise_programs())
def test_random_elementwise_programs_build(program):
    dims, count, text = program
    g = build_text(text)
    out = g.node(g.outputs[0])
    assert out.type.shape == dims and out.name == "y"
    names = [n.name for n in g.nodes()]
    assert len(names) == len(set(names))
    assert all(n.loc is not None and n.loc.line >= 1 for n in g.nodes())
    computed = [n for n in g.nodes() if n.op not in ("input", "weight", "const")]
    assert len(computed) == count


# ---- garbage -----------------------------------------------------------------------------

TOKENS = ["model", "m", "{", "}", "block", "f", "(", ")", "[", "]", ",", "=", ":", "input",
          "weight", "cache", "output", "size", "repeat", "as", "return", "import", '"x.ds"',
          '"std/nn.ds"', "precision", "default", "weights", "bf16", "mxfp4", "scaled",
          "fp32", "1x128", "x", "y", "n", "2", "0", "-1", "2.5", "+", "-", "*", "/", "//",
          "%", "@", "...", "true", "false", "softmax", "split", "topk", "norm", "swiglu",
          "reshape", "max", "sqrt", "\n", "#c\n", '"s"']

MODEL_START = "model m {\n  size n = 2\n  input x: [n, 4]\n"


def _never_crashes(text: str, overrides=None) -> None:
    try:
        build_text(text, overrides)
    except DscError as err:
        str(err)                      # rendering never fails either


@SETTINGS
@given(st.text(max_size=200))
def test_random_text_raises_only_dsc_errors(text):
    _never_crashes(text)


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_random_token_streams_raise_only_dsc_errors(tokens):
    _never_crashes(" ".join(tokens))


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=30))
def test_random_model_bodies_raise_only_dsc_errors(tokens):
    _never_crashes('import "std/nn.ds"\n' + MODEL_START + " ".join(tokens) + "\n}\n")


@SETTINGS
@given(st.dictionaries(st.sampled_from(["n", "x", "weights", "default", "kv_cache", "q"]),
                       st.sampled_from(["3", "-2", "x", "1.5", "mxfp4", "bf16 scaled(", "0"]),
                       max_size=3))
def test_random_overrides_raise_only_dsc_errors(overrides):
    _never_crashes(MODEL_START + "  output y = softmax(x)\n}\n", overrides)
