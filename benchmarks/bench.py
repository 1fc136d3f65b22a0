"""Speed of the compiler and the simulator: prints figures, asserts nothing.

    python benchmarks/bench.py            # everything below
    python benchmarks/bench.py --quick    # the contract files' stages and the GEMM figures

1. Per stage, each case in a fresh process as `dsc run` does it: start-up (interpreter and
   imports), target, front end, each graph pass, capacity, lowering, each program pass,
   simulation and the text report; then the wall time of the `dsc run` command itself.
2. The layer curve: the flagship deployment at n_layers 4 ... 244 (with --ignore-capacity:
   past 61 layers the KV cache no longer fits), and the device curve of its symmetric plan.
3. Refusal: how long a model that does not fit takes to be refused with its suggestion.
4. One GEMM shape: as a command, and inside one process through the API (first call, then
   the best of ten).
5. A 100-point sweep of the flagship over target timing keys (memory bandwidth x network
   bandwidth, 10 x 10) as `dsc sweep`, with an empty simulation cache.

Times are wall-clock seconds on this machine; CPU seconds of the process are shown where a
busy machine makes the wall time noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAGSHIP = ("examples/deepseek_v3.ds", "h800", ["--devices", "144", "--plan", "attn=dp,moe=ep,mb=2"])

# (label, model, target, dsc run options)
CASES = [
    ("deepseek_v3 decode EP144", *FLAGSHIP),
    ("deepseek_v3 prefill EP32", "examples/deepseek_v3_prefill.ds", "h800",
     ["--devices", "32", "--plan", "attn=dp,moe=ep,mb=2"]),
    ("deepseek_v3 decode 1 dev", "examples/deepseek_v3.ds", "h800", ["--ignore-capacity"]),
    ("gemm", "examples/gemm.ds", "h800", []),
    ("grouped", "examples/grouped.ds", "h800", []),
]


def child(argv: list[str]) -> None:
    """One `dsc run`, stage by stage; prints {"stages": [[name, seconds], ...]} on stdout."""
    start = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    import compiler.cli.main as cli                       # what the dsc command loads first
    from compiler.driver import compile_model
    from runtime.interpreter import run_program
    from runtime.report.text import summary_text
    stages, last = [["imports", time.perf_counter() - start]], [time.perf_counter()]

    def lap(stage: str) -> None:
        now = time.perf_counter()
        stages.append([stage, now - last[0]])
        last[0] = now
    args = cli.build_parser().parse_args(["run"] + argv)
    compiled = compile_model(args.model, args.target, cli._sets(args.set), clock=lap,
                             **cli._deployment(args))
    run = run_program(compiled.program, compiled.target)
    lap("simulate")
    summary_text(run)
    lap("report")
    print(json.dumps({"stages": stages}))


def _timed(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds of the child, result)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done


def dsc(model: str, target: str, options: list[str]) -> list[str]:
    return [sys.executable, "-m", "compiler.cli.main", "run", model, "--target", target] + options


def stage_table(cases) -> None:
    print("1. time per stage (s), one fresh process per case; start-up = interpreter + imports")
    for label, model, target, options in cases:
        wall, cpu, done = _timed([sys.executable, __file__, "--child", "--", model,
                                  "--target", target] + options)
        if done.returncode:
            print(f"{label}: failed\n{done.stderr}")
            continue
        stages = json.loads(done.stdout.splitlines()[-1])["stages"]
        measured = sum(s for name, s in stages if name != "imports")
        stages[0] = ["start-up", wall - measured]
        cmd_wall, cmd_cpu, _ = _timed(dsc(model, target, options))
        print(f"  {label:<26} total {wall:5.2f} (cpu {cpu:5.2f})   as a command {cmd_wall:5.2f} "
              f"(cpu {cmd_cpu:5.2f})")
        print("    " + "  ".join(f"{name} {s:.3f}" for name, s in stages))


def layer_curve() -> None:
    model, target, options = FLAGSHIP
    print("2. the flagship deployment by size (s): wall (cpu) of `dsc run ... --ignore-capacity`")
    for n in (4, 8, 16, 32, 61, 122, 244):
        wall, cpu, done = _timed(dsc(model, target, options + ["--ignore-capacity", "--set",
                                                               f"n_layers={n}"]))
        print(f"  n_layers {n:>3}: {wall:6.2f} ({cpu:6.2f})" + ("  FAILED" if done.returncode else ""))
    for devices in (36, 72, 144, 256):       # expert parallelism: at most one device per expert
        wall, cpu, done = _timed(dsc(model, target, ["--devices", str(devices), "--plan",
                                                     "attn=dp,moe=ep,mb=2", "--ignore-capacity"]))
        print(f"  devices {devices:>4}: {wall:6.2f} ({cpu:6.2f})" + ("  FAILED" if done.returncode else ""))


def refusal() -> None:
    print("3. refusing a model that does not fit (s): wall (cpu), and the message's first line")
    for label, options in (("one device, 244 layers", ["--set", "n_layers=244"]),
                           ("144 devices, 244 layers", FLAGSHIP[2] + ["--set", "n_layers=244"])):
        wall, cpu, done = _timed(dsc(FLAGSHIP[0], FLAGSHIP[1], options))
        first = (done.stderr.strip().splitlines() or [""])[-1][:110]
        print(f"  {label:<24} {wall:6.2f} ({cpu:6.2f})  exit {done.returncode}: {first}")


def gemm() -> None:
    print("4. one GEMM shape (examples/gemm.ds on h800)")
    wall, cpu, _ = _timed(dsc("examples/gemm.ds", "h800", []))
    print(f"  as a command: {wall:.3f} s (cpu {cpu:.3f})")
    sys.path.insert(0, str(ROOT))
    from compiler import api
    t0 = time.perf_counter()
    api.run(str(ROOT / "examples/gemm.ds"), "h800")
    print(f"  through the API in one process, first call: {(time.perf_counter() - t0) * 1e3:.1f} ms")
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        api.run(str(ROOT / "examples/gemm.ds"), "h800")
        times.append(time.perf_counter() - t0)
    print(f"  through the API, after warm-up: best {min(times) * 1e3:.1f} ms, "
          f"median {sorted(times)[5] * 1e3:.1f} ms of 10")


SWEEP = f"""
model = "{ROOT / 'examples/deepseek_v3.ds'}"
target = "h800"
devices = 144
plan = "attn=dp,moe=ep,mb=2"
metrics = ["tokens_per_s_per_device", "time_s", "exposed_comm_us", "bound"]

[axes]
"target.memory.bandwidth_gbs" = [2000, 2500, 3000, 3350, 4000, 4800, 5500, 6500, 8000, 10000]
"target.system.inter_node.bandwidth_gbs" = [25, 50, 75, 100, 150, 200, 300, 400, 600, 800]
"""


def sweep() -> None:
    import tempfile
    print("5. a 100-point flagship sweep (memory x network bandwidth), `dsc sweep`, cold cache")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "timing.toml"
        path.write_text(SWEEP)
        env = {**os.environ, "DSC_CACHE": str(Path(tmp) / "cache")}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "compiler.cli.main", "sweep", str(path),
                               "-o", tmp], cwd=ROOT, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result = done.stdout.strip().splitlines()[-1:] or done.stderr.strip().splitlines()[-1:]
        print(f"  {wall:.1f} s wall (cpu {cpu:.1f} s over {os.cpu_count()} workers): "
              f"{result[0][:100] if result else ''}")


def main() -> None:
    if "--child" in sys.argv:
        child(sys.argv[sys.argv.index("--") + 1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="contract files only")
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.quick:
        stage_table([c for c in CASES if "deepseek" not in c[1]])
        gemm()
        return
    stage_table(CASES)
    layer_curve()
    refusal()
    gemm()
    sweep()


if __name__ == "__main__":
    main()
