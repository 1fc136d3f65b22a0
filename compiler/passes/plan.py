"""plan: place every on-chip buffer at an offset in its space, reusing memory.

Before:  buffer out: bf16[128,128] smem            (every buffer has its own bytes)
After:   buffer out: bf16[128,128] smem@0          (shares bytes with the K-loop's tiles)

Runs on the ISA program, after lowering (the buffers are the templates'). Two buffers may share
bytes when one's last access is ordered before the other's first access: by program order on
one unit, or through a token its unit signals and the other's unit waits for (units run
concurrently, so listing order alone proves nothing). A buffer used inside a loop is live for
the whole loop. Offsets are aligned to 128 bytes (the bulk-copy granule); a kernel whose
buffers cannot fit a space is an error naming the kernel and the bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from compiler.errors import DscError
from isa.instructions import lookup
from isa.program import Buf, Kernel, Loop, Program
from isa.target_schema import Target

ALIGN = 128


def _flatten(body) -> list[tuple[object, int, int]]:
    """(instruction, lo, hi) in program order: the span each access keeps its buffers live,
    the whole loop for an instruction inside one."""
    out: list = []

    def size(stmts) -> int:
        return sum(size(s.body) if isinstance(s, Loop) else 1 for s in stmts)

    def walk(stmts, span) -> None:
        for s in stmts:
            if isinstance(s, Loop):
                start = len(out)
                walk(s.body, span or (start, start + size(s.body) - 1))
            else:
                k = len(out)
                out.append((s, *(span or (k, k))))
    walk(body, None)
    return out


def _happens_before(order, target: Target):
    """before[p] = positions p is ordered before (same unit later, or via a token)."""
    n = len(order)
    unit = [lookup(ins.op, target).unit if lookup(ins.op, target) else "?" for ins, *_ in order]
    edges = [set() for _ in range(n)]
    for p in range(n):
        for q in range(p + 1, n):
            if unit[p] == unit[q]:
                edges[p].add(q)
                break
        ins_p = order[p][0]
        for q in range(n):
            if q != p and set(ins_p.signal) & set(order[q][0].wait):
                edges[p].add(q)
    reach = [set() for _ in range(n)]
    for p in reversed(range(n)):
        for q in edges[p]:
            if q > p:
                reach[p] |= {q} | reach[q]
    return reach


def plan_kernel(kernel: Kernel, target: Target) -> Kernel:
    order = _flatten(kernel.body)
    reach = _happens_before(order, target)
    live: dict[str, list[int]] = {}
    for k, (ins, lo, hi) in enumerate(order):
        for a in ins.args:
            if isinstance(a, Buf):
                span = live.setdefault(a.name, [k, k, lo, hi])
                span[0], span[1] = min(span[0], k), max(span[1], k)
                span[2], span[3] = min(span[2], lo), max(span[3], hi)
    placed: dict[str, int] = {}
    spaces: dict[str, list] = {}
    decls = []
    for b in sorted(kernel.buffers, key=lambda b: (live.get(b.name, [0])[0], b.name)):
        first, last, lo, hi = live.get(b.name, [0, len(order) - 1, 0, len(order) - 1])
        taken = []
        for other, o_first, o_last, o_lo, o_hi, offset, size in spaces.get(b.space, []):
            disjoint = (o_hi < lo and first in reach[o_last]) or (hi < o_lo and o_first in reach[last])
            if not disjoint:
                taken.append((offset, offset + size))
        offset = _first_fit(sorted(taken), b.nbytes)
        spaces.setdefault(b.space, []).append((b.name, first, last, lo, hi, offset, b.nbytes))
        placed[b.name] = offset
    for b in kernel.buffers:
        decls.append(replace(b, offset=placed[b.name]))
    for space, items in spaces.items():
        peak = max(offset + size for *_, offset, size in items)
        capacity = target.buffers[space].bytes if space in target.buffers else 0
        if peak > capacity:
            names = ", ".join(f"{name} {size}" for name, *_, size in items)
            raise DscError(f"kernel {kernel.name} needs {peak:,} bytes of {space} but "
                           f"{target.name} has {capacity:,} (buffers: {names})")
    return replace(kernel, buffers=tuple(decls))


def _first_fit(taken: list[tuple[int, int]], size: int) -> int:
    offset = 0
    for lo, hi in taken:
        if offset + size <= lo:
            break
        offset = max(offset, -(-hi // ALIGN) * ALIGN)
    return offset


@dataclass(frozen=True)
class Plan:
    name: str = "plan"

    def run(self, program: Program, target: Target) -> Program:
        return replace(program, kernels=tuple(plan_kernel(k, target) for k in program.kernels))
