"""The roofline chart of the HTML report: log-log, x = FLOPs per byte of off-chip traffic,
y = achieved TFLOPS, one point per kernel row sized by its share of the run's time; the memory
roof (the off-chip bandwidth the run used: achievable, or the peak with --peak) and one compute
roof per distinct matrix rate at the run's clock (formats with equal rates share one). Labels are
placed so they do not cover points, roofs or each other.
"""
from __future__ import annotations

import math

from runtime.interpreter import RunResult
from runtime.report.html_format import COLORS, fmt, num, sig

def matrix_roofs(target) -> list[tuple[float, list[str]]]:
    """Distinct matrix roofs (FLOP/s at the clock the run used), highest first, with the
    formats that reach each."""
    by_peak: dict[float, list[str]] = {}
    for dtype in target.matrix.formats:
        p = target.flops_rate(dtype)
        if p > 0:
            by_peak.setdefault(p, []).append(dtype)
    return sorted(((p, sorted(names)) for p, names in by_peak.items()), key=lambda x: -x[0])


# -- roofline --

RF_LEFT, RF_TOP, RF_WIDTH, RF_HEIGHT = 78, 16, 640, 400


_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075"
                                           "\u2076\u2077\u2078\u2079")


def _decade_label(k: int) -> str:
    """0.01 ... 10000 written out, other decades as 10 with a superscript exponent."""
    return f"{10.0 ** k:g}" if -2 <= k <= 4 else "10" + str(k).translate(_SUPERSCRIPT)


def roofline(run: RunResult, rows: list) -> dict:
    """The chart's coordinates and labels from the kernel rows (html.KernelRow)."""
    t = run.target
    bw = t.memory_bandwidth                       # the run's roofs: sustained, or --peak
    peaks = matrix_roofs(t)
    top_peak = peaks[0][0] if peaks else 1e12
    plotted = [r for r in rows if r.flops > 0 and r.bytes > 0 and r.seconds > 0]
    missing = [r for r in rows if r not in plotted]
    xs = [r.flops / r.bytes for r in plotted]
    ys = [r.tflops for r in plotted]
    ridge = top_peak / bw
    x_lo = min(xs + [ridge / 100]) / 2
    x_hi = max(xs + [ridge * 10]) * 2
    y_hi = top_peak / 1e12 * 2
    y_lo = min(ys + [y_hi / 1e4]) / 2
    kx0, kx1 = math.floor(math.log10(x_lo)), math.ceil(math.log10(x_hi))
    ky0, ky1 = math.floor(math.log10(y_lo)), math.ceil(math.log10(y_hi))

    def px(x: float) -> float:
        return RF_LEFT + (math.log10(x) - kx0) / (kx1 - kx0) * RF_WIDTH

    def py(y: float) -> float:
        return RF_TOP + RF_HEIGHT - (math.log10(y) - ky0) / (ky1 - ky0) * RF_HEIGHT

    x_min, x_max, y_min = 10.0 ** kx0, 10.0 ** kx1, 10.0 ** ky0
    grid = []
    for k in range(kx0, kx1 + 1):
        grid.append({"x1": num(px(10.0 ** k)), "y1": num(RF_TOP), "x2": num(px(10.0 ** k)),
                     "y2": num(RF_TOP + RF_HEIGHT), "major": True})
        if k < kx1:
            for m in range(2, 10):
                x = px(m * 10.0 ** k)
                grid.append({"x1": num(x), "y1": num(RF_TOP), "x2": num(x),
                             "y2": num(RF_TOP + RF_HEIGHT), "major": False})
    for k in range(ky0, ky1 + 1):
        grid.append({"x1": num(RF_LEFT), "y1": num(py(10.0 ** k)), "x2": num(RF_LEFT + RF_WIDTH),
                     "y2": num(py(10.0 ** k)), "major": True})
        if k < ky1:
            for m in range(2, 10):
                y = py(m * 10.0 ** k)
                grid.append({"x1": num(RF_LEFT), "y1": num(y), "x2": num(RF_LEFT + RF_WIDTH),
                             "y2": num(y), "major": False})
    xticks = [{"x": num(px(10.0 ** k)), "label": _decade_label(k)} for k in range(kx0, kx1 + 1)]
    yticks = [{"y": num(py(10.0 ** k) + 4), "label": _decade_label(k)} for k in range(ky0, ky1 + 1)]

    # Memory roof: y = x * bw from the left edge (or the bottom) up to the highest ridge.
    x_start = max(x_min, y_min * 1e12 / bw)
    mem = {"x1": num(px(x_start)), "y1": num(py(x_start * bw / 1e12)),
           "x2": num(px(ridge)), "y2": num(py(top_peak / 1e12))}
    # Label along the slope, a third of the way up.
    roofs = []
    for p, names in peaks:
        xr = p / bw
        roofs.append({"x1": num(px(xr)), "y1": num(py(p / 1e12)), "x2": num(px(x_max)),
                      "y2": num(py(p / 1e12)), "label_x": num(px(x_max) - 4),
                      "label_y": num(py(p / 1e12) - 5),
                      "text": f"{', '.join(names)}: {fmt(p / 1e12, 0)} TFLOPS"})
    max_share = max((r.share for r in plotted), default=1.0) or 1.0
    points = []
    for r, x, y in sorted(zip(plotted, xs, ys), key=lambda p: (-p[0].seconds, p[0].index)):
        radius = 3 + 11 * math.sqrt(r.share / max_share)
        points.append({"x": px(x), "y": py(y), "radius": radius, "index": r.index,
                       "cx": num(px(x)), "cy": num(py(y)), "r": num(radius),
                       "color": COLORS.get(r.bound, COLORS["latency"]),
                       "title": f"#{r.index} {r.name} ({r.kernel}, x{r.count}): "
                                f"{x:,.1f} FLOP/B, {y:,.2f} TFLOPS, {fmt(100 * r.share, 1)}% "
                                f"of the time, {r.bound}-bound"})
    mem_label = _slope_label(f"memory {fmt(bw / 1e9, 0)} GB/s", points,
                             (px(x_start), py(x_start * bw / 1e12)),
                             (px(ridge), py(top_peak / 1e12)))
    labels = _place_labels(points, mem_label.pop("boxes"))
    return {
        "width": RF_LEFT + RF_WIDTH + 20, "height": RF_TOP + RF_HEIGHT + 56,
        "left": RF_LEFT, "top": RF_TOP, "plot_width": RF_WIDTH, "plot_height": RF_HEIGHT,
        "bottom": num(RF_TOP + RF_HEIGHT), "right": num(RF_LEFT + RF_WIDTH),
        "grid": grid, "xticks": xticks, "yticks": yticks,
        "xtick_y": num(RF_TOP + RF_HEIGHT + 16), "ytick_x": num(RF_LEFT - 6),
        "xlabel_x": num(RF_LEFT + RF_WIDTH / 2), "xlabel_y": num(RF_TOP + RF_HEIGHT + 40),
        "ylabel_x": num(18), "ylabel_y": num(RF_TOP + RF_HEIGHT / 2),
        "memory": mem, "memory_label": mem_label, "roofs": roofs, "points": points,
        "labels": labels,
        "key": [{"index": r.index, "name": r.name, "share": fmt(100 * r.share, 1),
                 "color": COLORS.get(r.bound, COLORS["latency"])}
                for r in plotted if any(r.index in l["rows"] for l in labels)],
        "missing": [f"{r.name} ({r.kernel})" for r in missing],
    }


LABELLED_POINTS = 12


def _place_labels(points: list[dict], avoid: list[tuple]) -> list[dict]:
    """Number labels for the largest points: points within a few pixels share one label
    ("26, 28"); each label goes right, left, above or below its point, wherever it overlaps
    no label placed before it and no point; a point with no free place stays unlabelled."""
    clusters: list[list[dict]] = []
    for p in points:                                   # largest first
        for c in clusters:
            if abs(c[0]["x"] - p["x"]) <= 3 and abs(c[0]["y"] - p["y"]) <= 3:
                c.append(p)
                break
        else:
            clusters.append([p])
    def disc(p):
        return (p["x"] - p["radius"], p["y"] - p["radius"], p["x"] + p["radius"],
                p["y"] + p["radius"])
    taken = [disc(p) for p in points] + list(avoid)
    out = []
    for c in clusters[:LABELLED_POINTS]:
        text = ", ".join(str(i) for i in sorted(p["index"] for p in c))
        w, h = 6.2 * len(text), 11.0
        x, y, r = c[0]["x"], c[0]["y"], max(p["radius"] for p in c)
        for lx, ly in ((x + r + 2, y + 4), (x - r - 2 - w, y + 4), (x - w / 2, y - r - 3),
                       (x - w / 2, y + r + 12)):
            box = (lx, ly - h + 2, lx + w, ly + 2)
            own = {disc(p) for p in c}
            if all(not _overlap(box, t) for t in taken if t not in own) and \
                    RF_LEFT <= box[0] and box[2] <= RF_LEFT + RF_WIDTH and \
                    RF_TOP <= box[1] and box[3] <= RF_TOP + RF_HEIGHT:
                taken.append(box)
                out.append({"x": num(lx), "y": num(ly), "text": text,
                            "rows": sorted(p["index"] for p in c)})
                break
    return out


def _slope_label(text: str, points: list[dict], a: tuple[float, float],
                 b: tuple[float, float]) -> dict:
    """A label written along the segment a-b, just above it, where it clears the points:
    the first of a few places along the segment whose text keeps away from every point.
    Also returns small boxes covering the text, for the point labels to avoid."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length                  # along the line
    nx, ny = uy, -ux                                   # normal, pointing up on screen
    width = 6.0 * len(text)
    best = None
    for f in (0.12, 0.3, 0.5, 0.05, 0.7, 0.2, 0.4, 0.6):
        start = (a[0] + dx * f + nx * 6, a[1] + dy * f + ny * 6)
        if f * length + width > length:
            continue
        samples = [(start[0] + ux * t + nx * 4, start[1] + uy * t + ny * 4)
                   for t in range(0, int(width) + 1, 4)]
        clear = min((math.hypot(x - p["x"], y - p["y"]) - p["radius"]
                     for x, y in samples for p in points), default=math.inf)
        if clear >= 7:
            best = start
            break
        if best is None:
            best = start
    best = best or a
    boxes = [(best[0] + ux * t + nx * 4 - 5, best[1] + uy * t + ny * 4 - 5,
              best[0] + ux * t + nx * 4 + 5, best[1] + uy * t + ny * 4 + 5)
             for t in range(0, int(width) + 1, 4)]
    return {"x": num(best[0]), "y": num(best[1]), "text": text,
            "angle": num(math.degrees(math.atan2(dy, dx))), "boxes": boxes}


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# -- stalls --
