"""The builder: .ds text -> IR Graph (nodes, names, types, sizes, policy, outputs)."""
from __future__ import annotations

import pytest

from compiler.errors import Loc
from compiler.frontend import load_model
from compiler.ir.ops.routing import balanced_capacity
from isa.formats import Format, Scaling, parse_format


def build(tmp_path, text: str, overrides=None, **others):
    """Write `text` as m.ds (and `others` as NAME.ds beside it) and build it."""
    for name, body in others.items():
        (tmp_path / f"{name}.ds").write_text(body)
    path = tmp_path / "m.ds"
    path.write_text(text)
    return load_model(str(path), overrides)


def nodes(g, op=None):
    return [n for n in g.nodes() if op is None or n.op == op]


def names(g, op=None):
    return [n.name for n in nodes(g, op)]


def out(g, i=0):
    return g.node(g.outputs[i])


# ---- the contract files ----------------------------------------------------------------

def test_gemm_contract_builds(tmp_path):
    g = build(tmp_path, """model gemm {
  size M = 4096, N = 7168, K = 2048
  input  a: fp8_e4m3[M, K] scaled(fp32, 1x128)
  weight b: fp8_e4m3[K, N] scaled(fp32, 128x128)
  output c: bf16[M, N] = a @ b
}""")
    assert g.model == "gemm" and g.sizes == {"M": 4096, "N": 7168, "K": 2048}
    a, b, c = nodes(g)
    assert (a.op, a.name, a.type.shape) == ("input", "a", (4096, 2048))
    assert a.type.format == Format("fp8_e4m3", Scaling("fp32", (1, 128)))
    assert b.type.format == Format("fp8_e4m3", Scaling("fp32", (128, 128)))
    assert (c.op, c.name, c.inputs, c.type.shape) == ("matmul", "c", (a.id, b.id), (4096, 7168))
    assert c.type.format == Format("bf16")
    assert g.outputs == [c.id]
    assert g.policy == {r: Format("bf16") for r in ("default", "weights", "activations",
                                                     "kv_cache")}
    assert c.loc == Loc(str(tmp_path / "m.ds"), 5, 28)


# ---- numbers -----------------------------------------------------------------------------

@pytest.mark.parametrize("expr, value", [
    ("7 * 3 - 1", 20), ("12 / 4", 3), ("7 / 2", 3.5), ("-7 // 2", -4), ("-7 % 3", 2),
    ("ceil_div(7, 2)", 4), ("min(3, 1, 2)", 1), ("max(3, 9)", 9), ("sqrt(16)", 4.0),
    ("2 * (3 + 4)", 14), ("1e3", 1000.0),
])
def test_number_expressions(tmp_path, expr, value):
    g = build(tmp_path, f"model m {{ n = {expr}  size s = 1  input x: [2]  output y = x * n }}")
    assert out(g).op == "mul"
    const = nodes(g, "const")[0]
    assert const.attr("value") == float(value)
    if isinstance(value, int):
        assert g.sizes["n"] == value
    else:
        assert "n" not in g.sizes


def test_sizes_are_top_level_integers_in_definition_order(tmp_path):
    g = build(tmp_path, """model m {
      size b = 2, s = 3
      d = 4
      eps = 1e-6
      name_only = b * s
      repeat 2 { inner = 5 }
      input x: [b, s, d]
      output y = x * eps
    }""")
    assert list(g.sizes.items()) == [("b", 2), ("s", 3), ("d", 4), ("name_only", 6)]


def test_overrides_replace_the_value_where_it_is_defined(tmp_path):
    text = """model m {
      size b = 2
      n = 3
      total = b * n
      input x: [total]
      output y = -x
    }"""
    g = build(tmp_path, text, {"b": "5", "n": "2"})
    assert g.sizes == {"b": 5, "n": 2, "total": 10}
    assert nodes(g, "input")[0].type.shape == (10,)


# ---- tensors: arithmetic and ops ---------------------------------------------------------

def test_scalar_and_tensor_arithmetic_makes_const_and_broadcast_nodes(tmp_path):
    g = build(tmp_path, """model m {
      input x: [2, 4]
      input v: [4]
      a = 2 - x
      b = x / 4
      c = a * v + b
      output y = -c
    }""")
    a = g.by_name("a")
    const = g.node(a.inputs[0])
    assert a.op == "sub" and const.op == "const" and const.attr("value") == 2.0
    assert const.type.shape == () and const.type.format == Format("fp32")
    assert g.by_name("b").op == "div" and g.node(g.by_name("b").inputs[1]).attr("value") == 4.0
    c = g.by_name("c")
    assert c.op == "add" and g.node(c.inputs[0]).op == "mul"
    assert g.node(c.inputs[0]).type.shape == (2, 4)
    assert out(g).op == "neg" and out(g).name == "y"


def test_every_builtin_op_call(tmp_path):
    g = build(tmp_path, """model m {
      size B = 2, S = 3, T = 8, H = 4, D = 16, E = 4
      input ids: i32[B, S]
      weight table: bf16[32, D]
      weight wn: bf16[D]
      cache kv: bf16[B, T, D]
      x = embedding(ids, table)
      n = rmsnorm(x, wn, eps=1e-5)
      r = rope(n, 5, theta=500000.0)
      s = einsum("bsd,btd->bst", r, kv)
      m = causal_mask(s, offset=5)
      p = softmax(m)
      total = sum(p, axis=-1, keepdims=true)
      big = max(p)
      avg = mean(p, 1)
      q = reshape(n, [B, S, H, -1])
      t = transpose(q, [0, 2, 1, 3])
      t2 = transpose(n)
      sl = slice(n, -1, 0, 8)
      cat = concat([sl, sl], axis=-1)
      kv2 = cache_write(kv, cat, 5)
      flat = reshape(n, [B * S, D])
      w = relu(exp(silu(flat)))
      output o = cast(kv2, "fp8_e4m3 scaled(fp32, 1x128)")
      output o2 = total * p
      output o7 = big
      output o3 = t
      output o4 = t2
      output o5 = w
      output o6 = avg
    }""")
    by = {n.name: n for n in nodes(g)}
    assert by["x"].type.shape == (2, 3, 16)
    assert by["n"].attr("eps") == 1e-5
    assert by["r"].attr_dict == {"offset": 5, "theta": 500000.0, "axis": 1}
    assert by["s"].attr("spec") == "bsd,btd->bst" and by["s"].type.shape == (2, 3, 8)
    assert by["m"].attr("offset") == 5
    assert by["total"].type.shape == (2, 3, 1) and by["o7"].type.shape == (2, 3)
    assert by["o6"].attr_dict == {"axis": 1, "keepdims": False}
    assert by["q"].type.shape == (2, 3, 4, 4) and by["q"].attr("shape") == (2, 3, 4, -1)
    assert by["o3"].type.shape == (2, 4, 3, 4) and by["o4"].type.shape == (2, 16, 3)
    assert by["sl"].attr_dict == {"axis": -1, "start": 0, "stop": 8}
    assert by["cat"].type.shape == (2, 3, 16)
    assert by["kv2"].type == by["kv"].type and by["kv2"].attr("offset") == 5
    assert by["o"].type.format == parse_format("fp8_e4m3 scaled(fp32, 1x128)")
    assert by["o"].attr("format") == parse_format("fp8_e4m3 scaled(fp32, 1x128)")
    assert by["o5"].op == "relu" and by["o2"].type.shape == (2, 3, 8)


def test_max_with_numbers_is_the_scalar_function(tmp_path):
    g = build(tmp_path, "model m { n = max(2, 5)  input x: [n, 3]  output y = max(x, 0) }")
    assert g.sizes["n"] == 5 and out(g).op == "max" and out(g).type.shape == (3,)


def test_split_and_topk_composites(tmp_path):
    g = build(tmp_path, """model m {
      input x: [8, 6]
      weight bias: fp32[6]
      a, b = split(x, [2, 4])
      w, idx = topk(sigmoid(x), 2, bias=bias, groups=2, topk_groups=1, scale=2.5)
      output y = combine(dispatch(x, idx, 6), idx, w)
    }""")
    a, b = g.by_name("a"), g.by_name("b")
    assert (a.op, a.attr_dict) == ("slice", {"axis": -1, "start": 0, "stop": 2})
    assert b.attr_dict == {"axis": -1, "start": 2, "stop": 6}
    idx, w = g.by_name("idx"), g.by_name("w")
    assert idx.op == "topk" and idx.attr_dict == {"k": 2, "groups": 2, "topk_groups": 1,
                                                  "group_best": 2}
    assert len(idx.inputs) == 2 and g.node(idx.inputs[1]).name == "bias"
    assert idx.type.format == Format("i32") and idx.type.shape == (8, 2)
    assert w.op == "topk_weights" and w.attr_dict == {"norm": True, "scale": 2.5}
    assert w.inputs == (idx.inputs[0], idx.id)
    dispatch = nodes(g, "dispatch")[0]
    assert dispatch.attr_dict == {"experts": 6, "capacity": balanced_capacity(8, 2, 6)}
    assert out(g).op == "combine" and out(g).type.shape == (8, 6)


def test_dispatch_capacity_zero_means_balanced(tmp_path):
    g = build(tmp_path, """model m {
      input x: [16, 4]
      input idx: i32[16, 2]
      output y = dispatch(x, idx, experts=4, capacity=0)
      output z = dispatch(x, idx, 4, 16)
    }""")
    assert out(g, 0).attr("capacity") == 8 and out(g, 1).attr("capacity") == 16


# ---- formats and the precision policy ----------------------------------------------------

POLICY_MODEL = """model m {
  precision {
    default bf16
    weights %s
    kv_cache fp8_e4m3
  }
  input x: [4, 64]
  weight w: [64, 32]
  weight experts: [2, 64, 32]
  weight vec: [64]
  weight literal: fp8_e4m3[64, 32] scaled(fp32, 1x128)
  cache kv: [2, 8, 64]
  output y = x @ w + x @ literal
}"""


def test_role_formats_and_orientation(tmp_path):
    g = build(tmp_path, POLICY_MODEL % "mxfp4")
    by = {n.name: n for n in nodes(g)}
    transposed = Format("fp4_e2m1", Scaling("ue8m0", (32, 1)))
    assert g.policy["weights"] == parse_format("mxfp4")            # as written
    assert by["w"].type.format == transposed                        # oriented for [K, N]
    assert by["experts"].type.format == transposed
    assert by["vec"].type.format == parse_format("mxfp4")           # rank 1: unchanged
    assert by["literal"].type.format == Format("fp8_e4m3", Scaling("fp32", (1, 128)))
    assert by["kv"].type.format == Format("fp8_e4m3")
    assert by["x"].type.format == Format("bf16")
    assert g.policy["activations"] == Format("bf16")                # defaults to `default`


def test_square_blocks_are_not_transposed(tmp_path):
    g = build(tmp_path, POLICY_MODEL % "fp8_e4m3 scaled(fp32, 128x128)")
    assert g.by_name("w").type.format.scaling.block == (128, 128)


def test_set_roles_override_the_policy_but_not_literal_types(tmp_path):
    g = build(tmp_path, POLICY_MODEL % "bf16", {"weights": "nvfp4", "default": "fp16"})
    assert g.policy["weights"] == parse_format("nvfp4")
    assert g.by_name("w").type.format == Format("fp4_e2m1", Scaling("fp8_e4m3", (16, 1), "fp32"))
    assert g.by_name("literal").type.format.scaling.block == (1, 128)
    assert g.policy["default"] == Format("fp16") and g.by_name("x").type.format == Format("fp16")
    assert g.policy["kv_cache"] == Format("fp8_e4m3")


def test_unspecified_roles_follow_default(tmp_path):
    g = build(tmp_path, "model m { precision { default fp16 }  input x: [2]  output y = -x }")
    assert set(g.policy.values()) == {Format("fp16")}
    assert out(g).type.format == Format("fp16")


def test_output_type_sets_the_format(tmp_path):
    g = build(tmp_path, "model m { input x: [2, 3]  output y: fp32[2, 3] = x * 2 }")
    assert out(g).type.format == Format("fp32") and out(g).name == "y"


# ---- blocks ------------------------------------------------------------------------------

BLOCKS = """
scale = 3
block lin(x: [..., d], out, bias = 0.5) {
  weight w: [d, out]
  y = x @ w
  return y * scale + bias
}
block pair(x: [T, 4]) {
  return x, -x
}
"""


def test_block_calls_bind_patterns_and_name_their_nodes(tmp_path):
    g = build(tmp_path, BLOCKS + """model m {
      input x: [2, 5, 4]
      h = lin(x, 8)
      h = lin(h, out=4, bias=1)
      output o = h
    }""")
    assert g.by_name("lin.w").type.shape == (4, 8)
    assert g.by_name("lin_1.w").type.shape == (8, 4)
    assert g.by_name("lin.y").op == "matmul"
    consts = [n.attr("value") for n in nodes(g, "const")]
    assert consts == [3.0, 0.5, 3.0, 1.0]
    assert out(g).name == "o" and out(g).op == "add"


def test_blocks_returning_several_values(tmp_path):
    g = build(tmp_path, BLOCKS + """model m {
      input x: [3, 4]
      a, b = pair(x)
      output o = a + b
    }""")
    assert g.by_name("pair.neg").op == "neg" and out(g).op == "add"


def test_repeat_scopes_and_counter_continues_across_repeats(tmp_path):
    g = build(tmp_path, BLOCKS + """model m {
      size n = 2
      input x: [3, 4]
      h = x
      repeat n { h = lin(h, 4) }
      repeat 1 { h = lin(h, 4) }
      repeat 2 as extra { h = -h }
      output o = h
    }""")
    assert [n for n in names(g, "weight")] == ["layer.0.lin.w", "layer.1.lin.w", "layer.2.lin.w"]
    assert "extra.0.h" in names(g) and "extra.1.h" not in names(g)   # output renames it
    assert out(g).name == "o" and g.node(out(g).inputs[0]).name == "extra.0.h"


def test_reassignment_suffixes_and_intermediate_names(tmp_path):
    g = build(tmp_path, """model m {
      input x: [2, 2]
      h = x @ x @ x
      h = h + 1
      output o = h * 2
    }""")
    assert names(g) == ["x", "matmul", "h", "const", "h_1", "const_1", "o"]


def test_block_defaults_can_use_earlier_params(tmp_path):
    g = build(tmp_path, """block f(x: [n], k = n * 2) {
      weight w: [k]
      return x
    }
    model m { input x: [3]  output y = -f(x) }""")
    assert g.by_name("f.w").type.shape == (6,)


def test_block_number_param_equal_to_a_pattern_dim(tmp_path):
    g = build(tmp_path, """block f(x: [d], d) { return -x }
    model m { input x: [3]  output y = f(x, 3) }""")
    assert out(g).op == "neg"


def test_block_sees_constants_of_its_file_not_the_caller(tmp_path):
    g = build(tmp_path, """import "lib.ds"
    model m { width = 100  input x: [2, 4]  output y = widen(x) }""",
              lib="width = 6\nblock widen(x: [T, d]) {\n  weight w: [d, width]\n"
                  "  return x @ w\n}\n")
    assert g.by_name("widen.w").type.shape == (4, 6)
    assert g.by_name("widen.w").loc == Loc(str(tmp_path / "lib.ds"), 3, 10)


# ---- imports -----------------------------------------------------------------------------

def test_stdlib_import_and_displayed_file_names(tmp_path):
    g = build(tmp_path, """import "std/nn.ds"
    model m {
      input x: [2, 8]
      output y = swiglu(norm(x), 16)
    }""")
    w = g.by_name("norm.w")
    assert w.type.format == Format("bf16") and w.loc.file == "std/nn.ds"
    assert g.by_name("swiglu.w1").type.shape == (8, 16)
    assert g.by_name("swiglu.w2").type.shape == (16, 8)


def test_a_file_imported_twice_is_loaded_once(tmp_path):
    g = build(tmp_path, """import "a.ds"
    import "b.ds"
    model m { input x: [2]  output y = fa(fb(x)) }""",
              a='import "c.ds"\nblock fa(x: [n]) { return fc(x) }\n',
              b='import "c.ds"\nblock fb(x: [n]) { return fc(x) }\n',
              c="block fc(x: [n]) { return -x }\n")
    assert out(g).name == "y" and len(nodes(g, "neg")) == 2


def test_main_file_shown_as_given(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.ds").write_text('import "lib.ds"\n'
                                           "model m { input x: [2]  output y = f(x) }")
    (tmp_path / "sub" / "lib.ds").write_text("block f(x: [n]) { return -x }")
    monkeypatch.chdir(tmp_path)
    g = load_model("sub/m.ds")
    assert g.by_name("x").loc.file == "sub/m.ds"
    assert g.by_name("y").loc.file == "sub/lib.ds"


# ---- graph invariants --------------------------------------------------------------------

def test_names_are_unique_and_every_node_has_a_location(tmp_path):
    g = build(tmp_path, BLOCKS + """import "std/moe.ds"
    model m {
      input x: [4, 8]
      h = x
      repeat 2 { h = moe(h, 4, 2, 16, shared=1) + lin(h, 8) }
      output o = h
    }""")
    all_names = names(g)
    assert len(all_names) == len(set(all_names))
    assert all(n.loc is not None for n in nodes(g))
