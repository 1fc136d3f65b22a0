"""A small pool of forked workers that run many cases each, with a time limit per case.

The parent imports dsc and builds the seed material once, then forks; a worker reads case
numbers from a pipe, makes and runs each case in-process (no interpreter start-up per case)
and sends the outcome back. The parent enforces the time limit: a worker still busy past it
is asked for its stack (faulthandler on SIGUSR1, which works even inside C code), killed and
replaced, and the case is recorded as a hang at the innermost dsc frame of that stack. A
worker's address space is capped so a runaway allocation fails as MemoryError inside the case
instead of starving the machine; workers are replaced every few thousand cases so caches
filled by earlier cases stay bounded.
"""
from __future__ import annotations

import faulthandler
import os
import pickle
import re
import resource
import select
import signal
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.fuzzing import seeds
from benchmarks.fuzzing.cases import make_case
from benchmarks.fuzzing.classify import ROOT, Outcome, known_or, run_case

CASES_PER_WORKER = 3000
WALL_FACTOR = 6
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _send(fd: int, obj) -> None:
    data = pickle.dumps(obj)
    os.write(fd, struct.pack("<I", len(data)))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _recv(fd: int):
    head = _read_exact(fd, 4)
    if head is None:
        return None
    data = _read_exact(fd, struct.unpack("<I", head)[0])
    return None if data is None else pickle.loads(data)


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


@dataclass
class Worker:
    pid: int
    to_child: int
    from_child: int
    folder: Path
    stack_file: Path
    index: int | None = None       # case being run
    started: float = 0.0           # wall clock and CPU seconds when it started
    cpu_start: float = 0.0
    done: int = 0


class Pool:
    def __init__(self, workers: int, seed: int, timeout: float, folder: Path,
                 memory_bytes: int, kinds=None):
        self.seed, self.timeout, self.folder = seed, timeout, folder
        self.memory_bytes, self.kinds = memory_bytes, kinds
        self.parent_fds: set[int] = set()        # pipe ends a new worker must not inherit
        self.workers: list[Worker] = []
        for slot in range(workers):
            self.workers.append(self._spawn(slot))

    def _spawn(self, slot: int) -> Worker:
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        folder = self.folder / f"w{slot}"
        stack_file = self.folder / f"w{slot}.stack"
        pid = os.fork()
        if pid == 0:                                        # the worker
            for fd in self.parent_fds | {down_w, up_r}:
                os.close(fd)
            try:
                self._serve(down_r, up_w, folder, stack_file)
            finally:
                os._exit(0)
        os.close(down_r)
        os.close(up_w)
        self.parent_fds |= {down_w, up_r}
        return Worker(pid, down_w, up_r, folder, stack_file)

    def _serve(self, down: int, up: int, folder: Path, stack_file: Path) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)        # the parent handles Ctrl-C
        seeds.share_across_cases()
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
        stacks = open(stack_file, "w")
        faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=False)
        done = 0
        while (index := _recv(down)) is not None:
            case = make_case(self.seed, index, self.kinds)
            try:
                outcome = run_case(case, folder / "case")
            except BaseException as exc:                    # the harness's own failure
                outcome = Outcome("defect", f"harness {type(exc).__name__}", str(exc)[:300])
            outcome.kind, outcome.how = case.kind, case.how
            os.chdir(self.folder)
            _send(up, (index, outcome))
            done += 1
            if done >= CASES_PER_WORKER:
                break

    def run(self, indices, on_result, stop=lambda: False) -> None:
        """Run every case of `indices`, calling on_result(index, outcome) in completion
        order; once stop() is true no new case starts and the busy ones finish."""
        self.stop = stop
        pending = iter(indices)
        live = {w.from_child: w for w in self.workers}
        for w in self.workers:
            self._feed(w, pending)
        while any(w.index is not None for w in self.workers):
            busy = [w for w in self.workers if w.index is not None]
            ready, _, _ = select.select([w.from_child for w in busy], [], [], 0.25)
            for fd in ready:
                w = live[fd]
                msg = _recv(fd)
                if msg is None:                             # died (crash, or its quota)
                    index = w.index
                    del live[fd]
                    w = self._replace(w)
                    live[w.from_child] = w
                    if index is not None:
                        on_result(index, Outcome("defect", "worker process died"))
                    self._feed(w, pending)
                    continue
                index, outcome = msg
                w.index = None
                w.done += 1
                on_result(index, outcome)
                if w.done >= CASES_PER_WORKER:
                    del live[fd]
                    w = self._replace(w)
                    live[w.from_child] = w
                self._feed(w, pending)
            for w in list(self.workers):
                if w.index is not None and self._overdue(w):
                    index = w.index
                    where = self._stack(w)
                    del live[w.from_child]
                    w = self._replace(w, kill=True)
                    live[w.from_child] = w
                    on_result(index, known_or(Outcome(
                        "defect", f"hang in {where}",
                        f"still running after {self.timeout:g} s", None, self.timeout)))
                    self._feed(w, pending)

    def _feed(self, w: Worker, pending) -> None:
        index = None if self.stop() else next(pending, None)
        if index is not None:
            w.index, w.started, w.cpu_start = index, time.monotonic(), cpu_seconds(w.pid)
            _send(w.to_child, index)

    def _overdue(self, w: Worker) -> bool:
        """Past the limit in CPU time (other work on the machine does not count against a
        case), or in wall time several times over (a case blocked on something)."""
        return (cpu_seconds(w.pid) - w.cpu_start > self.timeout
                or time.monotonic() - w.started > WALL_FACTOR * self.timeout)

    def _stack(self, w: Worker) -> str:
        """The innermost dsc frame of a busy worker's current stack."""
        size = w.stack_file.stat().st_size if w.stack_file.exists() else 0
        os.kill(w.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if w.stack_file.exists() and w.stack_file.stat().st_size > size:
                time.sleep(0.05)
                break
        text = w.stack_file.read_text(errors="replace")[size:] if w.stack_file.exists() else ""
        return innermost_frame(text)

    def _replace(self, w: Worker, kill: bool = False) -> Worker:
        slot = self.workers.index(w)
        if kill:
            os.kill(w.pid, signal.SIGKILL)
        self._close(w)
        self.workers[slot] = self._spawn(slot)
        return self.workers[slot]

    def _close(self, w: Worker) -> None:
        os.close(w.to_child)
        os.close(w.from_child)
        self.parent_fds -= {w.to_child, w.from_child}
        os.waitpid(w.pid, 0)

    def close(self) -> None:
        for w in self.workers:
            self._close(w)


FRAME = re.compile(r'File "([^"]+)", line (\d+) in (\S+)')


def innermost_frame(dump: str) -> str:
    """`path:function` of the innermost dsc frame in a faulthandler dump (most recent call
    first)."""
    for path, _, func in FRAME.findall(dump):
        if path.startswith(tuple(str(ROOT / p) for p in ("compiler", "isa", "runtime"))):
            return f"{Path(path).relative_to(ROOT)}:{func}"
    return "?"
