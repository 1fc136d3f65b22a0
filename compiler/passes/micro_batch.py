"""micro_batch: two half-batches in one schedule, so one's communication hides under the other's
compute (the plan's `mb=2`).

Runs on the program compiled for half the batch. Every tensor but the weights (and their
scales and views) gets a copy per micro-batch, tagged after its layer scope:

    layer.3.moe.xe  ->  layer.3.mb0.moe.xe, layer.3.mb1.moe.xe        h -> mb0.h, mb1.h

The launch list is cut into phases: a phase is the compute up to and including a run of
communication launches (a dispatch's or a combine's all-to-all), or a whole layer that has no
communication. Phases then alternate between the micro-batches:

    attn(3)+dispatch mb0 | a2a mb0 || attn(3)+dispatch mb1 | a2a mb1 || experts(3) mb0 | a2a mb0 || ...

Within a phase, the launches that do not read what the last transfer brings (a shared expert,
beside the combine that waits for the experts' results) go first, for every micro-batch. Streams
are in-order queues, so mb0's all-to-all runs on its link while mb1's attention runs on the
cores; mb0's experts wait for mb0's all-to-all only. Whatever of a transfer the other
micro-batch's compute does not cover is exposed, and the report shows it per layer.

With `overlap=five_stage` (DeepSeek's decode pipeline, from its inference-system overview:
attention takes most of a decode layer, so it is split in two), each phase that holds an
attention is cut before the attention's core (its first launch that reads a cache it does not
write), giving a MoE layer three stages per micro-batch: attn-0 (the projections and the cache
append), attn-1 (the core, the output projection, the router, the dispatch's all-to-all) and
the MoE (shared and routed experts, the combine's all-to-all): with the two all-to-alls, five.
Micro-batch 1 runs one stage behind micro-batch 0, and each stage of one runs beside the
other's previous one:

    attn-0 mb0 | moe mb1 (l-1) | attn-1 mb0 -> dispatch | attn-0 mb1 | moe mb0 -> combine | attn-1 mb1 ...

so mb0's dispatch travels under mb1's attn-0, its combine under mb1's attn-1, and mb1's under
mb0's next attn-0 and attn-1: every all-to-all hides behind half an attention of the other
micro-batch, where the alternation hides a combine behind the other's (short) experts only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from compiler.kernels.schedule import fold_layers, layer_of, order_tensors
from isa.program import Launch, Program, TensorDecl, bind_name, expand_schedule
from isa.target_schema import Target

_SCOPE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*\.\d+\.)")


def tagged(name: str, mb: int) -> str:
    """`layer.3.x` -> `layer.3.mb1.x`; `h` -> `mb1.h`. Tagging after the layer scope keeps
    layer folding and the `.scale` suffix of a tensor's block scales as they are."""
    match = _SCOPE.match(name)
    return f"{match.group(1)}mb{mb}.{name[match.end():]}" if match else f"mb{mb}.{name}"


def shared_tensors(tensors: tuple[TensorDecl, ...]) -> set[str]:
    """The weights, their scales and the views into them: one copy serves both halves."""
    table = {t.name: t for t in tensors}

    def is_shared(t: TensorDecl) -> bool:
        owner = t.base or (t.name.rsplit(".", 1)[0] if t.kind == "scale" else None)
        return t.kind == "weight" or (owner in table and is_shared(table[owner]))
    return {t.name for t in tensors if is_shared(t)}


def phases(launches: list[Launch]) -> list[list[Launch]]:
    """Cut after each run of communication, and between layers of a layer without any."""
    out: list[list[Launch]] = []
    current: list[Launch] = []
    layer, layer_talks = None, False
    for launch in launches:
        here = layer_of(launch.note)
        comm = launch.stream != "compute"
        ended_comm = current and current[-1].stream != "compute" and not comm
        quiet_boundary = current and here != layer and not layer_talks
        if ended_comm or quiet_boundary:
            out.append(current)
            current = []
        if here != layer:
            layer, layer_talks = here, False
        layer_talks |= comm
        current.append(launch)
    return out + ([current] if current else [])


def _fold_tag(phase: list[Launch], launch: Launch):
    """The layer a launch folds with: its phase's communication's layer (a phase that carries
    layer i's all-to-all also holds the end of layer i-1), else its own."""
    comm = [l for l in phase if l.stream != "compute"]
    return layer_of(comm[-1].note) if comm else layer_of(launch.note)


@dataclass(frozen=True)
class MicroBatch:
    name: str = "micro_batch"

    def run(self, program: Program, target: Target) -> Program:
        count = program.deployment.micro_batches
        if count == 1:
            return program
        shared = shared_tensors(program.tensors)
        rename = lambda name, mb: name if name in shared else tagged(name, mb)
        tensors = [t for t in program.tensors if t.name in shared]
        for mb in range(count):
            tensors += [replace(t, name=rename(t.name, mb),
                                base=t.base and rename(t.base, mb))
                        for t in program.tensors if t.name not in shared]
        bound = [replace(l, args=tuple((p, bind_name(t, env)) for p, t in l.args),
                         note=bind_name(l.note, env))
                 for l, env in expand_schedule(program.schedule)]
        access = _access(program)
        copy = lambda launch, mb: replace(launch, note=_tag_note(launch.note, mb),
                                          args=tuple((p, rename(t, mb)) for p, t in launch.args))
        if program.deployment.overlap == "five_stage":
            cache = {t.name for t in program.tensors if t.kind == "cache"}
            schedule = _five_stage(phases(bound), access, cache, copy)
        else:
            schedule = _alternate(phases(bound), access, count, copy)
        sizes = tuple((k, v * count if k == "batch" else v) for k, v in program.sizes)
        return replace(program, tensors=order_tensors(tensors), sizes=sizes,
                       schedule=tuple(fold_layers(schedule)))


def _alternate(phase_list: list[list[Launch]], access, count: int, copy) -> list:
    """(launch, fold tag): the micro-batches phase by phase, the independent work of a phase
    first for all of them."""
    schedule, arriving = [], set()
    for phase in phase_list:
        for part in _split_by_arrivals(phase, arriving, access):
            for mb in range(count):
                schedule += [(copy(launch, mb), _fold_tag(phase, launch)) for launch in part]
        arriving = {t for l in phase if l.stream != "compute" for t in access(l)[1]}
    return schedule


def _five_stage(phase_list: list[list[Launch]], access, cache: set[str], copy) -> list:
    """(launch, fold tag): stage i of micro-batch 0, then stage i-1 of micro-batch 1, each
    stage's independent work first. A pair folds with micro-batch 0's stage (micro-batch 1's
    launches then name the layer before)."""
    stages, arriving = [], set()
    for phase in phase_list:
        for stage in _attention_halves(phase, access, cache):
            # what does not need the transfer that just arrived goes first (a shared expert)
            ordered = [l for part in _split_by_arrivals(stage, arriving, access) for l in part]
            stages.append((ordered, _fold_tag(phase, phase[-1])))
            arriving = {t for l in stage if l.stream != "compute" for t in access(l)[1]}
    schedule = []
    for i in range(len(stages) + 1):
        tag = stages[min(i, len(stages) - 1)][1]
        if i < len(stages):
            schedule += [(copy(launch, 0), tag) for launch in stages[i][0]]
        if i > 0:
            schedule += [(copy(launch, 1), tag) for launch in stages[i - 1][0]]
    return schedule


def _attention_halves(phase: list[Launch], access, cache: set[str]) -> list[list[Launch]]:
    """A phase cut before its attention's core, the first launch that reads a cache without
    writing it (attn-0: the projections and the cache append; attn-1: the rest)."""
    for k, launch in enumerate(phase):
        reads, writes = access(launch)
        if k and (reads & cache) - writes:
            return [phase[:k], phase[k:]]
    return [phase]


def _access(program: Program):
    """launch -> (base tensors it reads, base tensors it writes)."""
    kernels, tensors = program.kernel_table(), program.tensor_table()
    outputs = {k.name: {p.name for p in k.params if p.output} for k in kernels.values()}

    def access(launch: Launch) -> tuple[set[str], set[str]]:
        reads, writes = set(), set()
        for p, t in launch.args:
            (writes if p in outputs[launch.kernel] else reads).add(tensors[t].base or t)
        return reads, writes
    return access


def _split_by_arrivals(phase: list[Launch], arriving: set[str], access):
    """(launches that do not need what the last communication brings, the rest), in order:
    every micro-batch runs its independent work (a shared expert beside a combine) before
    any of them waits for its transfer."""
    waiting, early, late = set(arriving), [], []
    for launch in phase:
        reads, writes = access(launch)
        if reads & waiting:
            late.append(launch)
            waiting |= writes
        else:
            early.append(launch)
    return [part for part in (early, late) if part]


def _tag_note(note: str, mb: int) -> str:
    """The note's names (`a, b = op + op`) tagged like the tensors they computed."""
    names, sep, ops = note.partition(" = ")
    return ", ".join(tagged(n, mb) for n in names.split(", ")) + sep + ops
