"""A small builder for kernel bodies, so a lowering template reads like the kernel it emits."""
from __future__ import annotations

from contextlib import contextmanager

from isa.expr import Const, Expr, Var, add, mul
from isa.program import Attr, BufferDecl, Instr, Kernel, Loop, Param, TensorDecl
from isa.target_schema import Target


class KernelBuilder:
    def __init__(self, name: str, target: Target):
        self.name = name
        self.target = target
        self.params: list[Param] = []
        self.args: list[tuple[str, str]] = []       # (param, program tensor)
        self.grid: list[tuple[str, int]] = []
        self.buffers: list[BufferDecl] = []
        self.tokens: list[tuple[str, int]] = []
        self.notes: list[str] = []
        self.persistent = False          # one persistent worker per core walks the items
        self._stack: list[list] = [[]]

    # -- declarations --

    def param(self, name: str, tensor: TensorDecl, output: bool = False) -> str:
        self.params.append(Param(name, tensor.dtype, tensor.shape, output))
        self.args.append((name, tensor.name))
        return name

    def grid_dim(self, var: str, size: int) -> Expr:
        """A grid dimension; size-1 dims are left out and their coordinate is 0."""
        if size == 1:
            return Const(0)
        self.grid.append((var, size))
        return Var(var)

    def item_index(self) -> Expr:
        """The work item's position in the grid, row-major over the dims declared so far."""
        index: Expr = Const(0)
        for var, size in self.grid:
            index = add(mul(index, Const(size)), Var(var))
        return index

    def buffer(self, name: str, dtype: str, shape, role: str, slots: int = 1) -> str:
        space, _ = self.target.buffer_for(role)
        self.buffers.append(BufferDecl(name, dtype, tuple(int(d) for d in shape), slots, space))
        return name

    def token(self, name: str, initial: int = 0) -> str:
        if all(t != name for t, _ in self.tokens):
            self.tokens.append((name, initial))
        return name

    def note(self, text: str) -> None:
        self.notes.append(text)

    # -- body --

    def emit(self, op: str, *args, wait=(), signal=(), **attrs) -> None:
        # A constant expression is stored as a plain int, so listings read back identically.
        extra = tuple(Attr(k, v.value if isinstance(v, Const) else v) for k, v in attrs.items())
        self._stack[-1].append(Instr(op, tuple(args) + extra, tuple(wait), tuple(signal)))

    @contextmanager
    def loop(self, var: str, count: int):
        """A loop; a count of 1 is emitted straight (its variable is 0)."""
        if count == 1:
            self._stack.append(self._stack[-1])
            yield Const(0)
            self._stack.pop()
            return
        self._stack.append([])
        yield Var(var)
        body = self._stack.pop()
        self._stack[-1].append(Loop(var, count, tuple(body)))

    def build(self) -> tuple[Kernel, tuple[tuple[str, str], ...]]:
        assert len(self._stack) == 1, "unclosed loop"
        kernel = Kernel(self.name, tuple(self.params), tuple(self.grid), tuple(self.buffers),
                        tuple(self.tokens), tuple(self._stack[0]), tuple(self.notes),
                        persistent=self.persistent)
        return kernel, tuple(self.args)


def tile_start(index: Expr, size: int) -> Expr:
    return mul(index, Const(size))


def offset(base: Expr, delta: int) -> Expr:
    return add(base, Const(delta))
