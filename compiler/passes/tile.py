"""tile: choose each GEMM kernel's tile, pipeline depth and cluster.

Before:  %y = matmul(%x, %w) : ... sched {kernel="gemm.4"}
After:   %y = matmul(%x, %w) : ... sched {kernel="gemm.4", tile=[128, 128, 128, 4, 2, 2],
                                          tile_choice="fastest of 4 simulated ..."}

Candidates are the tiles (multiples of the matrix instruction, K tiles multiples of the scale
block and dividing the promotion interval) whose buffers, double-buffered or deeper, fit the target
(kernels/gemm_tiles.py). The cost estimate ranks them; the best `shortlist` are then lowered and
run on the interpreter when the driver provides that (`ctx.measure`), and the fastest is kept —
so the chosen tile is at least as fast, under the interpreter, as every candidate it ran.
Without the interpreter the best estimate wins. Equal GEMMs (every layer's) are decided once
per process, and the measurements are kept across runs (runtime/sim_cache.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from compiler.errors import DscError
from compiler.ir.graph import Graph
from compiler.kernels import gemm_tiles
from compiler.kernels.gemm_estimate import group_problem
from compiler.kernels.groups import kernel_groups
from compiler.passes import PassContext


def considered(problem: gemm_tiles.GemmProblem, target, shortlist: int):
    """The candidates the pass runs: the best `shortlist` by estimate, best first. Among
    equal estimates the rank prefers fewer stages (smaller buffers), yet once memory bandwidth
    bounds the estimate it cannot tell pipeline depths apart and the interpreter can: the
    deepest of the candidates tied with the best runs too, after them, when it is deeper."""
    scored = sorted(gemm_tiles.choose(problem, target)[1],
                    key=lambda ts: gemm_tiles.rank(problem, ts[0], ts[1], target))
    picked = [t for t, _ in scored[:shortlist]]
    best = round(scored[0][1], 3)
    tied = [t for t, estimate in scored if round(estimate, 3) == best]
    deepest = max(tied, key=lambda t: t.stages)          # the first of the deepest, by rank
    if shortlist > 1 and deepest.stages > max(t.stages for t in picked):
        picked.append(deepest)
    return picked, len(scored)


# Decisions by (problem, epilogue ops, target contents, shortlist, measured): the same GEMM on
# the same chip is decided once per process, whichever model or layer it comes from.
_DECIDED: dict[tuple, tuple] = {}


@dataclass(frozen=True)
class Tile:
    name: str = "tile"
    shortlist: int = 3

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        decided = _DECIDED
        choice: dict[int, tuple] = {}
        chip = gemm_tiles.target_key(ctx.target)
        for group in kernel_groups(graph):
            if group.kind != "gemm":
                continue
            try:
                problem = (group_problem(group, graph, ctx.target)[0],
                           tuple(n.op for n in group.nodes), chip, self.shortlist,
                           ctx.measure is not None)
                if problem not in decided:
                    decided[problem] = self._decide(group, graph, problem[0], ctx)
            except ValueError as exc:
                head = group.nodes[0]
                raise DscError(f"cannot tile '{head.name}' ({group.name}) for target "
                               f"{ctx.target.name}: {exc}", head.loc,
                               notes=graph.call_notes(head.name)) from None
            choice[group.nodes[0].id] = decided[problem]
        out = graph.empty_like()
        for node in graph.nodes():
            sched = dict(node.sched)
            if node.id in choice:
                tile, how = choice[node.id]
                sched.update(tile=tile.sched, tile_choice=how)
            out.add(node.op, node.inputs, node.type, node.name, node.attrs, node.loc, sched)
        out.outputs = list(graph.outputs)
        return out

    def _decide(self, group, graph, problem, ctx: PassContext):
        tiles, total = considered(problem, ctx.target, self.shortlist)
        if ctx.measure is None or len(tiles) == 1:
            return tiles[0], f"best estimate of {total} candidates"
        timed = []
        for i, t in enumerate(tiles):
            cycles = ctx.measure(group, graph, t)
            if cycles is None:          # too long a work item to simulate candidate by candidate
                return tiles[0], (f"best estimate of {total} candidates (work items too long "
                                  "to simulate each)")
            timed.append((cycles, i, t))
        cycles, _, best = min(timed)
        return best, (f"fastest of {len(tiles)} simulated ({cycles:,.0f} cycles), shortlisted "
                      f"by estimate from {total} candidates")
