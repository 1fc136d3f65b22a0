"""Small attention models the attention tests compile: one text, sized by each test."""
from __future__ import annotations


def two_head_attention(name: str, precision: str, S: int, ctx: int, hd: int = 64) -> str:
    """Two heads of `hd` attending, causally masked, over separate K and V caches of
    ctx + S positions; `precision` is the body of the model's precision block."""
    return f"""
model {name} {{
  size B = 1, S = {S}, ctx = {ctx}
  heads = 2
  hd = {hd}
  precision {{ {precision} }}
  input q: [B, S, heads, hd]
  cache k_cache: [B, ctx + S, heads, hd]
  cache v_cache: [B, ctx + S, heads, hd]
  scores = einsum("bshe,bthe->bhst", q, k_cache) * (1 / sqrt(hd))
  p = softmax(causal_mask(scores, ctx))
  output o = einsum("bhst,bthe->bshe", p, v_cache)
}}"""
