"""A line chart as inline SVG: points joined by a line, both axes from zero with round ticks.
No plotting library: the reports stay one self-contained file."""
from __future__ import annotations

import math
from html import escape

WIDTH, HEIGHT = 560, 320
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 20, 50            # margins for the tick labels and titles


def nice_step(span: float, ticks: int = 5) -> float:
    """A tick step of 1, 2 or 5 times a power of ten giving about `ticks` ticks over `span`."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _label(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.3g}"


def line_chart(points: list[tuple[float, float]], x_title: str, y_title: str) -> str:
    """An <svg> element drawing `points` (x, y), in order, with axes, ticks and titles."""
    finite = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    x_step = nice_step(max((x for x, _ in finite), default=1.0))
    y_step = nice_step(max((y for _, y in finite), default=1.0))
    x_max = x_step * math.ceil(max((x for x, _ in finite), default=1.0) / x_step)
    y_max = y_step * math.ceil(max((y for _, y in finite), default=1.0) / y_step)
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    sx = lambda x: LEFT + w * x / (x_max or 1.0)
    sy = lambda y: TOP + h - h * y / (y_max or 1.0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
           f'<rect x="{LEFT}" y="{TOP}" width="{w}" height="{h}" fill="none" stroke="#999"/>']
    for k in range(int(round(x_max / x_step)) + 1):
        x = sx(k * x_step)
        out.append(f'<line x1="{x:.1f}" y1="{TOP + h}" x2="{x:.1f}" y2="{TOP + h + 4}" '
                   f'stroke="#999"/><text x="{x:.1f}" y="{TOP + h + 16}" '
                   f'text-anchor="middle">{_label(k * x_step)}</text>')
    for k in range(int(round(y_max / y_step)) + 1):
        y = sy(k * y_step)
        out.append(f'<line x1="{LEFT - 4}" y1="{y:.1f}" x2="{LEFT + w}" y2="{y:.1f}" '
                   f'stroke="#eee"/><text x="{LEFT - 6}" y="{y + 4:.1f}" '
                   f'text-anchor="end">{_label(k * y_step)}</text>')
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in finite)
    out.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="#1f77b4"/>'
            for x, y in finite]
    out.append(f'<text x="{LEFT + w / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle">'
               f'{escape(x_title)}</text>')
    out.append(f'<text transform="translate(14,{TOP + h / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_title)}</text></svg>')
    return "\n".join(out)
