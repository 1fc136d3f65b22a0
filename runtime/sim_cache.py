"""Kernel simulations kept across calls and across runs.

A kernel's simulation is a pure function of the kernel (its instructions, buffers, grid), the
tensors bound to it (formats, shapes, views, homes: not their names), what of them the caches
hold when it starts, the bandwidth traffic beside it takes, the target, and the simulator's
own code. `simulate` looks the result up by all of these, in this process first
and then in a directory on disk, and simulates only what neither holds. The tile pass's
measurements and the runs after it share the results, so a model compiled and run again, or a
GEMM tried in another model, costs no simulation.

The directory is `kernels/` in dsc's cache directory (isa/cache_dir.py: `$DSC_CACHE`, `off`
keeps nothing on disk). Each result is one JSON file named by the hash of its key, written whole through a temporary file and renamed into place, so runs in parallel never
read half a file; the key includes a hash of the source of `runtime/` and `isa/` (the
simulator, the instruction costs, the machine), so a changed simulator never reads an old
result. Unreadable files are ignored and simulated again. Record mode (traces) is never kept.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from dataclasses import fields
from functools import cache
from pathlib import Path

from isa.cache_dir import cache_dir
from isa.program import Kernel, TensorDecl
from isa.target_schema import Target
from runtime.kernel_sim import KernelResult, simulate_kernel

MEMORY_ENTRIES = 4096                  # results kept in this process (least recently used go)
_memory: OrderedDict[str, KernelResult] = OrderedDict()
_target_texts: dict[int, tuple[Target, str]] = {}


def simulate(kernel: Kernel, params: dict[str, TensorDecl], target: Target,
             record: bool = False, bases: dict[str, TensorDecl] | None = None,
             resident: dict[str, float] | None = None,
             background: dict[str, float] | None = None) -> KernelResult:
    """simulate_kernel's result, from the caches when they hold it."""
    if record:
        return simulate_kernel(kernel, params, target, record, bases, resident, background)
    key = _key(kernel, params, target, bases or {}, resident or {}, background or {})
    result = _memory.get(key)
    if result is None:
        result = _read(key)
        if result is None:
            result = simulate_kernel(kernel, params, target, record, bases, resident,
                                     background)
            _write(key, result)
        _memory[key] = result
        if len(_memory) > MEMORY_ENTRIES:
            _memory.popitem(last=False)
    else:
        _memory.move_to_end(key)
    return result


def clear_memory() -> None:
    _memory.clear()


def _key(kernel: Kernel, params, target: Target, bases, resident, background) -> str:
    decls = lambda table: sorted((p, _decl(d)) for p, d in table.items())
    body = _kernel_text(kernel)
    text = repr((_code_hash(), body, decls(params), decls(bases),
                 _target_text(target, "net.send" in body), sorted(resident.items()))
                + ((sorted(background.items()),) if background else ()))
    return hashlib.sha256(text.encode()).hexdigest()


def _kernel_text(kernel: Kernel) -> str:
    """The kernel but for its name (kernels equal but for their name simulate alike)."""
    return repr(tuple(getattr(kernel, f.name) for f in fields(kernel) if f.name != "name"))


def _decl(d: TensorDecl) -> tuple:
    return tuple((f.name, getattr(d, f.name)) for f in fields(d) if f.name not in ("name", "base"))\
        + (("view", d.base is not None),)


def _target_text(target: Target, sends: bool = True) -> str:
    """The target as a kernel's simulation sees it. A kernel without net.send never uses the
    links to other devices, so it is keyed by Target.on_device_key, which leaves them out: a
    sweep over the network's bandwidth simulates only the collectives again."""
    if not sends:
        return target.on_device_key
    held = _target_texts.get(id(target))
    if held is None or held[0] is not target:
        held = _target_texts[id(target)] = (target, repr(target))
    return held[1]


@cache
def _code_hash() -> str:
    """The simulator's source: runtime/ and isa/ (Python files, grammars, templates)."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for package in ("runtime", "isa"):
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".lark", ".toml"):
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


# ---- on disk ------------------------------------------------------------------------------

def _path(key: str) -> Path | None:
    where = cache_dir("kernels")
    return where / key[:2] / f"{key}.json" if where else None


def _read(key: str) -> KernelResult | None:
    path = _path(key)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
        return KernelResult(**{name: _decode(value) for name, value in data.items()})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _write(key: str, result: KernelResult) -> None:
    path = _path(key)
    if path is None:
        return
    data = {f.name: _encode(getattr(result, f.name)) for f in fields(result)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False,
                                         suffix=".tmp") as f:
            json.dump(data, f)
        os.replace(f.name, path)
    except OSError:
        pass                      # a cache that cannot be written is only slower


def _encode(value):
    """JSON for the values a KernelResult holds, tuples and sets and non-string keys kept."""
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"dict": {k: _encode(v) for k, v in value.items()}}
        return {"pairs": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"set": sorted(_encode(v) for v in value)}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    (kind, inner), = value.items()
    if kind == "dict":
        return {k: _decode(v) for k, v in inner.items()}
    if kind == "pairs":
        return {_decode(k): _decode(v) for k, v in inner}
    if kind == "tuple":
        return tuple(_decode(v) for v in inner)
    return frozenset(_decode(v) for v in inner)
