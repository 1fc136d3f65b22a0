"""Load a target TOML file into a validated `Target`.

The loader walks the schema dataclasses field by field, so every rule lives in the schema:
types come from the annotations, ranges and choices from the field metadata. Errors name the
file, the line of the offending key, the dotted key and what was expected; an unknown key gets
a did-you-mean.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import math
import re
import tomllib
import types
import typing
from pathlib import Path

from isa.formats import ELEMENT_DTYPES, SCALE_DTYPES, FormatError, parse_format
from isa.machine_build import MachineError
from isa.target_schema import BENCH_SIZES, MATRIX_BENCHES, Target

BUILTIN_DIR = Path(__file__).parent / "targets"


class TargetError(ValueError):
    """A target file that cannot be used; str() is the full message for the user."""


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def resolve_target_path(name_or_path: str) -> Path:
    if name_or_path in builtin_names():
        return BUILTIN_DIR / f"{name_or_path}.toml"
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise TargetError(f"{name_or_path}: error: no such target file")
        return path
    close = difflib.get_close_matches(name_or_path, builtin_names(), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise TargetError(f"error: unknown target '{name_or_path}'{hint}; builtin targets: "
                      f"{', '.join(builtin_names())}, or give a path to a .toml file")


def load_target(name_or_path: str, overrides: dict[str, object] | None = None,
                peak: bool = False) -> Target:
    """The target named (a builtin or a .toml file), with `overrides` (dotted key -> value,
    e.g. {"memory.bandwidth_gbs": 6000}) put into the file's tables before it is checked, so
    an overridden value is validated exactly as if the file held it; with `peak`, running on
    its datasheet peaks instead of its sustained figures (`--peak`: figures = "peak")."""
    if peak:
        overrides = {**(overrides or {}), "figures": "peak"}
    path = resolve_target_path(name_or_path)
    text = _read_text(path)
    key = (str(path), text, repr(sorted((overrides or {}).items())))
    if key not in _LOADED:            # the same file and overrides: the same Target object
        _LOADED[key] = _build(path, text, overrides or {})
        if len(_LOADED) > 64:
            del _LOADED[next(iter(_LOADED))]
    return _LOADED[key]


_LOADED: dict[tuple, Target] = {}


def _build(path: Path, text: str, overrides: dict[str, object]) -> Target:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{path}: error: not valid TOML: {exc}") from None
    reader = _Reader(path, text)
    for dotted, value in overrides.items():
        reader.overridden[_override_path(path, dotted, data)] = value
        _put(data, _split_key(dotted), value)
    target = reader.build(Target, data, ())
    _check_consistency(target, reader)
    return target


def target_sha256(name_or_path: str) -> str:
    """The hash of the target file's bytes (the provenance of a report)."""
    return hashlib.sha256(resolve_target_path(name_or_path).read_bytes()).hexdigest()


def parse_override(text: str) -> tuple[str, object]:
    """`KEY=VALUE` from the command line: the value is read as a TOML value (6000, 1.5,
    "lru", [1, 2]), and a bare word that is not one as a string (keeps=nothing)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or not raw.strip():
        raise TargetError(f"error: --target-set expects KEY=VALUE, got '{text}' "
                          "(e.g. --target-set memory.bandwidth_gbs=6000)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def _override_path(path: Path, dotted: str, data: dict) -> tuple[str, ...]:
    keys = _split_key(dotted)
    if not all(keys):
        raise TargetError(f"{path}: error: target override '{dotted}': expected a dotted key "
                          "such as memory.bandwidth_gbs")
    table = data
    for depth, part in enumerate(keys[:-1]):
        table = table.get(part, {}) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            raise TargetError(f"{path}: error: target override '{dotted}': "
                              f"{'.'.join(keys[:depth + 1])} is not a table")
    return keys


def _put(data: dict, keys: tuple[str, ...], value) -> None:
    for part in keys[:-1]:
        data = data.setdefault(part, {})
    data[keys[-1]] = value


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TargetError(f"{path}: error: not UTF-8 text (byte {exc.start}): a target file "
                          "must be UTF-8 TOML") from None
    except OSError as exc:
        raise TargetError(f"{path}: error: cannot read: {exc.strerror}") from None


class _Reader:
    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()
        self.overridden: dict[tuple[str, ...], object] = {}     # dotted key -> value given

    def fail(self, dotted: tuple[str, ...], message: str) -> typing.NoReturn:
        given = next((k for k in self.overridden if dotted[:len(k)] == k), None)
        if given is not None:         # the file is not at fault: name the override
            what = "" if given == dotted else f"{'.'.join(dotted)} in "
            raise TargetError(f"{self.path}: error: {what}the override {'.'.join(given)} = "
                              f"{self.overridden[given]!r}: {message}")
        line = _find_line(self.lines, dotted)
        where = f"{self.path}:{line}" if line else str(self.path)
        raise TargetError(f"{where}: error: {'.'.join(dotted) or 'file'}: {message}")

    def build(self, cls, data, dotted: tuple[str, ...]):
        if not isinstance(data, dict):
            self.fail(dotted, f"expected a table, got {_kind(data)}")
        hints = _type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in data:
            if name not in fields:
                close = difflib.get_close_matches(name, fields, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.fail(dotted + (name,), f"unknown key{hint}; expected one of: "
                                            f"{', '.join(fields)}")
        values = {}
        for name, f in fields.items():
            path = dotted + (name,)
            if name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    self.fail(path, f"missing required key ({f.metadata['doc']})")
                values[name] = f.default if f.default is not dataclasses.MISSING else \
                    f.default_factory()
                continue
            values[name] = self.value(hints[name], data[name], path, f.metadata)
        return cls(**values)

    def value(self, hint, raw, dotted, meta):
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in args if a is not type(None)][0]
            return self.value(inner, raw, dotted, meta)
        if dataclasses.is_dataclass(hint):
            return self.build(hint, raw, dotted)
        if origin is dict:
            if not isinstance(raw, dict):
                self.fail(dotted, f"expected a table, got {_kind(raw)}")
            return {k: self.value(args[1], v, dotted + (k,), meta) for k, v in raw.items()}
        if origin is tuple:
            return self.sequence(args, raw, dotted, meta)
        return self.scalar(hint, raw, dotted, meta)

    def sequence(self, args, raw, dotted, meta):
        if not isinstance(raw, list):
            self.fail(dotted, f"expected a list, got {_kind(raw)}")
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(raw)
        else:
            item_types = list(args)
            if len(raw) != len(args):
                self.fail(dotted, f"expected a list of {len(args)} values, got {len(raw)}")
        return tuple(self.scalar(t, v, dotted, meta) for t, v in zip(item_types, raw))

    def scalar(self, hint, raw, dotted, meta):
        ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
              float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              str: lambda v: isinstance(v, str)}[hint]
        if not ok(raw):
            self.fail(dotted, f"expected {hint.__name__}, got {_kind(raw)} {raw!r}")
        value = hint(raw)
        if hint is float and not math.isfinite(value):
            self.fail(dotted, f"expected a finite number, got {value}")
        if hint is int and abs(value) > 2**53:        # beyond exact floating point
            self.fail(dotted, f"expected an integer of at most 2^53, got {value}")
        lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
        if lo is not None and value < lo:
            self.fail(dotted, f"expected a value >= {lo}, got {value}")
        if hi is not None and value > hi:
            self.fail(dotted, f"expected a value <= {hi}, got {value}")
        if choices and value not in choices:
            self.fail(dotted, f"expected one of {', '.join(choices)}, got '{value}'")
        return value


def _check_native_operands(fmt: str, formats: dict, reader: _Reader) -> None:
    """Each listed operand dtype is an element dtype other than the format, listed once; one
    the unit also multiplies as a format of its own is no slower there (an instruction mixing
    it in would not run faster than it does alone)."""
    at = ("matrix", "formats", fmt, "native_operands")
    dtypes = formats[fmt].native_operands
    for d in dtypes:
        if d not in ELEMENT_DTYPES:
            reader.fail(at, f"unknown dtype '{d}'; expected one of {', '.join(ELEMENT_DTYPES)}")
        if d == fmt:
            reader.fail(at, f"'{d}' is the format itself; list only the other dtypes its "
                            "instruction takes")
        if d in formats and formats[d].flops_per_cycle < formats[fmt].flops_per_cycle:
            reader.fail(at, f"'{d}' runs at {formats[d].flops_per_cycle} flops per cycle as a "
                            f"format of its own, slower than {fmt}'s "
                            f"{formats[fmt].flops_per_cycle}: an instruction mixing it in "
                            "would not run at that rate")
    if len(set(dtypes)) != len(dtypes):
        reader.fail(at, f"a dtype is listed twice: {list(dtypes)}")


@functools.cache
def _type_hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _check_consistency(target: Target, reader: _Reader) -> None:
    """Rules that relate several keys; each names the key the user should fix."""
    for dtype, fmt in target.matrix.formats.items():
        if dtype not in ELEMENT_DTYPES:
            reader.fail(("matrix", "formats", dtype),
                        f"unknown dtype; expected one of {', '.join(ELEMENT_DTYPES)}")
        for spec in fmt.block_scales:
            if not re.fullmatch(rf"({'|'.join(SCALE_DTYPES)}):\d+x\d+", spec):
                reader.fail(("matrix", "formats", dtype, "block_scales"),
                            f"expected SCALE_DTYPE:ROWSxCOLS, got '{spec}'")
        at = lambda name: ("matrix", "formats", dtype, name)
        _check_native_operands(dtype, target.matrix.formats, reader)
        im, in_, _ = fmt.shape
        for name, sizes in (("m_sizes", fmt.m_sizes), ("pair_m", fmt.pair_m)):
            if any(m % im for m in sizes):
                reader.fail(at(name), f"expected multiples of shape's M ({im}), got {list(sizes)}")
        if fmt.n_max is not None and fmt.n_max % in_:
            reader.fail(at("n_max"), f"expected a multiple of shape's N ({in_}), got {fmt.n_max}")
    if target.matrix.promotion_problem():
        reader.fail(("matrix", "promotion_interval"), target.matrix.promotion_problem())
    if target.sustained_clock_ghz is not None and not target.sustained_clock_source.strip():
        reader.fail(("sustained_clock_ghz",), "a sustained clock needs its source "
                                              "(sustained_clock_source): the public "
                                              "measurement it comes from")
    if target.dma.bytes_in_flight is not None and not target.dma.bytes_in_flight_source.strip():
        reader.fail(("dma", "bytes_in_flight"), "bytes in flight need their source "
                                                "(bytes_in_flight_source)")
    if target.launch is not None and not target.launch.source.strip():
        reader.fail(("launch", "source"), "launch costs need their source: the public "
                                          "measurements they come from")
    if not target.matrix.formats:
        reader.fail(("matrix", "formats"), "a matrix unit needs at least one format")
    for role in ("matrix_a", "matrix_b", "accumulator", "vector"):
        if not any(role in b.holds for b in target.buffers.values()):
            reader.fail(("buffers",), f"no buffer holds '{role}'")
    try:
        target.machine                  # the memories and links as one graph, checked
    except MachineError as err:
        reader.fail(err.key, str(err))
    for name, row in target.measured.items():
        problem = _measured_problem(row)
        if problem:
            reader.fail(("measured", name) + problem[0], problem[1])


def _measured_problem(row) -> tuple[tuple[str, ...], str] | None:
    """What is wrong with a measured row, if anything, and at which of its keys: each bench
    needs its own keys. (Whether the chip can run it, a format or link a variant of the file
    dropped, `dsc validate` says.)"""
    if not row.source.strip():
        return ("source",), "a measured figure needs its source"
    dims = BENCH_SIZES[row.bench]
    if len(row.size) != len(dims):
        return ("size",), (f"{row.bench} rows need size = "
                           f"{'[' + ', '.join(dims) + ']' if dims else '[] (or none)'}")
    if row.bench == "gemm":
        try:
            parse_format(row.dtype)
        except FormatError as exc:
            return ("dtype",), str(exc)
    elif row.bench in MATRIX_BENCHES and row.dtype not in ELEMENT_DTYPES:
        return ("dtype",), (f"dtype '{row.dtype}' is not an element format "
                            f"({', '.join(ELEMENT_DTYPES)})")
    if row.bench == "mla_decode" and row.size[3] < row.size[2]:
        return ("size",), ("an mla_decode row's T cached positions include its S_Q new tokens: "
                           f"T = {row.size[3]} < S_Q = {row.size[2]}")
    if row.mask != "none" and row.bench != "attention":
        return ("mask",), f"mask applies to attention rows only, not to {row.bench} rows"
    return None


def _find_line(lines: list[str], dotted: tuple[str, ...]) -> int | None:
    """Line (1-based) of a dotted key: its assignment or a table header at or below it; else
    the innermost table that contains it."""
    table: tuple[str, ...] = ()
    fallback = (0, None)
    for number, line in enumerate(lines, 1):
        stripped = line.split("#", 1)[0].strip()
        header = re.fullmatch(r"\[\[?\s*([^\]]+?)\s*\]\]?", stripped)
        assign = re.match(r'([A-Za-z0-9_\-."]+?)\s*=', stripped)
        if header:
            table = _split_key(header.group(1))
            full = table
        elif assign:
            full = table + _split_key(assign.group(1))
        else:
            continue
        if full[:len(dotted)] == dotted:
            return number
        if dotted[:len(full)] == full and len(full) > fallback[0]:
            fallback = (len(full), number)
    return fallback[1]


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(part.strip().strip('"') for part in key.split("."))


def _kind(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)
