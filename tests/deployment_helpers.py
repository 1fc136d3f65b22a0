"""What the deployment tests share: the tiny model compiled and run once per configuration,
the target figures the hand computations use, and temporary target files."""
from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from pathlib import Path

from compiler.driver import compile_model
from isa.target_loader import BUILTIN_DIR
from runtime.interpreter import run_program

ROOT = Path(__file__).resolve().parent.parent
TINY = "examples/tiny_moe.ds"
TINY_TEXT = (ROOT / TINY).read_text()
H800_TEXT = (BUILTIN_DIR / "h800.toml").read_text()
EP = "attn=dp,moe=ep"
MB2 = "attn=dp,moe=ep,mb=2"
TP4 = "attn=tp4,moe=tp4"
E32 = {"n_experts": "32"}                       # 2 experts per device on 16 devices
# Bandwidth-dominated all-to-alls: 256 tokens of 512 per replica, one MoE layer.
BIG = {"n_experts": "32", "dim": "512", "batch": "64", "n_layers": "2"}


def assert_user_error(code: int, err: str) -> None:
    """Bad input: status 1, a message, never a traceback or an internal error."""
    assert code == 1, err
    assert "error: " in err, err
    assert "Traceback" not in err, err
    assert "internal error" not in err, err


@lru_cache(maxsize=None)
def compiled_tiny(target: str, sets: tuple = (), devices: int | None = None,
                  plan: str | None = None, measure: bool = True):
    return compile_model(TINY, target, dict(sets), devices=devices, plan=plan, measure=measure)


@lru_cache(maxsize=None)
def run_tiny(target: str, sets: tuple = (), devices: int | None = None, plan: str | None = None,
             measure: bool = True):
    compiled = compiled_tiny(target, sets, devices, plan, measure)
    return compiled, run_program(compiled.program, compiled.target)


def target_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(re.sub(r'^name = "h800"', f'name = "{name}"', text, flags=re.M))
    return str(path)


ELEMENT_BYTES = {"fp8_e4m3": 1, "bf16": 2, "fp32": 4}


def link_figures(toml_text: str) -> dict[str, float]:
    """The link figures a run uses, from the file: the sustained clock and the achievable
    share of each link's bandwidth where it gives them."""
    t = tomllib.loads(toml_text)
    clock = t.get("sustained_clock_ghz", t["clock_ghz"]) * 1e9
    nv, net = t["system"]["intra_node"], t["system"]["inter_node"]
    return {
        "clock": clock,
        "R_nv": nv["bandwidth_gbs"] * nv.get("achievable", 1.0) * 1e9 / clock,
        "R_net": net["bandwidth_gbs"] * net.get("achievable", 1.0) * 1e9 / clock,
        "L_nv": t["system"]["intra_node"]["latency_us"] * 1e-6 * clock,
        "L_net": t["system"]["inter_node"]["latency_us"] * 1e-6 * clock,
        "L_mem": t["memory"]["latency_ns"] * 1e-9 * clock,
        "R_mem": t["memory"]["bandwidth_gbs"] * 1e9 / clock,
        "L_l2": t["l2"]["latency_cycles"],
        "R_l2": t["l2"]["bytes_per_cycle"],
        "dma": t["dma"]["load_bytes_per_cycle"],
        "per_node": t["system"]["devices_per_node"],
    }


def small_memory_target(tmp_path: Path, nbytes: int, name: str = "small") -> str:
    text, n = re.subn(r"^bytes = 84900000000 .*$", f"bytes = {nbytes}", H800_TEXT, flags=re.M)
    assert n == 1
    return target_file(tmp_path, name, text)
