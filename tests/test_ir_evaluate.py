"""Reference evaluation against numpy written here from scratch, and deterministic feeds.

The expected values below do not use the op registry or isa/ semantics: each model is
re-derived from its textbook definition, so a wrong reference in the registry shows up.
"""
from __future__ import annotations

import numpy as np
import pytest

from compiler.errors import DscError
from compiler.ir.evaluate import evaluate, random_feeds
from compiler.ir.verify import verify
from test_ir_text import Builder, T, every_op_graph

TOL = dict(rtol=2e-5, atol=2e-5)


def rmsnorm(x, w, eps=1e-6):
    return x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1 + np.exp(-x.astype(np.float64)))


def sigmoid(x):
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ------------------------------------------------------------------------------------ MLP

def mlp_graph():
    """h = x + w2(silu(w1 n) * (w3 n)), n = rmsnorm(x): a SwiGLU block with a residual."""
    b = Builder("mlp")
    b("x", "input", [], T([6, 16]))
    b("norm", "weight", [], T([16]))
    b("w1", "weight", [], T([16, 32], "fp8_e4m3 scaled(fp32, 128x128)"))
    b("w3", "weight", [], T([16, 32]))
    b("w2", "weight", [], T([32, 16]))
    b("n", "rmsnorm", ["x", "norm"], T([6, 16]), eps=1e-5)
    b("g", "matmul", ["n", "w1"], T([6, 32]))
    b("u", "matmul", ["n", "w3"], T([6, 32]))
    b("a", "silu", ["g"], T([6, 32]))
    b("gu", "mul", ["a", "u"], T([6, 32]))
    b("d", "matmul", ["gu", "w2"], T([6, 16]))
    b("h", "add", ["x", "d"], T([6, 16]))
    return b.out("h")


def test_mlp_matches_numpy():
    g = mlp_graph()
    verify(g)
    f = random_feeds(g, seed=1)
    n = rmsnorm(f["x"], f["norm"], eps=1e-5)
    expected = f["x"] + (silu(n @ f["w1"]) * (n @ f["w3"])) @ f["w2"]
    values = evaluate(g, f)
    np.testing.assert_allclose(values["h"], expected, **TOL)
    assert values["h"].dtype == np.float32
    assert set(values) == {n.name for n in g.nodes()}


# ------------------------------------------------------------------------------ attention

def attention_graph(seq=5, past=3, d=8):
    """One causal attention head over [1, seq, d] with rope, new keys at positions past.."""
    b = Builder("attention")
    b("x", "input", [], T([1, seq, d]))
    for w in ("wq", "wk", "wv", "wo"):
        b(w, "weight", [], T([d, d]))
    b("q0", "matmul", ["x", "wq"], T([1, seq, d]))
    b("k0", "matmul", ["x", "wk"], T([1, seq, d]))
    b("v", "matmul", ["x", "wv"], T([1, seq, d]))
    b("q", "rope", ["q0"], T([1, seq, d]), offset=past, theta=500.0)
    b("k", "rope", ["k0"], T([1, seq, d]), offset=past, theta=500.0)
    b("scale", "const", [], T([], "fp32"), value=float(d) ** -0.5)
    b("s0", "einsum", ["q", "k"], T([1, seq, seq], "fp32"), spec="bsd,btd->bst")
    b("s1", "mul", ["s0", "scale"], T([1, seq, seq], "fp32"))
    b("s", "causal_mask", ["s1"], T([1, seq, seq], "fp32"))
    b("p", "softmax", ["s"], T([1, seq, seq], "fp32"))
    b("o", "matmul", ["p", "v"], T([1, seq, d]))
    b("y", "matmul", ["o", "wo"], T([1, seq, d]))
    return b.out("y")


def rope(x, positions, theta):
    """Rotate pairs (x[2i], x[2i+1]) by positions * theta^(-2i/d), as complex numbers."""
    d = x.shape[-1]
    freqs = theta ** (-np.arange(0, d, 2) / d)
    turn = np.exp(1j * np.outer(positions, freqs))
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * turn
    out = np.empty(x.shape)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def test_attention_matches_numpy():
    seq, past, d = 5, 3, 8
    g = attention_graph(seq, past, d)
    verify(g)
    f = random_feeds(g, seed=2)
    x = f["x"][0].astype(np.float64)
    positions = np.arange(seq) + past
    q = rope(x @ f["wq"], positions, 500.0)
    k = rope(x @ f["wk"], positions, 500.0)
    scores = q @ k.T / np.sqrt(d)
    scores[np.triu_indices(seq, 1)] = -np.inf       # query s sees keys t <= s
    expected = softmax(scores) @ (x @ f["wv"]) @ f["wo"]
    values = evaluate(g, f)
    np.testing.assert_allclose(values["y"][0], expected, **TOL)
    assert np.all(np.isinf(values["s"][0][np.triu_indices(seq, 1)]))


# ------------------------------------------------------------------------------------ MoE

def moe_graph(tokens=6, d=8, experts=8, k=2, groups=4, topk_groups=2, inter=4):
    """DeepSeek-style routed MoE: sigmoid scores, biased group-limited top-k, normalised
    weights times 2.5, SwiGLU experts; capacity = tokens, so no token is dropped."""
    b = Builder("moe")
    b("x", "input", [], T([tokens, d]))
    b("gate", "weight", [], T([d, experts]))
    b("bias", "weight", [], T([experts], "fp32"))
    b("w1", "weight", [], T([experts, d, inter]))
    b("w3", "weight", [], T([experts, d, inter]))
    b("w2", "weight", [], T([experts, inter, d]))
    b("logits", "matmul", ["x", "gate"], T([tokens, experts], "fp32"))
    b("scores", "sigmoid", ["logits"], T([tokens, experts], "fp32"))
    b("idx", "topk", ["scores", "bias"], T([tokens, k], "i32"), k=k, groups=groups,
      topk_groups=topk_groups)
    b("weights", "topk_weights", ["scores", "idx"], T([tokens, k], "fp32"), scale=2.5)
    b("xe", "dispatch", ["x", "idx"], T([experts, tokens, d]), experts=experts,
      capacity=tokens)
    b("g", "matmul", ["xe", "w1"], T([experts, tokens, inter]))
    b("u", "matmul", ["xe", "w3"], T([experts, tokens, inter]))
    b("a", "silu", ["g"], T([experts, tokens, inter]))
    b("gu", "mul", ["a", "u"], T([experts, tokens, inter]))
    b("ye", "matmul", ["gu", "w2"], T([experts, tokens, d]))
    b("y", "combine", ["ye", "idx", "weights"], T([tokens, d]))
    return b.out("y")


def route(scores, bias, k, groups, topk_groups):
    """Per token: keep the topk_groups groups with the best sum of their two best biased
    scores, then the k best biased experts in those groups."""
    chosen = []
    for s in scores + bias:
        per_group = s.reshape(groups, -1)
        group_score = np.sort(per_group, axis=1)[:, -2:].sum(1)
        kept = sorted(range(groups), key=lambda i: -group_score[i])[:topk_groups]
        candidates = [e for grp in kept for e in range(grp * per_group.shape[1],
                                                        (grp + 1) * per_group.shape[1])]
        chosen.append(sorted(candidates, key=lambda e: -s[e])[:k])
    return np.array(chosen)


def test_moe_matches_numpy():
    g = moe_graph()
    verify(g)
    f = random_feeds(g, seed=3)
    x = f["x"].astype(np.float64)
    scores = sigmoid(x @ f["gate"])
    chosen = route(scores, f["bias"], k=2, groups=4, topk_groups=2)
    expected = np.zeros_like(x)
    for t, experts in enumerate(chosen):
        w = scores[t, experts] / scores[t, experts].sum() * 2.5
        for e, we in zip(experts, w):
            h = silu(x[t] @ f["w1"][e]) * (x[t] @ f["w3"][e])
            expected[t] += we * (h @ f["w2"][e])
    values = evaluate(g, f)
    np.testing.assert_array_equal(np.sort(values["idx"], 1), np.sort(chosen, 1))
    assert values["idx"].dtype == np.int32
    np.testing.assert_allclose(values["y"], expected, **TOL)


# ---------------------------------------------------------------------------- random feeds

def test_random_feeds_are_deterministic():
    g = every_op_graph()
    a, b = random_feeds(g, seed=7), random_feeds(g, seed=7)
    assert a.keys() == b.keys() == {"ids", "layer.0.table", "layer.0.norm", "layer.0.w",
                                    "layer.0.gate", "layer.0.bias", "layer.0.experts", "kv",
                                    "chosen"}
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    c = random_feeds(g, seed=8)
    assert not np.array_equal(a["layer.0.w"], c["layer.0.w"])
    assert 0 <= a["chosen"].min() and a["chosen"].max() < 8       # rows of the gathered cache


def test_random_feeds_depend_on_the_name_not_the_graph_around_it():
    small = moe_graph()
    big = moe_graph()
    big.add("weight", [], T([3, 3]), "another")
    a, b = random_feeds(small, 5), random_feeds(big, 5)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_random_feeds_kinds_and_ranges():
    b = Builder("feeds")
    b("ids", "input", [], T([4000], "i32"))
    b("table", "weight", [], T([10, 64]))
    b("emb", "embedding", ["ids", "table"], T([4000, 64]))
    b("counts", "input", [], T([1000], "i32"))
    b("big", "weight", [], T([400, 300], "fp8_e4m3 scaled(fp32, 128x128)"))
    b("scale", "weight", [], T([1000]))
    b("x", "input", [], T([50, 40]))
    b("kv", "cache", [], T([2, 30, 40]))
    f = random_feeds(b.out("emb"))
    assert f["ids"].dtype == f["counts"].dtype == np.int32
    assert f["ids"].min() == 0 and f["ids"].max() == 9          # every table row, no more
    assert 0 <= f["counts"].min() and f["counts"].max() < 8     # small
    assert all(f[n].dtype == np.float32 for n in ("table", "big", "scale", "x", "kv"))
    assert f["big"].std() == pytest.approx(1 / np.sqrt(400), rel=0.05)
    assert f["scale"].mean() == pytest.approx(1, abs=0.02)
    assert f["scale"].std() == pytest.approx(0.1, rel=0.15)
    assert f["x"].std() == pytest.approx(1, rel=0.1)
    assert f["kv"].std() == pytest.approx(1, rel=0.1)


def test_index_inputs_stay_in_range_for_routing():
    b = Builder("routes")
    b("x", "input", [], T([16, 4]))
    b("idx", "input", [], T([16, 2], "i32"))
    b("w", "input", [], T([16, 2], "fp32"))
    b("xe", "dispatch", ["x", "idx"], T([3, 16, 4]), experts=3, capacity=16)
    b("y", "combine", ["xe", "idx", "w"], T([16, 4]))
    g = b.out("y")
    f = random_feeds(g)
    assert f["idx"].max() < 3
    evaluate(g, f)


# -------------------------------------------------------------------------------- evaluate

def test_every_op_evaluates_with_the_declared_shapes():
    g = every_op_graph()
    values = evaluate(g, random_feeds(g))
    for node in g.nodes():
        assert values[node.name].shape == node.type.shape, node.name
    assert values["idx"].dtype == np.int32
    assert values["half"] == np.float32(0.5)
    np.testing.assert_allclose(values["ps"], 1, rtol=1e-6)     # softmax rows sum to 1


def test_evaluation_ignores_storage_formats():
    g = mlp_graph()
    f = random_feeds(g)
    f["w1"] = f["w1"] + np.float32(1e-3)       # not representable in fp8: kept as given
    n = rmsnorm(f["x"], f["norm"], eps=1e-5)
    np.testing.assert_allclose(evaluate(g, f)["g"], n @ f["w1"], **TOL)


def test_missing_or_misshapen_feeds_are_errors():
    g = mlp_graph()
    f = random_feeds(g)
    del f["w2"]
    with pytest.raises(DscError, match="no value fed for weight %w2"):
        evaluate(g, f)
    f = random_feeds(g)
    f["x"] = f["x"][:2]
    with pytest.raises(DscError, match=r"%x has shape \[2, 16\], expected \[6, 16\]"):
        evaluate(g, f)
