"""The HTML form of `dsc diff A.json B.json --html FILE`: the same comparison as the text
(runtime/report/diff.py: Comparison) on one self-contained page.

- the headline (each run, the step's delta, tokens/s per device) and the top causes in words;
- per block (attention, MoE, communication, ...): A's and B's time as paired bars;
- the kernel groups whose time moved most: a diverging bar of B - A, coloured by B's bound
  (slower to the right), with both times and both bounds in the table beside it;
- the layer table of deployments (time and exposed communication per layer on each side).

Every coordinate is computed here; templates/diff.html.j2 only lays it out (inline SVG, no
script), and numbers are written to fixed decimals so the same reports give the same page.
"""
from __future__ import annotations

from runtime.report.diff import KERNEL_ROWS, Comparison, _ms, _signed
from runtime.report.html_format import COLORS, ENV, num

BAR_W, ROW_H, LABEL_W = 420, 22, 150        # the block chart: bar area, row pitch, label column
DELTA_W = 360                               # the kernel chart: width of the diverging bars


def diff_html(c: Comparison) -> str:
    return ENV.get_template("diff.html.j2").render(
        title=f"{c.a['model']} on {c.a['target']} vs {c.b['model']} on {c.b['target']}",
        headline=c.headline, causes=c.causes, moved=c.moved, blocks=_blocks(c),
        kernels=_kernels(c), layers=_layers(c), colors=COLORS)


def _blocks(c: Comparison) -> dict:
    rows = c.blocks
    top = max((max(x, y) for _, x, y in rows), default=0.0) or 1.0
    bars = []
    for k, (block, x, y) in enumerate(rows):
        y0 = k * 2 * ROW_H
        bars.append({"block": block, "y": num(y0), "label_y": num(y0 + ROW_H + 4),
                     "a_w": num(x / top * BAR_W), "b_w": num(y / top * BAR_W),
                     "a_y": num(y0 + 3), "b_y": num(y0 + ROW_H + 1),
                     "a_ty": num(y0 + 16), "b_ty": num(y0 + ROW_H + 14),
                     "a_text": _ms(x), "b_text": _ms(y), "delta": _signed(y - x),
                     "text_x_a": num(LABEL_W + x / top * BAR_W + 6),
                     "text_x_b": num(LABEL_W + y / top * BAR_W + 6)})
    return {"bars": bars, "left": LABEL_W, "width": LABEL_W + BAR_W + 170,
            "height": num(len(rows) * 2 * ROW_H + 8), "bar_h": ROW_H - 4}


def _kernels(c: Comparison) -> dict:
    rows = c.kernels[:KERNEL_ROWS]
    top = max((abs(y.seconds - x.seconds) for _, x, y in rows), default=0.0) or 1.0
    mid = DELTA_W / 2
    out = []
    for name, x, y in rows:
        delta = y.seconds - x.seconds
        w = abs(delta) / top * mid
        out.append({"name": name, "a": _ms(x.seconds), "b": _ms(y.seconds),
                    "delta": _signed(delta), "bounds": f"{x.bound} -> {y.bound}",
                    "x": num(mid if delta >= 0 else mid - w), "w": num(w),
                    "color": COLORS.get(y.bound if y.launches else x.bound, COLORS["latency"])})
    return {"rows": out, "width": DELTA_W, "mid": num(mid), "total": len(c.kernels)}


def _layers(c: Comparison) -> list[dict]:
    cell = lambda r, k: f"{r[k]:,.1f}" if r else "-"
    return [{"name": name, "a": cell(x, "time_us"), "b": cell(y, "time_us"),
             "delta": f"{y['time_us'] - x['time_us']:+,.1f}" if x and y else "-",
             "comm_a": cell(x, "exposed_comm_us"), "comm_b": cell(y, "exposed_comm_us")}
            for name, x, y in c.layers]
