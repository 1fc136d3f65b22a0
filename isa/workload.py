"""How much simulating a program takes, and the bounds the interpreter keeps to.

The interpreter (runtime/) follows every instruction of each class of work item with its loops
unrolled, deals the work items of each launch to the cores wave by wave, and runs the schedule
launch by launch. All three grow with the sizes written in a program, so a listing edited to
`loop k 1000000000` or a model set to a billion tokens would run for hours or exhaust memory.
`size_problem` measures a program against the bounds below before anything is simulated; the
assembler, the driver and the interpreter refuse, with a message naming the kernel and the
count, what exceeds them.

The bounds are above what real models need (DeepSeek-V3's largest work item executes under a
thousand instructions, a 128k-token prefill's attention about twenty thousand; the flagship
schedule has a few thousand launches) and low enough that the largest accepted program
simulates in seconds to a minute on one core: the engine takes some microseconds per
instruction of each item class it follows (the tile pass follows each candidate tile), and a
launch about 0.1 ms beyond its kernel's simulation, which is shared by equal launches.

Dealing items. Items run in row-major grid order, `cores` per wave. An item's class depends
only on which of its coordinates are the last of their grid dim, so before the last slab of
the outermost grid dim of size > 1 (stride S items), the composition of a wave depends only on
where it starts modulo S: the waves repeat with a period of S / gcd(cores, S). `deal_plan`
uses that: it lists the waves whose items must be dealt one by one, and how often each run of
them repeats, so a launch of 10^12 items in a short-period grid deals a few thousand.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from isa.program import Kernel, Launch, Loop, Program

MAX_ITEM_INSTRUCTIONS = 100_000        # instructions one work item executes, loops unrolled
MAX_DEALT_ITEMS = 1 << 22              # work items of one launch dealt to cores one by one
MAX_LAUNCHES = 200_000                 # launches of the schedule, repeats unrolled
MAX_ITEMS = 1 << 62                    # work items of one launch (they are numbered in int64)
MAX_LAUNCH_FLOPS = 1e30                # DeepSeek-V3's largest launch does 1e15; sums stay finite
MAX_GRID_DIMS = 8                      # items fall into up to 2^dims classes, each simulated


@dataclass(frozen=True)
class Run:
    """Waves `first .. first + waves - 1`, whose compositions occur `repeats` times in a row
    (a period of the grid: later waves repeat them exactly)."""
    first: int
    waves: int
    repeats: int = 1


def launch_count(items) -> int:
    """Launches of a schedule, repeats unrolled (counted, not unrolled)."""
    return sum(1 if isinstance(item, Launch) else item.count * launch_count(item.body)
               for item in items)


def instructions_per_item(body) -> int:
    """Instructions one work item executes: loop bodies counted once per iteration."""
    return sum(s.count * instructions_per_item(s.body) if isinstance(s, Loop) else 1
               for s in body)


def deal_plan(kernel: Kernel, cores: int, die_split: bool) -> list[Run]:
    """The runs of waves whose items the interpreter deals one by one, in launch order (see
    the module doc); everything when the kernel's items are split over dies by a grid dim."""
    sizes = [size for _, size in kernel.grid]
    items = math.prod(sizes)
    if items == 0:
        return []
    total = -(-items // cores)
    outer = next((d for d, size in enumerate(sizes) if size > 1), None)
    if die_split or outer is None:
        return [Run(0, total)]
    stride = math.prod(sizes[outer + 1:])
    full = (sizes[outer] - 1) * stride // cores          # waves before the last slab
    period = stride // math.gcd(cores, stride)
    if full < 2 * period:
        return [Run(0, total)]
    repeats, rest = divmod(full, period)
    plan = [Run(0, period, repeats)] + ([Run(0, rest)] if rest else [])
    return plan + [Run(full, total - full)]


def dealt_items(kernel: Kernel, cores: int, die_split: bool) -> int:
    items = kernel.grid_size
    return sum(min(run.waves * cores, items - run.first * cores)
               for run in deal_plan(kernel, cores, die_split))


def kernel_problem(kernel: Kernel, cores: int, dies: int) -> str | None:
    """Why simulating `kernel` on `cores` cores would run away (None when it would not)."""
    grid = " ".join(f"{var}={size}" for var, size in kernel.grid)
    if len(kernel.grid) > MAX_GRID_DIMS:
        return (f"kernel {kernel.name} has a grid of {len(kernel.grid)} dims; its work items "
                f"fall into up to 2^dims classes, each simulated: at most {MAX_GRID_DIMS} dims")
    items = kernel.grid_size
    if items > MAX_ITEMS:
        return (f"kernel {kernel.name} has {items:,} work items (grid {grid}); the interpreter "
                f"numbers them in 64 bits (at most {MAX_ITEMS:,})")
    steps = instructions_per_item(kernel.body)
    if steps > MAX_ITEM_INSTRUCTIONS:
        return (f"a work item of kernel {kernel.name} executes {steps:,} instructions (its "
                f"loops unrolled); the interpreter follows each one and takes at most "
                f"{MAX_ITEM_INSTRUCTIONS:,}")
    dealt = dealt_items(kernel, cores, dies > 1 and kernel.die_var is not None)
    if dealt > MAX_DEALT_ITEMS:
        return (f"kernel {kernel.name} has {items:,} work items (grid {grid}) whose waves over "
                f"{cores} cores do not repeat with a short period: dealing them one by one "
                f"takes {dealt:,}, more than the interpreter's {MAX_DEALT_ITEMS:,}")
    return None


def size_problem(program: Program, cores: int, dies: int) -> tuple[str, str] | None:
    """(kernel name, why) for the first kernel or schedule too large to simulate, or None."""
    launches = launch_count(program.schedule)
    if launches > MAX_LAUNCHES:
        return "", (f"the schedule has {launches:,} launches (repeats unrolled); the "
                    f"interpreter runs each one, at most {MAX_LAUNCHES:,}")
    for kernel in program.kernels:
        problem = kernel_problem(kernel, cores, dies)
        if problem:
            return kernel.name, problem
    return None
