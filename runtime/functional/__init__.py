"""Functional mode: execute an ISA program with numpy and measure its numerical error.

    storage    tensors in their formats, views as address maps, feeds quantised on the way in
    semantics  one function per kind of execution an instruction's record names
    machine    launches, work items and instruction streams in program order
    compare    run_functional: the ISA run against the IR's float32 reference
    listing    run_listing: an edited listing against its model, beside the compiled program

See docs/functional.md.
"""
from runtime.functional.compare import (ELEMENT_LIMIT, FunctionalResult, OutputError, Reference,
                                        check_size, run_functional)
from runtime.functional.machine import Machine
from runtime.functional.semantics import BY_KIND, semantics_of
from runtime.functional.storage import FunctionalError, Memory, round_to_dtype

__all__ = ["ELEMENT_LIMIT", "FunctionalError", "FunctionalResult", "Machine", "Memory",
           "OutputError", "Reference", "BY_KIND", "check_size", "round_to_dtype", "run_functional",
           "semantics_of"]
