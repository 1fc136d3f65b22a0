"""The compiler pipeline as one readable list of stages, shared by every CLI command."""
from __future__ import annotations

from dataclasses import dataclass

from compiler.frontend import load_model
from compiler.ir.graph import Graph
from compiler.lower import lower
from compiler.passes import PassContext, run_pipeline
from compiler.passes.place import Place
from compiler.passes.plan import Plan
from compiler.stats import model_stats
from isa.program import Program
from isa.target_loader import load_target
from isa.target_schema import Target


@dataclass(frozen=True)
class Compiled:
    graph: Graph
    target: Target
    program: Program
    notes: tuple[str, ...] = ()


def simulate_cycles(target: Target):
    """The interpreter as a measuring stick for passes: cycles of one kernel on `target`.
    The driver hands it to the passes, so the compiler proper never imports the runtime."""
    from runtime.kernel_sim import simulate_kernel
    return lambda kernel, params: simulate_kernel(kernel, params, target).cycles


def compile_model(model_path: str, target_name: str, overrides: dict[str, str],
                  after=None, passes=None, measure: bool = True, die_mode: str = "uma") -> Compiled:
    """Front end, graph passes, lowering, program passes; `after(name, graph or program)`
    runs after each pass."""
    target = load_target(target_name)
    graph = load_model(model_path, overrides)
    ctx = PassContext(target, measure=simulate_cycles(target) if measure else None)
    graph = run_pipeline(graph, ctx, passes, after)
    program = lower(graph, target)
    for program_pass in (Plan(), Place(mode=die_mode)):
        program = program_pass.run(program, target)
        if after:
            after(program_pass.name, program)
    return Compiled(graph, target, program, tuple(ctx.notes))


def capacity_warning(graph: Graph, target: Target) -> str | None:
    """A warning when weights plus KV cache exceed the device's memory (plans come later)."""
    stats = model_stats(graph)
    caches = sum(n.type.nbytes for n in graph.nodes() if n.op == "cache")
    need = stats.weight_bytes + caches
    have = target.memory.bytes * target.chip.dies
    if need <= have:
        return None
    return (f"warning: weights ({stats.weight_bytes / 1e9:,.1f} GB) and KV cache "
            f"({caches / 1e9:,.1f} GB) need {need / 1e9:,.1f} GB but one {target.name} has "
            f"{have / 1e9:,.1f} GB; simulating one device as if they fit")
