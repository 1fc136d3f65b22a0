"""What every HTML page of dsc shares: the template environment, the colour of each bound, and
numbers written to fixed decimals (so the same run gives a byte-identical page)."""
from __future__ import annotations

from pathlib import Path

import jinja2

ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=jinja2.StrictUndefined, autoescape=True, trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True)

BOUNDS = ("compute", "vector", "fixed_pipe", "memory", "l2", "link", "nvlink", "network",
          "latency")
COLORS = {"compute": "#0072b2", "vector": "#009e73", "fixed_pipe": "#56b4e9",
          "memory": "#d55e00", "l2": "#e69f00", "link": "#999933", "latency": "#8c8c8c",
          "nvlink": "#cc79a7", "network": "#7a4f9a"}


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def sig(value: float) -> str:
    """A rate with about three significant digits: 1,504 / 61.2 / 2.42 / 0.0123."""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def si(value: float, unit: str) -> str:
    """`value` with a decimal prefix: 1.42 TFLOP, 18.4 GB, 2.15 MB."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{sig(value / factor)} {prefix}{unit}"
    return f"{sig(value)} {unit}"


def percent(fraction: float) -> str:
    p = 100 * fraction
    return f"{p:.1f}" if p >= 10 or p == 0 else f"{p:.2f}"


def time_text(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:,.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:,.3f} ms"
    return f"{seconds * 1e6:,.1f} \u00b5s"


def num(x: float) -> str:
    """An SVG coordinate: two decimals, no trailing zeros."""
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
