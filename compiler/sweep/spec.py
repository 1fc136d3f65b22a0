"""A sweep file (TOML) read into the points to run.

    model = "../deepseek_v3.ds"          # relative to the sweep file
    target = "h800"                      # a builtin or a .toml file (relative to the sweep file)
    devices = 144
    plan = "attn=dp,moe=ep,mb=2"
    set = { batch = 32 }                 # --set values every point has
    target_set = { "l2.keeps" = "lru" }  # --target-set values every point has
    metrics = ["time_s", "tokens_per_s_per_device"]

    [axes]                               # the cross product of every axis's values
    "target.memory.bandwidth_gbs" = [2000, 3350, 5000]
    "set.weights" = ["fp8_e4m3", "mxfp4"]

or, instead of [axes], a list of points: [[points]] tables with the same keys. An axis or a
point's key is one of the options (`target`, `plan`, `devices`, `place`, `die_mode`), a
`set.NAME` (a --set value) or a `target.KEY` (a target key, by its dotted name). Mistakes are
one message naming the sweep file and the key.
"""
from __future__ import annotations

import difflib
import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from compiler.errors import DscError

OPTIONS = ("target", "plan", "devices", "place", "die_mode")
TOP_KEYS = ("model", "metrics", "set", "target_set", "axes", "points", "check_fit") + OPTIONS
# What a point's row can report: the run's figures (compiler.api.Report.row) and two derived.
METRICS = ("time_s", "total_cycles", "tokens_per_s", "tokens_per_s_per_device",
           "exposed_comm_us", "flops", "tflops", "bytes_offchip", "bound", "kernels",
           "simulated_kernels")
DEFAULT_METRICS = ("time_s", "tokens_per_s_per_device", "exposed_comm_us", "tflops", "bound")


@dataclass(frozen=True)
class Point:
    """Everything one run depends on: compiler.api.Session.run's arguments."""
    model: str
    target: str
    sets: tuple[tuple[str, str], ...] = ()
    target_set: tuple[tuple[str, object], ...] = ()
    devices: int | None = None
    plan: str | None = None
    place: str | None = None
    die_mode: str = "uma"
    check_fit: bool = True

    def options(self) -> dict:
        return dict(sets=dict(self.sets), target_set=dict(self.target_set),
                    devices=self.devices, plan=self.plan, place=self.place,
                    die_mode=self.die_mode, check_fit=self.check_fit)

    def compile_group(self) -> tuple:
        """Points equal but for their target keys share a front end and often a program."""
        return (self.model, self.target, self.sets, self.devices, self.plan, self.place,
                self.die_mode)


@dataclass(frozen=True)
class Sweep:
    path: Path
    axes: tuple[str, ...]                    # the varied keys, in the file's order
    points: tuple[Point, ...]
    values: tuple[dict, ...]                 # each point's value of every axis
    metrics: tuple[str, ...] = DEFAULT_METRICS
    notes: tuple[str, ...] = field(default=())


def load_sweep(path: str) -> Sweep:
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DscError(f"cannot read sweep file '{path}': {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DscError(f"sweep file {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise DscError(f"sweep file {path}: not valid TOML: {exc}") from None
    fail = lambda message, expected=None: _fail(path, message, expected)
    for key in data:
        if key not in TOP_KEYS:
            fail(f"unknown key '{key}'{_close(key, TOP_KEYS)}",
                 f"one of: {', '.join(TOP_KEYS)}")
    if not isinstance(data.get("model"), str):
        fail("'model' names the .ds file to sweep (relative to the sweep file)")
    if "target" not in data and "target" not in data.get("axes", {}):
        fail("no 'target': name one (a builtin or a .toml file), or make it an axis")
    metrics = data.get("metrics", list(DEFAULT_METRICS))
    if not isinstance(metrics, list) or not metrics:
        fail("'metrics' is a list of names", f"some of: {', '.join(METRICS)}")
    for m in metrics:
        if m not in METRICS:
            fail(f"unknown metric '{m}'{_close(str(m), METRICS)}", f"one of: {', '.join(METRICS)}")
    base = {k: data[k] for k in OPTIONS + ("check_fit",) if k in data}
    base.update({f"set.{k}": v for k, v in _table(data, "set", fail).items()})
    base.update({f"target.{k}": v for k, v in _table(data, "target_set", fail).items()})
    axes, grid = _grid(data, fail)
    points, values = [], []
    for assignment in grid:
        merged = {**base, **assignment}
        points.append(_point(file, data["model"], merged, fail))
        values.append({axis: assignment.get(axis, merged.get(axis)) for axis in axes})
    return Sweep(file, tuple(axes), tuple(points), tuple(values), tuple(metrics))


def _grid(data: dict, fail) -> tuple[list[str], list[dict]]:
    """The axes and one assignment of them per point: the cross product of [axes], or the
    [[points]] as given."""
    if ("axes" in data) == ("points" in data):
        fail("give either [axes] (a cross product) or [[points]] (a list), not "
             + ("both" if "axes" in data else "neither"))
    if "axes" in data:
        axes = _table(data, "axes", fail)
        for key, values in axes.items():
            _check_key(key, fail)
            if not isinstance(values, list) or not values:
                fail(f"axis '{key}': expected a non-empty list of values")
        names = list(axes)
        return names, [dict(zip(names, combo)) for combo in itertools.product(*axes.values())]
    points = data["points"]
    if not isinstance(points, list) or not points or not all(isinstance(p, dict) for p in points):
        fail("[[points]] is a list of tables, one per point")
    names: list[str] = []
    for point in points:
        for key in point:
            _check_key(key, fail)
            if key not in names:
                names.append(key)
    return names, [dict(p) for p in points]


def _check_key(key: str, fail) -> None:
    if key in OPTIONS or key == "check_fit":
        return
    kind, _, name = key.partition(".")
    if kind in ("set", "target") and name:
        return
    fail(f"unknown axis '{key}'{_close(key, OPTIONS)}",
         f"an option ({', '.join(OPTIONS)}), set.NAME (a --set value) or target.KEY "
         "(a target key such as target.memory.bandwidth_gbs)")


def _point(file: Path, model: str, values: dict, fail) -> Point:
    sets, target_set = [], []
    for key, value in values.items():
        kind, _, name = key.partition(".")
        if kind == "set" and name:
            if not isinstance(value, (int, str)) or isinstance(value, bool):
                fail(f"'{key}' = {value!r}: a --set value is an integer or a format name")
            sets.append((name, str(value)))
        elif kind == "target" and name:
            target_set.append((name, value))
    expect = {"target": str, "plan": str, "place": str, "die_mode": str, "devices": int,
              "check_fit": bool}
    for key, kind in expect.items():
        if key in values and (not isinstance(values[key], kind)
                              or (kind is int and isinstance(values[key], bool))):
            fail(f"'{key}' = {values[key]!r}: expected {kind.__name__}")
    return Point(model=_relative(file, model), target=_target(file, values["target"]),
                 sets=tuple(sorted(sets)), target_set=tuple(sorted(target_set, key=str)),
                 devices=values.get("devices"), plan=values.get("plan"),
                 place=values.get("place"), die_mode=values.get("die_mode", "uma"),
                 check_fit=values.get("check_fit", True))


def _target(file: Path, name: str) -> str:
    """A builtin name as it is; a .toml file relative to the sweep file."""
    return _relative(file, name) if name.endswith(".toml") else name


def _relative(file: Path, name: str) -> str:
    path = Path(name)
    return str(path if path.is_absolute() else file.parent / path)


def _table(data: dict, key: str, fail) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        fail(f"'{key}' is a table")
    return value


def _close(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _fail(path: str, message: str, expected: str | None = None):
    raise DscError(f"sweep file {path}: {message}", expected=expected)
