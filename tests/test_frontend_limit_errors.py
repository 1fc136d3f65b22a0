"""User errors of --set values and of sizes that would run away (compiler/frontend/limits.py):
each is a DscError at the exact line and column, with what was expected."""
from __future__ import annotations

import pytest

from ds_errors import check, fails, main  # noqa: F401


# ---- --set -------------------------------------------------------------------------------

SET_MODEL = """model m {
  size batch = 2
  eps = 1e-6
  precision {
    weights bf16
  }
  input a: [batch]
  output b = a * eps
}
"""


def test_set_unknown_name(tmp_path):
    err = fails(tmp_path, SET_MODEL, {"bacth": "4"})
    check(err, main(tmp_path), 1, 1, ["bad --set", "unknown name 'bacth'",
                                      "did you mean 'batch'"], ["top-level integer", "batch"])


def test_set_non_integer_value(tmp_path):
    err = fails(tmp_path, SET_MODEL, {"batch": "4.5"})
    check(err, main(tmp_path), 2, 8, ["bad --set batch=4.5", "not an integer"], ["integer"])


def test_set_value_with_a_plus_sign_is_refused_not_read_as_a_new_value(tmp_path):
    """`--set batch=+5` reads as five more; --set replaces, so it is refused (a fuzzed
    `--set heads=+5` ran tiny_moe with 5 heads)."""
    err = fails(tmp_path, SET_MODEL, {"batch": "+5"})
    assert str(err).startswith(f"{main(tmp_path)}:2:8: error: bad --set batch=+5: --set "
                               "replaces the value, it does not add to it\n")
    assert err.expected == "the new value itself, e.g. --set batch=5"


def test_set_a_negative_value_is_read_as_the_model_writes_it(tmp_path):
    err = fails(tmp_path, SET_MODEL, {"batch": "-2"})
    check(err, main(tmp_path), 2, 8, ["size 'batch' must be non-negative (>= 0), got -2"],
          ["a non-negative integer"])


def test_set_a_name_that_is_not_an_integer(tmp_path):
    err = fails(tmp_path, SET_MODEL, {"eps": "1"})
    check(err, main(tmp_path), 3, 3, ["cannot --set 'eps'", "float"], ["top-level integer"])


def test_set_bad_format_points_at_the_policy_entry(tmp_path):
    err = fails(tmp_path, SET_MODEL, {"weights": "fp9"})
    check(err, main(tmp_path), 5, 5, ["bad --set weights=fp9", "unknown dtype 'fp9'"],
          ["DTYPE scaled("])


def test_set_bad_format_points_at_the_precision_block(tmp_path):
    err = fails(tmp_path, SET_MODEL, {"kv_cache": "fp8_e4m3 scaled(fp32, 1x)"})
    check(err, main(tmp_path), 4, 3, ["bad --set kv_cache="], ["DTYPE scaled("])


def test_set_bad_format_without_a_precision_block(tmp_path):
    err = fails(tmp_path, "model m {\n  input a: [2]\n  output b = -a\n}\n",
                {"default": "mxfp4 scaled(fp32, 1x32)"})
    check(err, main(tmp_path), 1, 1, ["bad --set default=", "already includes its scaling"],
          ["DTYPE scaled("])


# ---- sizes that would run away (compiler/frontend/limits.py) -------------------------------

def test_an_expression_nested_past_the_bound_is_refused_where_it_goes_too_deep(tmp_path):
    terms = " + ".join(["1"] * 300)
    err = fails(tmp_path, f"model m {{\n  x = {terms}\n  input a: [4]\n  output b = -a\n}}\n")
    assert err.loc.file == main(tmp_path) and err.loc.line == 2
    assert "nested more than 100 levels deep" in err.message


def test_block_calls_nested_past_the_bound_are_refused_at_the_call(tmp_path):
    blocks = "".join(f"block f{i}(x: [n]) {{\n  return f{i + 1}(x)\n}}\n" for i in range(40))
    text = blocks + "block f40(x: [n]) {\n  return -x\n}\n" \
        "model m {\n  input a: [4]\n  output b = f0(a)\n}\n"
    err = fails(tmp_path, text)
    check(err, main(tmp_path), 31 * 3 + 2, 10, ["block calls nested more than 32 deep"],
          ["fewer levels"])


@pytest.mark.parametrize("text, line, col, words", [
    ("model m {\n  x = 1e999\n  input a: [4]\n  output b = -a\n}\n", 2, 7,
     ["the number 1e999 is too large"]),
    ("model m {\n  x = 1e308 * 10\n  input a: [4]\n  output b = -a\n}\n", 2, 13, ["overflows"]),
    ("model m {\n  x = 4294967296 * 4294967296\n  input a: [4]\n  output b = -a\n}\n", 2, 18,
     ["overflows"]),
    ("model m {\n  size n = 9007199254740993\n  input a: [4]\n  output b = -a\n}\n", 2, 8,
     ["at most 2^53"]),
    ("model m {\n  input a: [4]\n  repeat 1000000 {\n    a = -a\n  }\n  output b = -a\n}\n",
     3, 10, ["the repeat count 1,000,000 is more than 50,000 iterations"]),
    ("model m {\n  input a: [4]\n  repeat 20000 {\n    a = -(-(-a))\n  }\n  output b = -a\n}\n",
     3, 10, ["this repeat unrolls to 20,000 x 3 operations", "more than 50,000"]),
])
def test_numbers_and_repeats_that_would_run_away_are_refused(tmp_path, text, line, col, words):
    check(fails(tmp_path, text), main(tmp_path), line, col, words)


@pytest.mark.parametrize("value", ["9007199254740993", "1" * 5000])
def test_a_set_value_beyond_exact_integers_is_refused_at_the_definition(tmp_path, value):
    err = fails(tmp_path, "model m {\n  size n = 4\n  input a: [n]\n  output b = -a\n}\n",
                {"n": value})
    check(err, main(tmp_path), 2, 8, ["beyond 2^53"], ["at most 2^53"])


@pytest.mark.parametrize("entry, sets, line, col", [
    ("  precision {\n    default mxfp8\n  }\n", None, 3, 5),
    ("", {"default": "fp8_e4m3 scaled(ue8m0, 1x128)"}, 1, 1),
])
def test_a_block_scaled_default_is_refused(tmp_path, entry, sets, line, col):
    """Computed values take the default format; only a cast makes block scales (found by
    fuzzing: such a model compiled to a listing that stored scales nothing wrote)."""
    err = fails(tmp_path, f"model m {{\n{entry}  input a: [4]\n  output b = -a\n}}\n", sets)
    check(err, main(tmp_path), line, col, ["the default role is the format of every computed"],
          ["an unscaled default"])


@pytest.mark.parametrize("spec", ["ij,jk>ik", "ij->ik", "ij,jk,kl->il", "ij,jk->ik->i"])
def test_an_einsum_spec_not_of_the_form_a_b_to_c_is_refused_at_the_call(tmp_path, spec):
    """Found by fuzzing: a spec missing its '-' gave Python's 'not enough values to unpack'."""
    err = fails(tmp_path, "model m {\n  input a: bf16[4, 8]\n  input b: bf16[8, 2]\n"
                          f'  output c = einsum("{spec}", a, b)\n}}\n')
    check(err, main(tmp_path), 4, 14, [f"spec '{spec}' is not of the form 'A,B->C'"])
