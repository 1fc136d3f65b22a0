"""The compiler pipeline as one readable list of stages, shared by every CLI command."""
from __future__ import annotations

from dataclasses import dataclass, replace

from compiler import capacity
from compiler.errors import DscError
from compiler.frontend import load_model
from compiler.ir.graph import Graph
from compiler.lower import lower
from compiler.lower.stretch import NotSteady, stretch
from compiler.passes import PassContext, run_pipeline
from compiler.passes.micro_batch import MicroBatch
from compiler.passes.place import Place
from compiler.passes.plan import Plan
from isa.deployment import (Deployment, DeploymentError, make_deployment, parse_plan,
                            reserve_cores)
from isa.placement import ROLES, PlacementError, check_memories, parse_placement
from isa.program import Program, bind_name, expand_schedule
from isa.target_loader import load_target
from isa.target_schema import Target
from isa.workload import instructions_per_item, kernel_problem, size_problem


@dataclass(frozen=True)
class Compiled:
    graph: Graph
    target: Target
    program: Program
    notes: tuple[str, ...] = ()


# The tile pass simulates its candidates for a GEMM whose work item executes at most this many
# instructions (DeepSeek-V3's largest executes under a thousand): the interpreter takes
# microseconds per instruction, so a K of a million (forty thousand instructions an item) took
# seconds per candidate and minutes per model. Beyond it the estimate alone picks the tile.
MEASURED_ITEM_INSTRUCTIONS = 10_000


def measure_tiles(target: Target):
    """The interpreter as the tile pass's measuring stick: a GEMM kernel group lowered with a
    candidate tile and simulated alone on `target`, in cycles. The driver hands it to the
    passes, so they import neither the lowering templates nor the runtime."""
    from compiler.lower.templates.gemm import lower_gemm_group
    from compiler.lower.tensors import TensorMap
    from runtime.sim_cache import simulate        # results kept across runs
    maps: dict[int, tuple] = {}                   # graph -> its tensors, while it is measured

    def measure(group, graph: Graph, tile) -> float:
        held = maps.get(id(graph))
        if held is None or held[0] is not graph:
            held = maps[id(graph)] = (graph, TensorMap(graph))
        tmap = held[1]
        kernel, args = lower_gemm_group(group, graph, tmap, target, tile)
        problem = kernel_problem(kernel, target.cores, target.chip.dies)
        if problem:                   # too large to simulate: the tile pass reports it at the GEMM
            raise ValueError(problem)
        if instructions_per_item(kernel.body) > MEASURED_ITEM_INSTRUCTIONS:
            return None               # the estimate ranks the candidates alone
        return simulate(kernel, {p: tmap.decls[t] for p, t in args}, target).cycles
    return measure


def compile_model(model_path: str, target_name: str | Target, overrides: dict[str, str],
                  after=None, passes=None, measure: bool = True, die_mode: str = "uma",
                  devices: int | None = None, plan: str | None = None,
                  check_fit: bool = True, clock=None, unroll: bool = False,
                  place: str | None = None, memo=None, peak: bool = False) -> Compiled:
    """Front end, graph passes, lowering, program passes; `after(name, graph or program)`
    runs after each pass. `target_name` is a builtin name, a .toml file, or a loaded Target.
    `memo` (compiler.compile_memo.CompileMemo) shares the front end's graphs and the lowered
    programs between calls that need the same ones (a sweep's points). `devices` and `plan` (e.g. "attn=dp,moe=ep") override the model's
    deploy block, and `place` (e.g. "kv_cache=host") its placement; with `check_fit`, a model
    that does not fit its devices' memories is an error; with `peak`, the target runs on its
    datasheet peaks instead of its sustained figures.
    `clock(stage)` is called as each stage ends (the benchmark's per-stage times).

    Model-level repeats are compiled as windows of their iterations (compiler.ir.graph.Steady)
    and the program stretched back to every iteration; `unroll` compiles every iteration, as
    the driver itself does when a window turns out not to be steady."""
    options = dict(passes=passes, measure=measure, die_mode=die_mode, devices=devices,
                   plan=plan, check_fit=check_fit, lap=clock or (lambda stage: None),
                   place=place, memo=memo if passes is None and after is None else None,
                   peak=peak)
    show = (lambda name, result, window: after(name, result)) if after else None
    if unroll:
        return _compile(model_path, target_name, overrides, show, unroll=True, **options)
    seen: list = []
    try:
        compiled = _compile(model_path, target_name, overrides,
                            lambda *record: seen.append(record), unroll=False, **options)
    except NotSteady:
        return _compile(model_path, target_name, overrides, show, unroll=True, **options)
    for name, result, window in seen if after else ():    # once the window proved steady
        after(name, stretch(result, compiled.graph.steady) if window else result)
    return compiled


def _compile(model_path, target_name, overrides, after, passes, measure, die_mode, devices,
             plan, check_fit, lap, unroll, place, memo, peak) -> Compiled:
    def hook(name, result, window=False):        # window: a program not yet stretched
        lap(name)
        if after:
            after(name, result, window)

    def front(sizes):
        if memo is None:
            return load_model(model_path, sizes, unroll)
        return memo.model((model_path, tuple(sorted(sizes.items())), unroll),
                          lambda: load_model(model_path, sizes, unroll))
    target = target_name if isinstance(target_name, Target) else \
        load_target(target_name, peak=peak)
    lap("target")
    replica = front(overrides)
    deployment = resolve_deployment(replica, target, devices, plan)
    try:
        target = reserve_cores(target, deployment)       # the compute kernels' cores
    except DeploymentError as err:
        raise DscError(str(err), expected="fewer comm_cores") from None
    policy = resolve_placement(replica, target, place)
    if deployment.micro_batches > 1 or deployment.shared_batch > 1:
        replica = front(micro_batch_sizes(replica, overrides, deployment))
    lap("frontend")
    ctx = PassContext(target, measure=measure_tiles(target) if measure else None,
                      deployment=deployment,
                      deploy_where=deploy_where(replica, devices, parse_plan(plan or "")))
    graph = run_pipeline(replica, ctx, passes, hook)

    def program_for_graph() -> Program:
        program = replace(lower(graph, target), deployment=deployment,
                          expert_load=tuple((ctx.expert_load or {}).items()))
        lap("lower")
        for program_pass in (MicroBatch(), Plan()):
            program = program_pass.run(program, target)
            hook(program_pass.name, program, window=True)
        program = stretch(program, graph.steady)
        lap("stretch")
        if check_fit:
            capacity.check_fit(graph, replica, target, deployment, policy)
            lap("capacity")
        placing = Place(mode=die_mode, policy=tuple(policy.items()))   # on every iteration
        program = placing.run(program, target)
        hook(placing.name, program)
        _check_simulable(program, graph, target)
        return program
    if memo is None:
        program = program_for_graph()
    else:
        program = memo.program(graph, target, (deployment, die_mode, tuple(policy.items()),
                                               check_fit, ctx.expert_load), program_for_graph)
    return Compiled(graph, target, program, tuple(ctx.notes))


def _check_simulable(program: Program, graph: Graph, target: Target) -> None:
    """A program beyond the interpreter's bounds (isa/workload.py) is refused here, at the
    operation of the model whose kernel exceeds them, before anything is simulated."""
    found = size_problem(program, target.cores, target.chip.dies)
    if found is None:
        return
    kernel, why = found
    loc, notes = None, ()
    for launch, env in expand_schedule(program.schedule):
        if launch.kernel == kernel or not kernel:
            name = bind_name(launch.note, env).split(" = ")[0]
            node = next((n for n in graph.nodes() if n.name == name), None)
            loc, notes = (node.loc, graph.call_notes(name)) if node else (None, ())
            break
    raise DscError(why, loc, "smaller sizes (--set) or fewer repeats", notes)


def micro_batch_sizes(graph: Graph, overrides: dict[str, str], dep: Deployment) -> dict:
    """The size overrides that compile one micro-batch: the model's `batch` divided by their
    count (micro-batches split requests, never one request's tokens), times the devices whose
    requests a tensor-parallel group shares when attention stays data parallel inside it."""
    batch = graph.sizes.get("batch")
    if batch is None or batch * dep.shared_batch % dep.micro_batches:
        what = "into equal micro-batches" if dep.shared_batch == 1 else \
            f"gathered over groups of {dep.shared_batch} into equal micro-batches"
        raise DscError(f"plan {dep.plan_text} splits the size 'batch' {what}, but model "
                       f"{graph.model} has "
                       + ("no size 'batch'" if batch is None else f"batch = {batch}"),
                       graph.where.get("batch", graph.where.get("deploy.micro_batches")),
                       expected=f"a model with a size 'batch' divisible by {dep.micro_batches}")
    return {**overrides, "batch": str(batch * dep.shared_batch // dep.micro_batches)}


def resolve_deployment(graph: Graph, target: Target, devices: int | None,
                       plan: str | None) -> Deployment:
    """The model's deploy block, with the command line's device count and plan items over it."""
    items = {k: v for k, v in graph.deploy.items() if k not in ("devices", "place")}
    try:
        overrides = parse_plan(plan or "")
        given = deploy_where(graph, devices, overrides)
        items.update(overrides)
        items.setdefault("launch", "graph" if continues_sequences(graph) else "stream")
        count = devices if devices is not None else int(graph.deploy.get("devices", 1))
        if count > 1 and target.system is None:
            raise DscError(f"target {target.name} has no [system] table, so it cannot be "
                           f"deployed on {count} devices", given.get("devices"),
                           expected="a target file with [system] (devices_per_node, "
                                    "intra_node and inter_node links)")
        per_node = target.system.devices_per_node if target.system else 1
        return make_deployment(count, per_node, items)
    except DeploymentError as err:
        try:
            overrides = parse_plan(plan or "")
        except DeploymentError:                 # the command line's plan is what is wrong
            overrides = None
        where = deploy_where(graph, devices, overrides).get(err.key) \
            if overrides is not None and err.key else None
        raise DscError(str(err), where,
                       expected="e.g. --devices 32 --plan attn=dp,moe=ep") from None


def deploy_where(graph: Graph, devices: int | None, plan_items: dict) -> dict:
    """Deploy key -> where the model's deploy block gives it, for the items the command line
    (--devices, --plan) does not override: an error about one of them points there."""
    overridden = set(plan_items) | ({"devices"} if devices is not None else set())
    return {key[len("deploy."):]: loc for key, loc in graph.where.items()
            if key.startswith("deploy.") and key[len("deploy."):] not in overridden}


def continues_sequences(graph: Graph) -> bool:
    """A decode step: it appends its tokens to a KV cache that already holds earlier ones
    (a cache write at a position past 0). Production serving replays such steps from
    captured graphs; a prefill of fresh prompts runs kernel by kernel."""
    return any(node.op == "cache_write" and node.attr("offset", 0) > 0 for node in graph.nodes())


def resolve_placement(graph: Graph, target: Target, place: str | None) -> dict[str, str]:
    """The model's `place` items, with the command line's over them role by role, checked
    against the target's memories."""
    try:
        policy = parse_placement(graph.deploy.get("place", ""))
        policy.update(parse_placement(place or ""))
        check_memories(policy, target.machine)
    except PlacementError as err:
        raise DscError(str(err), expected="e.g. --place kv_cache=host (roles: "
                       f"{', '.join(ROLES)}; memories of {target.name}: "
                       f"{', '.join(target.machine.placeable)})") from None
    return policy
