"""The parser: .ds text -> ast records with positions (no building)."""
from __future__ import annotations

import pytest

from compiler.errors import DscError, Loc
from compiler.frontend import ast
from compiler.frontend.parser import parse

GEMM = """\
# gemm.ds — one FP8 GEMM with DeepSeek-style fine-grained scales
model gemm {
  size M = 4096, N = 7168, K = 2048
  input  a: fp8_e4m3[M, K] scaled(fp32, 1x128)
  weight b: fp8_e4m3[K, N] scaled(fp32, 128x128)
  output c: bf16[M, N] = a @ b
}
"""


def model_of(text: str) -> ast.ModelDef:
    items = parse(text, "t.ds").items
    return next(i for i in items if isinstance(i, ast.ModelDef))


def value_of(text: str) -> ast.Expr:
    """The expression of `x = TEXT` in a model body."""
    stmt = model_of(f"model m {{ x = {text} }}").body[0]
    assert isinstance(stmt, ast.Assign)
    return stmt.value


def test_contract_gemm_parses_to_records_with_positions():
    model = model_of(GEMM)
    assert model.name == "gemm" and model.loc == Loc("t.ds", 2, 1)
    size, a, b, c = model.body
    assert [(i.name, i.value.value) for i in size.items] == [("M", 4096), ("N", 7168), ("K", 2048)]
    assert (a.kind, a.name, a.loc) == ("input", "a", Loc("t.ds", 4, 10))
    assert a.type.format.dtype == "fp8_e4m3"
    assert a.type.format.scaling.block == (1, 128) and a.type.format.scaling.dtype == "fp32"
    assert [d.name for d in a.type.dims] == ["M", "K"]
    assert b.kind == "weight" and b.type.format.scaling.block == (128, 128)
    assert isinstance(c, ast.Output) and c.type.format.text() == "bf16"
    assert isinstance(c.value, ast.BinOp) and c.value.op == "@"
    assert c.value.loc == Loc("t.ds", 6, 28)        # a binary operation sits at its operator


def test_newlines_are_not_significant():
    one_line = " ".join(line.split("#")[0] for line in GEMM.splitlines())
    assert len(model_of(one_line).body) == len(model_of(GEMM).body)


def test_comments_are_ignored_anywhere():
    model = model_of("model m { # a comment\n x = 3 # another\n # last\n}")
    assert model.body[0].value.value == 3


@pytest.mark.parametrize("text, value", [
    ("7168", 7168), ("2.5", 2.5), ("1e-6", 1e-6), ("3.", 3.0), ("1.5e3", 1500.0),
])
def test_number_literals(text, value):
    node = value_of(text)
    assert node.value == value and type(node.value) is type(value)


def test_matmul_binds_like_multiplication_and_is_left_associative():
    node = value_of("a + b * c @ d")
    assert node.op == "+"
    right = node.right
    assert right.op == "@" and right.left.op == "*"
    assert ast.show(node) == "a + b * c @ d"


def test_unary_minus_binds_tighter_than_binary_operators():
    node = value_of("-a * b - c")
    assert node.op == "-" and node.left.op == "*" and isinstance(node.left.left, ast.Neg)


def test_parentheses_group():
    node = value_of("(a + b) // c % 2")
    assert node.op == "%" and node.left.op == "//" and node.left.left.op == "+"


def test_calls_lists_strings_and_keywords():
    node = value_of('einsum("bshn,chn->bhsc", q, w, extra=[1, -2], flag=true)')
    assert isinstance(node, ast.Call) and node.name == "einsum"
    assert isinstance(node.args[0], ast.Str) and node.args[0].value == "bshn,chn->bhsc"
    assert [k.name for k in node.kwargs] == ["extra", "flag"]
    assert isinstance(node.kwargs[0].value, ast.ListExpr)
    assert node.kwargs[1].value == ast.Bool(True, node.kwargs[1].value.loc)


def test_empty_call_and_empty_list():
    node = value_of("f([])")
    assert node.args[0].items == ()


def test_statements_of_a_model_body():
    model = model_of("""model m {
      size B = 2
      precision { default bf16 weights mxfp4 kv_cache fp8_e4m3 scaled(fp32, 1x64) }
      input x: [B, 4]
      cache kv: bf16[B, 8, 16]
      w, i = topk(x, 2)
      repeat 3 as block { x = x + 1 }
      repeat 2 { x = -x }
      output y: [B, 4] = x
    }""")
    kinds = [type(s).__name__ for s in model.body]
    assert kinds == ["SizeStmt", "Precision", "Decl", "Decl", "Destructure", "Repeat", "Repeat",
                     "Output"]
    precision = model.body[1]
    assert [(e.role, e.format.text()) for e in precision.entries] == [
        ("default", "bf16"), ("weights", "mxfp4"), ("kv_cache", "fp8_e4m3 scaled(fp32, 1x64)")]
    assert model.body[2].type.format is None          # [dims]: the role's format
    assert model.body[4].names == ("w", "i")
    assert model.body[5].name == "block" and model.body[6].name is None
    assert model.body[7].type.format is None


def test_scaling_with_a_per_tensor_scale():
    decl = model_of("model m { input x: fp4_e2m1[4, 16] scaled(fp8_e4m3, 1x16, fp32) }").body[0]
    assert decl.type.format.scaling.tensor_dtype == "fp32"
    assert decl.type.format.text() == "fp4_e2m1 scaled(fp8_e4m3, 1x16, fp32)"


def test_file_items_imports_constants_blocks():
    module = parse("""import "std/nn.ds"
    scale = 2
    block f(x: [..., T, 4], n, eps = 1e-6) {
      return x * n, x
    }
    model m { input a: [2, 4]  output b = f(a, 2) }
    """, "t.ds")
    imp, const, block, model = module.items
    assert imp.path == "std/nn.ds" and const.name == "scale"
    assert [p.text() for p in block.params] == ["x: [..., T, 4]", "n", "eps = 1e-06"]
    assert block.signature() == "f(x: [..., T, 4], n, eps = 1e-06)"
    assert [d.value for d in block.params[0].pattern] == ["...", "T", 4]
    assert len(block.body[-1].values) == 2
    assert model.name == "m"


def test_keywords_are_names_where_a_keyword_cannot_be():
    model = model_of("model m { input size: [2]  output weight = -size }")
    assert model.body[0].name == "size" and model.body[1].name == "weight"


def test_positions_of_names_and_calls():
    text = "model m {\n  y = softmax(x)\n}"
    call = model_of(text).body[0].value
    assert call.loc == Loc("t.ds", 2, 7) and call.args[0].loc == Loc("t.ds", 2, 15)


def test_names_in_and_start_loc():
    node = value_of("a * f(b, k=c) + [d]")
    assert [n.name for n in ast.names_in(node)] == ["a", "b", "c", "d"]
    assert ast.start_loc(node).col == node.left.left.loc.col


def test_syntax_errors_are_dsc_errors():
    with pytest.raises(DscError) as info:
        parse("model m { x = = }", "t.ds")
    assert info.value.loc == Loc("t.ds", 1, 15)
