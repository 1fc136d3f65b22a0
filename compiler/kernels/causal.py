"""Which key blocks a causal attention tile needs, and how row blocks pair up so every work
item does the same number of them.

Row r of a causal attention (one query position, r + offset) sees keys 0 .. r + offset. A
row block of bm rows starting at i*bm therefore needs the key blocks of bt keys up to the one
holding its last row's position: blocks wholly above the diagonal are skipped, the blocks the
diagonal crosses are computed whole and masked (as FlashAttention does them).

The block counts grow linearly with the row block, so the first row block and the last, the
second and the second last, ... need the same number together. A work item takes such a pair
(as causal FlashAttention schedules balance their tiles): every item then runs the same loop,
which keeps the interpreter's identical-items rule (runtime/work_items.py). With an odd
number of row blocks the middle item computes its block twice (one item's work too much).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


def key_blocks(row0: int, bm: int, bt: int, offset: int, keys: int) -> int:
    """Key blocks the rows row0 .. row0+bm-1 (positions from row0+offset) need."""
    last = row0 + bm - 1 + offset
    return min(math.ceil(keys / bt), last // bt + 1)


@dataclass(frozen=True)
class CausalPairs:
    """Row blocks paired (p, n-1-p): item p runs `first + step * p` key blocks for its first
    row block and the rest of `per_item` for the second."""
    row_blocks: int
    first: int          # key blocks of row block 0
    step: int           # more key blocks per row block (bm / bt)
    per_item: int       # key blocks of one item, both its row blocks

    @property
    def items(self) -> int:
        return math.ceil(self.row_blocks / 2)


def pairs(rows: int, bm: int, bt: int, offset: int, keys: int) -> CausalPairs | None:
    """The pairing of a causal attention over `rows` query positions from `offset`, or None
    when it saves nothing or the pairs would not do equal work (then every block is run)."""
    n = math.ceil(rows / bm)
    counts = [key_blocks(i * bm, bm, bt, offset, keys) for i in range(n)]
    if n < 2 or sum(counts) == n * math.ceil(keys / bt):
        return None
    step = counts[1] - counts[0]
    total = counts[0] + counts[-1]
    if any(counts[i] != counts[0] + step * i for i in range(n)) or \
            any(counts[i] + counts[n - 1 - i] != total for i in range(n)):
        return None
    return CausalPairs(n, counts[0], step, total)


def visible_fraction(rows: int, offset: int, keys: int) -> float:
    """The share of the rows x keys scores a causal mask keeps: the work attention does,
    counted as FlashAttention's benchmarks count causal FLOPs."""
    first = offset + 1                       # keys row 0 sees
    short = max(0, min(rows, keys - first + 1))    # rows that see fewer than all keys
    seen = short * first + short * (short - 1) // 2 + (rows - short) * keys
    return seen / (rows * keys)


def attention_work(group) -> float:
    """The share of a fused attention's score work a causal mask leaves (1 for any other
    kernel): its FLOPs count only the scores it keeps."""
    mask = next((n for n in group.nodes if n.op == "causal_mask"), None)
    if group.kind != "flash_attention" or mask is None or not isinstance(mask.attr("offset"), int):
        return 1.0
    rows, keys = mask.type.shape[-2:]
    return visible_fraction(rows, mask.attr("offset"), keys)
