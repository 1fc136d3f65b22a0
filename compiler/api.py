"""dsc's Python API: load, compile, simulate, and read the report as typed rows.

    from compiler import api
    report = api.run("examples/gemm.ds", "h800", sets={"M": 8192},
                     target_set={"memory.bandwidth_gbs": 6000})
    report.time_s, report.kernels[0].bound, report.row(), report.kernel_rows()

`run` is `compile` then `simulate`. Everything the command line can say has a keyword here:
`sets` (`--set`: sizes and precision roles), `target_set` (`--target-set`: any target key),
`devices`, `plan`, `place`, `die_mode`, `check_fit` (False is `--ignore-capacity`). Errors
are `DscError` (or the target loader's `TargetError`), with the message `dsc` would print.

A `Session` keeps what compilations share (the front end's graphs and the lowered programs,
compiler/compile_memo.py) for many runs in one process; the module functions use a fresh
one each call, so an edited model file is always read again. docs/api.md is the guide.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from compiler.driver import Compiled, compile_model
from isa.target_loader import load_target as _load_target
from isa.target_schema import Target

__all__ = ["Compiled", "KernelRow", "LayerRow", "Report", "Session", "Target", "compile",
           "load_target", "run", "simulate"]


def load_target(name: str, target_set: Mapping[str, object] | None = None) -> Target:
    """A builtin target (`h800`) or a .toml file, with keys overridden (`{"memory.bandwidth_gbs":
    6000}`), validated as the file is."""
    return _load_target(name, dict(target_set or {}))


@dataclass(frozen=True)
class KernelRow:
    """One launch of the run: what it computes, when, and what bounded it."""
    name: str             # the model operation, e.g. layer.3.moe.experts
    kernel: str
    stream: str           # compute, or the link stream of a collective
    start_cycle: int
    end_cycle: int
    time_us: float
    flops: float
    bytes: float          # off-chip bytes
    bound: str            # compute, vector, memory, l2, link, nvlink, network, ..., latency
    top_stall: str
    exposed_us: float     # time its stream waited for another stream's launches

    def row(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LayerRow:
    """Consecutive layers made of the same kernels, averaged (per-layer figures)."""
    first: int
    last: int
    time_us: float
    comm_us: float
    exposed_comm_us: float
    name: str = "layer"         # the repeat the layers belong to (layer, mtp)

    def row(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Report:
    """A simulated run. `row()`, `kernel_rows()` and `layer_rows()` are tables (lists of
    dicts, ready for csv.DictWriter or pandas.DataFrame); `to_dict()` is `dsc run --json`."""
    run_result: object = field(repr=False)      # runtime.interpreter.RunResult
    _json: dict | None = field(default=None, repr=False)

    @property
    def _report(self) -> dict:
        if self._json is None:
            from runtime.report.json_report import report_dict
            self._json = report_dict(self.run_result)
        return self._json

    @property
    def model(self) -> str:
        return self.run_result.program.model

    @property
    def target(self) -> Target:
        return self.run_result.target

    @property
    def total_cycles(self) -> int:
        return int(round(self.run_result.cycles))

    @property
    def time_s(self) -> float:
        return self.run_result.cycles / self.run_result.target.clock_hz

    @property
    def deployment(self) -> dict:
        from runtime.report.deployment import deployment_dict
        return deployment_dict(self.run_result)

    @property
    def kernels(self) -> list[KernelRow]:
        from runtime.report.summary import summaries
        hz = self.run_result.target.clock_hz
        records = self.run_result.launches
        return [KernelRow(s.name, s.kernel, rec.stream, int(round(s.start)), int(round(s.end)),
                          (s.end - s.start) / hz * 1e6, s.flops, s.bytes_offchip, s.bound,
                          s.top_stall, rec.exposed / hz * 1e6)
                for s, rec in zip(summaries(self.run_result), records)]

    @property
    def layers(self) -> list[LayerRow]:
        return [LayerRow(**r) for r in self.deployment["layers"]]

    def row(self) -> dict:
        """The run as one row: what it ran and its headline figures."""
        d = self.deployment
        flops = sum(r.flops for r in self.run_result.launches)
        return {"model": self.model, "target": self.target.name, "devices": d["devices"],
                "plan": d["plan"], "total_cycles": self.total_cycles,
                "time_s": self.time_s, "flops": flops,
                "tokens_per_s": d["tokens_per_s"],
                "tokens_per_s_per_device": d["tokens_per_s_per_device"],
                "exposed_comm_us": d["exposed_comm_us"],
                "kernels": len(self.run_result.launches),
                "simulated_kernels": self.run_result.simulated_kernels}

    def kernel_rows(self) -> list[dict]:
        return [k.row() for k in self.kernels]

    def layer_rows(self) -> list[dict]:
        return [r.row() for r in self.layers]

    def to_dict(self) -> dict:
        """The JSON report of `dsc run --json`."""
        return self._report

    def text(self) -> str:
        """The summary `dsc run` prints."""
        from runtime.report.text import summary_text
        return summary_text(self.run_result)

    def html(self) -> str:
        """The page of `dsc run --html` (the run must be simulated with record=True)."""
        from runtime.report.html import html_report
        return html_report(self.run_result)


class Session:
    """Compilations that share their front end and lowered programs (compile once, simulate
    many): model files are read once per session."""

    def __init__(self, shared: bool = True):
        from compiler.compile_memo import CompileMemo
        self.memo = CompileMemo() if shared else None

    def compile(self, model: str, target: str | Target, *,
                sets: Mapping[str, object] | None = None,
                target_set: Mapping[str, object] | None = None,
                devices: int | None = None, plan: str | None = None,
                place: str | None = None, die_mode: str = "uma",
                check_fit: bool = True) -> Compiled:
        if not isinstance(target, Target):
            target = load_target(target, target_set)
        elif target_set:
            raise TypeError("target_set applies to a target given by name or file")
        return compile_model(model, target, {k: str(v) for k, v in (sets or {}).items()},
                             die_mode=die_mode, devices=devices, plan=plan,
                             check_fit=check_fit, place=place, memo=self.memo)

    def run(self, model: str, target: str | Target, *, record: bool = False,
            **options) -> Report:
        return simulate(self.compile(model, target, **options), record=record)


def compile(model: str, target: str | Target, **options) -> Compiled:
    """Compile `model` (a .ds file) for `target` (a name, a .toml file or a Target); the
    keywords are Session.compile's. `.program` is the ISA program, `.graph` the IR."""
    return Session(shared=False).compile(model, target, **options)


def simulate(compiled: Compiled, record: bool = False) -> Report:
    """Run a compiled program on its target; `record` keeps what --trace and --html draw."""
    from runtime.interpreter import run_program
    return Report(run_program(compiled.program, compiled.target, record=record))


def run(model: str, target: str | Target, *, record: bool = False, **options) -> Report:
    """compile, then simulate."""
    return simulate(compile(model, target, **options), record=record)
