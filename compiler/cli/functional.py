"""Functional runs, where the compiler's reference meets the runtime's machine.

The compiler evaluates its IR into plain data (compiler/ir/evaluate.py `model_reference`);
the runtime runs a program on it (runtime/functional). Neither imports the other: this module,
beside the command line that drives both, joins them.
"""
from __future__ import annotations


def check_numerics(compiled, seed: int = 0, feeds=None, probes: tuple[str, ...] = ()):
    """Run `compiled.program` on random feeds (or `feeds`) and compare it with the model's
    float32 values: a runtime FunctionalResult."""
    from runtime.functional import run_functional
    return run_functional(compiled.program, compiled.target, reference(compiled, seed, feeds),
                          probes)


def check_listing(program, compiled, seed: int = 0):
    """An edited listing's run against its model, with the compiled program's as baseline."""
    from runtime.functional.compare import check_size
    from runtime.functional.listing import run_listing
    check_size(program)
    return run_listing(program, compiled.program, compiled.target, reference(compiled, seed))


def reference(compiled, seed: int = 0, feeds=None):
    from compiler.ir.evaluate import model_reference
    from runtime.functional import FunctionalError, Reference
    if compiled.graph.steady:
        raise FunctionalError("the model was compiled as a window of its repeated layers; a "
                              "functional run evaluates every layer: compile_model(..., "
                              "unroll=True)")
    return Reference(**model_reference(compiled.graph, seed, feeds))
