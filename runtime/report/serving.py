"""The serving report (`dsc serve`) as text and HTML: the same rows, from the dict that
runtime/serving.py composes (which is also the JSON report)."""
from __future__ import annotations

import jinja2

from runtime.report.deployment import deployment_lines


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
    return rows


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
{% endfor %}{% for name in ("prefill", "decode") %}<h2>{{ name }} step</h2><pre>
{% for line in steps[name] %}{{ line }}
{% endfor %}</pre>{% endfor %}</body></html>
""")


def serving_html(d: dict) -> str:
    steps = {name: deployment_lines(d[name]["deployment"]) for name in ("prefill", "decode")}
    return _PAGE.render(d=d, sections=serving_rows(d), steps=steps)
