"""MoE routing semantics, shared by the IR reference and the ISA's functional mode.

Layout: `dispatch` sends each token's hidden vector to its k chosen experts, in an
[experts, capacity, d] buffer where expert e's slots hold, in token order, the tokens that chose
it; tokens past an expert's capacity are dropped (their combine contribution is zero).
"""
from isa.lazy_numpy import np


def topk_select(scores, k, bias=None, groups=1, topk_groups=1, group_best=2):
    """Indices [T, k] of the chosen experts (DeepSeek group-limited routing).

    Selection uses scores + bias; experts are split into `groups` equal groups, each group is
    scored by the sum of its `group_best` best members (two in DeepSeek-V3, one, the group's
    maximum, in DeepSeek-V2's group_limited_greedy), and only the best `topk_groups` groups
    compete.
    Ties go to the lower index (stable sort), so the result is deterministic.
    """
    s = scores.astype(np.float32) + (bias.astype(np.float32) if bias is not None else np.float32(0))
    tokens, experts = s.shape
    if groups > 1:
        grouped = s.reshape(tokens, groups, experts // groups)
        best = -np.sort(-grouped, axis=-1)[..., :min(group_best, grouped.shape[-1])]
        group_rank = np.argsort(-best.sum(-1), axis=-1, kind="stable")
        keep = np.zeros((tokens, groups), dtype=bool)
        np.put_along_axis(keep, group_rank[:, :topk_groups], True, axis=-1)
        s = np.where(np.repeat(keep, experts // groups, axis=-1), s, np.float32(-np.inf))
    return np.argsort(-s, axis=-1, kind="stable")[:, :k].astype(np.int32)


def topk_weights(scores, idx, norm=True, scale=1.0):
    """Routing weights [T, k]: the chosen experts' original scores, normalised, times `scale`."""
    w = np.take_along_axis(scores.astype(np.float32), idx, axis=-1)
    if norm:
        w = w / np.sum(w, axis=-1, keepdims=True)
    return (w * np.float32(scale)).astype(np.float32)


def routing_slots(idx, experts, capacity):
    """For each (token, choice): its slot in the expert's buffer, or -1 when dropped."""
    flat = idx.reshape(-1)
    order = np.argsort(flat, kind="stable")          # token order within each expert
    counts = np.bincount(flat, minlength=experts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty_like(flat)
    rank[order] = np.arange(flat.size) - np.repeat(starts, counts)
    slots = np.where(rank < capacity, rank, -1)
    return slots.reshape(idx.shape)


def route_rows(idx, experts, capacity):
    """Row of [experts*capacity, d] expert outputs for each (token, choice); -1 if dropped."""
    slots = routing_slots(idx, experts, capacity)
    return np.where(slots >= 0, idx * capacity + slots, -1).astype(np.int32)


def expert_tokens(idx, experts, capacity, expert):
    """Token held by each of `expert`'s slots, -1 for an empty slot."""
    slots = routing_slots(idx, experts, capacity)
    out = np.full(capacity, -1, dtype=np.int32)
    t, j = np.nonzero((idx == expert) & (slots >= 0))
    out[slots[t, j]] = t
    return out


def route_scan(tokens, flat, rowvals, count, idx_chunk, expert, capacity, row0, first=0,
               slot0=0):
    """One chunk of rows of the routing indices, scanned for one expert.

    Numbers, in token order, each (token, choice) of the chunk that picked `expert` with the
    expert's next slot (while slots last), and records those whose slot falls in this work
    item's window slot0 .. slot0+len(tokens): `tokens` gets the token, `flat` its position
    t*k+j in the index table, `rowvals` its row expert*capacity+slot in the experts' output.
    `count` is the running number of slots used (a one-element state).
    """
    if first:
        tokens = np.full(tokens.shape, -1, np.int32)
        flat = np.full(flat.shape, -1, np.int32)
        rowvals = np.full(rowvals.shape, -1, np.int32)
        count = np.zeros(1, np.int32)
    else:
        tokens, flat, rowvals = (a.astype(np.int32).copy() for a in (tokens, flat, rowvals))
        count = count.astype(np.int32).copy()
    k = idx_chunk.shape[-1]
    t, j = np.nonzero(idx_chunk == expert)
    used = int(count.reshape(-1)[0])
    window = tokens.shape[0]
    for tt, jj in zip(t, j):               # already in token order, then choice order
        if used >= capacity:
            break
        if slot0 <= used < slot0 + window:
            tokens[used - slot0] = row0 + tt
            flat[used - slot0] = (row0 + tt) * k + jj
            rowvals[used - slot0] = expert * capacity + used
        used += 1
    count.reshape(-1)[0] = used
    return tokens, flat, rowvals, count


def dispatch(x, idx, experts, capacity):
    tokens, k = idx.shape
    out = np.zeros((experts, capacity, x.shape[-1]), dtype=np.float32)
    slots = routing_slots(idx, experts, capacity)
    t, j = np.nonzero(slots >= 0)
    out[idx[t, j], slots[t, j]] = x[t].astype(np.float32)
    return out


def combine(y, idx, w):
    experts, capacity, d = y.shape
    slots = routing_slots(idx, experts, capacity)
    gathered = np.where((slots >= 0)[..., None], y[idx, np.maximum(slots, 0)], np.float32(0))
    mixed = np.einsum("tk,tkd->td", w.astype(np.float32), gathered.astype(np.float32))
    return mixed.astype(np.float32)


def embedding(ids, table):
    return table[ids].astype(np.float32)


def gather_rows(table, idx):
    """out[b, s, j, :] = table[b, idx[b, s, j], :]; index -1 gives zeros."""
    b = np.arange(table.shape[0])[:, None, None]
    rows = table[b, np.maximum(idx.astype(np.int64), 0)]
    return np.where((idx >= 0)[..., None], rows, 0).astype(table.dtype)
