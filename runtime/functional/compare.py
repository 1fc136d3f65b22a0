"""Functional check: run the ISA program on quantised inputs, compare with two references.

The first is the model evaluated in float32 on the original feeds: the model as written, at
full precision. The compiler computes it from its IR (compiler/ir/evaluate.py) and hands it
over as plain data (`Reference`), so the runtime never reads the IR. The ISA run stores the
same feeds in their declared formats first, so the difference is the error the chosen
precisions (and the accumulator of the matrix unit) introduce.

The second, when the matrix unit keeps fewer accumulator bits than FP32 in a format the run
used, is the same program on the same quantised inputs with every product summed exactly: the
difference is the error the limited accumulator and the promotion interval add by themselves
(what DeepSeek's FP8 recipe promotes partial sums to FP32 against), which input quantisation
otherwise hides.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from isa.program import Program
from runtime.functional.machine import Accumulation, Machine
from runtime.functional.storage import FunctionalError
from runtime.numerics.matmul import MMA_K

ELEMENT_LIMIT = 2e7      # elements of all storage tensors a functional run accepts


@dataclass(frozen=True)
class Reference:
    """What the model computes, as plain data: the feeds a run starts from and the model's
    float32 values on them, by name; its outputs; what it is fed and what it returns as
    (name, role, shape), the tensors a listing must declare; its formats and policy by role."""
    model: str
    seed: int | None                              # None: feeds given, not drawn
    feeds: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    interface: tuple[tuple[str, str, tuple[int, ...]], ...]
    formats: dict[str, dict[str, int]]            # role -> {format: number of tensors}
    policy: dict[str, str]


@dataclass(frozen=True)
class OutputError:
    name: str
    format: str
    shape: tuple[int, ...]
    max_abs_error: float
    rel_error: float             # ||isa - ref||_F / ||ref||_F


@dataclass
class FunctionalResult:
    model: str
    target: str
    seed: int | None
    outputs: list[OutputError]
    accumulation: dict[str, str]              # matrix input format -> accumulation used
    formats: dict[str, dict[str, int]]        # role -> {format: number of tensors}
    policy: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    probes: list[OutputError] = field(default_factory=list)    # intermediate values asked for
    indices: tuple[int, int] = (0, 0)         # computed indices equal to the reference, total
    instructions: int = 0
    seconds: float = 0.0
    # An edited listing's run (listing.py): the errors of the program the compiler makes from
    # the same model, sizes and target, on the same feeds.
    baseline: list[OutputError] = field(default_factory=list)
    # Each output against the same run with exact accumulation (when an accumulator is
    # limited): the accumulator's own error.
    accumulator: list[OutputError] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "reference": "the IR evaluated in float32 on the unquantised feeds",
            "outputs": [_error_dict(o) for o in self.outputs],
            "probes": [_error_dict(o) for o in self.probes],
            "accumulation": dict(self.accumulation),
            "formats": {role: dict(c) for role, c in self.formats.items()},
            "policy": dict(self.policy),
            "indices_equal": self.indices[0],
            "indices_total": self.indices[1],
            "warnings": list(self.warnings),
            "instructions": self.instructions,
            **({"baseline": [_error_dict(o) for o in self.baseline]} if self.baseline else {}),
            **({"accumulator_reference": "the same program on the same quantised inputs, "
                                         "products summed exactly",
                "accumulator_error": [_error_dict(o) for o in self.accumulator]}
               if self.accumulator else {}),
        }

    def text(self) -> str:
        compiled = {o.name: f"{o.rel_error:.3e}" for o in self.baseline}
        exact = {o.name: f"{o.rel_error:.3e}" for o in self.accumulator}
        head = [("value", "format", "shape", "max abs error", "rel error")
                + (("compiled program's rel error",) if compiled else ())
                + (("rel error vs exact accumulation",) if exact else ())]
        rows = head + [(o.name, o.format, "[" + ",".join(map(str, o.shape)) + "]",
                        f"{o.max_abs_error:.3e}", f"{o.rel_error:.3e}")
                       + ((compiled.get(o.name, ""),) if compiled else ())
                       + ((exact.get(o.name, ""),) if exact else ())
                       for o in self.outputs + self.probes]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head[0]))]
        lines = [f"functional check (seed {self.seed}): the ISA run on the stored feeds vs the "
                 f"float32 IR reference; {self.instructions:,} instructions in "
                 f"{self.seconds:.1f} s", ""]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.append("")
        if exact:
            lines += ["vs exact accumulation: the same program on the same quantised inputs "
                      "with every product summed exactly (the error the limited accumulator and "
                      "the promotion interval add by themselves)", ""]
        if compiled:
            lines += ["the listing's program vs the one dsc compiles from the same model, sizes "
                      "and target, on the same feeds: an edit that only reschedules keeps about "
                      "the compiled program's error", ""]
        for fmt, how in self.accumulation.items():
            lines.append(f"{'accumulation':<13} {fmt}: {how}")
        for role, label in (("weights", "weights"), ("activations", "activations"),
                            ("kv_cache", "kv cache")):
            formats = ", ".join(f"{f} (x{n})" for f, n in self.formats[role].items()) or "none"
            lines.append(f"{label:<13} {formats}")
        equal, total = self.indices
        if total:
            lines.append(f"{'indices':<13} {equal:,} of {total:,} computed indices (top-k "
                         f"choices) equal the reference's ({100 * equal / total:.1f}%)")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"


def _error_dict(o: OutputError) -> dict:
    finite = lambda v: float(v) if math.isfinite(v) else None      # JSON has no NaN or Inf
    return {"name": o.name, "format": o.format, "shape": list(o.shape),
            "max_abs_error": finite(o.max_abs_error), "rel_error": finite(o.rel_error)}


def storage_elements(program: Program) -> int:
    return sum(math.prod(t.shape) for t in program.tensors if t.base is None)


def check_size(program: Program) -> None:
    """Refuse programs too big to execute element by element with numpy."""
    elements = storage_elements(program)
    if elements <= ELEMENT_LIMIT:
        return
    sizes = ", ".join(f"{k}={v}" for k, v in program.sizes[:8])
    more = ", ..." if len(program.sizes) > 8 else ""
    raise FunctionalError(
        f"model {program.model} is too big for functional mode: its tensors hold "
        f"{elements:.3g} elements, the limit is {ELEMENT_LIMIT:.0e}; shrink it with "
        f"--set NAME=VALUE (fewer layers, a smaller batch, context or width; its sizes now: "
        f"{sizes or 'none'}{more})")


def run_functional(program: Program, target, reference: Reference,
                   probes: tuple[str, ...] = ()) -> FunctionalResult:
    """Execute `program` on the reference's feeds and compare every model output, and the
    values named in `probes` (each held by a program tensor of the same name), with the
    model's values on the same, unquantised, feeds."""
    check_size(program)
    start = time.perf_counter()
    machine = Machine(program, target)
    machine.store_feeds(reference.feeds)
    stats = machine.run()
    compare = lambda name: _compare_value(name, machine, reference.values)
    accumulator = []
    if any(acc.bits is not None for acc in stats.accumulation.values()):
        exact = Machine(program, target, exact_accumulation=True)
        exact.store_feeds(reference.feeds)
        exact.run()
        values = {n: exact.memory.value(n) for n in (*reference.outputs, *probes)}
        accumulator = [_compare_value(n, machine, values) for n in (*reference.outputs, *probes)]
    return FunctionalResult(
        program.model, target.name, reference.seed,
        [compare(name) for name in reference.outputs],
        {fmt: describe(acc) for fmt, acc in sorted(stats.accumulation.items())},
        reference.formats, dict(reference.policy),
        list(stats.warnings), [compare(name) for name in probes],
        _index_agreement(program, machine, reference.values), stats.instructions,
        time.perf_counter() - start, accumulator=accumulator)


def _compare_value(name: str, machine: Machine, reference: dict) -> OutputError:
    if name not in reference or name not in machine.memory.decls:
        raise FunctionalError(f"no value '{name}' in both the IR and the program's tensors")
    decl = machine.memory.decl(name)
    fmt = decl.dtype + (f" {decl.scaling}" if decl.scaling else "")
    return _compare(name, fmt, machine.memory.value(name), reference[name])


def _compare(name: str, fmt: str, isa: np.ndarray, ref: np.ndarray) -> OutputError:
    isa, ref = np.asarray(isa, np.float64), np.asarray(ref, np.float64)
    if isa.shape != ref.shape:
        raise FunctionalError(f"{name}: the ISA run gives shape {list(isa.shape)}, "
                              f"the reference {list(ref.shape)}")
    diff = isa - ref
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    norm, err = float(np.linalg.norm(ref)), float(np.linalg.norm(diff))
    rel = err / norm if norm > 0 else (0.0 if err == 0 else math.inf)
    if np.isnan(diff).any():
        max_abs = rel = math.nan
    return OutputError(name, fmt, tuple(ref.shape), max_abs, rel)


def _index_agreement(program: Program, machine: Machine, reference: dict) -> tuple[int, int]:
    """How many computed integer values (expert choices) equal the reference's: a routing
    decision that flips changes the output by far more than rounding does."""
    equal = total = 0
    for decl in program.tensors:
        if decl.dtype == "i32" and decl.base is None and decl.kind in ("temp", "output") \
                and decl.name in reference:
            isa, ref = machine.memory.read(decl.name), reference[decl.name]
            if isa.shape == ref.shape:
                equal += int(np.sum(isa == ref))
                total += isa.size
    return equal, total


def describe(acc: Accumulation) -> str:
    """The accumulation model, named as in runtime/numerics/matmul.py."""
    n = f"{acc.instructions:,} mm.mma"
    if acc.bits is None:
        return f"exact: products exact, summed in float64, rounded once per instruction ({n})"
    limited = (f"{acc.bits}-bit-mantissa accumulator rounded after each group of {MMA_K} "
               f"products inside mm.mma")
    if not acc.promoted_every:
        return f"truncate: {limited}, never promoted to fp32 ({n})"
    every = "/".join(str(k) for k in sorted(acc.promoted_every))
    return (f"promote: {limited}, added into fp32 by vec.promote / vec.accumulate every "
            f"{every} of K ({n})")
