"""`dsc sweep FILE.toml -o OUTDIR`: run a sweep file's points, write OUTDIR/STEM.csv (and
STEM.parquet with pyarrow) and OUTDIR/STEM.html, print one line per failed point."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from compiler.cli.output import write_outputs
from compiler.errors import DscError


class SweepProgress:
    """`sweep 37/100 points, 2 failed, about 0:45 left` on stderr, only on a terminal and
    never in CI."""

    def __init__(self):
        self.enabled = sys.stderr.isatty() and not os.environ.get("CI")
        self.start = time.monotonic()

    def __call__(self, done: int, total: int, failed: int) -> None:
        if not self.enabled:
            return
        spent = time.monotonic() - self.start
        left = spent / done * (total - done) if done else 0.0
        minutes, seconds = divmod(int(left + 0.5), 60)
        sys.stderr.write(f"\rsweep {done}/{total} points" + (f", {failed} failed" if failed else "")
                         + (f", about {minutes}:{seconds:02d} left" if done < total else "")
                         + " " * 8)
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 60 + "\r")


def cmd_sweep(args) -> None:
    from compiler.sweep.engine import run_sweep
    from compiler.sweep.spec import load_sweep
    from compiler.sweep.table import csv_text, parquet_bytes, table_rows
    from runtime.report.sweep_html import sweep_html
    sweep = load_sweep(args.file)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise DscError(f"-o '{args.output}': not a directory", expected="a directory to write "
                       "the table and the page into (created if missing)")
    if not out.parent.is_dir() and not out.is_dir():
        raise DscError(f"-o '{args.output}': no such directory '{out.parent}'")
    progress = SweepProgress()
    started = time.monotonic()
    try:
        results = run_sweep(sweep, args.engine, args.workers, args.scheduler, progress)
    finally:
        progress.close()
    rows = table_rows(sweep, results)
    failed = [r for r in rows if r["status"] != "ok"]
    if len(failed) == len(rows):
        raise DscError(f"every point of {args.file} failed; the first: {failed[0]['error']}")
    stem = Path(args.file).stem
    notes = [f"Sweep file {Path(args.file).name}: {len(rows)} points over "
             f"{', '.join(sweep.axes)}."]
    out.mkdir(exist_ok=True)
    files = [(str(out / f"{stem}.csv"), csv_text(sweep, rows)),
             (str(out / f"{stem}.html"), sweep_html(stem, list(sweep.axes), list(sweep.metrics),
                                                    rows, notes))]
    write_outputs(files)
    parquet = parquet_bytes(sweep, rows)
    if parquet is not None:
        (out / f"{stem}.parquet").write_bytes(parquet)
        files.append((str(out / f"{stem}.parquet"), ""))
    for row in failed:
        print(f"point {row['point']} failed: {row['error']}", file=sys.stderr)
    print(f"{len(rows)} points" + (f" ({len(failed)} failed)" if failed else "")
          + f": wrote {', '.join(path for path, _ in files)}")
    print(f"sweep took {time.monotonic() - started:.1f} s ({args.engine} engine)",
          file=sys.stderr)


def add_parser(sub) -> None:
    from compiler.sweep.engine import ENGINES
    p = sub.add_parser("sweep", help="run a sweep file's points (axes over --set values, target "
                       "keys, plans, targets) and write a table and an HTML page of charts")
    p.add_argument("file", help="a sweep file (.toml; examples/sweeps/ has some)")
    p.add_argument("-o", "--output", default=".", metavar="OUTDIR",
                   help="directory for STEM.csv, STEM.html (and STEM.parquet with pyarrow); "
                   "created if missing (default: the current directory)")
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: a process per core (default); dask: a Dask cluster "
                   "(pip install -e '.[cluster]')")
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes (default: the machine's cores)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="with --engine dask: the address of "
                   "a running scheduler (default: a LocalCluster of --workers processes)")
    p.set_defaults(func=cmd_sweep)
