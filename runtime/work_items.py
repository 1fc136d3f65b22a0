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
from dataclasses import dataclass

from isa.lazy_numpy import np

from isa.program import Kernel
from isa.target_schema import Target
from isa.workload import deal_plan


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


@dataclass
class Waves:
    """A launch's waves: the distinct compositions (((class, die), count), ...) and, in launch
    order, runs of waves (the composition index of each) that repeat `times` in a row."""
    compositions: list[tuple]
    runs: list[tuple[np.ndarray, int]]

    def counts(self) -> list[int]:
        """How many waves have each composition."""
        out = [0] * len(self.compositions)
        for ids, times in self.runs:
            for comp, n in zip(*np.unique(ids, return_counts=True)):
                out[comp] += int(n) * times
        return out

    def order(self):
        """The composition index of every wave, in launch order."""
        for ids, times in self.runs:
            for _ in range(times):
                yield from ids.tolist()


CHUNK = 1 << 20          # items dealt at once (bounds the memory of one step)


def waves(kernel: Kernel, class_of_key: dict, target: Target) -> Waves:
    """The waves of a launch (isa/workload.py says which are dealt item by item and which
    repeat).

    `class_of_key` maps (key, die) to a class id, die None when classes do not depend on it.
    """
    dies, cores = target.chip.dies, target.cores
    split = dies > 1 and kernel.die_var is not None
    dealer = _Dealer(kernel, class_of_key, target)
    if split:
        return dealer.identify([(dealer.numa_table(), 1)])
    return dealer.identify([(dealer.uma_table(run.first, run.waves), run.repeats)
                            for run in deal_plan(kernel, cores, False)])


class _Dealer:
    def __init__(self, kernel: Kernel, class_of_key: dict, target: Target):
        self.kernel = kernel
        self.sizes = [size for _, size in kernel.grid]
        self.items = math.prod(self.sizes)
        self.dies, self.per_die = target.chip.dies, target.chip.cores_per_die
        self.cores = target.cores
        self.lut = np.zeros((2 ** len(self.sizes), self.dies), dtype=np.int64)
        for (key, die), cls in class_of_key.items():
            code = sum(int(flag) << (len(key) - 1 - d) for d, flag in enumerate(key))
            for d in (range(self.dies) if die is None else (die,)):
                self.lut[code, d] = cls
        self.classes = max(class_of_key.values(), default=0) + 1

    def coords(self, index: np.ndarray):
        return np.unravel_index(index, self.sizes) if self.sizes else ()

    def code(self, coords) -> np.ndarray:
        """Per item, which grid coordinates are the last of their dim, as bits."""
        code = np.zeros(len(coords[0]) if coords else 1, dtype=np.int64)
        for coord, size in zip(coords, self.sizes):
            code = code * 2 + ((coord == size - 1) & (size > 1))
        return code

    def uma_table(self, first: int, count: int) -> np.ndarray:
        """(waves, classes, dies) item counts of waves first .. first+count-1: the cores of
        all dies take each wave's items in turn."""
        table = np.zeros((count, self.classes, self.dies), dtype=np.int64)
        end = min((first + count) * self.cores, self.items)
        for lo in range(first * self.cores, end, CHUNK):
            index = np.arange(lo, min(lo + CHUNK, end), dtype=np.int64)
            die = (index % self.cores) // self.per_die
            cls = self.lut[self.code(self.coords(index)), die]
            self.count(table, index // self.cores - first, cls, die)
        return table

    def count(self, table: np.ndarray, wave, cls, die) -> None:
        """table[wave, cls, die] += 1 for each item (a bincount over the waves touched)."""
        lo, hi = int(wave.min()), int(wave.max()) + 1
        flat = ((wave - lo) * self.classes + cls) * self.dies + die
        block = np.bincount(flat, minlength=(hi - lo) * self.classes * self.dies)
        table[lo:hi] += block.reshape(hi - lo, self.classes, self.dies)

    def numa_table(self) -> np.ndarray:
        """The same when a grid dim's halves go to the dies: each die deals its own items to
        its own cores, in order."""
        axis = [v for v, _ in self.kernel.grid].index(self.kernel.die_var)
        size = self.sizes[axis]
        die_of = np.minimum(np.arange(size) * self.dies // size, self.dies - 1)
        per_die = np.bincount(die_of, minlength=self.dies) * (self.items // size)
        table = np.zeros((int(-(-per_die.max() // self.per_die)), self.classes, self.dies),
                         dtype=np.int64)
        seen = np.zeros(self.dies, dtype=np.int64)       # items each die has dealt so far
        for lo in range(0, self.items, CHUNK):
            index = np.arange(lo, min(lo + CHUNK, self.items), dtype=np.int64)
            coords = self.coords(index)
            die = die_of[coords[axis]]
            rank = np.zeros(len(index), dtype=np.int64)  # position among the die's items
            for d in range(self.dies):
                mine = die == d
                rank[mine] = seen[d] + np.arange(int(mine.sum()))
                seen[d] += int(mine.sum())
            cls = self.lut[self.code(coords), die]
            self.count(table, rank // self.per_die, cls, die)
        return table

    def identify(self, tables) -> Waves:
        """Waves from (table, times) runs: equal compositions get one index, numbered in the
        order they first occur."""
        index: dict[tuple, int] = {}
        runs = []
        for table, times in tables:
            rows, first, inverse = np.unique(table.reshape(len(table), -1), axis=0,
                                             return_index=True, return_inverse=True)
            ids = np.zeros(len(rows), dtype=np.int64)
            for r in np.argsort(first, kind="stable"):
                row = rows[r].reshape(self.classes, self.dies)
                comp = tuple(((c, d), int(row[c, d])) for c in range(self.classes)
                             for d in range(self.dies) if row[c, d])
                ids[r] = index.setdefault(comp, len(index))
            runs.append((ids[inverse.reshape(-1)], times))
        return Waves(list(index), runs)
