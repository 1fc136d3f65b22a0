"""Speed of the compiler and the simulator: prints figures, asserts nothing.

    python benchmarks/bench.py            # the flagship deployments, one-device runs, contract files
    python benchmarks/bench.py --quick    # contract files only

For each case: compile time (front end + lowering), simulate time, kernel launches, kernels
actually simulated (the rest reuse an identical launch's result), instructions the engine
executed and per second, and the instructions those stand for on the whole chip.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler.driver import compile_model  # noqa: E402
from runtime.interpreter import run_program  # noqa: E402

# (label, model, target, --set overrides, deployment: devices and plan, or None for one device
# as if the model fit it)
CASES = [
    ("deepseek_v3 decode EP144", "examples/deepseek_v3.ds", "h800", {},
     (144, "attn=dp,moe=ep,mb=2")),
    ("deepseek_v3 prefill EP32", "examples/deepseek_v3_prefill.ds", "h800", {},
     (32, "attn=dp,moe=ep,mb=2")),
    ("deepseek_v3 decode 1 dev", "examples/deepseek_v3.ds", "h800", {}, None),
    ("deepseek_v3 prefill 1 dev", "examples/deepseek_v3.ds", "h800",
     {"batch": "1", "seq": "4096", "ctx": "0"}, None),
    ("gemm", "examples/gemm.ds", "h800", {}, None),
    ("grouped", "examples/grouped.ds", "h800", {}, None),
]


def bench(label: str, model: str, target: str, overrides: dict, deployment) -> None:
    devices, plan = deployment or (1, None)
    t0 = time.perf_counter()
    compiled = compile_model(model, target, overrides, devices=devices, plan=plan,
                             check_fit=deployment is not None)
    t1 = time.perf_counter()
    run = run_program(compiled.program, compiled.target)
    t2 = time.perf_counter()
    unique = {id(r.result): r.result for r in run.launches}
    engine_ops = sum(r.simulated_instructions for r in unique.values())
    chip_ops = sum(r.result.executed_instructions for r in run.launches)
    print(f"{label:<27} compile {t1 - t0:6.2f} s   simulate {t2 - t1:6.2f} s   "
          f"{len(run.launches):5d} launches, {run.simulated_kernels:3d} simulated   "
          f"{engine_ops:8,d} instr ({engine_ops / max(t2 - t1, 1e-9):9,.0f}/s)   "
          f"stand for {chip_ops:.3g} on the chip   -> {run.cycles / compiled.target.clock_hz * 1e3:8.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="contract files only")
    args = parser.parse_args()
    for label, model, target, overrides, deployment in CASES:
        if args.quick and "deepseek_v3" in model:
            continue
        bench(label, model, target, overrides, deployment)


if __name__ == "__main__":
    main()
