"""A kernel's work items: their classes, their dies, and the waves they run in.

Items differ only at the last coordinate of a grid dim (edge tiles move fewer bytes), so they
fall into at most 2^dims classes. On a multi-die chip an item runs on a core of one die: in
UMA mode the dies' cores simply take the items of each wave in turn; in NUMA mode the kernel
names a grid dim (`die_var`) whose halves go to the dies, and each die deals its own items to
its own cores. A wave is then a set of (class, die) groups with counts.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from isa.program import Kernel
from isa.target_schema import Target


def classes(kernel: Kernel, dies: int = 1):
    """(key, die, representative coordinates): interior or last, per grid dim, on each die.

    When the kernel splits its items over the dies by a grid dim, the representative of a
    class on die d sits in d's part of that dim (its first, or the dim's last coordinate), so
    it reads what that die's items read; otherwise one representative serves every die.
    """
    split = kernel.die_var if dies > 1 else None
    for combo in itertools.product(*[(False,) if size == 1 else (False, True)
                                     for _, size in kernel.grid]):
        for die in range(dies) if split else (None,):
            env = {}
            for (var, size), last in zip(kernel.grid, combo):
                if var == split and not last:
                    env[var] = die * math.ceil(size / dies)
                else:
                    env[var] = size - 1 if last else 0
            if split and env[split] * dies // dict(kernel.grid)[split] != die:
                continue                     # no item of this class on this die
            yield combo, die, env


def waves(kernel: Kernel, class_of_key: dict, target: Target) -> list[tuple]:
    """Each wave's composition (((class, die), count), ...), in launch order.

    `class_of_key` maps (key, die) to a class id, die None when classes do not depend on it.
    """
    sizes = [size for _, size in kernel.grid]
    index = np.arange(math.prod(sizes))
    coords = np.unravel_index(index, sizes) if sizes else ()
    code = np.zeros(len(index), dtype=np.int64)
    for coord, size in zip(coords, sizes):
        code = code * 2 + ((coord == size - 1) & (size > 1))
    dies, per_die = target.chip.dies, target.chip.cores_per_die
    lut = np.zeros((2 ** len(sizes), dies), dtype=np.int64)
    for (key, die), cls in class_of_key.items():
        code_of_key = sum(int(flag) << (len(key) - 1 - d) for d, flag in enumerate(key))
        for d in (range(dies) if die is None else (die,)):
            lut[code_of_key, d] = cls
    if kernel.die_var and dies > 1:
        axis = [v for v, _ in kernel.grid].index(kernel.die_var)
        die = np.minimum(coords[axis] * dies // sizes[axis], dies - 1)
        rank = np.zeros(len(index), dtype=np.int64)        # position among the die's items
        for d in range(dies):
            mine = die == d
            rank[mine] = np.arange(mine.sum())
        wave = rank // per_die
    else:
        wave = index // target.cores
        die = (index % target.cores) // per_die
    cls = lut[code, die]
    n_classes = max(class_of_key.values()) + 1
    table = np.zeros((int(wave.max()) + 1, n_classes, dies), dtype=np.int64)
    np.add.at(table, (wave, cls, die), 1)
    return [tuple(((c, d), int(table[w, c, d])) for c in range(n_classes) for d in range(dies)
                  if table[w, c, d]) for w in range(table.shape[0])]
