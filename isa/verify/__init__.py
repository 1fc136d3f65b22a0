"""The whole-kernel analyses of the static verifier (isa/check.py runs them after its checks
of each instruction's operands): they read the program, they never simulate it.

    nest      the kernel's instructions and positions in its unrolled order, never unrolled
    ranges    intervals of index expressions over the grid and loop variables
    bounds    slots inside buffers, boxes inside tensors, no division by zero
    shapes    boxes, element counts and matrix shapes that fit the buffers they name
    tiling    how the boxes of an instruction lay over one dimension of a tensor
    coverage  outputs written exactly once, swept dimensions read exactly once, no surplus
    order     happens-before between instances: unit program order and token credits
    hazards   races on buffer slots, buffers sharing memory while live, starved tokens

docs/isa.md lists the rules, what they do not catch and why.
"""
from __future__ import annotations

from isa.instructions import InstrDef
from isa.program import Kernel
from isa.verify.bounds import check_bounds
from isa.verify.coverage import check_coverage
from isa.verify.hazards import check_hazards
from isa.verify.nest import Nest
from isa.verify.shapes import check_shapes


def verify_kernel(kernel: Kernel, definitions: list[InstrDef]) -> None:
    """Raise a ProgramError (with `where`) for the first rule the kernel breaks; the
    instructions' definitions come in program order (`walk` order)."""
    nest = Nest(kernel)
    check_bounds(nest)
    check_shapes(nest, definitions)
    check_coverage(nest)
    check_hazards(nest, definitions)
