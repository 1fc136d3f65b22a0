"""Determinism across processes: the same inputs give byte-identical listings, JSON reports,
traces and HTML pages in two processes with different hash seeds (PYTHONHASHSEED changes the
iteration order of every set of strings, and object ids differ between processes), and in a
third that reads the first one's kernel simulations from the disk cache.

The cases cover much of dsc: a deployed MoE model (expert parallelism, two micro-batches,
link streams), a tensor-parallel plan, one FP8 GEMM with its functional check, a dual-die
chip with work placed per die, and split cube/vector cores with a fixed pipe.
"""
from __future__ import annotations

import os
import subprocess
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "moe_ep": ("examples/tiny_moe.ds", "--target", "h800", "--devices", "8",
               "--plan", "attn=dp,moe=ep,mb=2"),
    "moe_tp": ("examples/tiny_moe.ds", "--target", "h800", "--devices", "4",
               "--plan", "attn=tp2,moe=tp2"),
    "gemm": ("examples/gemm.ds", "--target", "h800", "--set", "M=128", "--set", "N=512",
             "--set", "K=512"),
    "dual_die": ("examples/tiny_moe.ds", "--target", "b200", "--die-mode", "numa"),
    "split_cores": ("examples/tiny_moe.ds", "--target", "ascend910b"),
}
# Each process compiles (the listing) and runs (JSON, trace, HTML) every case in turn.
SCRIPT = """
import json
import sys
from compiler.cli.main import main
out, cases = sys.argv[1], json.loads(sys.argv[2])
for name, argv in cases.items():
    assert main(["compile", *argv, "-o", f"{out}/{name}.lst"]) == 0, name
    extra = ["--functional"] if name == "gemm" else []
    assert main(["run", *argv, *extra, "--json", f"{out}/{name}.json",
                 "--trace", f"{out}/{name}.trace.json", "--html", f"{out}/{name}.html"]) == 0, name
"""


def _outputs(tmp_path: Path, name: str, hash_seed: str, cache: Path) -> dict[str, bytes]:
    out = tmp_path / name
    out.mkdir()
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "DSC_CACHE": str(cache)}
    env.pop("DSC_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out), json.dumps(CASES)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_outputs_are_byte_identical_across_processes_and_hash_seeds(tmp_path):
    first = _outputs(tmp_path, "seed0", "0", tmp_path / "cache0")
    assert len(first) == 4 * len(CASES)
    second = _outputs(tmp_path, "seed12345", "12345", tmp_path / "cache12345")
    cached = _outputs(tmp_path, "warm", "99", tmp_path / "cache0")
    for name, data in first.items():
        assert second[name] == data, f"{name} differs between hash seeds 0 and 12345"
        assert cached[name] == data, f"{name} differs when read from the simulation cache"
