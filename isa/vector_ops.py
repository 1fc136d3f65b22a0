"""The vector-unit operation catalogue: per-element cost and numpy semantics, defined once.

A `vec.OP` instruction costs, per element, `alu` simple FP32 operations and `special`
transcendental ones (exp, reciprocal, rsqrt); its cycles are
`max(elems * alu / lanes, elems * special / special_lanes)` on the target's vector unit (see
instructions.py). The IR ops of the same computation reuse `semantics` as their numpy
reference, so the math exists in exactly one place. All semantics compute in float32; numpy
is imported when a semantics first runs (isa/lazy_numpy.py), not to read the costs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from isa import routing
from isa.lazy_numpy import np


@dataclass(frozen=True)
class VectorOp:
    name: str
    arity: int                 # source buffers
    alu: float | Callable[[dict], float]       # simple FP32 operations per element
    special: float | Callable[[dict], float]   # transcendental operations per element
    semantics: Callable        # (*arrays, **attrs) -> np.ndarray
    doc: str
    reads_dst: bool = False    # the destinations' old values come first among the arguments
    outputs: int = 1           # destination operands (the semantics return a tuple if > 1)
    attrs: tuple[str, ...] = ()      # attributes its instruction may take besides n
    immediate_last: bool = False     # its last source may be an immediate (imm1) instead
    optional_source: bool = False    # one more source may follow (top-k's selection bias)

    @property
    def operands(self) -> tuple[str, ...]:
        """Operand kinds of its instruction: destinations, then sources; "buf?" optional."""
        sources = ("buf",) * (self.arity - self.immediate_last)
        optional = ("buf?",) if self.immediate_last or self.optional_source else ()
        return ("buf",) * self.outputs + sources + optional

    def per_element(self, attrs: dict) -> tuple[float, float]:
        """(alu, special) operations per element for an instruction with these attributes."""
        pick = lambda v: v(attrs) if callable(v) else v
        return pick(self.alu), pick(self.special)


def _sigmoid(x):
    x = x.astype(np.float32)
    return (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)


def _softmax(x, axis=-1):
    x = x.astype(np.float32)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(np.float32)


def _rmsnorm(x, w, eps=1e-6):
    x = x.astype(np.float32)
    inv = np.float32(1) / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps))
    return (x * inv * w.astype(np.float32)).astype(np.float32)


def _layernorm(x, w, b, eps=1e-5):
    x = x.astype(np.float32)
    centred = x - np.mean(x, axis=-1, keepdims=True)
    variance = np.mean(centred * centred, axis=-1, keepdims=True)
    inv = np.float32(1) / np.sqrt(variance + np.float32(eps))
    return (centred * inv * w.astype(np.float32) + b.astype(np.float32)).astype(np.float32)


def _gelu(x):
    """GELU with the exact Gaussian CDF: x * (1 + erf(x / sqrt 2)) / 2."""
    x64 = x.astype(np.float64)
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))).astype(np.float32)


def _gelu_tanh(x):
    """GELU's tanh approximation (GPT-2/3): x * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2."""
    x = x.astype(np.float32)
    inner = np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x * x * x)
    return (np.float32(0.5) * x * (np.float32(1) + np.tanh(inner))).astype(np.float32)


# -- long rows streamed in column chunks: a statistics pass, then an apply pass -------------
# stats is [rows, 2] fp32, carried across the chunks of a row (`first` starts it afresh).

def _softmax_stats(stats, x, first=0, **_):
    """Running (max m, sum of exp(x - m)) of a row, rescaled as the max grows (online)."""
    x = x.astype(np.float32)
    m_chunk = np.max(x, axis=-1)
    if first:
        m, l = m_chunk, np.zeros_like(m_chunk)
    else:
        m_old, l_old = stats[:, 0].astype(np.float32), stats[:, 1].astype(np.float32)
        m = np.maximum(m_old, m_chunk)
        l = l_old * np.exp(m_old - m)
    l = l + np.sum(np.exp(x - m[:, None]), axis=-1)
    return np.stack([m, l], axis=-1).astype(np.float32)


def _sumsq_stats(stats, x, first=0, **_):
    """Running sum of squares of a row (column 1 unused)."""
    x = x.astype(np.float32)
    total = np.sum(x * x, axis=-1) + (np.float32(0) if first else stats[:, 0].astype(np.float32))
    return np.stack([total, np.zeros_like(total)], axis=-1).astype(np.float32)


def _moments_stats(stats, x, first=0, col0=0, **_):
    """Running (mean, sum of squared deviations) of a row: a chunk's moments merged with the
    `col0` columns before it (Chan, Golub and LeVeque's pairwise update)."""
    x = x.astype(np.float32)
    n_b = np.float32(x.shape[-1])
    mean_b = np.mean(x, axis=-1)
    m2_b = np.sum((x - mean_b[:, None]) ** 2, axis=-1)
    if first:
        return np.stack([mean_b, m2_b], axis=-1).astype(np.float32)
    n_a = np.float32(col0)
    mean_a, m2_a = stats[:, 0].astype(np.float32), stats[:, 1].astype(np.float32)
    delta = mean_b - mean_a
    mean = mean_a + delta * n_b / (n_a + n_b)
    m2 = m2_a + m2_b + delta * delta * n_a * n_b / (n_a + n_b)
    return np.stack([mean, m2], axis=-1).astype(np.float32)


def _softmax_apply(x, stats, **_):
    m, l = stats[:, :1].astype(np.float32), stats[:, 1:2].astype(np.float32)
    return (np.exp(x.astype(np.float32) - m) / l).astype(np.float32)


def _rmsnorm_apply(x, stats, w, eps=1e-6, width=1, **_):
    mean_square = stats[:, :1].astype(np.float32) / np.float32(width)
    inv = np.float32(1) / np.sqrt(mean_square + np.float32(eps))
    return (x.astype(np.float32) * inv * w.astype(np.float32)).astype(np.float32)


def _layernorm_apply(x, stats, w, b, eps=1e-5, width=1, **_):
    mean, m2 = stats[:, :1].astype(np.float32), stats[:, 1:2].astype(np.float32)
    inv = np.float32(1) / np.sqrt(m2 / np.float32(width) + np.float32(eps))
    centred = x.astype(np.float32) - mean
    return (centred * inv * w.astype(np.float32) + b.astype(np.float32)).astype(np.float32)


def rope_angles(positions: np.ndarray, dim: int, theta: float) -> np.ndarray:
    """Angles [len(positions), dim/2] of rotary embedding, pairs (2i, 2i+1) share frequency i."""
    exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    freqs = np.float32(1) / (np.float32(theta) ** exponents)
    return np.outer(positions.astype(np.float32), freqs).astype(np.float32)


def row_positions(row0: int, rows: int, inner: int, seq: int, offset: int) -> np.ndarray:
    """Sequence position of each row of a [rows, d] tile cut from a tensor flattened to rows.

    Row r of the flattened tensor sits at position (r // inner) % seq + offset, where `seq` is
    the size of the position axis and `inner` the product of the dims between it and the last.
    """
    r = np.arange(row0, row0 + rows)
    return (r // inner) % seq + offset


def _rope(x, row0=0, inner=1, seq=1, offset=0, theta=10000.0, **_):
    """Rotate interleaved pairs of each row of x [rows, d] by its position's angles."""
    x = x.astype(np.float32)
    angles = rope_angles(row_positions(row0, x.shape[0], inner, seq, offset), x.shape[-1], theta)
    cos, sin = np.cos(angles), np.sin(angles)
    even, odd = x[:, 0::2], x[:, 1::2]
    out = np.empty_like(x)
    out[:, 0::2] = even * cos - odd * sin
    out[:, 1::2] = even * sin + odd * cos
    return out


def _causal_mask(x, row0=0, inner=1, seq=1, offset=0, col0=0, **_):
    """Scores x [rows, keys col0 ..]: key t is visible to a query at position p when t <= p."""
    pos = row_positions(row0, x.shape[0], inner, seq, offset)
    t = np.arange(x.shape[-1])[None, :] + col0
    return np.where(t <= pos[:, None], x.astype(np.float32), np.float32(-np.inf)).astype(np.float32)


def _promote(acc, part, row_scale, col_scale, first=0, block_cols=1, **_):
    """Columns of `part` share col_scale[j // block_cols]; each row has its own row_scale."""
    per_block = col_scale.astype(np.float32).reshape(-1)
    cols = per_block[np.arange(part.shape[-1]) // block_cols]   # no copy per block column
    scaled = part.astype(np.float32) * row_scale.astype(np.float32).reshape(-1, 1) * cols[None, :]
    return scaled if first else (acc.astype(np.float32) + scaled).astype(np.float32)


def _rowscale(x, scale, block_rows=1, **_):
    """Row i of x times scale[i // block_rows] (one scale per token, or per group of rows)."""
    per_row = scale.astype(np.float32).reshape(-1)[np.arange(x.shape[-2]) // block_rows]
    return (x.astype(np.float32) * per_row[:, None]).astype(np.float32)


def _colscale(x, scale, block_cols=1, **_):
    """Column j of x times scale[j // block_cols] (one scale per channel, or per group)."""
    per_col = scale.astype(np.float32).reshape(-1)[np.arange(x.shape[-1]) // block_cols]
    return (x.astype(np.float32) * per_col[None, :]).astype(np.float32)


def _dequant(x, scale, block=(1, 1), **_):
    """Multiply each element by the scale of its block (scale has one entry per block)."""
    scale = scale.astype(np.float32).reshape(scale.shape[-2:])
    full = np.repeat(np.repeat(scale, block[0], axis=0), block[1], axis=1)
    return (x.astype(np.float32) * full[:x.shape[-2], :x.shape[-1]]).astype(np.float32)


# A radix select over 32-bit keys: up to four passes of 8-bit digits, each extracting the digit
# and counting it in a histogram (2 operations per candidate), then one pass comparing with the
# found threshold and writing the winners (2 per element); the 256-bin prefix scans are
# negligible next to long rows.
RADIX_SELECT_OPS = 4 * 2 + 2


def _select_ops(attrs: dict) -> float:
    """Per chunk element: a radix select over the chunk, then one over the 2k candidates (the
    chunk's k and the k kept), spread over the chunk's `width` columns."""
    k, width = attrs.get("k", 1), attrs.get("width", 1)
    return RADIX_SELECT_OPS * (1 + 2 * k / width)


def _select(vals, idx, x, k=1, col0=0, first=0, keys=None, width=None, **_):
    """Top-k of the chunk's columns (those below `keys`) and the kept (vals, idx), by value,
    ties to the lower index, as the topk op's stable sort ranks them; fewer than k candidates
    leave -inf and index -1."""
    x = x.astype(np.float32)
    cols = np.broadcast_to(np.arange(x.shape[-1], dtype=np.int64) + col0, x.shape)
    if keys is not None:             # columns past the row's end rank below every real one
        x = np.where(cols < keys, x, np.float32(-np.inf))
        cols = np.where(cols < keys, cols, np.iinfo(np.int32).max)
    if not first:
        x = np.concatenate([vals.astype(np.float32), x], axis=-1)
        cols = np.concatenate([idx.astype(np.int64), cols], axis=-1)
    order = np.lexsort((cols, -x.astype(np.float64)), axis=-1)[:, :k]
    best = np.take_along_axis(x, order, axis=-1)
    chosen = np.take_along_axis(cols, order, -1)
    chosen = np.where(chosen == np.iinfo(np.int32).max, -1, chosen)
    out_v = np.full(vals.shape, -np.inf, dtype=np.float32)
    out_i = np.full(idx.shape, -1, dtype=np.int32)
    out_v[:, :best.shape[1]], out_i[:, :best.shape[1]] = best, chosen
    return out_v, out_i


def _head_sum(x, w, **_):
    """x [heads, cols], w [heads, 1] (or [heads]) -> [1, cols]."""
    weighted = w.astype(np.float32).reshape(-1, 1) * x.astype(np.float32)
    return weighted.sum(axis=0, keepdims=True).astype(np.float32)


def _place(dst, src, col):
    out = dst.astype(np.float32).copy()
    out[:, col:col + src.shape[-1]] = src
    return out


def _online_softmax(p, alpha, m, l, s, scale=1.0, first=0, offset=None, row0=0, inner=1,
                    seq=1, col0=0, keys=None, **_):
    """One key block of a streaming softmax (FlashAttention): scale and mask the scores,
    update each row's running max m and sum l, return this block's unnormalised p and the
    factor alpha that rescales what was accumulated before."""
    s = s.astype(np.float32) * np.float32(scale)
    cols = np.arange(s.shape[-1]) + col0
    valid = np.ones(s.shape, dtype=bool)
    if keys is not None:
        valid &= cols[None, :] < keys
    if offset is not None:
        pos = row_positions(row0, s.shape[0], inner, seq, offset)
        valid &= cols[None, :] <= pos[:, None]
    s = np.where(valid, s, np.float32(-np.inf))
    m_old = np.full(s.shape[0], -np.inf, np.float32) if first else m.astype(np.float32).reshape(-1)
    l_old = np.zeros(s.shape[0], np.float32) if first else l.astype(np.float32).reshape(-1)
    m_new = np.maximum(m_old, s.max(axis=-1))
    safe = np.where(np.isfinite(m_new), m_new, np.float32(0))
    p_new = np.exp(s - safe[:, None]).astype(np.float32)
    a = np.exp(np.where(np.isfinite(m_old), m_old - safe, np.float32(-np.inf))).astype(np.float32)
    l_new = (l_old * a + p_new.sum(axis=-1)).astype(np.float32)
    return p_new, a.reshape(alpha.shape), m_new.reshape(m.shape), l_new.reshape(l.shape)


def _merge_split(acc, m, l, o, m_s, l_s, first=0, **_):
    """Fold one key split's normalised output o (its rows' max m_s and sum l_s) into the
    running acc, m, l (split-KV decoding's combine): the same rescaling as online_softmax,
    over splits instead of key blocks."""
    o = o.astype(np.float32)
    m_s, l_s = m_s.astype(np.float32).reshape(-1), l_s.astype(np.float32).reshape(-1)
    if first:
        return (o * l_s[:, None]).astype(np.float32), m_s.reshape(m.shape), l_s.reshape(l.shape)
    m_old, l_old = m.astype(np.float32).reshape(-1), l.astype(np.float32).reshape(-1)
    m_new = np.maximum(m_old, m_s)
    safe = np.where(np.isfinite(m_new), m_new, np.float32(0))
    a = np.exp(np.where(np.isfinite(m_old), m_old - safe, np.float32(-np.inf))).astype(np.float32)
    b = np.exp(np.where(np.isfinite(m_s), m_s - safe, np.float32(-np.inf))).astype(np.float32)
    acc = (acc.astype(np.float32) * a[:, None] + o * (l_s * b)[:, None]).astype(np.float32)
    return acc, m_new.reshape(m.shape), (l_old * a + l_s * b).astype(np.float32).reshape(l.shape)


def _window(rows, attrs):
    """Rows row0 .. row0+rows of a routing table, padded with -1 past its end."""
    start, count = attrs.get("row0", 0), attrs.get("rows", len(rows))
    out = np.full((count,) + rows.shape[1:], -1, dtype=np.int32)
    part = rows[start:start + count]
    out[:len(part)] = part
    return out


def _reduce(name: str):
    """numpy's reduction `name` over each row (looked up when it runs: numpy loads lazily)."""
    return lambda x, **_: getattr(np, name)(x.astype(np.float32), axis=-1,
                                            keepdims=True).astype(np.float32)


def _ew(fn):
    """An elementwise function of float32 operands: a numpy ufunc's name, or a function."""
    def run(*xs, **_):
        f = getattr(np, fn) if isinstance(fn, str) else fn
        return f(*[x.astype(np.float32) for x in xs]).astype(np.float32)
    return run


BINARY = ("imm0", "imm1")      # a binary op's immediate operands
POSITION = ("offset", "row0", "inner", "seq")   # where a row sits in its sequence

VECTOR_OPS: dict[str, VectorOp] = {op.name: op for op in [
    VectorOp("cvt", 1, 1, 0, _ew(lambda x: x), "y = x converted to the destination's dtype"),
    VectorOp("add", 2, 1, 0, _ew("add"), "y = a + b",
             attrs=BINARY, immediate_last=True),
    VectorOp("sub", 2, 1, 0, _ew("subtract"), "y = a - b",
             attrs=BINARY, immediate_last=True),
    VectorOp("mul", 2, 1, 0, _ew("multiply"), "y = a * b",
             attrs=BINARY, immediate_last=True),
    VectorOp("div", 2, 1, 1, _ew("divide"), "y = a / b (reciprocal and multiply)",
             attrs=BINARY, immediate_last=True),
    VectorOp("neg", 1, 1, 0, _ew("negative"), "y = -x"),
    VectorOp("relu", 1, 1, 0, _ew(lambda x: np.maximum(x, np.float32(0))), "y = max(x, 0)"),
    VectorOp("exp", 1, 1, 1, _ew("exp"), "y = exp(x) (one scale, one exp2)"),
    VectorOp("sqrt", 1, 1, 1, _ew("sqrt"), "y = sqrt(x) (one rsqrt and a multiply)"),
    VectorOp("softplus", 1, 3, 2, _ew(lambda x: np.logaddexp(np.float32(0), x)),
             "y = log(1 + exp(x)) (an exp and a log)"),
    VectorOp("sigmoid", 1, 3, 2, lambda x, **_: _sigmoid(x), "y = 1 / (1 + exp(-x))"),
    VectorOp("silu", 1, 4, 2, _ew(lambda x: x * _sigmoid(x)),
             "y = x * sigmoid(x)"),
    VectorOp("softmax", 1, 5, 1, _softmax,
             "row softmax: max, subtract, exp, sum, scale by the reciprocal"),
    VectorOp("rmsnorm", 2, 4, 0, _rmsnorm, "x * rsqrt(mean(x^2) + eps) * w (one rsqrt per row)",
             attrs=("eps",)),
    VectorOp("layernorm", 3, 7, 0, lambda x, w, b, eps=1e-5, **_: _layernorm(x, w, b, eps),
             "(x - mean(x)) * rsqrt(mean((x - mean)^2) + eps) * w + b (one rsqrt per row)",
             attrs=("eps",)),
    # erf has no special-function unit: Abramowitz & Stegun 7.1.26, a degree-5 polynomial in
    # t = 1 / (1 + p|x|) times exp(-x^2): a reciprocal, an exp and about a dozen simple ops.
    VectorOp("gelu", 1, 12, 2, lambda x, **_: _gelu(x),
             "y = x * (1 + erf(x / sqrt 2)) / 2 (erf as a polynomial times exp(-x^2))"),
    # tanh(y) = 1 - 2 / (exp(2y) + 1): an exp and a reciprocal.
    VectorOp("gelu_tanh", 1, 8, 2, lambda x, **_: _gelu_tanh(x),
             "y = x * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2"),
    VectorOp("softmax_stats", 1, 3, 1, _softmax_stats,
             "one chunk of a long row: running max and sum of exp (max, subtract, exp, add)",
             reads_dst=True, attrs=("first",)),
    VectorOp("sumsq_stats", 1, 2, 0, _sumsq_stats,
             "one chunk of a long row: running sum of squares", reads_dst=True,
             attrs=("first",)),
    VectorOp("moments_stats", 1, 4, 0, _moments_stats,
             "one chunk of a long row: running mean and squared deviations (pairwise merge "
             "with the col0 columns before)", reads_dst=True, attrs=("first", "col0")),
    VectorOp("softmax_apply", 2, 2, 1, _softmax_apply,
             "y = exp(x - max) / sum for one chunk, from the row's stats"),
    VectorOp("rmsnorm_apply", 3, 2, 0, _rmsnorm_apply,
             "y = x * rsqrt(sumsq / width + eps) * w for one chunk, from the row's stats",
             attrs=("eps", "width")),
    VectorOp("layernorm_apply", 4, 4, 0, _layernorm_apply,
             "y = (x - mean) * rsqrt(m2 / width + eps) * w + b for one chunk, from the row's "
             "stats", attrs=("eps", "width")),
    VectorOp("rope", 1, 3, 0, _rope, "rotary embedding of interleaved pairs of each row at its "
             "position (row0, inner, seq, offset); sin/cos tables precomputed",
             attrs=("offset", "theta", "row0", "inner", "seq")),
    VectorOp("causal_mask", 1, 2, 0, _causal_mask,
             "scores of keys after the row's position -> -inf (the tile's first key is col0)",
             attrs=POSITION + ("col0",)),
    VectorOp("sum", 1, 1, 0, _reduce("sum"), "sum of each row"),
    VectorOp("max", 1, 1, 0, _reduce("max"), "max of each row"),
    VectorOp("mean", 1, 1, 0, _reduce("mean"), "mean of each row"),
    VectorOp("place", 1, 1, 0, lambda dst, src, col=0, **_: _place(dst, src, col),
             "copy src into dst's columns col .. col+width (one part of a concat)", reads_dst=True,
             attrs=("col",)),
    VectorOp("online_softmax", 1, 7, 1, _online_softmax,
             "one key block of a streaming softmax: scale, mask, running max and sum; writes "
             "p, the rescale factor alpha, and the running max m and sum l", reads_dst=True,
             outputs=4, attrs=("scale", "first", *POSITION, "col0", "keys")),
    VectorOp("merge_split", 3, 3, 0, _merge_split,
             "fold one key split's normalised output and its rows' max and sum into a running "
             "acc, max and sum (split-KV combine; two exps per row, not per element)",
             reads_dst=True, outputs=3, attrs=("first",)),
    VectorOp("rescale", 1, 1, 0,
             _ew(lambda o, alpha: o * alpha.reshape(-1, 1)),
             "o = o * alpha per row (before adding the next key block)", reads_dst=True),
    VectorOp("normalize", 2, 1, 0,
             _ew(lambda o, l: o / l.reshape(-1, 1)),
             "out = o / l per row (the softmax denominator)"),
    VectorOp("quant", 1, 3, 0, _ew(lambda x: x),
             "quantise rows into the destination's block-scaled format: block amax, scale, round; "
             "writes the elements and their scales", outputs=2),
    VectorOp("promote", 3, 2, 0, _promote,
             "acc = (first ? 0 : acc) + part * row_scale * col_scale: FP32 promotion of a "
             "limited-precision partial sum with its block scales", reads_dst=True,
             attrs=("first", "block_cols")),
    VectorOp("accumulate", 1, 1, 0,
             lambda acc, part, first=0, **_: part.astype(np.float32) if first else
             (acc.astype(np.float32) + part.astype(np.float32)).astype(np.float32),
             "acc = (first ? 0 : acc) + part: FP32 promotion of a limited-precision partial sum",
             reads_dst=True, attrs=("first",)),
    VectorOp("tscale", 1, 1, 0,
             _ew(lambda acc, ts: acc * ts.reshape(-1)[0]),
             "acc = acc * a per-tensor scale (NVFP4's fp32 scale, applied once to the product)",
             reads_dst=True),
    VectorOp("dequant", 2, 1, 0, _dequant, "y = x * its block scale (broadcast over the block)",
             attrs=("block",)),
    VectorOp("rowscale", 2, 1, 0, _rowscale,
             "y = x * scale[row // block_rows]: a GEMM product's per-token scales, applied once "
             "to the output tile", attrs=("block_rows",)),
    VectorOp("colscale", 2, 1, 0, _colscale,
             "y = x * scale[col // block_cols]: a GEMM product's per-channel scales, applied "
             "once to the output tile", attrs=("block_cols",)),
    VectorOp("topk", 1, lambda a: min(a.get("k", 1) + 2, RADIX_SELECT_OPS), 0,
             lambda s, *bias, **a: routing.topk_select(s, a["k"], bias[0] if bias else None,
                                                       a.get("groups", 1), a.get("topk_groups", 1),
                                                       a.get("group_best", 2)),
             "indices of the k best scores per row (group-limited): one max-pass per pick, "
             "or a radix select when k is large",
             attrs=("k", "groups", "topk_groups", "group_best"), optional_source=True),
    VectorOp("route_weights", 2, 3, 0,
             lambda s, idx, **a: routing.topk_weights(s, idx, a.get("norm", True),
                                                      a.get("scale", 1.0)),
             "gather the chosen scores, normalise, scale", attrs=("norm", "scale")),
    VectorOp("select", 1, _select_ops, 0, _select,
             "running top-k of a long row, one chunk at a time: the chunk's k best (columns "
             "col0 ..) merged with the k kept so far (first: none) -> values and indices",
             reads_dst=True, outputs=2, attrs=("k", "col0", "first", "keys", "width")),
    VectorOp("head_sum", 2, 2, 0, _head_sum,
             "y[t] = sum over rows h of w[h] * x[h, t]: a head-weighted sum down the columns",
             ),
    VectorOp("route_rows", 1, 2, 0,
             lambda idx, **a: _window(routing.route_rows(idx, a["experts"], a["capacity"]), a),
             "per (token, choice): row expert*capacity+slot of its expert output, -1 if dropped",
             attrs=("experts", "capacity", "row0", "rows")),
    VectorOp("expert_tokens", 1, 2, 0,
             lambda idx, **a: _window(routing.expert_tokens(idx, a["experts"], a["capacity"],
                                                            a["expert"]), a),
             "the token in each of one expert's capacity slots, -1 if empty",
             attrs=("experts", "capacity", "expert", "row0", "rows")),
    VectorOp("route_scan", 1, 2, 0,
             lambda tokens, flat, rowvals, count, idx, **a: routing.route_scan(
                 tokens, flat, rowvals, count, idx, a["expert"], a["capacity"], a.get("row0", 0),
                 a.get("first", 0), a.get("slot0", 0)),
             "scan a chunk of routing indices for one expert: append its (token, choice) pairs "
             "to the expert's slots (token, table position, output row) and count them",
             reads_dst=True, outputs=4, attrs=("expert", "capacity", "row0", "first", "slot0")),
    VectorOp("weighted_sum", 2, 2, 0,
             lambda rows, w, **a: np.einsum(
                 "tkd,tk->td", rows.astype(np.float32).reshape(w.shape[0], w.shape[1], -1),
                 w.astype(np.float32)).astype(np.float32),
             "y[t] = sum_j w[t, j] * rows[t, j] (MoE combine)"),
]}
