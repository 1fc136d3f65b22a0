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

from dataclasses import replace

from isa.program import Program
from runtime.functional.compare import FunctionalResult, check_size, run_functional
from runtime.functional.storage import FunctionalError

FED = ("input", "weight", "cache")


def reference_sizes(program: Program) -> dict[str, str]:
    """The listing's sizes as `--set` overrides, to compile the model it came from."""
    return {name: str(value) for name, value in program.sizes}


def run_listing(program: Program, compiled, seed: int = 0) -> FunctionalResult:
    """Run `program` (read from a listing) and `compiled.program` on the model's random feeds
    and compare both with the reference; the result is the listing's, with the compiled
    program's errors as its baseline."""
    from compiler.ir.evaluate import random_feeds
    check_size(program)
    feeds = random_feeds(compiled.graph, seed)
    check_interface(program, compiled.graph, feeds)
    result = run_functional(replace(compiled, program=program), feeds=feeds)
    result.baseline = run_functional(compiled, feeds=feeds).outputs
    result.seed = seed
    return result


def check_interface(program: Program, graph, feeds: dict) -> None:
    """The listing declares what the model is fed (`feeds`, by name) and computes, with the
    same shapes: the tensors are how the two are matched."""
    if program.model != graph.model:
        raise FunctionalError(f"the listing is of model {program.model}, not {graph.model}: "
                              "--model names the model the listing was compiled from")
    if program.deployment.devices > 1:
        raise FunctionalError(f"the listing runs on {program.deployment.devices} devices; "
                              "functional mode runs one device's program")
    decls = program.tensor_table()
    wanted = [(node, node.op) for node in graph.nodes() if node.name in feeds]
    wanted += [(graph.node(oid), "output") for oid in graph.outputs]
    for node, role in wanted:
        decl = decls.get(node.name)
        if decl is None:
            raise FunctionalError(f"the listing declares no tensor '{node.name}', the model's "
                                  f"{role} of shape {list(node.type.shape)}")
        if tuple(decl.shape) != tuple(node.type.shape):
            raise FunctionalError(f"the listing's tensor '{node.name}' is {list(decl.shape)}, "
                                  f"the model's {role} is {list(node.type.shape)}")
    for decl in program.tensors:
        if decl.kind in FED and decl.base is None and decl.name not in feeds:
            raise FunctionalError(f"the listing's {decl.kind} '{decl.name}' is not one of "
                                  f"model {graph.model}'s, so nothing feeds it")
