"""Running a sweep's points: locally on a process pool, or on a Dask cluster.

Points are dealt in chunks of neighbours that share a compile group (the same model, sizes,
target file, deployment: compiler/sweep/spec.Point.compile_group), so a worker compiles a
front end once and reuses lowered programs across its chunk (compiler/compile_memo.py); each
worker process keeps one API session, and the simulation caches (runtime/sim_cache.py), for
all the chunks it runs. A point that fails is a row with its error; the others go on.

Engines: "local" (default) runs `workers` processes (the machine's cores; 1 runs in this
process); "dask" submits the same chunks to a dask.distributed cluster: the scheduler at
`scheduler`, or a LocalCluster of `workers` processes when none is given. Workers of a
remote cluster need dsc installed (`pip install -e '.[cluster]'`).
"""
from __future__ import annotations

import math
import os
from typing import Callable, Iterable

from compiler.errors import DscError
from compiler.sweep.spec import Point, Sweep

ENGINES = ("local", "dask")
_SESSION = None                 # this worker process's API session


def run_point(point: Point) -> dict:
    """One point's figures (every metric of spec.METRICS), or its error."""
    global _SESSION
    from compiler import api
    if _SESSION is None:
        _SESSION = api.Session()
    try:
        report = _SESSION.run(point.model, point.target, **point.options())
    except Exception as err:          # noqa: BLE001 - recorded: the sweep goes on
        return {"status": "error", "error": _message(err)}
    row = report.row()
    seconds = row["time_s"]
    row["tflops"] = row["flops"] / seconds / 1e12 / row["devices"] if seconds else 0.0
    row["bytes_offchip"] = report.to_dict()["bytes_offchip"]
    row["bound"] = _dominant_bound(report)
    return {"status": "ok", "error": "", **row}


def run_chunk(points: list[Point]) -> list[dict]:
    return [run_point(p) for p in points]


def _message(err: Exception) -> str:
    from isa.errors import ListingError
    from isa.formats import FormatError
    from isa.target_loader import TargetError
    from runtime.errors import SimulationError
    known = (DscError, TargetError, FormatError, ListingError, SimulationError)
    text = str(err) if isinstance(err, known) else f"internal error: {type(err).__name__}: {err}"
    return " ".join(text.split())               # one line, for a table cell


def _dominant_bound(report) -> str:
    """The bound that held the compute stream longest."""
    time_by_bound: dict[str, float] = {}
    for k in report.kernels:
        if k.stream == "compute":
            time_by_bound[k.bound] = time_by_bound.get(k.bound, 0.0) + k.time_us
    return max(sorted(time_by_bound), key=time_by_bound.get) if time_by_bound else ""


def chunks(points: Iterable[tuple[int, Point]], workers: int) -> list[list[tuple[int, Point]]]:
    """Neighbours of one compile group together, about four chunks per worker (so a slow
    chunk does not leave the others idle), no chunk mixing groups."""
    groups: dict[tuple, list] = {}
    for index, point in points:
        groups.setdefault(point.compile_group(), []).append((index, point))
    total = sum(len(g) for g in groups.values())
    size = max(1, math.ceil(total / (4 * workers)))
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]


def run_sweep(sweep: Sweep, engine: str = "local", workers: int | None = None,
              scheduler: str | None = None,
              progress: Callable[[int, int, int], None] | None = None) -> list[dict]:
    """Every point's row, in the sweep's order; `progress(done, total, failed)` as chunks
    finish."""
    if engine not in ENGINES:
        raise DscError(f"unknown engine '{engine}'", expected=", ".join(ENGINES))
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise DscError(f"--workers {workers}: expected at least 1")
    work = chunks(enumerate(sweep.points), workers)
    rows: list[dict | None] = [None] * len(sweep.points)
    failed = 0

    def collect(chunk, results) -> None:
        nonlocal failed
        for (index, _), result in zip(chunk, results):
            rows[index] = result
            failed += result["status"] != "ok"
        if progress:
            progress(sum(r is not None for r in rows), len(rows), failed)
    runner = _run_dask if engine == "dask" else _run_local
    runner(work, workers, scheduler, collect)
    return rows


def _run_local(work, workers, scheduler, collect) -> None:
    if scheduler:
        raise DscError("--scheduler names a Dask scheduler: it goes with --engine dask")
    if workers == 1 or len(work) == 1:
        for chunk in work:
            collect(chunk, run_chunk([p for _, p in chunk]))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(work)), mp_context=context) as pool:
        pending = {pool.submit(run_chunk, [p for _, p in chunk]): chunk for chunk in work}
        for future in as_completed(pending):
            collect(pending[future], future.result())


def _run_dask(work, workers, scheduler, collect) -> None:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise DscError("--engine dask needs Dask's distributed scheduler, which is not "
                       "installed", expected="pip install -e '.[cluster]' (or --engine local)") \
            from None
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    try:
        with Client(scheduler or cluster) as client:
            futures = client.map(run_chunk, [[p for _, p in chunk] for chunk in work],
                                 pure=False)
            index = {f.key: chunk for f, chunk in zip(futures, work)}
            for future in as_completed(futures):
                collect(index[future.key], future.result())
    finally:
        if cluster is not None:
            cluster.close()
