"""`dsc import config.json -o model.ds`: a Hugging Face config as a readable .ds model.

The model is one decode step (sizes batch, seq, ctx, overridable with --set) built from the
standard library, with every config value it uses as a named constant carrying the config's
field name. Every field of the file is either used, required at a supported value, or known to
change nothing dsc models; anything else is refused, naming the field (config.py).
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

from compiler.errors import DscError
from compiler.importer.config import HFConfig
from compiler.importer.deepseek_v4 import hyper_connected
from compiler.importer.families import IGNORED, STACKED, Family, Model, read

FAMILIES = {**STACKED,
            "deepseek_v4": Family(None, None, sliding="window", layers=hyper_connected,
                                  drafts=True)}

DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
STEP = ("size batch = 32, seq = 1, ctx = 4096      "
        "# sequences, new tokens each, tokens cached")


def import_config(path: str, name: str | None = None) -> str:
    """The .ds text of the model `path` describes; `name` is the model's name."""
    cfg = HFConfig(path)
    model_type = cfg.data.get("model_type")
    family = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        raise DscError(f"unknown model_type {_show(model_type)}", cfg.loc("model_type"),
                       expected="one of " + ", ".join(sorted(FAMILIES)))
    cfg.ignore(["model_type", *IGNORED])
    m = Model(model_type)
    _common(cfg, m, family)
    family.layers(cfg, m, family)
    cfg.check_all_used(model_type)
    return render(m, _identifier(name) if name else default_name(path, model_type))


def _common(cfg: HFConfig, m: Model, family: Family) -> None:
    for name, kind in (("hidden_size", int), ("num_hidden_layers", int), ("vocab_size", int)):
        read(cfg, m, name, kind)
    m.const("rms_norm_eps", cfg.get("rms_norm_eps", float, 1e-6))
    cfg.require("hidden_act", ("silu", None), "SwiGLU feed-forward networks")
    m.tied = cfg.get("tie_word_embeddings", bool, False)
    _sliding_window(cfg, family)
    dtype = cfg.get("torch_dtype", str, "bfloat16")
    if dtype not in DTYPES:
        raise DscError(f"unsupported torch_dtype '{dtype}'", cfg.loc("torch_dtype"),
                       expected=" or ".join(DTYPES))
    m.precision["default"] = DTYPES[dtype]
    if cfg.has("quantization_config"):
        m.precision.update(_quantization(cfg))
    if cfg.has("num_nextn_predict_layers") and not family.drafts:
        cfg.ignore(["num_nextn_predict_layers"])
        m.notes.append("the multi-token-prediction module (num_nextn_predict_layers) is not "
                       "part of the imported main model")
    if cfg.has("rope_scaling"):
        m.notes.append("rope_scaling changes only the rotary tables and the softmax scale")


def _sliding_window(cfg: HFConfig, family: Family) -> None:
    if family.sliding == "window":
        return                                              # the family's layers read it
    if family.sliding == "switch":
        cfg.require("use_sliding_window", (False, None), "full causal attention in every layer")
        cfg.ignore(["sliding_window", "max_window_layers"])   # inert while it is off
    else:
        cfg.require("sliding_window", (None,), "full causal attention in every layer")


def _quantization(cfg: HFConfig) -> dict[str, str]:
    """DeepSeek's FP8 checkpoints: e4m3 weights with 128x128 block scales, activations
    quantised per 128 values of a token (power-of-two scales with scale_fmt ue8m0)."""
    q = cfg.data["quantization_config"]
    supported = (isinstance(q, dict) and q.get("quant_method") == "fp8"
                 and q.get("fmt", "e4m3") == "e4m3"
                 and q.get("weight_block_size") == [128, 128]
                 and q.get("activation_scheme", "dynamic") == "dynamic"
                 and q.get("scale_fmt") in (None, "ue8m0")
                 and set(q) <= {"quant_method", "fmt", "weight_block_size",
                                "activation_scheme", "scale_fmt"})
    cfg.ignore(["quantization_config"])
    if not supported:
        raise DscError("unsupported quantization_config", cfg.loc("quantization_config"),
                       expected='{"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": '
                                '[128, 128], "activation_scheme": "dynamic"} (optionally '
                                '"scale_fmt": "ue8m0")')
    act_scale = "ue8m0" if q.get("scale_fmt") == "ue8m0" else "fp32"
    return {"weights": "fp8_e4m3 scaled(fp32, 128x128)",
            "activations": f"fp8_e4m3 scaled({act_scale}, 1x128)"}


# -- the .ds text ----------------------------------------------------------------------------

def render(m: Model, name: str) -> str:
    width = max(len(n) for n, _ in m.constants)
    header = (f"{name}.ds — imported by dsc from a Hugging Face config (model_type "
              f"{m.model_type}): one decode step. The constants carry the config's field names "
              "and values; batch, seq and ctx are the step (--set them: seq=4096 ctx=0 for a "
              "prefill).")
    lines = [f"# {line}" for line in textwrap.wrap(header, 94)]
    for note in m.notes:
        lines += [f"# {line}" for line in textwrap.wrap(f"Note: {note}.", 94)]
    lines.append("")
    lines += [f'import "std/{lib}.ds"' for lib in m.imports]
    for list_name, values in m.lists:
        lines += ["", _wrap(f"{list_name} = [{', '.join(map(_literal, values))}]", opener="[")]
    lines += ["", f"model {name} {{", f"  {STEP}", *(f"  {size}" for size in m.sizes), ""]
    lines += [f"  {n.ljust(width)} = {_literal(v)}" for n, v in m.constants]
    lines += ["", "  precision {"]
    lines += [f"    {role.ljust(11)} {fmt}" for role, fmt in m.precision.items()]
    lines += ["  }", "", "  input tokens: i32[batch, seq]", *(f"  {i}" for i in m.inputs),
              f"  weight embed: {m.precision['default']}[vocab_size, hidden_size]"]
    if not m.tied:
        lines.append(f"  weight head: {m.precision['default']}[hidden_size, vocab_size]")
    lines += ["", f"  {m.stream}"]
    for count, body in m.layers:
        lines.append(f"  repeat {count} as layer {{")
        lines += [_wrap(f"    {line}") for line in body]
        lines.append("  }")
    lines += [_wrap(f"  {line}") for line in m.tail]
    head = "transpose(embed)" if m.tied else "head"
    lines += [f"  output logits = {m.final} @ {head}", "}", ""]
    return "\n".join(lines)


def _wrap(line: str, width: int = 96, opener: str = "(") -> str:
    """Break a long call (or list) after commas, continuing under its opening parenthesis
    (bracket)."""
    start = line.index("=") if "=" in line else 0
    if len(line) <= width or opener not in line[start:]:
        return line
    open_at = line.index(opener, start)
    indent = " " * (open_at + 1)
    out, current = [], ""
    for piece in re.split(r"(?<=, )", line):
        if current and len(current) + len(piece) > width:
            out.append(current.rstrip())
            current = indent
        current += piece
    out.append(current)
    return "\n".join(out)


def _literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def default_name(path: str, model_type: str) -> str:
    """The config file's name, or its directory's for a file called config.json (a model
    repository's)."""
    p = Path(path).resolve()
    return _identifier(p.parent.name if p.stem == "config" else p.stem) if p.stem else model_type


def _identifier(text: str) -> str:
    ident = re.sub(r"\W", "_", text).strip("_").lower() or "model"
    return ident if not ident[0].isdigit() else f"m_{ident}"


def _show(value) -> str:
    return "(none)" if value is None else f"'{value}'"
