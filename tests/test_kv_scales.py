"""A block-scaled KV cache is read through its scales by the attention kernels.

The FP8 cache's elements mean nothing without their per-block scales: each key block is loaded
with its scale tile and dequantised before the matrix unit reads it (compiler/lower/templates/
flash_keys.py), on one core (GPU), with the keys split (split-KV decode) and across split
cube/vector cores (Ascend). Checked against numpy attention over the dequantised cache, and
in the listing and the timing: the scale loads are there and their bytes are counted.
"""
from __future__ import annotations

import numpy as np
import pytest

from attention_models import two_head_attention
from compiler import api
from compiler.cli.functional import check_numerics
from compiler.driver import compile_model
from compiler.ir.evaluate import random_feeds
from isa.program import Box, expand_schedule, walk
from runtime.functional import Machine

SCALED = "fp8_e4m3 scaled(fp32, 1x32)"


def _gqa(S: int, ctx: int, kv: str = SCALED) -> str:
    """Two heads over separate K and V caches of ctx + S positions, 64 wide (two scale
    blocks per head row)."""
    return two_head_attention("kv_scaled", "default fp32 weights fp32 activations fp32 "
                              f"kv_cache {kv}", S, ctx)


# Absorbed-MLA form: one latent cache, the values its leading 64 columns (read from the
# dequantised key tile), the last 16 a shared rope key.
LATENT = f"""
model kv_latent {{
  size B = 2, S = 3, ctx = 40
  heads = 4
  precision {{ default fp32 weights fp32 activations fp32 kv_cache {SCALED} }}
  input q: [B, heads, S, 80]
  cache c: [B, ctx + S, 80]
  scores = einsum("bhsc,btc->bhst", q, c) * 0.1
  p = softmax(causal_mask(scores, ctx))
  output o = einsum("bhst,btc->bhsc", p, slice(c, -1, 0, 64))
}}"""


def _reference(kind: str, q, k, v, ctx: int) -> np.ndarray:
    """float64 attention over the given (dequantised) keys and values."""
    if kind == "gqa":
        s = np.einsum("bshe,bthe->bhst", q, k) / np.sqrt(q.shape[-1])
    else:
        s = np.einsum("bhsc,btc->bhst", q, k) * 0.1
    S, T = s.shape[-2:]
    s = np.where(np.arange(T)[None, :] <= ctx + np.arange(S)[:, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (np.einsum("bhst,bthe->bshe", p, v) if kind == "gqa"
            else np.einsum("bhst,btc->bhsc", p, v))


CASES = {
    "gqa": (lambda: _gqa(2, 300), 300, "flash_attention"),
    "split_kv": (lambda: _gqa(1, 4000), 4000, "flash_split_kv"),
    "latent": (lambda: LATENT, 40, "flash_attention"),
}


@pytest.mark.parametrize("target", ["h800", "ascend910b"])
@pytest.mark.parametrize("case", list(CASES))
def test_attention_dequantises_the_cache_it_reads(case, target, tmp_path):
    text, ctx, kernel = CASES[case]
    path = tmp_path / f"{case}.ds"
    path.write_text(text())
    compiled = compile_model(str(path), target, {})
    if target == "h800":                      # ascend910b's cube has no split-KV form
        assert any(k.name.startswith(kernel) for k in compiled.program.kernels)
    result = check_numerics(compiled)
    assert not result.warnings, result.warnings
    feeds = random_feeds(compiled.graph, 0)
    machine = Machine(compiled.program, compiled.target)
    machine.store_feeds(feeds)
    machine.run()
    kind = "latent" if case == "latent" else "gqa"
    cache = ("c", "c") if kind == "latent" else ("k_cache", "v_cache")
    k, v = (machine.memory.value(n).astype(np.float64) for n in cache)
    elements = [machine.memory.read(n).astype(np.float64) for n in cache]
    if kind == "latent":
        v, elements[1] = v[..., :64], elements[1][..., :64]
    isa = machine.memory.value("o").astype(np.float64)
    rel = lambda ref: np.linalg.norm(isa - ref) / np.linalg.norm(ref)
    q = feeds["q"].astype(np.float64)
    # Within bf16 rounding (the matrix format) of attention over the dequantised cache; far
    # from attention over the elements alone, which is what ignoring the scales computes.
    assert rel(_reference(kind, q, k, v, ctx)) < 1e-2
    assert rel(_reference(kind, q, *elements, ctx)) > 0.3
    # Against the full-precision model: FP8's own error, not more.
    (out,) = result.outputs
    assert 1e-3 < out.rel_error < 8e-2, out


@pytest.mark.parametrize("target", ["h800", "ascend910b"])
def test_listing_loads_scales_and_counts_their_bytes(target, tmp_path):
    scaled, plain = tmp_path / "scaled.ds", tmp_path / "plain.ds"
    scaled.write_text(_gqa(2, 300))
    plain.write_text(_gqa(2, 300, "fp8_e4m3"))
    program = compile_model(str(scaled), target, {}).program
    (kernel,) = [k for k in program.kernels if k.name.startswith("flash_attention")]
    launches = [ln for ln, _ in expand_schedule(program.schedule) if ln.kernel == kernel.name]
    assert dict(launches[0].args)["k0_scale"] == "k_cache.gnk.scale"
    assert dict(launches[0].args)["v_scale"] == "v_cache.gkn.scale"
    name = lambda a: a.tensor if isinstance(a, Box) else getattr(a, "name", None)
    ops = [(i.op, [name(a) for a in i.args]) for i in walk(kernel.body)]
    loads = "vld.tile" if target == "ascend910b" else "ld.tile"
    scale_loads = [args[1] for op, args in ops if op == loads and args[1].endswith("_scale")]
    assert scale_loads.count("k0_scale") == scale_loads.count("v_scale") >= 1
    dequants = [args for op, args in ops if op == "vec.dequant"]
    assert len(dequants) == len(scale_loads)
    # What the MMAs read is the dequantised tiles.
    mmas = [args for op, args in ops if op == "mm.mma"]
    assert {args[2] for args in mmas} == {"ck0", "cv"}
    runs = {k: api.run(str(p), target) for k, p in (("scaled", scaled), ("plain", plain))}
    row = {k: next(r for r in run.kernels if r.kernel.startswith("flash_attention"))
           for k, run in runs.items()}
    scale_bytes = 2 * 302 * 2 * 2 * 4              # K and V: [T, heads, 64 / 32] fp32 scales
    # The unscaled FP8 cache is not read by the bf16 product either: it is widened on the
    # vector unit (on ascend910b handed to the cube through the workspace, as the scaled one
    # is), so the scales are the only difference.
    assert row["scaled"].bytes - row["plain"].bytes == scale_bytes
    assert row["scaled"].time_us > row["plain"].time_us
