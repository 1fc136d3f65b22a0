"""Variants of the builtin targets that the schema accepts: each takes a chip description
apart in one way (no fixed pipe, a pipe with fewer ops, split or joined cube and vector
cores, no FP8 in the matrix unit, one die, two dies, one buffer for every role, ...).

Each variant is derived from the builtins it changes in kind (a pipe taken from the chip
that has one, added to GPUs that have none; cores split on GPUs, joined on the Ascend; ...),
so every builtin is taken apart several ways. `toml_text` writes a target back as TOML. The test that compiles every example on each is
test_target_variants.py.
"""
from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import dataclass
from typing import Callable

from isa.target_loader import BUILTIN_DIR

LOW_PRECISION = ("fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp6_e3m2", "fp4_e2m1")
PIPE = {"elements_per_cycle": 256}


def _drop(*path: str):
    def change(t: dict) -> None:
        table = t
        for key in path[:-1]:
            table = table.get(key, {})
        table.pop(path[-1], None)
    return change


def _set(value, *path: str):
    def change(t: dict) -> None:
        table = t
        for key in path[:-1]:
            table = table.setdefault(key, {})
        table[path[-1]] = copy.deepcopy(value)
    return change


def _formats(keep: Callable[[str], bool]):
    def change(t: dict) -> None:
        formats = t["matrix"]["formats"]
        for dtype in [d for d in formats if not keep(d)]:
            del formats[dtype]
    return change


def _only_format(dtype: str, shape=(16, 16, 16), flops=8192):
    return _set({dtype: {"shape": list(shape), "flops_per_cycle": flops}}, "matrix", "formats")


def _every_format(key: str, value):
    def change(t: dict) -> None:
        for fmt in t["matrix"]["formats"].values():
            fmt[key] = copy.deepcopy(value)
    return change


def _one_buffer(t: dict) -> None:
    total = sum(b["bytes"] for b in t["buffers"].values())
    t["buffers"] = {"mem": {"bytes": total,
                            "holds": ["matrix_a", "matrix_b", "accumulator", "vector"]}}


def _buffer_per_role(t: dict) -> None:
    size = min(b["bytes"] for b in t["buffers"].values())
    t["buffers"] = {role: {"bytes": size, "holds": [role]}
                    for role in ("matrix_a", "matrix_b", "accumulator", "vector")}


def _small_buffers(t: dict) -> None:
    for b in t["buffers"].values():
        b["bytes"] = 16384


def _dies(n: int):
    def change(t: dict) -> None:
        t["chip"]["dies"] = n
        if n > 1:
            t.setdefault("die_link", {"bandwidth_gbs": 1000.0, "latency_ns": 100.0})
        else:
            t.pop("die_link", None)
    return change


@dataclass(frozen=True)
class Variant:
    name: str
    changes: tuple[Callable[[dict], None], ...]
    bases: tuple[str, ...]   # the builtins it is derived from: those it changes in kind
    lacks: str = ""          # what an error may name besides buffer capacity (a regex)


SPLIT = ("memory", "matrix", "results_to_vector")
NO_FORMAT = "matrix unit has no format"
VARIANTS = (
    Variant("no_fixed_pipe", (_drop("fixed_pipe"),), ("ascend910b", "ascend910c")),
    Variant("pipe_without_ops", (_set({"ops": [], **PIPE}, "fixed_pipe"),),
            ("ascend910b", "h800")),
    Variant("pipe_without_cvt", (_set({"ops": ["bias", "relu", "add"], **PIPE}, "fixed_pipe"),),
            ("ascend910b", "h800", "cloudmatrix384")),
    Variant("pipe_cvt_only", (_set({"ops": ["cvt"], **PIPE}, "fixed_pipe"),),
            ("ascend910b", "b200")),
    Variant("pipe_quant_first", (_set({"ops": ["quant", "dequant", "silu", "mul", "cvt"],
                                       **PIPE}, "fixed_pipe"),), ("ascend910b", "h20")),
    Variant("split_cores", (_set(*SPLIT),), ("h800", "b200", "a100", "gb200", "rtx5090", "wse3")),
    Variant("split_cores_cvt_pipe", (_set(*SPLIT), _set({"ops": ["cvt"], **PIPE}, "fixed_pipe")),
            ("h20",)),
    Variant("joined_cores", (_set("direct", "matrix", "results_to_vector"),),
            ("ascend910b", "ascend910c")),
    Variant("no_fp8", (_formats(lambda d: d not in LOW_PRECISION),),
            ("h800", "b200", "gb200", "rtx5090")),
    Variant("fp16_only", (_only_format("fp16"),), ("ascend910b", "a100", "cloudmatrix384")),
    Variant("fp32_only", (_only_format("fp32", flops=2048),), ("h20",)),
    Variant("int8_only", (_only_format("int8", shape=(16, 16, 32), flops=16384),),
            ("h800", "ascend910b"), lacks=NO_FORMAT),
    Variant("limited_accumulator", (_every_format("accumulator_bits", 13),),
            ("b200", "ascend910b"), lacks=NO_FORMAT),
    Variant("no_block_scales", (_every_format("block_scales", []),), ("b200", "gb200")),
    Variant("one_die", (_dies(1),), ("b200", "ascend910c")),
    Variant("two_dies", (_dies(2),), ("h800", "ascend910b", "rtx5090", "wse3")),
    Variant("one_core", (_set(1, "chip", "cores_per_die"),), ("h20",)),
    Variant("one_buffer", (_one_buffer,), ("ascend910b", "a100")),
    Variant("buffer_per_role", (_buffer_per_role,), ("h800", "wse3")),
    Variant("small_buffers", (_small_buffers,), ("h20",), lacks="on-chip buffers"),
    Variant("no_l2", (_set(0, "l2", "bytes"),), ("a100",)),
    Variant("no_system", (_drop("system"),), ("h800", "cloudmatrix384")),
)


def builtin_data(name: str) -> dict:
    return tomllib.loads((BUILTIN_DIR / f"{name}.toml").read_text())


def variants() -> list[tuple[str, Variant, dict]]:
    """(builtin, variant, its TOML data) for each variant of each of its bases."""
    out = []
    for v in VARIANTS:
        for name in v.bases:
            base = builtin_data(name)
            data = copy.deepcopy(base)
            for change in v.changes:
                change(data)
            assert data != base, f"variant {v.name} does not change {name}"
            data["name"] = f"{name}_{v.name}"
            out.append((name, v, data))
    return out


def toml_text(data: dict) -> str:
    """TOML for a target's data: scalars first, then each table, nested tables dotted."""
    lines: list[str] = []
    _table(lines, (), data)
    return "\n".join(lines) + "\n"


def _table(lines: list[str], path: tuple[str, ...], table: dict) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if path and (scalars or not tables):
        lines.append(f"[{'.'.join(path)}]")
    lines.extend(f"{k} = {json.dumps(v)}" for k, v in scalars.items())
    for k, v in tables.items():
        _table(lines, path + (k,), v)


def h800_with_fp32_matrix(directory) -> str:
    """h800 plus an fp32 matrix format, written in `directory`: builtin targets run fp32 GEMMs
    in bf16, so full-precision functional checks need a matrix unit that keeps fp32."""
    text = (BUILTIN_DIR / "h800.toml").read_text()
    text = text.replace('name = "h800"', 'name = "h800_fp32"', 1).replace(
        "[matrix.formats.bf16]",
        "[matrix.formats.fp32]\nshape = [64, 8, 8]\nflops_per_cycle = 1024\n\n"
        "[matrix.formats.bf16]", 1)
    path = directory / "h800_fp32.toml"
    path.write_text(text)
    return str(path)


def ascend_with_pipe(tmp_path, pipe: str | None) -> str:
    """ascend910b's file with its [fixed_pipe] table's lines replaced by `pipe` (e.g.
    'ops = ["bias"]'); None: no fixed pipe at all. The path of the written file."""
    text = (BUILTIN_DIR / "ascend910b.toml").read_text()
    start = text.index("\n[fixed_pipe]\n")
    end = text.index("elements_per_cycle = 256", start) + len("elements_per_cycle = 256")
    table = "" if pipe is None else f"\n[fixed_pipe]\n{pipe}\nelements_per_cycle = 256"
    path = tmp_path / "ascend_pipe.toml"
    path.write_text(text[:start] + table + text[end:])
    return str(path)
