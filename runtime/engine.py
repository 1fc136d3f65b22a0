"""The discrete-event core: in-order units, dependency tokens, and transfers sharing bandwidth.

A *group* is one simulated core standing for `weight` identical cores (the same instruction
streams on the same kind of work item): its transfers count `weight` times in the bandwidth
sharing, so the shared resources see all cores' traffic while each stream is simulated once.

Rules, each checked by a hand-computed test:
- A unit runs its ops in order. An op starts when the unit is free and each token it waits on
  has a count above zero (the counts are consumed).
- Every op holds its unit for at least one cycle, its issue slot.
- A compute op keeps the unit busy for its cycles and completes when it ends.
- A transfer keeps the unit busy while its bytes move at the rate the fair share gives it
  (runtime/bandwidth.py); it completes `latency` cycles after it lets the unit go (the memory
  system pipelines requests, so the unit may start its next transfer meanwhile). A transfer
  that moves nothing (an edge tile past the tensor's end) completes at the end of its slot.
- A fence completes at the end of its slot and holds its unit until every earlier op of the
  unit has completed.
- An op signals its tokens when it and every earlier op of its unit have completed (a unit
  is one in-order queue, and a signal releases what the queue issued before it: a transfer
  that finishes before a longer-latency one issued earlier waits for it to signal).
If nothing can move while some unit still has ops, the tokens form a cycle: DeadlockError.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from runtime.bandwidth import Flow, share

COMPUTE, TRANSFER, FENCE = 0, 1, 2
SLOT = 1.0               # cycles: the least an op holds its unit (one issue slot)
DONE, LET_GO = 0, 1      # events: an op completes; a transfer's slot ends after its bytes


@dataclass(frozen=True)
class Op:
    kind: int
    label: str                          # mnemonic, for traces and stall reports
    waits: tuple[str, ...] = ()
    signals: tuple[str, ...] = ()
    cycles: float = 0.0                 # COMPUTE
    nbytes: float = 0.0                 # TRANSFER
    path: tuple[tuple[str, float], ...] = ()
    cap: float = 0.0
    latency: float = 0.0


@dataclass
class Group:
    name: str
    weight: int
    units: dict[str, list[Op]]


@dataclass(frozen=True)
class Blocked:
    """A unit that can never go on: its next op (index `pc` in its queue) and the token it
    waits for (None: waiting for its own transfers or fence, which cannot happen alone)."""
    group: str
    unit: str
    pc: int
    label: str
    token: str | None

    def __str__(self) -> str:
        reason = f"waits for token '{self.token}'" if self.token else "is stuck"
        return f"{self.group}/{self.unit} op {self.pc} ({self.label}) {reason}"


class DeadlockError(RuntimeError):
    def __init__(self, blocked: list[Blocked]):
        super().__init__("deadlock: " + "; ".join(map(str, blocked)))
        self.blocked = blocked


@dataclass
class UnitStats:
    busy: float = 0.0
    token_wait: dict[str, float] = field(default_factory=dict)
    bandwidth_wait: dict[str, float] = field(default_factory=dict)
    ops: int = 0


@dataclass
class WaveTrace:
    """What record mode keeps of one wave, for trace and timeline reports."""
    slices: list[tuple[str, str, str, float, float]] = field(default_factory=list)
    #         (group, unit, mnemonic, start, end)
    flows: list[tuple[str, str, str, float, str, float]] = field(default_factory=list)
    #         (group, token, from unit, signalled at, to unit, consumed at)
    counters: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    #         (time, bytes per cycle in use on each resource, all cores together)


@dataclass
class WaveResult:
    cycles: float
    units: dict[tuple[str, str], UnitStats]         # (group, unit) -> stats of one core
    weights: dict[str, int]
    resource_bytes: dict[str, float]                 # all cores' traffic
    trace: WaveTrace | None = None


class _Unit:
    __slots__ = ("group", "name", "ops", "pc", "busy", "retired", "done", "fence", "blocked_on",
                 "blocked_since", "stats")

    def __init__(self, group: "_GroupState", name: str, ops: list[Op]):
        self.group, self.name, self.ops = group, name, ops
        self.pc = 0                      # ops issued (an op's index in `ops` is its issue order)
        self.busy = False
        self.retired = 0                 # ops completed with every op issued before them
        self.done: set[int] = set()      # ops completed while an earlier one was still in flight
        self.fence: int | None = None    # the index of the fence the unit waits on
        self.blocked_on: str | None = None
        self.blocked_since = 0.0
        self.stats = UnitStats()


class _GroupState:
    __slots__ = ("group", "tokens", "waiters", "units")

    def __init__(self, group: Group, tokens: dict[str, int]):
        self.group = group
        self.tokens = dict(tokens)
        self.waiters: dict[str, list[_Unit]] = {}
        self.units = [_Unit(self, name, ops) for name, ops in group.units.items()]


class Engine:
    def __init__(self, groups: list[Group], tokens: dict[str, int], capacity: dict[str, float],
                 record: bool = False):
        self.capacity = capacity
        self.groups = [_GroupState(g, tokens) for g in groups]
        self.now = 0.0
        self.events: list = []
        self.seq = 0
        self.flows: list[tuple[Flow, _Unit, int, float]] = []  # flow, unit, op index, start
        self.resource_bytes: dict[str, float] = {}
        self.trace = WaveTrace() if record else None
        self._signalled: dict[tuple[str, str], list[tuple[float, str]]] = {}

    def run(self) -> WaveResult:
        for g in self.groups:
            for u in g.units:
                self._issue(u)
        while self.events or self.flows:
            t_event = self.events[0][0] if self.events else float("inf")
            t_flow, first = self._next_flow_finish()
            if t_flow <= t_event:
                self._advance(t_flow)
                self._finish_flow(first)
            else:
                self._advance(t_event)
                _, _, unit, index, kind = heapq.heappop(self.events)
                if kind == LET_GO:
                    self._let_go(unit, index, self.now - SLOT)
                else:
                    self._complete(unit, index)
        self._check_done()
        units = {(g.group.name, u.name): u.stats for g in self.groups for u in g.units}
        return WaveResult(self.now, units, {g.group.name: g.group.weight for g in self.groups},
                          self.resource_bytes, self.trace)

    # -- time --

    def _next_flow_finish(self) -> tuple[float, int]:
        best, index = float("inf"), -1
        for i, (flow, _, _, _) in enumerate(self.flows):
            if flow.rate > 0:
                t = self.now + flow.remaining / flow.rate
                if t < best:
                    best, index = t, i
        return best, index

    def _advance(self, t: float) -> None:
        dt = t - self.now
        if dt > 0:
            for flow, _, _, _ in self.flows:
                flow.remaining -= flow.rate * dt
        self.now = t

    def _push(self, t: float, unit: _Unit, index: int, kind: int = DONE) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, unit, index, kind))

    # -- ops --

    def _issue(self, u: _Unit) -> None:
        tokens = u.group.tokens
        while not u.busy and u.pc < len(u.ops):
            op = u.ops[u.pc]
            for tok in op.waits:
                if tokens.get(tok, 0) <= 0:
                    if u.blocked_on != tok:       # first block, or woken while another is missing
                        if u.blocked_on is None:
                            u.blocked_since = self.now
                        u.blocked_on = tok
                        u.group.waiters.setdefault(tok, []).append(u)
                    return
            if u.blocked_on is not None:
                waited = u.stats.token_wait
                waited[u.blocked_on] = waited.get(u.blocked_on, 0.0) + self.now - u.blocked_since
                u.blocked_on = None
            for tok in op.waits:
                tokens[tok] -= 1
                if self.trace is not None:
                    self._record_flow(u, tok)
            u.pc += 1
            u.stats.ops += 1
            self._start(u, op, u.pc - 1)

    def _start(self, u: _Unit, op: Op, index: int) -> None:
        u.busy = True
        if op.kind == FENCE:               # done after its slot; holds the unit until it retires
            u.fence = index
            u.stats.busy += SLOT
            self._push(self.now + SLOT, u, index)
        elif _holds(op):
            cycles = max(op.cycles, SLOT)
            u.stats.busy += cycles
            self._record(u, op, self.now, self.now + cycles)
            self._push(self.now + cycles, u, index)
        else:
            weight = u.group.group.weight
            flow = Flow(weight, op.cap, op.path, op.nbytes)
            for resource, coef in op.path:
                self.resource_bytes[resource] = self.resource_bytes.get(resource, 0.0) \
                    + op.nbytes * coef * weight
            self.flows.append((flow, u, index, self.now))
            share([f for f, *_ in self.flows], self.capacity)
            self._record_counters()

    def _finish_flow(self, index: int) -> None:
        flow, u, at, start = self.flows.pop(index)
        op = u.ops[at]
        if self.flows:
            share([f for f, *_ in self.flows], self.capacity)
        self._record_counters()
        duration = self.now - start
        unshared = op.nbytes / op.cap
        if duration > unshared * (1 + 1e-9):
            waits = u.stats.bandwidth_wait
            waits[flow.bottleneck] = waits.get(flow.bottleneck, 0.0) + duration - unshared
        if duration < SLOT:
            self._push(start + SLOT, u, at, LET_GO)
        else:
            self._let_go(u, at, start)

    def _let_go(self, u: _Unit, index: int, start: float) -> None:
        """A transfer's bytes have moved and its slot has ended: the unit is free, the bytes
        land `latency` later."""
        op = u.ops[index]
        u.stats.busy += self.now - start
        self._record(u, op, start, self.now)
        u.busy = False
        self._push(self.now + op.latency, u, index)
        self._issue(u)

    def _complete(self, u: _Unit, index: int) -> None:
        if _holds(u.ops[index]):
            u.busy = False
        self._retire(u, index)
        self._issue(u)

    def _retire(self, u: _Unit, index: int) -> None:
        """Op `index` has completed: retire, in issue order, every op whose predecessors have
        all completed too, and fire their signals (a signal releases its whole queue's past)."""
        u.done.add(index)
        while u.retired in u.done:
            u.done.remove(u.retired)
            u.retired += 1
            self._signal(u, u.ops[u.retired - 1])
        if u.fence is not None and u.retired > u.fence:
            u.fence, u.busy = None, False

    def _signal(self, u: _Unit, op: Op) -> None:
        group = u.group
        for tok in op.signals:
            group.tokens[tok] = group.tokens.get(tok, 0) + 1
            if self.trace is not None:
                self._signalled.setdefault((group.group.name, tok), []).append((self.now, u.name))
            for waiter in group.waiters.pop(tok, []):
                if waiter.blocked_on == tok:
                    self._issue(waiter)

    def _record(self, u: _Unit, op: Op, start: float, end: float) -> None:
        if self.trace is not None:
            self.trace.slices.append((u.group.group.name, u.name, op.label, start, end))

    def _record_flow(self, u: _Unit, tok: str) -> None:
        """Tokens are consumed in the order they were signalled: pair the oldest signal."""
        pending = self._signalled.get((u.group.group.name, tok))
        if pending:
            at, unit = pending.pop(0)
            self.trace.flows.append((u.group.group.name, tok, unit, at, u.name, self.now))

    def _record_counters(self) -> None:
        if self.trace is None:
            return
        use: dict[str, float] = {r: 0.0 for r in self.capacity}
        for flow, *_ in self.flows:
            for resource, coef in flow.path:
                use[resource] += flow.rate * flow.weight * coef
        self.trace.counters.append((self.now, use))

    def _check_done(self) -> None:
        blocked = []
        for g in self.groups:
            for u in g.units:
                if u.pc < len(u.ops) or u.busy:
                    op = u.ops[min(u.pc, len(u.ops) - 1)]
                    blocked.append(Blocked(g.group.name, u.name, u.pc, op.label, u.blocked_on))
        if blocked:
            raise DeadlockError(blocked)


def _holds(op: Op) -> bool:
    """Whether an op holds its unit until it completes: compute, and a transfer that moves
    nothing (a transfer with bytes lets the unit go once they have moved, a fence once it
    retires)."""
    return op.kind == COMPUTE or (op.kind == TRANSFER and op.nbytes <= 0)
