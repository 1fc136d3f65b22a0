"""The model's program from its window's: every iteration a steady one stands for put back.

A graph built as a window (compiler.ir.graph.Steady) lowers to the program of the window:
its steady iteration `layer.5` sits in a `Repeat` with the iteration before it, since the two
launch the same kernels on tensors named alike. Stretching that program

- lengthens the repeat by the `times - 1` iterations the window left out,
- declares their tensors, copies of the steady iteration's renumbered (each right after the
  one it copies, so declarations stay grouped as the listing folds them),
- renumbers what follows: an iteration of the repeat seen from after it keeps its distance
  to the last iteration (`layer.5`, one before the window's last, becomes `layer.59`, one
  before the model's), and later iterations of the same name move up by `times - 1`.

The result is the program compiling every iteration would give, provided the window is
steady: the steady iteration folds with the one before it, and every tensor a launch binds
after renumbering is declared like the one it bound in the window. Otherwise `NotSteady` is
raised and the driver compiles every iteration instead.
"""
from __future__ import annotations

import re
from dataclasses import replace

from compiler.ir.graph import Steady
from compiler.kernels.schedule import order_tensors
from isa.program import Launch, Program, Repeat, TensorDecl, bind_name


class NotSteady(Exception):
    """The window's program does not show the steady state its graph promised."""


def stretch(program: Program, steady: tuple[Steady, ...]) -> Program:
    for s in sorted(steady, key=lambda s: s.index, reverse=True):   # later ones first: the
        program = _Stretch(program, s).program()                    # earlier keep their numbers
    return program


class _Stretch:
    def __init__(self, program: Program, s: Steady):
        self.source, self.s, self.extra = program, s, s.left_out
        self.pattern = re.compile(rf"(?<![A-Za-z0-9_.]){re.escape(s.name)}\.(\d+)\.")
        self.window = program.tensor_table()

    def renumber(self, text: str, delta, since: int) -> str:
        """Iterations numbered `since` or later move up by `delta`."""
        name = self.s.name
        return self.pattern.sub(lambda m: f"{name}.{int(m[1]) + delta}." if int(m[1]) >= since
                                else m[0], text)

    def after(self, text: str) -> str:
        """A name as seen from after the steady iteration's repeat."""
        return self.renumber(text, self.extra, self.s.first)

    def program(self) -> Program:
        items = self.source.schedule
        at = self._steady_repeat(items)
        rep = items[at]
        longer = replace(rep, count=rep.count + self.s.times - 1)
        schedule = items[:at] + (longer,) + tuple(self._after_item(i) for i in items[at + 1:])
        stretched = replace(self.source, tensors=self._tensors(), schedule=schedule)
        self._check(stretched, longer, items[at + 1:], schedule[at + 1:])
        return stretched

    def _steady_repeat(self, items) -> int:
        s = self.s
        for k, item in enumerate(items):
            if isinstance(item, Repeat) and item.step == s.period \
                    and item.start <= s.index - s.period <= item.last - s.period \
                    and (s.index - item.start) % s.period == 0 \
                    and any(f"{s.name}.{{{item.var}" in t for l in item.body
                            if isinstance(l, Launch) for _, t in l.args):
                return k
        raise NotSteady(f"{s.scope} does not fold with {s.name}.{s.index - s.period}")

    def _after_item(self, item):
        if isinstance(item, Launch):
            return replace(item, args=tuple((p, self.after(t)) for p, t in item.args),
                           note=self.after(item.note))
        start = item.start + self.extra if item.start >= self.s.first else item.start
        return replace(item, start=start, body=tuple(self._after_item(i) for i in item.body))

    def _tensors(self) -> tuple[TensorDecl, ...]:
        out, s = [], self.s
        for t in self.source.tensors:
            index = self._iteration(t.name)
            if index is None or index >= s.index + s.period:     # after the steady cycle
                out.append(_named(t, self.after(t.name), t.base and self.after(t.base)))
                continue
            out.append(t)
            if s.holds(index):                           # its copies, numbered on
                names = self._copies(t.name)
                bases = self._copies(t.base) if t.base else [None] * len(names)
                out += [_named(t, n, b) for n, b in zip(names, bases)]
        # a cycle's copies interleave (layer 7's copies 9, 11, ... come before layer 8's):
        # declarations grouped and ordered as the lowering orders them
        return order_tensors(out) if s.period > 1 else tuple(out)

    def _iteration(self, name: str) -> int | None:
        m = self.pattern.match(name)
        return int(m[1]) if m else None

    def _copies(self, text: str) -> list[str]:
        """`text` as named in each copy of the steady iteration: the repeat's iterations
        numbered p, 2p, ... (times - 1) p higher (p the period)."""
        parts, pos = [], 0
        for m in self.pattern.finditer(text):
            if int(m[1]) >= self.s.first:
                parts += [text[pos:m.start(1)], int(m[1])]
                pos = m.end(1)
        parts.append(text[pos:])
        copies = range(self.s.period, self.s.left_out + 1, self.s.period)
        if len(parts) == 3:                              # one number: `layer.5.moe.w1`
            head, index, tail = parts
            return [f"{head}{index + c}{tail}" for c in copies]
        return ["".join(p if isinstance(p, str) else str(p + c) for p in parts) for c in copies]

    # -- is the window steady? ------------------------------------------------------------

    def _check(self, stretched: Program, rep: Repeat, window_after, model_after) -> None:
        """Every launch binds, in the model, tensors declared like those it bound in the
        window: the repeat's body at its last iteration as at the steady one, and what
        follows the repeat as before renumbering."""
        model = stretched.tensor_table()
        last = rep.last
        for launch in rep.body:
            for item in self._launches(launch):
                for _, t in item.args:
                    self._same(bind_name(t, {rep.var: self.s.index}),
                               bind_name(t, {rep.var: last}), model)
        for before, now in zip(window_after, model_after):
            for a, b in zip(self._launches(before), self._launches(now)):
                for (_, t0), (_, t1) in zip(a.args, b.args):
                    if "{" not in t0:
                        self._same(t0, t1, model, self.window)

    @staticmethod
    def _launches(item):
        if isinstance(item, Launch):
            return [item]
        return [l for i in item.body for l in _Stretch._launches(i)]

    def _same(self, name: str, renamed: str, model, window=None) -> None:
        window = window or model
        if renamed not in model or name not in window or \
                _form(window[name], window) != _form(model[renamed], model):
            raise NotSteady(f"{renamed} is not declared as {name} is")


def _named(t: TensorDecl, name: str, base: str | None) -> TensorDecl:
    """`t` under another name and base (a copy made field by field: a model has thousands)."""
    if name == t.name and base == t.base:
        return t
    copy = object.__new__(TensorDecl)
    copy.__dict__.update(t.__dict__, name=name, base=base)
    return copy


def _form(t: TensorDecl, table) -> tuple:
    """A declaration but for its name: what a kernel bound to it would see."""
    base = table.get(t.base) if t.base else None
    return (t.dtype, t.shape, t.kind, t.scaling, t.steps, t.home,
            None if base is None else _form(base, table))
