"""The serving report (`dsc serve`) as text and HTML: the same rows, from the dict that
runtime/serving.py composes (which is also the JSON report)."""
from __future__ import annotations

import jinja2

from runtime.report.deployment import deployment_lines
from runtime.report.svg_chart import line_chart


def serving_rows(d: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    """(section, [(label, value)]) in the order both reports show them."""
    r, p, dc, load = d["requests"], d["prefill"], d["decode"], d["load"]
    rows = [("service", [
        ("requests", f"{r['prompt']:,}-token prompts ({r['cached_tokens']:,} cached, "
                     f"kv_hit {r['kv_hit']:g}), {r['output']:,} tokens out"),
        ("TTFT", f"{d['ttft_ms']:,.1f} ms (one prefill step; then {p['kv_transfer_ms']:,.1f} "
                 "ms moving the KV cache to decode)"),
        ("TPOT", f"{d['tpot_ms']:,.2f} ms ({dc['step_ms']:,.2f} ms per decode step, "
                 + (f"{dc['tokens_per_step']:.2f} tokens per step: {dc['drafts']} MTP draft"
                    f"{'s' if dc['drafts'] > 1 else ''} at acceptance {r['acceptance']:g})"
                    if dc["drafts"] else "one token per step, no MTP)")),
    ])]
    for name, x, what in (("prefill", p, "input"), ("decode", dc, "output")):
        per_device = x[f"{what}_tokens_per_s_per_device"]
        rows.append((f"{name} cluster", [
            ("deployment", f"{x['devices']} devices on {x['nodes']} node"
                           f"{'s' if x['nodes'] > 1 else ''}, {x['plan']}"),
            ("step", f"{x['step_ms']:,.2f} ms for {x['requests_per_device']:,.4g} "
                     f"{'prompts' if name == 'prefill' else 'sequences'} per device"),
            (f"{what} tokens/s", f"{per_device:,.0f} per device, "
                                 f"{x[f'{what}_tokens_per_s_per_node']:,.0f} per node"),
            ("requests/s", f"{x['requests_per_s']:,.2f} per cluster"),
        ]))
    for x, (_, cluster) in zip((p, dc), rows[1:]):
        cluster.append(("critical path", critical_text(x["critical_path"])))
    rows[1][1].append(("KV transfer", f"{p['kv_transfer_ms']:,.2f} ms per step on each "
                                      f"device's network link ({p['kv_link_share']:.0%} of a "
                                      "step)"))
    rate = "at full load" if not r["request_rate"] else f"for {r['request_rate']:,g} requests/s"
    rows.append((f"nodes {rate}", [
        (name, f"{load['clusters'][name]} cluster{'s' if load['clusters'][name] > 1 else ''}"
               f", {load['nodes'][name]} nodes, {load['utilization'][name]:.0%} busy")
        for name in ("prefill", "decode")] + [
        ("total", f"{load['total_nodes']} nodes, {load['total_devices']} devices")]))
    if "cost" in d:
        c = d["cost"]
        rows.append((f"cost at {r['gpu_hour']:g} per device-hour, {rate}", [
            ("input", f"{c['usd_per_m_input']:,.3f} per million tokens"),
            ("output", f"{c['usd_per_m_output']:,.3f} per million tokens")]))
    if "comm_bound" in d:
        b = d["comm_bound"]
        rows.append(("TPOT bound if compute hid (ISCA'25 arithmetic)", [
            ("per layer", f"{b['tokens_per_device']:,.4g} tokens x ({b['dispatch_bytes']:g} + "
                          f"{b['combine_bytes']:g}) B x {b['experts']} experts x {b['dim']:,} "
                          f"/ {b['link_gbs']:g} GB/s = {b['per_layer_us']:,.2f} us"),
            ("TPOT", f"{b['layers']} layers: {b['tpot_ms']:,.2f} ms, "
                     f"{b['tokens_per_s']:,.0f} tokens/s per sequence")]))
    rows.append(curve_section(d))
    return rows


def critical_text(path: list[dict], entries: int = 3) -> str:
    """The largest shares of a step's critical path: `41% attention on memory, ...`."""
    words = [f"{e['share']:.0%} {e['block']}" + (f" on {e['resource']}" if e["resource"] else "")
             for e in path[:entries]]
    return ", ".join(words) + (f" (of {sum(e['share'] for e in path):.0%} traced)"
                               if path else "")


def curve_section(d: dict) -> tuple[str, list[tuple[str, str]]]:
    """The throughput-latency sweep, one row per request rate."""
    nodes = d["load"]["total_nodes"]
    return (f"throughput and latency on {nodes} nodes (M/D/c queues of batch slots)", [
        (f"{c['request_rate']:,.1f} req/s",
         f"{c['load']:.0%} of capacity, {c['output_tokens_per_s_per_node']:,.0f} output "
         f"tokens/s per node: TTFT {_ms(c['ttft_ms'])} (waiting {_ms(c['prefill_wait_ms'])}), "
         f"latency {_ms(c['latency_s'] * 1e3)} (waiting for decode "
         f"{_ms(c['decode_wait_ms'])})") for c in d["curve"]])


def _ms(ms: float) -> str:
    """A time given in ms, with three significant digits in the unit that suits it."""
    if ms >= 1000:
        return f"{ms / 1e3:,.3g} s" if ms < 1e5 else f"{ms / 1e3:,.0f} s"
    if ms >= 0.001:
        return f"{ms:.3g} ms"
    return f"{ms * 1e3:.3g} us" if ms >= 1e-6 else "0"        # under a nanosecond: none


def curve_charts(d: dict) -> list[str]:
    """Latency against throughput, and TTFT against the request rate, as inline SVG."""
    curve = d["curve"]
    return [line_chart([(c["output_tokens_per_s_per_node"], c["latency_s"]) for c in curve],
                       "output tokens/s per node", "mean request latency (s)"),
            line_chart([(c["request_rate"], c["ttft_ms"]) for c in curve],
                       "requests/s", "mean TTFT (ms)")]


def serving_text(d: dict) -> str:
    lines = [f"serve {d['service']} on {d['target']}"]
    for section, rows in serving_rows(d):
        lines.append(f"{section}:")
        lines += [f"  {label:<12} {value}" for label, value in rows]
    for name in ("prefill", "decode"):
        lines.append(f"{name} step:")
        lines += ["  " + line for line in deployment_lines(d[name]["deployment"])]
    return "\n".join(lines) + "\n"


_PAGE = jinja2.Environment(autoescape=True).from_string("""<!doctype html>
<html><head><meta charset="utf-8"><title>serve {{ d.service }} on {{ d.target }}</title>
<style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}
td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}th{background:#f4f4f4}</style>
</head><body><h1>serve {{ d.service }} on {{ d.target }}</h1>
{% for section, rows in sections %}<table><tr><th colspan="2">{{ section }}</th></tr>
{% for label, value in rows %}<tr><td>{{ label }}</td><td>{{ value }}</td></tr>
{% endfor %}</table>
{% endfor %}<h2>throughput and latency</h2>
{% for chart in charts %}{{ chart | safe }}
{% endfor %}{% for name in ("prefill", "decode") %}<h2>{{ name }} step</h2><pre>
{% for line in steps[name] %}{{ line }}
{% endfor %}</pre>{% endfor %}</body></html>
""")


def serving_html(d: dict) -> str:
    steps = {name: deployment_lines(d[name]["deployment"]) for name in ("prefill", "decode")}
    return _PAGE.render(d=d, sections=serving_rows(d), steps=steps, charts=curve_charts(d))
