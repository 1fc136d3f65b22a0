"""Run one case through dsc's command-line entry point in this process and classify it.

Classes:
    success   exit status 0, every requested output written and sound
    error     exit status 1 with one clear message (a .ds error names file:line:col)
    usage     exit status 2 (the argument parser's usage error)
    defect    anything else: a traceback, a Python warning, a message that is Python's own
              exception text, a .ds error without its position, an output file left behind
              or half written, a report or trace with NaN, infinite or negative figures or
              zero time for non-empty work (hangs are found by the parent, see pool.py)
    known     a defect whose signature another piece of work owns (KNOWN below)

A defect's signature is its kind plus where it comes from (exception type and innermost
project frame, or the field of the report), so thousands of cases collapse to a few lines.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

from benchmarks.fuzzing.cases import Case

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tuple(str(ROOT / pkg) + os.sep for pkg in ("compiler", "isa", "runtime"))

# Phrases of Python's own exception messages: shown to a user they mean an exception escaped
# into a message unexplained.
PYTHON_TEXT = ("object has no attribute", "unsupported operand", "invalid literal for",
               "list index out of range", "tuple index out of range", "not subscriptable",
               "object is not", "division by zero", "math domain error", "cannot convert float",
               "maximum recursion", "Maximum allowed dimension", "could not convert",
               "object of type", "unhashable type", "required positional argument",
               "positional arguments but",
               "NoneType", "array is too big", "negative dimensions", "out of bounds for axis",
               "operands could not be broadcast", "Errno", "int too large", "OverflowError",
               "too many values to unpack", "not enough values to unpack", "KeyError",
               "TypeError", "ValueError")
DS_LOCATION = re.compile(r"^\S.*?:\d+:\d+: error: ")
FILE_LINE = re.compile(r"^\S.*?:\d+: error: ")
NON_FINITE_TEXT = re.compile(r"(?<![\w.])(nan|inf|-inf|infinity)(?![\w])", re.I)

# Defects that other work owns: (class of signature, regex on the signature, who owns it).
KNOWN: list[tuple[str, str]] = []


@dataclass
class Outcome:
    cls: str                 # success | error | usage | defect | known
    signature: str = ""      # defects and known defects
    detail: str = ""         # the message or traceback excerpt
    status: int | None = None
    seconds: float = 0.0     # CPU
    kind: str = ""           # the case's input kind and generator (set by the pool)
    how: str = ""


def project_frame(tb_frames) -> str:
    """`path:function` of the innermost frame inside dsc's packages."""
    inner = "?"
    for frame in tb_frames:
        if frame.filename.startswith(PROJECT):
            inner = f"{Path(frame.filename).relative_to(ROOT)}:{frame.name}"
    return inner


def prepare(case: Case, folder: Path) -> None:
    """An empty `folder` holding the case's files."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")


def run_case(case: Case, folder: Path) -> Outcome:
    """Run `case` in `folder` (made empty first) and classify what dsc did."""
    prepare(case, folder)
    start = time.process_time()
    outcome = _run(case, folder)
    if outcome.cls == "success" and case.then:
        outcome = _read_back(case, folder)
    outcome.seconds = time.process_time() - start          # CPU: other work does not count
    return known_or(outcome)


def _run(case: Case, folder: Path) -> Outcome:
    """dsc's entry point on `case.argv` in `folder`, classified."""
    from compiler.cli.main import main
    out, err = io.StringIO(), io.StringIO()
    with _inside(folder), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = main(list(case.argv))
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except (Exception, RecursionError, MemoryError) as exc:     # noqa: BLE001 - classify
            frames = traceback.extract_tb(exc.__traceback__)
            sig = f"traceback {type(exc).__name__} in {project_frame(frames)}"
            text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return Outcome("defect", sig, text[:500])
    return classify(case, folder, status, out.getvalue(), err.getvalue(), caught)


@contextlib.contextmanager
def _inside(folder: Path):
    """In `folder`, with DSC_DEBUG=1 (tracebacks propagate to us); both restored after."""
    cwd, debug = os.getcwd(), os.environ.get("DSC_DEBUG")
    os.chdir(folder)
    os.environ["DSC_DEBUG"] = "1"
    try:
        yield
    finally:
        os.chdir(cwd)
        if debug is None:
            del os.environ["DSC_DEBUG"]
        else:
            os.environ["DSC_DEBUG"] = debug


def _read_back(case: Case, folder: Path) -> Outcome:
    """The follow-up command (a listing dsc compiled, run): it must succeed."""
    then = Case(case.index, "listing", case.how, case.then, {}, ("back.json",))
    outcome = _run(then, folder)
    if outcome.cls == "error":
        return Outcome("defect", "a compiled listing is refused when read back",
                       outcome.detail, outcome.status)
    return outcome


def classify(case: Case, folder: Path, status, stdout: str, stderr: str, caught) -> Outcome:
    leftovers = [p.name for p in folder.rglob(".dsc-*")]
    if leftovers:
        return Outcome("defect", "temporary output file left behind", str(leftovers), status)
    for w in caught:
        where = Path(w.filename)
        where = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where.name
        return Outcome("defect", f"warning {w.category.__name__} at {where}",
                       str(w.message)[:300], status)
    if status == 2:
        return Outcome("usage", status=status)
    if status == 1:
        return _error(case, folder, stderr, status)
    if status != 0:
        return Outcome("defect", f"exit status {status}", stderr[:300], status)
    return _success(case, folder, stdout, status)


def _error(case: Case, folder: Path, stderr: str, status: int) -> Outcome:
    first = stderr.strip().split("\n", 1)[0]
    left = [o for o in case.outputs if o != "-" and (folder / o).exists()]
    if left:
        return Outcome("defect", "output file written by a failed run", f"{left}: {first}",
                       status)
    if not first:
        return Outcome("defect", "exit status 1 without a message", "", status)
    for phrase in PYTHON_TEXT:
        if phrase in stderr:
            return Outcome("defect", f"Python text in the message: '{phrase}'",
                           stderr[:400], status)
    if case.kind == "ds" and not DS_LOCATION.match(first) and not _ds_global(first):
        return Outcome("defect", "a .ds error without file:line:col", stderr[:400], status)
    return Outcome("error", detail=first[:200], status=status)


def _ds_global(first: str) -> bool:
    """Errors about a .ds model as a whole, which have no one position to name."""
    return bool(re.search(r"does not fit|no model|exactly one model|too big for functional mode",
                          first))


def _success(case: Case, folder: Path, stdout: str, status: int) -> Outcome:
    for name in case.outputs:
        if name == "-":
            continue
        path = folder / name
        if not path.is_file():
            return Outcome("defect", "requested output file missing", name, status)
        if name.endswith(".json"):
            problem = check_json(path.read_text(), trace=name.startswith("trace"))
            if problem:
                return Outcome("defect", problem[0], problem[1], status)
    if case.argv[0] == "stats" and "--json" in case.argv:
        problem = check_json(stdout, trace=False)
        if problem:
            return Outcome("defect", problem[0], problem[1], status)
    elif case.argv[0] in ("run", "stats") and NON_FINITE_TEXT.search(_timing_part(stdout)):
        line = next(l for l in _timing_part(stdout).splitlines() if NON_FINITE_TEXT.search(l))
        return Outcome("defect", f"non-finite figure in the {case.argv[0]} summary",
                       line[:200], status)
    return Outcome("success", status=status)


def _timing_part(stdout: str) -> str:
    """The run's summary without its functional check (an error that overflowed is honestly
    infinite there) and without the user's own words, which may say "inf": the sources the
    figures block quotes from the target file (`  memory 1,701 of 2,039 GB/s: SOURCE`), the
    model's and the target's names, and the name column of the kernel table."""
    header = re.match(r"model (\S+) on (\S+?):", stdout)
    lines, in_figures, in_table = [], False, False
    for line in stdout.split("functional check", 1)[0].splitlines():
        in_figures = line.startswith("figures:") or (in_figures and line.startswith("  "))
        in_table = line.startswith("kernel ") or (in_table and bool(line.strip()))
        if in_figures:
            line = line.split(": ", 1)[0]
        elif in_table and not line.startswith("kernel "):
            line = line.split(None, 1)[-1] if len(line.split(None, 1)) > 1 else ""
        lines.append(line)
    text = "\n".join(lines)
    for name in header.groups() if header else ():
        text = re.sub(rf"(?<![\w.]){re.escape(name)}(?![\w])", "_", text)
    return text


def _reject_constant(name: str):
    raise ValueError(name)


def check_json(text: str, trace: bool) -> tuple[str, str] | None:
    """(signature, detail) of the first unsound figure in a JSON report or trace."""
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        return ("invalid JSON (NaN or Infinity)" if str(exc) in ("NaN", "Infinity", "-Infinity")
                else "invalid JSON", str(exc)[:200])
    if trace:
        return _check_trace(data)
    return _check_report(data)


def _numbers(data, path=()):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _numbers(v, path + (str(k),))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _numbers(v, path + ("[]",))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        yield path, data


# Utilizations must lie in [0, 1]. Figures may not be negative, but the model's own sizes
# are echoed as written (a negative rope_theta is the model's, not a figure dsc computed).
INPUT_ECHOES = ("sizes",)


def _check_report(data) -> tuple[str, str] | None:
    for path, value in _numbers(data):
        key = ".".join(path)
        if not math.isfinite(value):
            return f"non-finite {path[-1]} in the report", f"{key} = {value}"
        if value < 0 and path[0] not in INPUT_ECHOES:
            return f"negative {path[-1]} in the report", f"{key} = {value}"
        if path[-1] == "utilization" and value > 1.0 + 1e-9:
            return "utilization above 1 in the report", f"{key} = {value}"
    if isinstance(data, dict) and "total_cycles" in data:
        work = data.get("flops", 0) or data.get("bytes_offchip", 0)
        if work and not data.get("total_cycles"):
            return "zero time for non-empty work", f"flops={data.get('flops')}"
        for k in data.get("kernels", []):
            if (k.get("flops") or k.get("bytes")) and k["end_cycle"] <= k["start_cycle"]:
                return "kernel with work but no time", f"{k.get('name')}: {k}"
    return None


def _check_trace(data) -> tuple[str, str] | None:
    events = data.get("traceEvents", data) if isinstance(data, dict) else data
    for event in events if isinstance(events, list) else []:
        for key in ("ts", "dur"):
            v = event.get(key) if isinstance(event, dict) else None
            if v is not None and (not math.isfinite(v) or v < 0):
                return f"bad {key} in the trace", f"{event}"[:200]
        args = event.get("args", {}) if isinstance(event, dict) else {}
        for k, v in (args.items() if isinstance(args, dict) else ()):
            if isinstance(v, float) and (not math.isfinite(v) or v < 0):
                return f"bad {k} in a trace event", f"{event}"[:200]
    return None


def known_or(outcome: Outcome) -> Outcome:
    """Re-class a defect as known when another piece of work owns its signature."""
    if outcome.cls == "defect":
        for pattern, owner in KNOWN:
            if re.search(pattern, outcome.signature + "\n" + outcome.detail):
                outcome.cls = "known"
                outcome.signature = f"{outcome.signature} [{owner}]"
                break
    return outcome
