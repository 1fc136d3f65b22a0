"""A sweep's results as a tidy table: one row per point, one column per axis and per metric,
then the point's status and error. Written as CSV, and as Parquet when pyarrow is importable
(it is not a dependency: a user who has it gets the typed file too)."""
from __future__ import annotations

import csv
import io

from compiler.sweep.spec import Sweep


def columns(sweep: Sweep) -> list[str]:
    return ["point", *sweep.axes, *sweep.metrics, "status", "error"]


def table_rows(sweep: Sweep, results: list[dict]) -> list[dict]:
    rows = []
    for index, (values, result) in enumerate(zip(sweep.values, results)):
        row = {"point": index, **values}
        ok = result["status"] == "ok"
        row.update({m: result.get(m) if ok else None for m in sweep.metrics})
        row.update(status=result["status"], error=result["error"])
        rows.append(row)
    return rows


def csv_text(sweep: Sweep, rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns(sweep), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def parquet_bytes(sweep: Sweep, rows: list[dict]) -> bytes | None:
    """The table as Parquet, or None without pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None
    names = columns(sweep)
    table = pa.table({n: [_cell(r.get(n)) for r in rows] for n in names})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _cell(value):
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
