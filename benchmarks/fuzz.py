"""Fuzz dsc: generate and mutate every kind of input a user gives it and classify each run.

    python benchmarks/fuzz.py --cases 100000 --seed 1 --out fuzz-findings

Inputs are .ds models, target files, listings and command-line values (benchmarks/fuzzing/
cases.py says how each is made). Every case runs through dsc's own entry point
(compiler.cli.main.main) in a pool of forked workers, with a time limit, and is classified as
success, error (exit 1, one clear message), usage (exit 2) or defect (a traceback, a hang, a
Python warning or Python's exception text as the message, a .ds error without file:line:col,
an output left behind or half written, NaN/infinite/negative figures or zero time in a
report). The summary gives counts per class and per input kind, and each distinct defect
signature with one reproducer saved under --out. Exit status: 0 when no defect was found.

`--replay N` reruns case N of the seed in this process and prints what dsc said.
docs/fuzzing.md describes the harness.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")           # one core per worker
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.fuzzing.cases import KIND_WEIGHTS, Case, make_case  # noqa: E402
from benchmarks.fuzzing.classify import Outcome, prepare, run_case  # noqa: E402

CLASSES = ("success", "error", "usage", "known", "defect")


class Campaign:
    """Counts per class and kind, and the first case of each defect signature."""

    def __init__(self, seed: int, out: Path | None, kinds):
        self.seed, self.out, self.kinds = seed, out, kinds
        self.by_class: Counter = Counter()
        self.by_kind: dict[str, Counter] = defaultdict(Counter)
        self.signatures: dict[str, list] = {}       # signature -> [count, index, outcome, dir]
        self.slow: list[tuple[float, int, str]] = []
        self.cpu = 0.0                               # CPU seconds the cases took

    def record(self, index: int, outcome: Outcome) -> None:
        if not outcome.kind:                     # a hang or a dead worker: the parent's record
            case = make_case(self.seed, index, self.kinds)
            outcome.kind, outcome.how = case.kind, case.how
        self.cpu += outcome.seconds
        self.by_class[outcome.cls] += 1
        self.by_kind[outcome.kind][outcome.cls] += 1
        if outcome.seconds > self.slow[-1][0] if len(self.slow) == 5 else True:
            self.slow = sorted(self.slow + [(outcome.seconds, index, outcome.how)],
                               reverse=True)[:5]
        if outcome.cls not in ("defect", "known"):
            return
        entry = self.signatures.get(outcome.signature)
        if entry:
            entry[0] += 1
            return
        case = make_case(self.seed, index, self.kinds)
        folder = self.save(case, outcome, len(self.signatures)) if self.out else None
        self.signatures[outcome.signature] = [1, index, outcome, folder]

    def save(self, case: Case, outcome: Outcome, number: int) -> Path:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", outcome.signature).strip("-")[:60]
        folder = self.out / f"{number:03d}-{slug}"
        prepare(case, folder)
        (folder / "command").write_text(case.command() + "\n")
        (folder / "outcome.txt").write_text(
            f"{outcome.cls}: {outcome.signature}\ncase {case.index} of seed {self.seed} "
            f"({case.kind}, {case.how})\n\n{outcome.detail}\n")
        return folder

    def summary(self, cases: int, seconds: float) -> str:
        lines = [f"{cases} cases in {seconds:.0f} s of wall time ({cases / max(seconds, 1e-9):.1f}"
                 f"/s), {self.cpu:.0f} s of CPU in the cases "
                 f"({1000 * self.cpu / max(cases, 1):.1f} ms each), seed {self.seed}", ""]
        lines.append(f"{'kind':<10}" + "".join(f"{c:>9}" for c in CLASSES) + f"{'total':>9}")
        for kind in sorted(self.by_kind):
            row = self.by_kind[kind]
            lines.append(f"{kind:<10}" + "".join(f"{row[c]:>9}" for c in CLASSES)
                         + f"{sum(row.values()):>9}")
        lines.append(f"{'all':<10}" + "".join(f"{self.by_class[c]:>9}" for c in CLASSES)
                     + f"{cases:>9}")
        for cls in ("defect", "known"):
            sigs = [(s, e) for s, e in self.signatures.items() if e[2].cls == cls]
            if not sigs:
                continue
            lines += ["", f"{len(sigs)} {cls} signature(s):"]
            for sig, (count, index, outcome, folder) in sorted(sigs, key=lambda x: -x[1][0]):
                where = f" -> {folder}" if folder else ""
                lines.append(f"  {count:>6}  {sig}  (case {index}{where})")
                if outcome.detail:
                    lines.append(f"          {outcome.detail.splitlines()[0][:150]}")
        lines += ["", "slowest (CPU): " + ", ".join(f"case {i} ({how}) {s:.1f} s"
                                                    for s, i, how in self.slow)]
        return "\n".join(lines)


def replay(seed: int, index: int, kinds) -> int:
    case = make_case(seed, index, kinds)
    folder = Path(tempfile.mkdtemp(prefix="dsc-fuzz-"))
    print(f"case {index} ({case.kind}, {case.how}): {case.command()}")
    for name, content in case.files.items():
        text = content if isinstance(content, str) else repr(content[:200])
        print(f"--- {name}\n{text[:4000]}")

    outcome = run_case(case, folder)
    os.chdir(ROOT)
    print(f"--- {outcome.cls} {outcome.signature} ({outcome.seconds:.2f} s)\n{outcome.detail}")

    shutil.rmtree(folder, ignore_errors=True)
    return 0 if outcome.cls != "defect" else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first case number")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="CPU seconds per case (or six times that of wall-clock time)")
    parser.add_argument("--memory-gb", type=float, default=3.0,
                        help="address-space cap per worker")
    parser.add_argument("--minutes", type=float, help="stop starting cases after this much "
                        "wall time (the summary covers the cases run)")
    parser.add_argument("--kinds", default="", help=f"comma-separated subset of "
                        f"{','.join(KIND_WEIGHTS)}")
    parser.add_argument("--out", type=Path, help="save one reproducer per defect signature "
                        "here (the directory is emptied first)")
    parser.add_argument("--replay", type=int, metavar="N", help="run case N here and show it")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k) or None
    if args.replay is not None:
        return replay(args.seed, args.replay, kinds)
    from benchmarks.fuzzing import seeds
    # Kernel simulations are kept in each worker's memory only: writing each to disk costs
    # more than the hits it would give after a worker is replaced.
    os.environ["DSC_CACHE"] = "off"
    seeds.share_across_cases()
    seeds.warm()                                 # built once, shared by the forked workers
    import runtime.functional, runtime.report.html, runtime.report.trace  # noqa: E401,F401
    if args.out:
        shutil.rmtree(args.out, ignore_errors=True)
        args.out.mkdir(parents=True)
    from benchmarks.fuzzing.pool import Pool
    campaign = Campaign(args.seed, args.out.resolve() if args.out else None, kinds)
    start = time.monotonic()
    last = [start]
    with tempfile.TemporaryDirectory(prefix="dsc-fuzz-") as folder:
        pool = Pool(args.workers, args.seed, args.timeout, Path(folder),
                    int(args.memory_gb * 2**30), kinds)

        def progress(index, outcome):
            campaign.record(index, outcome)
            now = time.monotonic()
            if now - last[0] > 30:
                last[0] = now
                done = sum(campaign.by_class.values())
                print(f"  {done}/{args.cases} cases, {now - start:.0f} s, "
                      + ", ".join(f"{c} {campaign.by_class[c]}" for c in CLASSES),
                      file=sys.stderr, flush=True)
        # Ctrl-C, like --minutes, lets the busy cases finish and summarises what ran.
        interrupted = []
        signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
        deadline = start + 60 * args.minutes if args.minutes else math.inf
        try:
            pool.run(range(args.start, args.start + args.cases), progress,
                     stop=lambda: bool(interrupted) or time.monotonic() > deadline)
        finally:
            pool.close()
            os.chdir(ROOT)
    done = sum(campaign.by_class.values())
    print(campaign.summary(done, time.monotonic() - start)
          + (f"\nstopped after {done} of {args.cases} cases" if done < args.cases else ""))
    return 1 if campaign.by_class["defect"] else 0


if __name__ == "__main__":
    sys.exit(main())
