"""An edited listing executed against the model it was compiled from.

    dsc run x.lst --target T --functional --model MODEL.ds

The verifier proves an edited listing well-formed and free of races (isa/check.py), which
makes its program order a valid execution; this runs it. The model is compiled again with the
listing's sizes for the same target, which gives the reference (the model's IR evaluated in
float32) and a baseline: the error of the program the compiler makes. Both programs run on
the same random feeds. An edit that only reschedules (tiles, stages, buffer placement) keeps
about the baseline's error; a wrong edit (a swapped operand, a box on the wrong rows) shows
an error of the order of the values themselves.
"""
from __future__ import annotations

from isa.program import Program
from runtime.functional.compare import FunctionalResult, Reference, check_size, run_functional
from runtime.functional.storage import FunctionalError

FED = ("input", "weight", "cache")


def reference_sizes(program: Program) -> dict[str, str]:
    """The listing's sizes as `--set` overrides, to compile the model it came from."""
    return {name: str(value) for name, value in program.sizes}


def run_listing(program: Program, compiled: Program, target,
                reference: Reference) -> FunctionalResult:
    """Run `program` (read from a listing) and `compiled` (the program the compiler makes of
    the same model) on the reference's feeds and compare both with its values; the result is
    the listing's, with the compiled program's errors as its baseline."""
    check_size(program)
    check_interface(program, reference)
    result = run_functional(program, target, reference)
    result.baseline = run_functional(compiled, target, reference).outputs
    return result


def check_interface(program: Program, reference: Reference) -> None:
    """The listing declares what the model is fed and computes, with the same shapes: the
    tensors are how the two are matched."""
    if program.model != reference.model:
        raise FunctionalError(f"the listing is of model {program.model}, not "
                              f"{reference.model}: --model names the model the listing was "
                              "compiled from")
    if program.deployment.devices > 1:
        raise FunctionalError(f"the listing runs on {program.deployment.devices} devices; "
                              "functional mode runs one device's program")
    decls = program.tensor_table()
    for name, role, shape in reference.interface:
        decl = decls.get(name)
        if decl is None:
            raise FunctionalError(f"the listing declares no tensor '{name}', the model's "
                                  f"{role} of shape {list(shape)}")
        if tuple(decl.shape) != tuple(shape):
            raise FunctionalError(f"the listing's tensor '{name}' is {list(decl.shape)}, "
                                  f"the model's {role} is {list(shape)}")
    for decl in program.tensors:
        if decl.kind in FED and decl.base is None and decl.name not in reference.feeds:
            raise FunctionalError(f"the listing's {decl.kind} '{decl.name}' is not one of "
                                  f"model {reference.model}'s, so nothing feeds it")
