"""A `serve NAME { ... }` file read into a Service (isa/serving.py says what it means), every
item checked where it is written."""
from __future__ import annotations

from pathlib import Path

from compiler.errors import DscError, Loc, did_you_mean, register_source
from compiler.frontend import ast
from compiler.frontend.deploy import deploy_entries
from compiler.frontend.loader import _not_a_file
from compiler.frontend.parser import parse
from isa.deployment import make_deployment
from isa.serving import PHASES, SERVICE_SIZES, SETTINGS, Phase, Service


def load_service(path: str, overrides: dict[str, str] | None = None) -> Service:
    """The service described in the file at `path`; `overrides` (--set) replace settings
    (`prompt=2048`) or a phase's entries (`decode.batch=32`, `decode.devices=72`)."""
    problem = _not_a_file(path)
    if problem:
        raise DscError(f"cannot read serve file '{path}': {problem}",
                       expected="the path of a .ds file with a serve description")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise DscError(f"cannot read serve file '{path}'", expected="a UTF-8 .ds file") \
            from None
    register_source(path, text)
    serves = [i for i in parse(text, path).items if isinstance(i, ast.ServeDef)]
    if len(serves) != 1:
        loc = serves[1].loc if serves else Loc(path, 1, 1)
        raise DscError(f"{'a second' if serves else 'no'} serve description in '{path}'", loc,
                       "exactly one 'serve NAME { ... }' in the file")
    return _service(serves[0], Path(path).parent, overrides or {})


def _service(serve: ast.ServeDef, home: Path, overrides: dict[str, str]) -> Service:
    phases: dict[str, Phase] = {}
    settings: dict[str, object] = {}
    for item in serve.items:
        if isinstance(item, ast.ServePhase):
            if item.phase not in PHASES:
                raise DscError(f"unknown phase '{item.phase}'{did_you_mean(item.phase, PHASES)}",
                               item.loc, "prefill \"MODEL.ds\" { ... } or decode \"MODEL.ds\" "
                               "{ ... }")
            if item.phase in phases:
                raise DscError(f"duplicate declaration: a second {item.phase} phase", item.loc,
                               "each phase once")
            phases[item.phase] = _phase(item, home, overrides)
        else:
            if item.key in settings:
                raise DscError(f"duplicate declaration: '{item.key}' is given twice", item.loc,
                               "each setting once")
            settings[item.key] = _setting(item.key, item.value, item.loc)
    _apply_setting_overrides(settings, overrides, serve.loc)
    for phase in PHASES:
        if phase not in phases:
            raise DscError(f"serve {serve.name} has no {phase} phase", serve.loc,
                           f"{phase} \"MODEL.ds\" {{ devices N ... }}")
    for key, (_, _, _, default, meaning) in SETTINGS.items():
        if default is None and key not in settings:
            raise DscError(f"serve {serve.name} does not say '{key}' ({meaning})", serve.loc,
                           f"{key} N")
    return Service(serve.name, phases["prefill"], phases["decode"], **settings)


def _setting(key: str, value, loc: Loc | None):
    if key not in SETTINGS:
        raise DscError(f"unknown serve setting '{key}'{did_you_mean(key, SETTINGS)}", loc,
                       "one of " + ", ".join(SETTINGS) + ", or a phase: prefill/decode "
                       "\"MODEL.ds\" { ... }")
    kind, low, high, _, meaning = SETTINGS[key]
    given = value
    if isinstance(value, str):
        try:
            value = kind(value)
        except ValueError:
            value = None
    if kind is int and isinstance(value, float) or not isinstance(value, (int, float)) \
            or isinstance(value, bool) or not low <= value <= high:
        raise DscError(f"serve {key} {given}: expected {'an integer' if kind is int else 'a number'}"
                       f" from {low:g} to {high:g} ({meaning})", loc, f"e.g. {key} "
                       f"{'4096' if kind is int else '0.5'}")
    return kind(value)


def _apply_setting_overrides(settings: dict, overrides: dict[str, str], loc: Loc) -> None:
    for key, value in overrides.items():
        phase, dot, name = key.partition(".")
        if not dot:
            settings[key] = _setting(key, value, None)
        elif phase not in PHASES or not name:
            raise DscError(f"--set {key}={value}: '{phase}' is not a phase", expected=
                           "--set SETTING=VALUE or --set prefill.NAME=VALUE / decode.NAME=VALUE")


def _phase(item: ast.ServePhase, home: Path, overrides: dict[str, str]) -> Phase:
    model = home / item.model
    problem = _not_a_file(model)
    if problem:
        raise DscError(f"{item.phase} model '{item.model}' cannot be read ({model}: {problem})",
                       item.model_loc, "the path of a .ds model, relative to the serve file")
    entries = list(item.entries)
    for key, value in overrides.items():
        phase, _, name = key.partition(".")
        if phase == item.phase and name:
            entries = [e for e in entries if e.key != name] + [
                ast.DeployEntry(name, int(value) if value.isdigit() else value, None)]
    deploy = [e for e in entries if e.key in ("devices", "attn", "ffn", "moe", "micro_batches",
                                              "overlap", "a2a", "load", "redundant",
                                              "comm_cores", "place")]
    sizes = {e.key: str(e.value) for e in entries if e not in deploy}
    for name in SERVICE_SIZES[item.phase]:
        if name in sizes:
            entry = next((e for e in entries if e.key == name), None)
            raise DscError(f"{item.phase} size '{name}' is set by the service (from prompt, "
                           "output and kv_hit)", entry.loc if entry else item.loc,
                           "the other sizes of the model (batch, n_mtp, ...)")
    if "n_mtp" in sizes and (not sizes["n_mtp"].isdigit() or int(sizes["n_mtp"]) > 8):
        raise DscError(f"{item.phase} n_mtp {sizes['n_mtp']}: expected 0 to 8 draft modules",
                       item.loc)
    checked = deploy_entries(deploy, item.loc)
    dep = make_deployment(int(checked.get("devices", 1)), 1,
                          {k: v for k, v in checked.items() if k not in ("devices", "place")})
    # every key spelled out, so the model's own deploy block decides nothing here
    plan = (f"attn={dep.attn},ffn={dep.ffn},moe={dep.moe},mb={dep.micro_batches},"
            f"overlap={dep.overlap},a2a={dep.a2a},load={dep.load},redundant={dep.redundant},"
            f"comm_cores={dep.comm_cores}")
    return Phase(item.phase, str(model), dep.devices, plan, checked.get("place"), sizes)
