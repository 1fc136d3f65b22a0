"""The HTML page of `dsc sweep`: the charts that fit the sweep's axes, then the table.

- a line chart per axis and metric: the metric against the axis's values, one line for each
  combination of the other axes' values;
- with exactly two axes, a heatmap per metric;
- with a numeric target key among the axes (a cost: bandwidth, clock, FLOPs) and the metric
  tokens_per_s_per_device, the Pareto front: the points no other beats on both (more tokens/s
  per device for no more of the cost).

Every coordinate is computed here; sweep.html.j2 only lays them out (inline SVG, no script).
"""
from __future__ import annotations

import math

from runtime.report.html_format import ENV, sig

W, H = 460, 260                        # a chart's plot area, in pixels
LEFT, TOP, BOTTOM, RIGHT = 64, 24, 40, 150
PALETTE = ("#4a6fa5", "#d1495b", "#edae49", "#66a182", "#8d6a9f", "#2e4057", "#00798c",
           "#e07a5f", "#3d405b", "#81b29a")
NUMERIC = (int, float)


def sweep_html(title: str, axes: list[str], metrics: list[str], rows: list[dict],
               notes: list[str]) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    numeric = [m for m in metrics if ok and all(isinstance(r[m], NUMERIC) for r in ok)]
    varied = [a for a in axes if len({_key(r[a]) for r in rows}) > 1]
    lines = [_line_chart(axis, metric, varied, ok) for metric in numeric for axis in varied]
    heat = [_heatmap(varied[0], varied[1], m, ok) for m in numeric] if len(varied) == 2 else []
    pareto = _pareto(varied, ok) if "tokens_per_s_per_device" in numeric else None
    return ENV.get_template("sweep.html.j2").render(
        title=title, notes=notes, failed=len(rows) - len(ok), total=len(rows),
        lines=[c for c in lines if c], heatmaps=[h for h in heat if h], pareto=pareto,
        columns=list(rows[0]) if rows else [], rows=[_row_text(r) for r in rows])


def _key(value):
    return (0, value, "") if isinstance(value, NUMERIC) else (1, 0, str(value))


def _label(value) -> str:
    return sig(value) if isinstance(value, float) else str(value)


def _row_text(row: dict) -> dict:
    return {k: "" if v is None else _label(v) for k, v in row.items()}


def _scale(lo: float, hi: float, size: float, flip: bool = False):
    span = (hi - lo) or abs(hi) or 1.0
    lo, hi = (lo - span * 0.05, hi + span * 0.05) if hi == lo else (lo, hi)
    span = hi - lo
    return lambda v: (size - (v - lo) / span * size) if flip else (v - lo) / span * size


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if step * m >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _x_positions(values: list) -> tuple[dict, list[tuple[float, str]]]:
    """Each axis value's x, numeric values to scale, others evenly spaced; and the ticks."""
    distinct = sorted({_key(v): v for v in values}.items())
    if all(isinstance(v, NUMERIC) for _, v in distinct):
        nums = [v for _, v in distinct]
        sx = _scale(min(nums), max(nums), W)
        return ({_key(v): sx(v) for v in nums},
                [(sx(v), _label(v)) for v in nums] if len(nums) <= 8 else
                [(sx(t), _label(t)) for t in _ticks(min(nums), max(nums))])
    step = W / max(len(distinct) - 1, 1)
    return ({k: i * step for i, (k, _) in enumerate(distinct)},
            [(i * step, _label(v)) for i, (_, v) in enumerate(distinct)])


def _y_axis(values: list[float]) -> tuple:
    lo, hi = min(0.0, min(values)), max(values)
    ticks = _ticks(lo, hi) if hi > lo else [lo]
    top = max(hi, ticks[-1])
    sy = _scale(lo, top, H, flip=True)
    return sy, [(sy(t), _label(float(t))) for t in ticks]


def _line_chart(axis: str, metric: str, axes: list[str], rows: list[dict]) -> dict | None:
    if not rows:
        return None
    others = [a for a in axes if a != axis]
    xs, xticks = _x_positions([r[axis] for r in rows])
    sy, yticks = _y_axis([r[metric] for r in rows])
    series: dict[tuple, list] = {}
    for r in rows:
        series.setdefault(tuple(_label(r[a]) for a in others), []).append(r)
    lines = []
    for i, (name, members) in enumerate(sorted(series.items())):
        members.sort(key=lambda r: _key(r[axis]))
        points = [(round(xs[_key(r[axis])], 1), round(sy(r[metric]), 1)) for r in members]
        lines.append({"color": PALETTE[i % len(PALETTE)],
                      "label": ", ".join(f"{a}={v}" for a, v in zip(others, name)) or metric,
                      "path": " ".join(f"{x},{y}" for x, y in points), "points": points})
    return {"title": f"{metric} by {axis}", "x_label": axis, "y_label": metric,
            "xticks": xticks, "yticks": yticks, "lines": lines, **_frame()}


def _frame() -> dict:
    return {"width": LEFT + W + RIGHT, "height": TOP + H + BOTTOM, "left": LEFT, "top": TOP,
            "w": W, "h": H}


def _heatmap(rows_axis: str, cols_axis: str, metric: str, rows: list[dict]) -> dict | None:
    row_keys = sorted({_key(r[rows_axis]): r[rows_axis] for r in rows}.items())
    col_keys = sorted({_key(r[cols_axis]): r[cols_axis] for r in rows}.items())
    cell = {(_key(r[rows_axis]), _key(r[cols_axis])): r[metric] for r in rows}
    if not cell:
        return None
    lo, hi = min(cell.values()), max(cell.values())
    cw, ch = min(90, W / len(col_keys)), 26
    cells = []
    for i, (rk, _) in enumerate(row_keys):
        for j, (ck, _) in enumerate(col_keys):
            if (rk, ck) in cell:
                v = cell[(rk, ck)]
                t = (v - lo) / (hi - lo) if hi > lo else 0.5
                cells.append({"x": round(j * cw, 1), "y": i * ch, "fill": _blend(t),
                              "text": _label(v), "dark": t > 0.6})
    return {"title": f"{metric}: {rows_axis} by {cols_axis}", "cells": cells, "cw": round(cw, 1),
            "ch": ch, "rows": [(i * ch + ch / 2, _label(v)) for i, (_, v) in enumerate(row_keys)],
            "cols": [(j * cw + cw / 2, _label(v)) for j, (_, v) in enumerate(col_keys)],
            "row_axis": rows_axis, "col_axis": cols_axis, "left": 150, "top": 40,
            "width": 150 + cw * len(col_keys) + 20, "height": 40 + ch * len(row_keys) + 10,
            "low": _label(lo), "high": _label(hi)}


def _blend(t: float) -> str:
    """Light to dark blue."""
    a, b = (234, 241, 251), (31, 64, 122)
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b))


def _pareto(axes: list[str], rows: list[dict]) -> dict | None:
    """Tokens/s per device against the first numeric target-key axis: the front of points no
    other point beats with as much throughput for less of the cost."""
    cost = next((a for a in axes if a.startswith("target.")
                 and all(isinstance(r[a], NUMERIC) for r in rows)), None)
    if cost is None or not rows:
        return None
    metric = "tokens_per_s_per_device"
    pts = sorted(rows, key=lambda r: (r[cost], -r[metric]))
    front, best = [], -math.inf
    for r in pts:
        if r[metric] > best:
            front.append(r)
            best = r[metric]
    costs = [r[cost] for r in rows]
    sx = _scale(min(costs), max(costs), W)
    sy, yticks = _y_axis([r[metric] for r in rows])
    on_front = {id(r) for r in front}
    dots = [{"x": round(sx(r[cost]), 1), "y": round(sy(r[metric]), 1), "front": id(r) in on_front,
             "tip": ", ".join(f"{a}={_label(r[a])}" for a in axes) + f": {_label(r[metric])}"}
            for r in rows]
    return {"title": f"Pareto front: {metric} against {cost}", "x_label": cost,
            "y_label": metric, "dots": dots, "yticks": yticks,
            "xticks": [(sx(t), _label(float(t))) for t in _ticks(min(costs), max(costs))],
            "path": " ".join(f"{round(sx(r[cost]), 1)},{round(sy(r[metric]), 1)}" for r in front),
            "front": [", ".join(f"{a}={_label(r[a])}" for a in axes) for r in front],
            **_frame()}
