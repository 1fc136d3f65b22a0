"""User errors: each is a DscError at the exact line and column, with what was expected
(tests/ds_errors.py: `fails` and `check`). --set values and sizes that would run away are in
test_frontend_limit_errors.py."""
from __future__ import annotations

import pytest

from compiler.errors import DscError
from compiler.frontend import load_model
from ds_errors import check, fails, main  # noqa: F401


# ---- syntax ------------------------------------------------------------------------------

def test_syntax_error_unexpected_token(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4 8]\n  output b = -a\n}\n")
    check(err, main(tmp_path), 2, 15, ["syntax error", "unexpected integer '8'"],
          ["one of: ',', ']'"])


def test_syntax_error_unexpected_character(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4]\n  output b = a $ 2\n}\n")
    check(err, main(tmp_path), 3, 16, ["unexpected character '$'"], ["an operator"])


def test_syntax_error_unexpected_end_of_file(tmp_path):
    err = fails(tmp_path, "model m {\n}\nimport  # comment\n\n")
    check(err, main(tmp_path), 3, 7, ["unexpected end of file"], ["a string"])


# ---- brackets that do not pair up: the error is at the bracket at fault ---------------------

UNCLOSED_BLOCK = """\
block norm(x: [..., d]) {
  weight w: bf16[d]
  return rmsnorm(x, w)

block twice(x: [..., d]) {
  return x + x
}

model m {
  input a: bf16[4, 8]
  output b = twice(norm(a))
}
"""


def test_an_unclosed_block_is_reported_where_it_opens(tmp_path):
    """The parser fails at the next `block`; the `{` at fault is three lines earlier."""
    err = fails(tmp_path, UNCLOSED_BLOCK)
    check(err, main(tmp_path), 1, 25, ["this '{' is never closed"],
          ["'}'", "before line 5"])
    assert err.notes == (f"the parser stopped at {main(tmp_path)}:5:1: syntax error: "
                         "unexpected 'block'",)


def test_an_unclosed_inner_block_is_found_by_indentation(tmp_path):
    """The model's `}` closes the repeat, so the parser fails at the end of the file; the
    indentation shows the repeat's block ended at `output` without its `}`."""
    text = ("model m {\n  input a: bf16[4, 8]\n  h = a\n  repeat 2 {\n    h = h + h\n"
            "  output b = h\n}\n")
    err = fails(tmp_path, text)
    check(err, main(tmp_path), 4, 12, ["this '{' is never closed"], ["before line 6"])
    assert "unexpected end of file" in err.notes[0]


def test_an_unclosed_block_on_one_line_is_the_innermost_open_one(tmp_path):
    err = fails(tmp_path, "model m { input a: bf16[4, 8] output b = softmax(a)")
    check(err, main(tmp_path), 1, 9, ["this '{' is never closed"], ["'}'"])


def test_an_unclosed_parenthesis_is_reported_where_it_opens(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: bf16[4, 8]\n  output b = softmax(a\n}\n")
    check(err, main(tmp_path), 3, 21, ["this '(' is never closed"],
          ["')'", "before the '}' at line 4, column 1"])


def test_a_closing_bracket_of_the_wrong_kind(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: bf16[4, 8]\n  output b = softmax(a]\n}\n")
    check(err, main(tmp_path), 3, 23, ["']' does not close the '(' opened at line 3, column 21"],
          ["')'"])
    assert err.notes == ()                  # the parser stopped at the same place


def test_a_closing_brace_with_nothing_open(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: bf16[4, 8]\n  output b = a\n}\n}\n")
    check(err, main(tmp_path), 5, 1, ["unmatched '}'"], ["no closing bracket"])


def test_brackets_in_comments_and_strings_do_not_count(tmp_path):
    """Balanced code with a `{` in a comment and a string keeps the parser's own error."""
    text = "model m {  # {\n  input a: bf16[4, 8]\n  output b = einsum(\"{\" a)\n}\n"
    err = fails(tmp_path, text)
    check(err, main(tmp_path), 3, 25, ["unexpected name 'a'"], ["','"])


def test_syntax_error_missing_operand(tmp_path):
    err = fails(tmp_path, "model m {\n  x = 3 *\n}\n")
    check(err, main(tmp_path), 3, 1, ["unexpected '}'"], ["a name", "an integer", "'('"])


def test_positional_argument_after_keyword(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4]\n  output b = softmax(axis=-1, a)\n}\n")
    check(err, main(tmp_path), 3, 31, ["positional argument after keyword"],
          ["keyword arguments after"])


# ---- names -------------------------------------------------------------------------------

def test_unknown_name(tmp_path):
    err = fails(tmp_path, "model m {\n  input xs: [4]\n  output y = x + 1\n}\n")
    check(err, main(tmp_path), 3, 14, ["unknown name 'x'", "did you mean 'xs'"],
          ["a defined name", "xs"])


def test_unknown_function_with_suggestion(tmp_path):
    err = fails(tmp_path, "model m {\n  input x: [4]\n  output y = sofmax(x)\n}\n")
    check(err, main(tmp_path), 3, 14, ["unknown name 'sofmax'", "did you mean 'softmax'"],
          ["builtin op"])


def test_block_cannot_see_the_callers_variables(tmp_path):
    err = fails(tmp_path, "block f(x: [n]) {\n  return x * k\n}\n"
                          "model m {\n  k = 2\n  input a: [4]\n  output b = f(a)\n}\n")
    check(err, main(tmp_path), 2, 14, ["unknown name 'k'"], ["a defined name"])
    assert err.notes == (f"in block 'f' called at {main(tmp_path)}:7:14",)


def test_undefined_size(tmp_path):
    err = fails(tmp_path, "model m {\n  size batch = 2\n  input a: [batch, seqlen]\n"
                          "  output b = -a\n}\n")
    check(err, main(tmp_path), 3, 20, ["undefined size 'seqlen'", "'a'"], ["batch"])


def test_duplicate_declaration(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4]\n  weight a: [4]\n  output b = -a\n}\n")
    check(err, main(tmp_path), 3, 10, ["duplicate declaration", "'a'", "m.ds:2:9"],
          ["a new name"])


def test_duplicate_size(tmp_path):
    err = fails(tmp_path, "model m {\n  size n = 2, n = 3\n  input a: [n]\n  output b = -a\n}\n")
    check(err, main(tmp_path), 2, 15, ["duplicate declaration", "'n'"], ["a new name"])


def test_block_with_the_name_of_a_builtin(tmp_path):
    err = fails(tmp_path, "block softmax(x: [n]) {\n  return x\n}\n"
                          "model m {\n  input a: [4]\n  output b = -a\n}\n")
    check(err, main(tmp_path), 1, 7, ["'softmax'", "builtin"], ["not a builtin"])


# ---- shapes and types --------------------------------------------------------------------

def test_shape_mismatch_in_matmul(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4, 8]\n  weight b: [16, 2]\n"
                          "  output c = a @ b\n}\n")
    check(err, main(tmp_path), 4, 16, ["shape mismatch", "inner dimensions differ",
                                       "[4, 8] @ [16, 2]"], ["matmul(a, b)"])


def test_shape_mismatch_against_a_block_pattern(tmp_path):
    err = fails(tmp_path, "block f(x: [T, d], y: [T, d]) {\n  return x + y\n}\n"
                          "model m {\n  input a: [4, 8]\n  input b: [4, 9]\n"
                          "  output c = f(a, b)\n}\n")
    check(err, main(tmp_path), 7, 19, ["shape mismatch", "argument 'y'", "d = 8"],
          ["f(x: [T, d], y: [T, d])"])


def test_shape_mismatch_in_split(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4, 8]\n  p, q = split(a, [3, 4])\n"
                          "  output c = p\n}\n")
    check(err, main(tmp_path), 3, 19, ["shape mismatch", "add up to 7", "is 8"],
          ["add up to 8"])


RESIDUAL_TRAP = """\
model m {
  size B = 4, S = 1
  input x: bf16[B, S, 8]
  weight w: bf16[8, 8]
  h = x
  t = reshape(h, [B * S, 8])
  h = h + t @ w
  output y = reshape(h, [B * S, 8])
}
"""


def test_a_broadcast_that_grows_both_operands_is_refused_where_it_is_written(tmp_path):
    """A residual [B, 1, d] plus tokens [B, d] would become [B, B, d]: the error is at the
    '+', not at the reshape a line later, and names both shapes and the result."""
    err = fails(tmp_path, RESIDUAL_TRAP)
    check(err, main(tmp_path), 7, 9, ["'add'", "[4, 1, 8] with [4, 8] to [4, 4, 8]",
                                     "growing both operands"],
          ["one that stretches to the other's shape"])
    assert err.notes == ("both hold 32 elements: a reshape of one to the other's shape, "
                         "e.g. reshape(..., [4, 1, 8]), may be missing",)


@pytest.mark.parametrize("expr, col", [("mul(a, b)", 14), ("a - b", 16), ("b / a", 16)])
def test_the_broadcast_rule_holds_for_every_elementwise_op_and_form(tmp_path, expr, col):
    err = fails(tmp_path, "model m {\n  input a: [2, 1, 8]\n  input b: [3, 8]\n"
                          f"  output c = {expr}\n}}\n")
    check(err, main(tmp_path), 4, col, ["growing both operands", "to [2, 3, 8]"])
    assert err.notes == ()           # 16 and 24 elements: no reshape makes them equal


@pytest.mark.parametrize("b_shape", ["[]", "[8]", "[1, 8]", "[4, 1]", "[2, 1, 8]", "[1, 4, 8]"])
def test_a_broadcast_that_stretches_one_operand_is_fine(tmp_path, b_shape):
    graph = load_model(_write(tmp_path, "model m {\n  input a: [2, 4, 8]\n"
                                        f"  input b: {b_shape}\n  output c = a * b + b\n}}\n"))
    assert graph.node(graph.outputs[0]).type.shape == (2, 4, 8)


def _write(tmp_path, text: str) -> str:
    (tmp_path / "m.ds").write_text(text)
    return main(tmp_path)


def test_shape_error_from_an_op_rule(tmp_path):
    err = fails(tmp_path, "model m {\n  input s: [4, 8]\n  w, i = topk(s, 9)\n"
                          "  output c = w\n}\n")
    check(err, main(tmp_path), 3, 10, ["shape mismatch in 'topk'", "k = 9"], ["topk("])


def test_non_integer_dim(tmp_path):
    err = fails(tmp_path, "model m {\n  d = 7\n  input a: [d / 2]\n  output b = -a\n}\n")
    check(err, main(tmp_path), 3, 13, ["dim 0 of 'a' must be an integer", "float 3.5"],
          ["positive integer"])


def test_non_positive_dim(tmp_path):
    err = fails(tmp_path, "model m {\n  d = 2\n  input a: [4, d - 2]\n  output b = -a\n}\n")
    check(err, main(tmp_path), 3, 16, ["dim 1 of 'a'", "got 0"], ["positive integer"])


def test_unknown_dtype_in_a_type(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: bf61[4]\n  output b = -a\n}\n")
    check(err, main(tmp_path), 2, 12, ["unknown dtype 'bf61'", "did you mean 'bf16'"],
          ["fp8_e4m3", "mxfp4"])


def test_unknown_scale_dtype_in_a_type(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: fp8_e4m3[4, 128] scaled(bf16, 1x128)\n"
                          "  output b = -a\n}\n")
    check(err, main(tmp_path), 2, 29, ["scale dtype 'bf16'"], ["DTYPE scaled("])


def test_unknown_dtype_in_the_policy(tmp_path):
    err = fails(tmp_path, "model m {\n  precision {\n    default bf16\n    weights fp9\n  }\n"
                          "  input a: [4]\n  output b = -a\n}\n")
    check(err, main(tmp_path), 4, 13, ["unknown dtype 'fp9'"], ["fp8_e4m3"])


def test_unknown_precision_role(tmp_path):
    err = fails(tmp_path, "model m {\n  precision { weight bf16 }\n  input a: [4]\n"
                          "  output b = -a\n}\n")
    check(err, main(tmp_path), 2, 15, ["unknown precision role 'weight'",
                                       "did you mean 'weights'"], ["kv_cache"])


def test_unknown_dtype_in_cast(tmp_path):
    err = fails(tmp_path, 'model m {\n  input a: [4]\n  output b = cast(a, "fp7")\n}\n')
    check(err, main(tmp_path), 3, 22, ["unknown dtype 'fp7'"], ["DTYPE scaled("])


def test_cache_needs_rank_three(tmp_path):
    err = fails(tmp_path, "model m {\n  cache kv: [2, 4]\n  output b = -kv\n}\n")
    check(err, main(tmp_path), 2, 13, ["cache 'kv' has rank 2"], ["[sequences, positions"])


def test_output_type_must_match_the_value(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4, 2]\n  output b: bf16[2, 4] = -a\n}\n")
    check(err, main(tmp_path), 3, 13, ["shape mismatch", "declared [2, 4]", "[4, 2]"],
          ["[4, 2]"])


def test_output_of_a_source_node(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4]\n  output b = a\n}\n")
    check(err, main(tmp_path), 3, 14, ["output 'b' is the input 'a' itself"],
          ["a computed value"])


# ---- calls -------------------------------------------------------------------------------

def test_wrong_number_of_arguments_to_a_block(tmp_path):
    err = fails(tmp_path, "block f(x: [n], k) {\n  return x * k\n}\n"
                          "model m {\n  input a: [4]\n  output b = f(a, 1, 2)\n}\n")
    check(err, main(tmp_path), 6, 22, ["wrong number of arguments", "block 'f'",
                                       "takes 2 arguments, got 3"], ["f(x: [n], k)"])


def test_missing_argument_of_a_block(tmp_path):
    err = fails(tmp_path, "block f(x: [n], k) {\n  return x * k\n}\n"
                          "model m {\n  input a: [4]\n  output b = f(a)\n}\n")
    check(err, main(tmp_path), 6, 14, ["wrong number of arguments", "needs argument 'k'"],
          ["f(x: [n], k)"])


def test_unknown_keyword_of_a_block(tmp_path):
    err = fails(tmp_path, "block f(x: [n], k = 1) {\n  return x * k\n}\n"
                          "model m {\n  input a: [4]\n  output b = f(a, kk=2)\n}\n")
    check(err, main(tmp_path), 6, 19, ["block 'f' has no argument 'kk'", "did you mean 'k'"],
          ["f(x: [n], k = 1)"])


def test_wrong_number_of_arguments_to_an_op(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4, 4]\n  output b = softmax(a, -1, 3)\n}\n")
    check(err, main(tmp_path), 3, 29, ["wrong number of arguments", "op 'softmax'",
                                       "got 3"], ["softmax(x, axis=-1)"])


def test_missing_tensor_of_an_op(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4, 4]\n  output b = matmul(a)\n}\n")
    check(err, main(tmp_path), 3, 14, ["wrong number of arguments", "needs argument 'b'"],
          ["matmul(a, b)"])


def test_unknown_attribute_of_an_op(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4, 4]\n"
                          "  output b = rmsnorm(a, a, epsilon=1e-5)\n}\n")
    check(err, main(tmp_path), 3, 28, ["op 'rmsnorm' has no argument 'epsilon'"],
          ["rmsnorm(x, w, eps=1e-06)"])


def test_attribute_of_the_wrong_kind(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4, 4]\n  output b = sum(a, axis=1.5)\n}\n")
    check(err, main(tmp_path), 3, 21, ["'axis' of 'sum' must be an integer"], ["integer"])


def test_tensor_where_a_number_is_needed(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4]\n  n = a\n  input b: [n]\n"
                          "  output c = -b\n}\n")
    check(err, main(tmp_path), 4, 13, ["dim 0 of 'b' must be an integer", "tensor"],
          ["positive integer"])


def test_numbers_only_operator_on_tensors(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4]\n  output c = a // 2\n}\n")
    check(err, main(tmp_path), 3, 16, ["'//' works on numbers only"], ["two numbers"])


def test_division_by_zero(tmp_path):
    err = fails(tmp_path, "model m {\n  n = 4 % (2 - 2)\n  input a: [n]\n  output c = -a\n}\n")
    check(err, main(tmp_path), 2, 9, ["division by zero"], ["non-zero"])


def test_destructuring_count(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4, 6]\n  p, q = split(a, [2, 2, 2])\n"
                          "  output c = -p\n}\n")
    check(err, main(tmp_path), 3, 10, ["cannot unpack 3 values into 2 names"], ["2 values"])


def test_several_values_bound_to_one_name(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4, 6]\n  p = split(a, [3, 3])\n"
                          "  output c = -p\n}\n")
    check(err, main(tmp_path), 3, 7, ["gives 2 values"], ["one value"])


# ---- blocks, repeat, return --------------------------------------------------------------

def test_recursion(tmp_path):
    err = fails(tmp_path, "block f(x: [n]) {\n  return g(x)\n}\nblock g(x: [n]) {\n"
                          "  return f(x)\n}\nmodel m {\n  input a: [4]\n  output b = f(a)\n}\n")
    check(err, main(tmp_path), 5, 10, ["recursion", "f -> g -> f"], ["do not call themselves"])
    assert err.notes == (f"in block 'g' called at {main(tmp_path)}:2:10",
                         f"in block 'f' called at {main(tmp_path)}:9:14")


def test_return_outside_a_block(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4]\n  return a\n}\n")
    check(err, main(tmp_path), 3, 3, ["return outside a block"], ["last statement of a block"])


def test_return_not_last(tmp_path):
    err = fails(tmp_path, "block f(x: [n]) {\n  return x\n  y = x\n}\n"
                          "model m {\n  input a: [4]\n  output b = f(a)\n}\n")
    check(err, main(tmp_path), 2, 3, ["return must be the last statement of block 'f'"],
          ["last statement"])


def test_size_inside_a_block(tmp_path):
    err = fails(tmp_path, "block f(x: [n]) {\n  size k = 2\n  return x\n}\n"
                          "model m {\n  input a: [4]\n  output b = f(a)\n}\n")
    check(err, main(tmp_path), 2, 3, ["a size declaration cannot appear inside block 'f'"],
          ["top level of the model"])


def test_negative_repeat_count(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [4]\n  h = a\n  repeat 2 - 3 { h = -h }\n"
                          "  output b = h\n}\n")
    check(err, main(tmp_path), 4, 10, ["repeat count", "got -1"], ["non-negative integer"])


def test_error_inside_a_stdlib_block_names_the_call(tmp_path):
    err = fails(tmp_path, 'import "std/nn.ds"\nmodel m {\n  input a: [4, 8]\n'
                          "  output b = swiglu(a, 1.5)\n}\n")
    check(err, "std/nn.ds", 14, 18, ["dim 1 of 'w1' must be an integer"], ["positive"])
    assert err.notes == (f"in block 'swiglu' called at {main(tmp_path)}:4:14",)
    assert "  weight w1: [d, inter]" in str(err)


# ---- files -------------------------------------------------------------------------------

def test_import_not_found(tmp_path):
    err = fails(tmp_path, 'import "missing.ds"\nmodel m {\n  input a: [4]\n'
                          "  output b = -a\n}\n")
    check(err, main(tmp_path), 1, 1, ["import not found", "'missing.ds'"], ["existing .ds"])


def test_std_import_not_found(tmp_path):
    err = fails(tmp_path, 'model m {\n  input a: [4]\n  output b = -a\n}\nimport "std/mo.ds"\n')
    check(err, main(tmp_path), 5, 1, ["import not found", "'std/mo.ds'"], ["moe.ds"])


@pytest.mark.parametrize("path,words", [
    (".", ["import not found", "a directory, not a file"]),
    ("std/", ["import not found", "a directory, not a file"]),
    ("a" * 300, ["import not found", "too long"]),
    ("x\x00y.ds", ["bad import path"]),
    ("", ["bad import path"]),
])
def test_import_of_a_directory_or_an_odd_path(tmp_path, path, words):
    err = fails(tmp_path, f'import "{path}"\nmodel m {{\n  input a: [4]\n  output b = -a\n}}\n')
    check(err, main(tmp_path), 1, 1, words, [".ds file"])


def test_model_file_that_is_a_directory(tmp_path):
    with pytest.raises(DscError) as info:
        load_model(str(tmp_path))
    assert "a directory, not a file" in str(info.value)


def test_import_cycle(tmp_path):
    err = fails(tmp_path, 'import "a.ds"\nmodel m {\n  input a: [4]\n  output b = -a\n}\n',
                a='# a\nimport "b.ds"\n', b='import "m.ds"\n')
    check(err, str(tmp_path / "b.ds"), 1, 1, ["import cycle", "m.ds -> ", "a.ds -> ",
                                              "b.ds -> "], ["do not lead back"])


def test_block_defined_twice_across_imports(tmp_path):
    err = fails(tmp_path, 'import "a.ds"\nblock f(x: [n]) {\n  return x\n}\n'
                          "model m {\n  input a: [4]\n  output b = f(a)\n}\n",
                a="block f(x: [n]) {\n  return -x\n}\n")
    check(err, str(tmp_path / "a.ds"), 1, 7, ["block 'f' is defined twice"], ["one block"])


def test_missing_model(tmp_path):
    err = fails(tmp_path, "block f(x: [n]) {\n  return x\n}\n")
    check(err, main(tmp_path), 1, 1, ["no model"], ["model NAME"])


def test_two_models(tmp_path):
    err = fails(tmp_path, "model a {\n  input x: [2]\n  output y = -x\n}\n"
                          "model b {\n  input x: [2]\n  output y = -x\n}\n")
    check(err, main(tmp_path), 5, 1, ["second model 'b'"], ["exactly one model"])


def test_model_without_outputs(tmp_path):
    err = fails(tmp_path, "model m {\n  input x: [2]\n}\n")
    check(err, main(tmp_path), 1, 1, ["no outputs"], ["output NAME"])


def test_missing_model_file(tmp_path):
    with pytest.raises(DscError) as info:
        load_model(str(tmp_path / "nope.ds"))
    assert "cannot read model file" in str(info.value) and info.value.expected
