"""Numerical error of examples/tiny_moe.ds per weight format: prints a Markdown table.

    python benchmarks/functional_table.py                 # h800, seeds 0-4
    python benchmarks/functional_table.py --target b200 --seeds 3

Each row compiles the model with `--set weights=FORMAT` (the first row keeps the model's own
policy), runs `dsc run --functional` on random inputs of several seeds and reports the
relative error of `logits` against the float32 reference: the median over the seeds, and the
range. The tiny model is random and untrained, and a flipped routing decision moves a token
far more than rounding does, so that error is large and varies with the seed; two columns
separate the effects (docs/functional.md): the error of `layer.1.h`, the residual stream
after the dense layer and the first MoE layer's attention, before any routing decision, and
the top-k expert choices that equal the reference's.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler.driver import compile_model  # noqa: E402
from compiler.cli.functional import check_numerics  # noqa: E402

MODEL = "examples/tiny_moe.ds"
BEFORE_ROUTING = "layer.1.h"
ROWS = [
    ("default policy", None),
    ("mxfp8", "mxfp8"),
    ("mxfp6", "mxfp6"),
    ("mxfp4", "mxfp4"),
    ("nvfp4", "nvfp4"),
    ("fp8 ue8m0 128x128", "fp8_e4m3 scaled(ue8m0, 128x128)"),
]


def measure(weights: str | None, target: str, seeds: int) -> dict:
    root = Path(__file__).resolve().parent.parent
    compiled = compile_model(str(root / MODEL), target, {"weights": weights} if weights else {},
                             unroll=True)
    results = [check_numerics(compiled, seed=s, probes=(BEFORE_ROUTING,)) for s in range(seeds)]
    errors = [r.outputs[0].rel_error for r in results]
    early = [r.probes[0].rel_error for r in results]
    equal = sum(r.indices[0] for r in results)
    total = sum(r.indices[1] for r in results)
    first = results[0]
    return {"errors": errors, "early": early, "stored": next(iter(first.formats["weights"])),
            "indices": f"{equal}/{total}", "accumulation": first.accumulation,
            "warnings": sorted({w for r in results for w in r.warnings})}


def _accumulation(modes: dict[str, str]) -> str:
    """`fp8_e4m3: promote, every 128 of K` from the descriptions of run_functional."""
    parts = []
    for fmt, how in modes.items():
        every = re.search(r"every (\S+) of K", how)
        mode = how.split(":")[0]
        if mode != "exact":
            parts.append(f"{fmt}: {mode}" + (f", every {every.group(1)} of K" if every else ""))
    return "; ".join(parts) or "exact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="h800")
    parser.add_argument("--seeds", type=int, default=5, help="random inputs per row (seeds 0..N-1)")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"Relative error (||isa - ref|| / ||ref||) of `{MODEL}` on {args.target}, "
          f"seeds 0-{args.seeds - 1}:\n")
    print(f"| weights | stored as | `logits` (median) | `logits` range | `{BEFORE_ROUTING}` "
          "(median) | top-k choices equal | low-precision MMA accumulation |")
    print("|---|---|---|---|---|---|---|")
    warnings = []
    for label, weights in ROWS:
        m = measure(weights, args.target, args.seeds)
        e = m["errors"]
        print(f"| {label} | `{m['stored']}` | {statistics.median(e):.3f} | "
              f"{min(e):.3f} - {max(e):.3f} | {statistics.median(m['early']):.3f} | "
              f"{m['indices']} | {_accumulation(m['accumulation'])} |")
        warnings += [f"{label}: {w}" for w in m["warnings"]]
    if warnings:
        print()
    for w in warnings:
        print(f"- warning ({w})")
    print(f"\n({time.perf_counter() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
