"""From per-node kernels to a program schedule: de-duplicate kernels, fold repeated layers.

Kernels that are equal but for their name become one kernel (`matmul_0`, `matmul_1`, ...).
Consecutive layers (`layer.3.*`, `layer.4.*`, ...) whose launches are equal once the layer
number is written `{i}` (and the previous layer's `{i-1}`) fold into one `Repeat`.
"""
from __future__ import annotations

import re
from dataclasses import replace

from isa.listing import abstract_layer, fmt_tensor
from isa.program import Kernel, Launch, Repeat

_SCOPE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\.(\d+)\.")


class KernelTable:
    def __init__(self):
        self._names: dict[Kernel, str] = {}
        self._counts: dict[str, int] = {}
        self.kernels: list[Kernel] = []

    def add(self, kernel: Kernel) -> str:
        key = replace(kernel, name="")          # equal but for the name: the same kernel
        if key not in self._names:
            base = kernel.name
            number = self._counts.get(base, 0)
            self._counts[base] = number + 1
            name = f"{base}_{number}"
            self._names[key] = name
            self.kernels.append(replace(kernel, name=name))
        return self._names[key]


def order_tensors(tensors) -> tuple:
    """Declarations grouped by their layer-independent form, layers ascending in a group, so
    the listing can fold the 61 copies of a layer's tensor into one line."""
    first: dict[str, int] = {}
    keyed = []
    for i, t in enumerate(tensors):
        template, index = abstract_layer(fmt_tensor(t))
        first.setdefault(template, i)
        keyed.append(((first[template], -1 if index is None else index), t))
    return tuple(t for _, t in sorted(keyed, key=lambda kt: kt[0]))


def layer_of(node_name: str) -> tuple[str, int] | None:
    match = _SCOPE.match(node_name)
    return (match.group(1), int(match.group(2))) if match else None


# The longest cycle of different layers folded: DeepSeek-V4 alternates two kinds.
MAX_PERIOD = 4


def fold_layers(launches: list[tuple[Launch, tuple[str, int] | None]]) -> list:
    """Group launches by layer and fold runs of layers that differ only in the layer number,
    or runs of cycles of p layers (p = 2 .. MAX_PERIOD) that do, into one `Repeat` (stepping
    by p, its body the cycle's layers {i} .. {i+p-1})."""
    groups: list[tuple[tuple[str, int] | None, list[Launch]]] = []
    for launch, layer in launches:
        if groups and groups[-1][0] == layer and layer is not None:
            groups[-1][1].append(launch)
        else:
            groups.append((layer, [launch]))
    items, j = [], 0
    while j < len(groups):
        layer, body = groups[j]
        if layer is None:
            items.extend(body)
            j += 1
            continue
        for period in range(1, MAX_PERIOD + 1):
            cycles = _cycles(groups, j, period)
            if cycles >= 2:
                template = _cycle(groups, j, period)
                items.append(Repeat("i", layer[1], cycles, tuple(template), period))
                j += cycles * period
                break
        else:
            items.extend(body)
            j += 1
    return items


def _cycle(groups, j: int, period: int) -> list[Launch] | None:
    """The launches of layers j .. j+period-1 named relative to layer j, if those are
    consecutive layers of one name."""
    if j + period > len(groups):
        return None
    first = groups[j][0]
    for r in range(period):
        layer = groups[j + r][0]
        if layer is None or layer != (first[0], first[1] + r):
            return None
    return [l for r in range(period) for l in _abstract(groups[j + r][1], first)]


def _cycles(groups, j: int, period: int) -> int:
    """How many cycles of `period` layers from j are the same but for the layer numbers."""
    template = _cycle(groups, j, period)
    if template is None:
        return 0
    n = 1
    while True:
        nxt = _cycle(groups, j + n * period, period)
        if nxt is None or nxt != template \
                or groups[j + n * period][0][1] != groups[j][0][1] + n * period:
            return n
        n += 1


def _abstract(body: list[Launch], layer: tuple[str, int]) -> list[Launch]:
    prefix, index = layer
    pattern = re.compile(rf"(?<![A-Za-z0-9_.]){re.escape(prefix)}\.(\d+)\.")

    def relative(match) -> str:
        delta = int(match.group(1)) - index
        var = "i" if delta == 0 else (f"i+{delta}" if delta > 0 else f"i{delta}")
        return f"{prefix}.{{{var}}}."

    rename = lambda name: pattern.sub(relative, name)
    return [replace(l, args=tuple((p, rename(t)) for p, t in l.args), note=rename(l.note))
            for l in body]

