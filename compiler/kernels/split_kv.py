"""Split-KV decoding (flash-decoding, FlashMLA): how many pieces to cut the keys into.

When batch x row blocks leaves cores idle, in every wave or in the last one, each work item
streams only a share of the keys
and writes its partial output with its rows' running max and sum; a combine kernel folds the
shares together. The split count is chosen by a cost estimate built from the target and the
instruction formulas alone:

    attention(S) = max(waves(items * S) * ceil(blocks / S) * block, unique K/V bytes / memory)
    combine(S)   = launch overhead + the partials written and read back / memory   (S > 1)

where `block` is one key block on one core: its two products on the matrix unit, or its K/V
bytes through the core's port, whichever is longer. The fewest splits of the cheapest time
win. A split is allowed only when every row sees at least one key of every split (a causal
decode row at position `offset` sees all earlier keys), so no split's partial is empty.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class KeySplit:
    splits: int           # pieces the keys are cut into (1: no split)
    per_split: int        # key blocks each piece streams
    estimate: float       # cycles of attention and combine, by the estimate above
    unsplit: float        # the same estimate without a split


@dataclass(frozen=True)
class SplitCosts:
    items: int            # work items without a split (batch x row blocks)
    blocks: int           # key blocks of the whole sequence
    block_cycles: float   # one key block on one core
    cores: int
    kv_bytes: float       # distinct K/V bytes the kernel reads
    partial_bytes: float  # bytes of one split's partial outputs (all items), fp32
    memory_bytes_per_cycle: float
    launch_cycles: float  # the combine kernel's launch

    def cycles(self, per_split: int) -> float:
        splits = math.ceil(self.blocks / per_split)
        waves = math.ceil(self.items * splits / self.cores)
        attention = max(waves * per_split * self.block_cycles,
                        self.kv_bytes / self.memory_bytes_per_cycle)
        if splits == 1:
            return attention
        combine = 2 * splits * self.partial_bytes / self.memory_bytes_per_cycle
        return attention + self.launch_cycles + combine


def choose(costs: SplitCosts, first_visible_key: int | None, block_keys: int) -> KeySplit:
    """The cheapest split; `first_visible_key`: the last key every row sees (None: no mask),
    which bounds where the last split may start."""
    unsplit = costs.cycles(costs.blocks)
    best = KeySplit(1, costs.blocks, unsplit, unsplit)
    most = min(costs.blocks, 4 * math.ceil(costs.cores / costs.items))
    for splits in range(2, most + 1):
        per_split = math.ceil(costs.blocks / splits)
        if math.ceil(costs.blocks / per_split) != splits:
            continue                     # a shorter piece count covers it: not a new choice
        last_start = (splits - 1) * per_split * block_keys
        if first_visible_key is not None and last_start > first_visible_key:
            continue
        cycles = costs.cycles(per_split)
        if round(cycles, 3) < round(best.estimate, 3):
            best = KeySplit(splits, per_split, cycles, unsplit)
    return best
