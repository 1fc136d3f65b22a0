"""Run a program's schedule: every launch on its stream, after what it depends on.

Launches run in order on their stream (the cores' `compute` stream, or a link's: a
collective's sends). A launch starts once the later of its stream coming free and the
launches it depends on finishing is `boundary` behind it, and at least the launch interval
after the previous launch on its stream started (the rate kernels are launched at); both are
the target's figures for the deployment's launch mode (stream, graph or dependent). The
launches it depends on are those that wrote what it reads or writes
(read after write, write after write) and those that read what it writes (write after read),
by base tensor (except two links' sends of one collective: they write disjoint blocks). On
one stream this is kernel after kernel; across streams it is what lets
one micro-batch's all-to-all run under the other's compute. A compute launch that waits for
a link's launch beyond its stream's own order is exposed communication.

Each kernel's time is simulated as if it had the cores to itself: it starts with idle cores
and memory, with in its caches what the launches before it left there (runtime/residency.py),
so its time depends only on the kernel, the shapes bound to it and that share of them held,
and launches of the same kernel on same-shaped tensors with the same shares held (the 58
identical MoE layers) are simulated once and their result reused, which is exact (and kept
for later runs: runtime/sim_cache.py). The memory is shared with the links: a compute launch
that overlaps link launches runs with the memory bandwidth their sends and receives leave
it (runtime/contention.py), so it is simulated again for that background.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from isa.program import Kernel, Program, TensorDecl, bind_name, expand_schedule
from isa.target_schema import Target
from isa.workload import size_problem
from runtime.contention import LinkTraffic
from runtime.engine import DeadlockError
from runtime.errors import SimulationError
from runtime.residency import Residency
from runtime.kernel_sim import KernelResult, token_sources
from runtime.sim_cache import simulate


@dataclass
class LaunchRecord:
    name: str              # what it computes (the IR node), e.g. layer.3.mla.q
    kernel: str
    start: float
    end: float
    flops: float
    result: KernelResult
    stream: str = "compute"
    exposed: float = 0.0   # cycles its stream sat idle waiting for another stream's launches
    waited_on: int = -1    # the launch (its index) whose output it waited for past its own
                           # stream's order (-1: it did not wait for another's output)
    launching: float = 0.0  # cycles from when it could run to its start: its launch
    slowed: float = 0.0    # cycles the links' memory traffic beside it added to its run


@dataclass
class RunResult:
    program: Program
    target: Target
    launches: list[LaunchRecord] = field(default_factory=list)
    simulated_kernels: int = 0

    @property
    def cycles(self) -> float:
        return max((r.end for r in self.launches), default=0.0)


def _bound_as(decl: TensorDecl, base: TensorDecl | None) -> tuple:
    """What of a bound tensor makes two launches of a kernel identical: its format, shape and
    bytes, and where it lives (its base's home, multi-die, and its memory)."""
    return (decl.dtype, decl.shape, decl.nbytes, (base or decl).home, (base or decl).memory)


def run_program(program: Program, target: Target,
                progress: Callable[[int, int], None] | None = None,
                record: bool = False) -> RunResult:
    """Simulate every launch; with `record`, kernels keep their waves' traces (for --trace and
    --html). A program beyond the interpreter's bounds (isa/workload.py) is refused before
    anything is simulated."""
    problem = size_problem(program, target.cores, target.chip.dies)
    if problem:
        raise SimulationError(f"error: {problem[1]}")
    tensors = program.tensor_table()
    kernels = program.kernel_table()
    outputs = {k.name: {p.name for p in k.params if p.output} for k in kernels.values()}
    launches = list(expand_schedule(program.schedule))
    out = RunResult(program, target)
    sims = _Simulations(target, tensors, record, out)
    bound_as: dict[str, tuple] = {}                  # tensor name -> _bound_as
    heads: dict[str, str] = {}                       # note -> what it computes, unbound
    contents = Residency(target)                     # what the caches hold between launches
    mode = program.deployment.launch                 # stream, graph or dependent
    interval, boundary = target.launch_cycles(mode), target.boundary_cycles(mode)
    started: dict[str, float] = {}                   # stream -> when its last launch started
    free: dict[str, float] = {}                      # stream -> when its last launch ends
    written: dict[str, tuple[float, str]] = {}       # base tensor -> (when written, by stream)
    read: dict[str, tuple[float, str]] = {}          # base tensor -> (when last read, by)
    writer: dict[str, int] = {}                      # base tensor -> the launch that wrote it
    links = LinkTraffic(target)                      # what the links take of the memory
    for i, (launch, env) in enumerate(launches):
        kernel = kernels[launch.kernel]
        bound = sorted((p, bind_name(t, env)) for p, t in launch.args)
        for _, t in bound:
            if t not in bound_as:
                d = tensors[t]
                bound_as[t] = _bound_as(d, tensors.get(d.base) if d.base else None)
        params = {p: tensors[t] for p, t in bound}
        resident = contents.shares(params, tensors)
        key = (kernel.name, tuple((p, bound_as[t]) for p, t in bound),
               tuple(sorted(resident.items())))
        head = heads.get(launch.note)
        if head is None:
            head = heads[launch.note] = launch.note.split(" = ")[0]
        name = bind_name(head, env)
        launched = _Launched(kernel, params, resident, key, i, name)
        alone = sims.result(launched, {})
        contents.update(alone.touched, params, tensors)
        writes = outputs[launch.kernel]
        touched = [(p in writes, tensors[t].base or t) for p, t in bound]
        after = [written.get(t, (0.0, "")) for _, t in touched]
        after = [(t, by) for t, by in after if not _disjoint_links(by, launch.stream)]
        after += [read.get(t, (0.0, "")) for w, t in touched if w]
        own = free.get(launch.stream, 0.0)
        ready, by = max(after + [(own, launch.stream)])
        start = max(ready + boundary, started.get(launch.stream, 0.0) + interval)
        started[launch.stream] = start
        result = alone
        if launch.stream == "compute":
            result = sims.result(launched, links.background(start, start + alone.cycles))
        else:
            links.add(start, start + alone.cycles, alone.resource_bytes)
        end = start + result.cycles
        exposed = ready - own if launch.stream == "compute" and by not in ("", "compute") else 0.0
        waited_on = next((writer.get(t, -1) for w, t in touched
                          if written.get(t) == (ready, by)), -1) if ready > own else -1
        free[launch.stream] = end
        for w, t in touched:
            table = written if w else read
            if (end, launch.stream) >= table.get(t, (0.0, "")):
                table[t] = (end, launch.stream)
                if w:
                    writer[t] = i
        out.launches.append(LaunchRecord(name, kernel.name, start, end, launch.flops, result,
                                         launch.stream, exposed, waited_on,
                                         start - ready, result.cycles - alone.cycles))
        if progress:
            progress(i + 1, len(launches))
    return out


@dataclass
class _Launched:
    """A launch as its simulation sees it: the kernel, its bound tensors, what the caches hold
    of them, the key of equal launches; its index and name for error messages."""
    kernel: Kernel
    params: dict
    resident: dict
    key: tuple
    index: int
    name: str


@dataclass
class _Simulations:
    """Kernel simulations of one run, each simulated once per key and background."""
    target: Target
    tensors: dict
    record: bool
    out: RunResult
    held: dict[tuple, KernelResult] = field(default_factory=dict)

    def result(self, launch: _Launched, background: dict[str, float]) -> KernelResult:
        key = launch.key + (tuple(background.items()),) if background else launch.key
        if key not in self.held:
            params, tensors = launch.params, self.tensors
            bases = {p: tensors[d.base] for p, d in params.items() if d.base in tensors}
            try:
                self.held[key] = simulate(launch.kernel, params, self.target, self.record,
                                          bases, launch.resident, background)
            except DeadlockError as err:
                raise SimulationError(_deadlock_message(launch.kernel, launch.index,
                                                        launch.name, err, self.target)) from None
            self.out.simulated_kernels += 1
        return self.held[key]


def _disjoint_links(earlier: str, later: str) -> bool:
    """Writes that need no order: a collective's sends over two different links reach
    different peers, so they fill disjoint blocks of the tensor they both write."""
    return earlier != later and earlier not in ("", "compute") and later != "compute"


def _deadlock_message(kernel: Kernel, index: int, name: str, err: DeadlockError,
                      target: Target) -> str:
    """Which units wait for which token, with who would signal it: enough to find the
    wait/signal list or token count that is wrong."""
    initial = dict(kernel.tokens)
    sources = token_sources(kernel, target)
    lines = [f"error: kernel {kernel.name} (launch {index + 1}, {name}) deadlocks: no unit can go on"]
    seen = set()
    for b in err.blocked:
        if (b.unit, b.token) in seen:
            continue
        seen.add((b.unit, b.token))
        if b.token is None:
            lines.append(f"  {b.unit}: instruction {b.pc + 1} of its queue ({b.label}) is stuck")
            continue
        signalled = ", ".join(sources.get(b.token, ())) or "no instruction"
        lines.append(f"  {b.unit}: instruction {b.pc + 1} of its queue ({b.label}) waits for "
                     f"'{b.token}' (starts at {initial.get(b.token, 0)}, signalled by {signalled})")
    lines.append("check the token counts and the wait(...)/signal(...) lists of these instructions")
    return "\n".join(lines)
