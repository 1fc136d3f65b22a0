"""The pass pipeline: one readable list of named stages with a hook between them.

A pass is a small frozen object with a `name` and `run(graph, ctx) -> graph` that returns a
new graph (nodes are immutable). `run_pipeline` calls `after(name, graph)` after every pass,
which is where `--print-after` prints and tests verify. Lowering and the program passes
(`plan`, `place`, which take and return an ISA program) follow (compiler/driver.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from compiler.ir.graph import Graph
from isa.deployment import Deployment
from isa.target_schema import Target


@dataclass
class PassContext:
    target: Target
    notes: list[str] = field(default_factory=list)      # what passes want the user to know
    # measure(group, graph, tile): the cycles of a GEMM kernel group lowered with a candidate
    # tile, simulated; injected by the driver (passes import neither the lowering templates
    # nor the runtime); it gives None for a kernel too long to simulate per candidate. None:
    # passes fall back to their estimates.
    measure: Callable | None = None
    deployment: Deployment | None = None                # None: one device
    expert_load: dict[str, float] | None = None         # the shard pass's hottest device
    # Where the model's deploy block gives a plan item the command line did not override
    # (deploy key -> position): an error about that item points there.
    deploy_where: dict = field(default_factory=dict)


class Pass(Protocol):
    name: str

    def run(self, graph: Graph, ctx: PassContext) -> Graph: ...


def pipeline() -> list[Pass]:
    from compiler.passes.fuse import Fuse
    from compiler.passes.precision import Precision
    from compiler.passes.shard import Shard
    from compiler.passes.tile import Tile
    return [Shard(), Precision(), Fuse(), Tile()]


PASS_NAMES = ("shard", "precision", "fuse", "tile", "micro_batch", "plan", "place")  # graph passes, then program passes


def run_pipeline(graph: Graph, ctx: PassContext, passes: list[Pass] | None = None,
                 after: Callable[[str, Graph], None] | None = None) -> Graph:
    for p in passes if passes is not None else pipeline():
        graph = p.run(graph, ctx)
        if after:
            after(p.name, graph)
    return graph
