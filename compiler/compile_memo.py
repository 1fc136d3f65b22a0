"""Compile once, simulate many: what the calls of one process (a sweep's points) share.

A compilation's graph passes read the target's timing figures: the tile pass simulates its
shortlisted tiles, and its estimates and the fuse pass weigh bandwidths and the launch
overhead. So every point re-makes those decisions (their simulations are cached,
runtime/sim_cache.py). Everything else is shared when it depends on nothing that differs:

- the front end's graph, by model file, sizes and precisions (`--set`);
- the lowered program (lowering, micro-batches, plan, stretching, placement), by the decided
  graph (every node with its tile, less the words saying how the tile was found), the
  target's structure (every key but its timing figures: see TIMING_UNITS), the deployment
  and placement. Lowering reads the decisions the graph carries and the target's structure,
  never its timing figures, so a point whose decisions come out as another's runs that
  point's program, unchanged: the figures are the ones a fresh compile gives (tested).

The model files are read once per memo: a memo lives for one sweep, or one API session.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import OrderedDict
from typing import Callable

# Units of the target keys that are timing figures (isa/target_schema.py): rates, latencies,
# the clock. Sizes (B), counts and per-cycle widths of units shape the program.
TIMING_UNITS = frozenset({"GB/s", "B/cycle", "ns", "us", "cycles", "GHz", "1/ns"})
TIMING_KEYS = frozenset({"achievable", "achievable_source"})   # a link's reachable fraction

_TILE_CHOICE = re.compile(r', tile_choice="(?:[^"\\]|\\.)*"|tile_choice="(?:[^"\\]|\\.)*",? ?')


def structure(value) -> str:
    """A target (or any schema value) as text with its timing figures left out."""
    if dataclasses.is_dataclass(value):
        kept = [f"{f.name}={structure(getattr(value, f.name))}"
                for f in dataclasses.fields(value)
                if f.metadata.get("unit") not in TIMING_UNITS and f.name not in TIMING_KEYS]
        return f"{type(value).__name__}({', '.join(kept)})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {structure(v)}" for k, v in value.items()) + "}"
    return repr(value)


def decided_graph_key(graph) -> str:
    """The decided graph as text, less how each tile was found (it quotes measured cycles)."""
    from compiler.ir.text import print_graph
    return hashlib.sha256(_TILE_CHOICE.sub("", print_graph(graph)).encode()).hexdigest()


class CompileMemo:
    """Front-end graphs and lowered programs by what they depend on, least recently used out
    first past `entries` of each."""

    def __init__(self, entries: int = 32):
        self.entries = entries
        self.models: OrderedDict[tuple, object] = OrderedDict()
        self.programs: OrderedDict[tuple, object] = OrderedDict()
        self.hits = {"model": 0, "program": 0}
        self.misses = {"model": 0, "program": 0}

    def model(self, key: tuple, build: Callable[[], object]):
        return self._get("model", self.models, key, build)

    def program(self, graph, target, rest: tuple, build: Callable[[], object]):
        key = (decided_graph_key(graph), structure(target), repr(rest))
        return self._get("program", self.programs, key, build)

    def _get(self, kind: str, table: OrderedDict, key, build):
        if key in table:
            self.hits[kind] += 1
            table.move_to_end(key)
            return table[key]
        self.misses[kind] += 1
        value = table[key] = build()
        if len(table) > self.entries:
            table.popitem(last=False)
        return value
