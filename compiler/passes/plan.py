"""plan: place every on-chip buffer at an offset in its space, reusing memory.

Before:  buffer out: bf16[128,128] smem            (every buffer has its own bytes)
After:   buffer out: bf16[128,128] smem@0          (shares bytes with the K-loop's tiles)

Runs on the ISA program, after lowering (the buffers are the templates'). Two buffers may share
bytes when every access to the one used first completes before the first access to the other,
as the static verifier proves it (isa/verify/hazards.py `Lifetimes`): by program order on one
unit, or through token credits (units run concurrently, so listing order alone proves
nothing, and a token signalled several times orders a wait only after the signal that
credits it). So what the plan places, the verifier accepts. In a persistent kernel no two
buffers share bytes: a worker's next item loads while its previous one's epilogue still
reads its own buffers (the tile pass counted every buffer whole). Offsets are aligned to 128
bytes (the bulk-copy granule); a kernel whose buffers cannot fit a space is an error naming
the kernel and the bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from compiler.errors import DscError
from isa.instructions import lookup
from isa.program import Kernel, Program, walk
from isa.target_schema import Target
from isa.verify.hazards import Lifetimes

ALIGN = 128


def plan_kernel(kernel: Kernel, target: Target) -> Kernel:
    definitions = [lookup(ins.op, target) for ins in walk(kernel.body)]
    lifetimes = Lifetimes(kernel, definitions) if all(definitions) else None
    first = {name: min(sites) for name, sites in lifetimes.accesses.sites_of.items()} \
        if lifetimes else {}

    def apart_in_time(a: str, b: str) -> bool:
        """Every access to the one used first completes before the other's first (never in
        a persistent kernel: a worker's next item starts while its last one drains)."""
        if kernel.persistent or a not in first or b not in first or first[a] == first[b]:
            return False
        early, late = (a, b) if first[a] < first[b] else (b, a)
        return lifetimes.before(early, late)

    placed: dict[str, int] = {}
    spaces: dict[str, list[tuple[str, int, int]]] = {}
    for b in sorted(kernel.buffers, key=lambda b: (first.get(b.name, 0), b.name)):
        taken = sorted((offset, offset + size) for other, offset, size in
                       spaces.get(b.space, []) if not apart_in_time(other, b.name))
        offset = _first_fit(taken, b.nbytes)
        spaces.setdefault(b.space, []).append((b.name, offset, b.nbytes))
        placed[b.name] = offset
    for space, items in spaces.items():
        peak = max(offset + size for _, offset, size in items)
        capacity = target.buffers[space].bytes if space in target.buffers else 0
        if peak > capacity:
            names = ", ".join(f"{name} {size}" for name, _, size in items)
            raise DscError(f"kernel {kernel.name} needs {peak:,} bytes of {space} but "
                           f"{target.name} has {capacity:,} (buffers: {names})")
    return replace(kernel, buffers=tuple(replace(b, offset=placed[b.name])
                                         for b in kernel.buffers))


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
