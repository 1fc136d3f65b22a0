"""A repeat's layer number: `repeat n as layer { r = ratios[layer] }`.

Inside a repeat, its name (`layer` by default, or the `as` name) holds the number of the
iteration in the model: the `N` of its scope `layer.N`, counted across repeats of the same
name (a window's left-out iterations included), so a per-layer list written once for the
model (`compress_ratios = [0, 0, 4, 128, ...]`) is indexed by the same number the listing
shows. The name is bound only while the repeat runs.

The window (statements._repeat_window) must know when two iterations build the same nodes.
A body that reads the number only as the index of lists differs between iterations only by
the entries it reads, so an iteration's `key` is those entries; a body that reads the number
any other way (arithmetic, a block argument) has the number itself as its key, and no two of
its iterations are taken for equal.
"""
from __future__ import annotations

from compiler.errors import DscError


class LayerNumber:
    def __init__(self, b, frame, parent: str, name: str, count: int):
        self.frame, self.name, self.count = frame, name, count
        window_next = b.namer.next_iteration(parent, name)
        left_out = sum(s.times - 1 for s in b.graph.steady if s.name == name) \
            if parent == "" else 0
        self.first = window_next + left_out        # the model number of iteration 0
        self.saved = frame.vars.get(name, _UNBOUND)
        self.saved_lists = frame.loop_lists.get(name, _UNBOUND)
        self.saved_raw = name in frame.loop_raw
        frame.loop_lists[name] = {}
        frame.loop_raw.discard(name)
        self.checked = False

    def enter(self, k: int) -> None:
        """Bind the number of iteration k (0 first) of the repeat."""
        self.frame.vars[self.name] = self.first + k

    def after_first(self) -> None:
        """Once the first iteration showed which lists the body indexes by the number: each
        must have an entry for every iteration of the repeat."""
        if self.checked:
            return
        self.checked = True
        last = self.first + self.count - 1
        for list_name, loc in self.frame.loop_lists[self.name].items():
            table = self.frame.lookup(list_name, loc)
            if len(table) <= last:
                raise DscError(f"list '{list_name}' has {len(table)} entries, but it is indexed "
                               f"by {self.name} {self.first} .. {last} of this repeat", loc,
                               f"a list of at least {last + 1} entries, one per {self.name}")

    def key(self, k: int):
        """What iteration k reads of its number (see the module's docstring)."""
        if self.name in self.frame.loop_raw:
            return ("number", self.first + k)
        lists = self.frame.loop_lists[self.name]
        return tuple((n, self.frame.lookup(n, loc)[self.first + k]) for n, loc in lists.items())

    def leave(self) -> None:
        frame, name = self.frame, self.name
        for store, saved in ((frame.vars, self.saved), (frame.loop_lists, self.saved_lists)):
            if saved is _UNBOUND:
                store.pop(name, None)
            else:
                store[name] = saved
        if self.saved_raw:
            frame.loop_raw.add(name)
        else:
            frame.loop_raw.discard(name)


_UNBOUND = object()
