"""place: put each tensor's bytes in a memory of the target, and, on a multi-die chip in NUMA
mode, each kernel's work and each tensor's bytes on the dies.

Memories: the placement policy (isa/placement.py; `--place kv_cache=host`, or `place` in the
model's deploy block) names a memory per role; each tensor of that role (its scales with it)
lives there, and the listing says so:

               tensor layer.3.kv: bf16[128,4096,576] cache in=host

Dies:

Before (UMA):  every tensor interleaved over both dies' memories; work items on any die
After (NUMA):  kernel matmul_3 ... dies n                    (the n halves on die 0 / die 1)
               tensor layer.3.moe.w1 ... home=split:0        (experts 0-127 on die 0, rest 1)
               tensor layer.3.h ... home=replicate           (written to both dies' memories)

Runs on the ISA program after lowering and plan, with `--die-mode numa`. Each kernel splits its
work items by one grid dim: experts or batch groups (e, g) first, then output columns (n), then
row tiles (w, t), then any dim with enough items. A tensor every launch accesses along the same
split stays split there: each die holds, and only touches, its part. A tensor some launch needs
whole (an activation split by columns but read by rows) is replicated: its writers store to
both dies' memories, and those remote stores are the only bytes that cross the die-to-die
link; readers read their own die's copy. (A weight read by differently split kernels would be
replicated too, doubling its memory.)
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from isa.expr import variables
from isa.layout import view_axis_to_base
from isa.placement import roles
from isa.program import Box, Kernel, Program, TensorDecl, bind_name, expand_schedule, walk
from isa.target_schema import Target

PREFERRED = ("e", "g", "n", "w", "t", "c", "m")


def die_var(kernel: Kernel, dies: int) -> str | None:
    sizes = dict(kernel.grid)
    for var in PREFERRED:
        if sizes.get(var, 0) >= dies:
            return var
    return next((v for v, size in kernel.grid if size >= dies), None)


def split_axis(kernel: Kernel, param: str, decl: TensorDecl, base: TensorDecl) -> int | None:
    """The base axis along which `kernel`'s die halves walk through `param`; None when each
    item reaches across all of it (or the kernel does not split)."""
    if kernel.die_var is None:
        return None
    for ins in walk(kernel.body):
        for a in ins.args:
            if isinstance(a, Box) and a.tensor == param:
                for axis, start in enumerate(a.starts):
                    if kernel.die_var in variables(start):
                        return (view_axis_to_base(base.shape, decl.steps, axis)
                                if decl.base else axis)
    return None


@dataclass(frozen=True)
class Place:
    name: str = "place"
    mode: str = "uma"
    policy: tuple[tuple[str, str], ...] = ()      # (role, memory), e.g. (("kv_cache", "host"),)

    def run(self, program: Program, target: Target) -> Program:
        return self.on_dies(self.in_memories(program, target), target)

    def in_memories(self, program: Program, target: Target) -> Program:
        policy = {role: memory for role, memory in self.policy
                  if memory != target.machine.default_memory}
        if not policy:
            return program
        role = roles(program.tensors)
        placed = tuple(replace(t, memory=policy.get(role.get(t.name)))
                       if t.base is None and role.get(t.name) in policy else t
                       for t in program.tensors)
        return replace(program, tensors=placed)

    def on_dies(self, program: Program, target: Target) -> Program:
        if self.mode == "uma" or target.chip.dies == 1:
            return program
        kernels = {k.name: replace(k, die_var=die_var(k, target.chip.dies))
                   for k in program.kernels}
        tensors = program.tensor_table()
        access: dict[str, set] = {}           # base tensor -> split axes its launches use
        for launch, env in expand_schedule(program.schedule):
            kernel = kernels[launch.kernel]
            for param, template in launch.args:
                decl = tensors[bind_name(template, env)]
                base = tensors[decl.base] if decl.base else decl
                access.setdefault(base.name, set()).add(split_axis(kernel, param, decl, base))
        homes = {name: (f"split:{next(iter(axes))}" if len(axes) == 1 and None not in axes
                        else "replicate") for name, axes in access.items()}
        placed = tuple(replace(t, home=homes.get(t.name)) if t.base is None else t
                       for t in program.tensors)
        return replace(program, kernels=tuple(kernels.values()), tensors=placed)
