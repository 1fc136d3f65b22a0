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


def fold_layers(launches: list[tuple[Launch, tuple[str, int] | None]]) -> list:
    """Group launches by layer and fold runs of layers that differ only in the layer number."""
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
        template = _abstract(body, layer)
        end = j + 1
        while (end < len(groups) and groups[end][0] is not None
               and groups[end][0][0] == layer[0] and groups[end][0][1] == layer[1] + end - j
               and _abstract(groups[end][1], groups[end][0]) == template):
            end += 1
        if end - j >= 2:
            items.append(Repeat("i", layer[1], end - j, tuple(template)))
        else:
            items.extend(body)
        j = end
    return items


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

