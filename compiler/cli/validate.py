"""`dsc validate TARGET`: the target's own microbenchmarks, simulated, against the published
measurements its file records (`[measured.NAME]`, each with its source).

Each bench is what the measurement ran, built the way dsc builds everything: a streaming copy,
a GEMM, a flash attention forward and an MLA decode step are compiled from a model and
simulated, their FLOPs counted as the measurement counts them; the launch gap is a chain of
tiny kernels run in the row's launch mode; a link's ping-pong and bulk transfer are sends on
that link. A user who writes a target for a new chip fills in the figures they have measured
and sees at once how far the model is from each.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from compiler.driver import compile_model
from isa.expr import Const
from isa.formats import parse_format
from isa.program import Attr, Box, Instr, Kernel, Param, TensorDecl
from isa.target_loader import load_target, resolve_target_path
from isa.target_schema import BENCHES, MATRIX_BENCHES, Measured, Target
from runtime.interpreter import run_program
from runtime.kernel_sim import simulate_kernel

LAUNCH_CHAIN = 16                 # back-to-back tiny kernels the launch bench times
LAUNCH_BYTES = 65536              # each on a 64 KB working set, as the measurements run
MLA_LATENT = (512, 64)            # DeepSeek MLA's cached latent: values, then the rope key


@dataclass(frozen=True)
class Row:
    name: str
    bench: str
    what: str                     # the bench's shape, for people
    simulated: float              # in the bench's unit
    measured: float
    source: str

    @property
    def unit(self) -> str:
        return BENCHES[self.bench]

    @property
    def ran(self) -> bool:
        return not math.isnan(self.simulated)

    @property
    def error(self) -> float:
        """Relative error of the simulated figure against the measured one (NaN: not run)."""
        return self.simulated / self.measured - 1 if self.measured else math.inf

    def to_dict(self) -> dict:
        finite = lambda v: v if math.isfinite(v) else None      # JSON has no NaN
        return {"name": self.name, "bench": self.bench, "what": self.what,
                "dsc": finite(self.simulated), "measured": self.measured, "unit": self.unit,
                "error": finite(self.error), "source": self.source}


def validate(target_name: str, peak: bool = False) -> tuple[Target, list[Row]]:
    target = load_target(target_name, peak=peak)
    path = str(resolve_target_path(target_name))
    with tempfile.TemporaryDirectory(prefix="dsc-validate-") as scratch:
        rows = [_row(name, m, target, path, peak, Path(scratch))
                for name, m in target.measured.items()]
    return target, rows


def _row(name: str, m: Measured, target: Target, path: str, peak: bool, scratch: Path) -> Row:
    """The row simulated, or, when this chip cannot run it (a format or link its file does
    not have), a row saying why, left out of the median."""
    why = _cannot_run(m, target)
    if why:
        return Row(name, m.bench, why, math.nan, m.value, m.source)
    simulated, what = _BENCHES[m.bench](m, target, path, peak, scratch)
    return Row(name, m.bench, what, simulated, m.value, m.source)


def _cannot_run(m: Measured, target: Target) -> str | None:
    dtype = parse_format(m.dtype).dtype if m.bench in MATRIX_BENCHES else None
    if dtype is not None and dtype not in target.matrix.formats:
        return f"not run: no {dtype} in the matrix unit"
    links = {link.id for link in target.machine.device_links}
    if m.bench in ("ping_pong", "bulk") and m.link not in links:
        return f"not run: no device link '{m.link}'"
    return None


def _compiled(text: str, path: str, peak: bool, scratch: Path, plan: str | None = None):
    model = scratch / "bench.ds"
    model.write_text(text)
    return compile_model(str(model), path, {}, peak=peak, check_fit=False, plan=plan)


def _copy(m: Measured, target: Target, path: str, peak: bool, scratch: Path):
    """STREAM-style scale: read `size` bytes, write as many (counted both ways)."""
    cols = 4096
    rows = max(1, m.size[0] // (2 * cols))
    compiled = _compiled(_elementwise(rows, cols), path, peak, scratch)
    run = run_program(compiled.program, compiled.target)
    seconds = sum(r.end - r.start for r in run.launches) / target.clock_hz
    nbytes = 2 * rows * cols * 2
    return nbytes / seconds / 1e9, f"{nbytes / 2 / 1e9:.3g} GB read + written"


def _gemm(m: Measured, target: Target, path: str, peak: bool, scratch: Path):
    M, N, K = m.size
    fmt = parse_format(m.dtype)     # a block-scaled format's blocks run along K in both
    scales = f" {fmt.scaling}" if fmt.scaling else ""
    text = (f"model gemm_bench {{\n  size M = {M}, N = {N}, K = {K}\n"
            f"  precision {{\n    weights {m.dtype}\n  }}\n"
            f"  input a: {fmt.dtype}[M, K]{scales}\n  weight b: [K, N]\n"
            f"  output c{_out(m.dtype, 'M, N')} = a @ b\n}}\n")
    return _tflops(text, 2 * M * N * K, target, path, peak, scratch), f"{M}x{N}x{K} {m.dtype}"


def _attention(m: Measured, target: Target, path: str, peak: bool, scratch: Path):
    """A flash attention forward over q, k, v of [B, H, S, D], FLOPs counted as
    FlashAttention's and tritonbench's benchmarks count them: the two products' 2 S^2 D
    multiply-adds per head, half of them when causal (the masked half is skipped)."""
    B, H, S, D = m.size
    scores = "causal_mask(scores, 0)" if m.mask == "causal" else "scores"
    text = (f"model attention_bench {{\n  size B = {B}, H = {H}, S = {S}, D = {D}\n"
            + "".join(f"  input {t}: {m.dtype}[B, H, S, D]\n" for t in "qkv")
            + '  scores = einsum("bhsd,bhtd->bhst", q, k) * (1 / sqrt(D))\n'
            f"  p = softmax({scores})\n"
            f'  output o{_out(m.dtype, "B, H, S, D")} = einsum("bhst,bhtd->bhsd", p, v)\n}}\n')
    flops = 4 * B * H * S * S * D // (2 if m.mask == "causal" else 1)
    what = f"B={B} H={H} S={S} D={D} {m.dtype}" + (", causal" if m.mask == "causal" else "")
    return _tflops(text, flops, target, path, peak, scratch), what


def _mla_decode(m: Measured, target: Target, path: str, peak: bool, scratch: Path):
    """DeepSeek MLA decode in absorbed form (std/attention.ds's mla_absorbed, from its
    absorbed queries to its latent output): the H heads' S_Q new queries, 576 wide, against
    the T cached latents, the values being the latents' first 512; causal over the new
    tokens. FLOPs as FlashMLA's test counts them: every query row against every cached
    position, 576 + 512 multiply-adds each."""
    B, H, S_Q, T = m.size
    latent, rope = MLA_LATENT
    text = (f"model mla_decode_bench {{\n  size B = {B}, H = {H}, S = {S_Q}, ctx = {T - S_Q}, "
            f"C = {latent + rope}, V = {latent}\n"
            f"  input q: {m.dtype}[B, H, S, C]\n  input c: {m.dtype}[B, ctx + S, C]\n"
            '  scores = einsum("bhsc,btc->bhst", q, c) * (1 / sqrt(C))\n'
            "  p = softmax(causal_mask(scores, ctx))\n"
            f'  output o{_out(m.dtype, "B, H, S, V")} = '
            'einsum("bhst,btc->bhsc", p, slice(c, -1, 0, V))\n}\n')
    flops = 2 * B * S_Q * H * T * (2 * latent + rope)
    what = f"B={B} H={H} S_Q={S_Q} T={T} {m.dtype}"
    return _tflops(text, flops, target, path, peak, scratch), what


def _out(dtype: str, dims: str) -> str:
    """A product's output type: its inputs' when they are 16-bit, else bf16."""
    return "" if dtype in ("bf16", "fp16") else f": bf16[{dims}]"


def _tflops(text: str, flops: int, target: Target, path: str, peak: bool, scratch: Path):
    """TFLOPS of the model `text` compiled and simulated: `flops`, counted as the measurement
    counts them, over its kernels' time from each one's start to its end."""
    compiled = _compiled(text, path, peak, scratch)
    run = run_program(compiled.program, compiled.target)
    seconds = sum(r.end - r.start for r in run.launches) / target.clock_hz
    return flops / seconds / 1e12


def _launch(m: Measured, target: Target, path: str, peak: bool, scratch: Path):
    """A chain of tiny dependent kernels launched in the row's mode: time per kernel."""
    compiled = _compiled(_elementwise(LAUNCH_BYTES // (2 * 1024), 1024), path, peak, scratch,
                         plan=f"launch={m.mode}")
    program = compiled.program
    chain = dataclasses.replace(program, schedule=program.schedule * LAUNCH_CHAIN)
    run = run_program(chain, compiled.target)
    starts = [r.start for r in run.launches]        # the steady rate of a long chain
    per_kernel = (starts[-1] - starts[0]) / (len(starts) - 1) / target.clock_hz
    return per_kernel * 1e6, f"{len(run.launches)} x 64 KB kernels, {m.mode}"


def _ping_pong(m: Measured, target: Target, path: str, peak: bool, scratch: Path):
    """A message over the link and one back after it: half the round trip."""
    there = _send("x", "y", m.size[0], m.link, signal=("arrived",))
    back = _send("y", "x", m.size[0], m.link, wait=("arrived",))
    cycles = _sends((there, back), m.size[0], target)
    return cycles / 2 / target.clock_hz * 1e6, f"{m.size[0]:,} B over {m.link}, one way"


def _bulk(m: Measured, target: Target, path: str, peak: bool, scratch: Path):
    cycles = _sends((_send("x", "y", m.size[0], m.link),), m.size[0], target)
    return m.size[0] / (cycles / target.clock_hz) / 1e9, f"{m.size[0] / 1e9:.3g} GB over {m.link}"


_BENCHES = {"copy": _copy, "gemm": _gemm, "attention": _attention, "mla_decode": _mla_decode,
            "launch": _launch, "ping_pong": _ping_pong, "bulk": _bulk}


def _elementwise(rows: int, cols: int) -> str:
    return (f"model copy_bench {{\n  size R = {rows}, C = {cols}\n  input a: bf16[R, C]\n"
            f"  output c = a * 2.0\n}}\n")


def _send(src: str, dst: str, nbytes: int, link: str, wait=(), signal=()) -> Instr:
    shape = (nbytes,)
    return Instr("net.send", (Box(dst, (Const(0),), shape), Box(src, (Const(0),), shape),
                              Attr("link", link)), wait=wait, signal=signal)


def _sends(body: tuple, nbytes: int, target: Target) -> float:
    """Cycles of one core running `body`'s sends of u8 tensors x and y."""
    kernel = Kernel("link_bench", (Param("x", "int8", (nbytes,), True),
                                   Param("y", "int8", (nbytes,), True)), (), (),
                    (("arrived", 0),), body)
    params = {n: TensorDecl(n, "int8", (nbytes,), "temp") for n in "xy"}
    return simulate_kernel(kernel, params, target).cycles


def table(target: Target, rows: list[Row]) -> str:
    """The comparison, one row per measurement, with its error and source."""
    figures = "sustained figures" if target.sustained else "datasheet peaks (--peak)"
    header = ("row", "bench", "dsc", "measured", "unit", "error", "source")
    cells = [header] + [(r.name, r.what, _num(r.simulated) if r.ran else "-", _num(r.measured),
                         r.unit, f"{100 * r.error:+.1f}%" if r.ran else "-", r.source)
                        for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header) - 1)]
    lines = [f"{target.name} ({figures}): dsc against published measurements"]
    for c in cells:
        lines.append("  ".join(v.rjust(w) if 1 < i < 6 else v.ljust(w)
                               for i, (v, w) in enumerate(zip(c, widths))) + "  " + c[-1])
    errors = sorted(abs(r.error) for r in rows if r.ran)
    if not errors:
        lines.append("(no [measured.NAME] row this chip can run in its target file)")
    else:
        median = errors[len(errors) // 2] if len(errors) % 2 else \
            (errors[len(errors) // 2 - 1] + errors[len(errors) // 2]) / 2
        lines.append(f"median |error| {100 * median:.1f}% over {len(errors)} rows")
    return "\n".join(lines) + "\n"


def _num(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.3g}"
