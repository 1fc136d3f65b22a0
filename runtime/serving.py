"""A service's figures from one simulated step of each phase (isa/serving.py describes the
service; the command line compiles and runs the two steps).

- A prefill step runs `batch` prompts per attention replica: it yields their first tokens,
  so TTFT is the step (a request that arrives while a step runs waits for the next: up to
  twice that, not counted). Its input throughput counts every prompt token, cached ones
  included (as DeepSeek reports it).
- Each prompt's KV cache then goes to the decode cluster over the prefill device's network
  link: its bytes (prompt x the decode model's KV bytes per token) at the link's rate, plus
  its latency, before the request's first decode step. It overlaps the next prefill step, so
  it costs throughput only when it takes longer than a step.
- A decode step advances every sequence by one position and checks its drafts: it yields
  1 + a + a^2 + ... tokens per sequence (a: the acceptance rate), so TPOT is the step over
  that. A request stays for output / tokens-per-step steps.
- Whole clusters serve a request rate: each phase needs as many clusters as the rate over
  one cluster's requests per second, rounded up; the cost of a million tokens is the
  devices' price per hour over the tokens they serve in an hour (at the rate, or at full
  load without one).
- The throughput-latency curve: the fleet the load sizes (whole clusters of each phase) offered
  a sweep of request rates up to its capacity, each phase an M/D/c queue of its batch slots
  (runtime/queueing.py): a request waits for a prefill slot, holds it a step, its KV cache
  moves, it waits for a decode slot and holds it for its output's steps. TPOT stays the full
  batch's step: a lighter load would run emptier, faster steps, which one simulated step does
  not give.
"""
from __future__ import annotations

import math

from isa.serving import Service
from runtime.critical_path import critical_path
from runtime.interpreter import RunResult
from runtime.queueing import md_c_wait
from runtime.report.deployment import deployment_dict, tokens_per_step


def service_dict(service: Service, prefill: RunResult, decode: RunResult,
                 kv_bytes_per_token: int, bound: dict | None = None) -> dict:
    p = _phase(prefill, service.prompt - service.cached)
    d = _phase(decode, 1 + service.decode.drafts)
    prompts = p["requests_per_device"]
    kv = _kv_transfer(prefill, prompts * service.prompt * kv_bytes_per_token)
    tokens = service.tokens_per_step
    p.update(input_tokens_per_s_per_device=prompts * service.prompt / p["step_s"],
             computed_tokens_per_s_per_device=prompts * (service.prompt - service.cached)
             / p["step_s"],
             requests_per_s=prompts * p["devices"] / p["step_s"],
             kv_transfer_ms=kv * 1e3, kv_link_share=kv / p["step_s"])
    p["input_tokens_per_s_per_node"] = p["input_tokens_per_s_per_device"] * p["per_node"]
    d.update(drafts=service.decode.drafts, tokens_per_step=tokens, tpot_ms=d["step_s"] / tokens * 1e3,
             output_tokens_per_s_per_device=d["requests_per_device"] * tokens / d["step_s"],
             requests_per_s=d["requests_per_device"] * d["devices"] * tokens
             / (service.output * d["step_s"]))
    d["output_tokens_per_s_per_node"] = d["output_tokens_per_s_per_device"] * d["per_node"]
    out = {
        "service": service.name, "target": prefill.target.name,
        "requests": {"prompt": service.prompt, "output": service.output,
                     "kv_hit": service.kv_hit, "cached_tokens": service.cached,
                     "acceptance": service.acceptance, "request_rate": service.request_rate,
                     "gpu_hour": service.gpu_hour},
        "ttft_ms": p["step_s"] * 1e3, "tpot_ms": d["tpot_ms"],
        "prefill": p, "decode": d,
        "load": _load(service, p, d),
    }
    p["critical_path"], d["critical_path"] = critical_path(prefill), critical_path(decode)
    out["curve"] = _curve(service, out["load"], p, d, kv)
    if service.gpu_hour:
        out["cost"] = _cost(service, out["load"], p, d)
    if bound:
        out["comm_bound"] = bound
    return out


def _phase(run: RunResult, positions: int) -> dict:
    """One phase's step: its time, the requests each device serves in it."""
    dep = run.program.deployment
    seconds = run.cycles / run.target.clock_hz
    per_device = tokens_per_step(run) * dep.replicas / dep.devices / positions
    return {"devices": dep.devices, "per_node": dep.per_node, "nodes": dep.nodes,
            "plan": dep.plan_text, "step_s": seconds, "step_ms": seconds * 1e3,
            "requests_per_device": per_device, "deployment": deployment_dict(run)}


def _kv_transfer(run: RunResult, nbytes: float) -> float:
    """Seconds a device's network link takes to send `nbytes` (0 without a network: one
    device runs both phases' memory)."""
    link = run.target.machine.link_for("network")
    if link is None or not nbytes:
        return 0.0
    return (nbytes / link.bytes_per_cycle + link.latency_cycles) / run.target.clock_hz


def _load(service: Service, p: dict, d: dict) -> dict:
    """Clusters of each phase for the request rate (one of each at full load without one)."""
    rate = service.request_rate
    clusters = {name: max(1, math.ceil(rate / x["requests_per_s"] - 1e-9)) if rate else 1
                for name, x in (("prefill", p), ("decode", d))}
    nodes = {name: clusters[name] * x["nodes"] for name, x in (("prefill", p), ("decode", d))}
    devices = {name: clusters[name] * x["devices"] for name, x in (("prefill", p), ("decode", d))}
    busy = {name: (rate or x["requests_per_s"]) / (clusters[name] * x["requests_per_s"])
            for name, x in (("prefill", p), ("decode", d))}
    return {"request_rate": rate or min(p["requests_per_s"], d["requests_per_s"]),
            "clusters": clusters, "nodes": nodes, "devices": devices,
            "utilization": busy, "total_nodes": sum(nodes.values()),
            "total_devices": sum(devices.values())}


def _cost(service: Service, load: dict, p: dict, d: dict) -> dict:
    """Price of a million tokens: a phase's devices for an hour over the tokens they serve in
    it (at the request rate; at full load without one)."""
    def per_million(devices: float, tokens_per_s: float) -> float:
        return devices * service.gpu_hour / (tokens_per_s * 3600) * 1e6

    if service.request_rate:
        rate = service.request_rate
        return {"usd_per_m_input": per_million(load["devices"]["prefill"],
                                               rate * service.prompt),
                "usd_per_m_output": per_million(load["devices"]["decode"],
                                                rate * service.output)}
    return {"usd_per_m_input": per_million(1, p["input_tokens_per_s_per_device"]),
            "usd_per_m_output": per_million(1, d["output_tokens_per_s_per_device"])}


# The sweep: request rates as shares of the fleet's capacity (its busier phase's utilisation).
CURVE_LOADS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)


def _curve(service: Service, load: dict, p: dict, d: dict, kv_s: float) -> list[dict]:
    """Mean TTFT and request latency at each rate of the sweep, for the fleet `load` sizes:
    each phase's slots are its requests per step over its clusters, held a prefill step or a
    request's decode steps."""
    clusters = load["clusters"]
    slots = {"prefill": round(p["requests_per_device"] * p["devices"]) * clusters["prefill"],
             "decode": round(d["requests_per_device"] * d["devices"]) * clusters["decode"]}
    hold = {"prefill": p["step_s"],
            "decode": service.output / d["tokens_per_step"] * d["step_s"]}
    capacity = min(slots[x] / hold[x] for x in slots)
    nodes = load["total_nodes"]
    rows = []
    for share in CURVE_LOADS:
        rate = capacity * share
        wait = {x: md_c_wait(rate, hold[x], slots[x]) for x in slots}
        ttft = wait["prefill"] + hold["prefill"]
        latency = ttft + kv_s + wait["decode"] + hold["decode"]
        rows.append({"request_rate": rate, "load": share,
                     "output_tokens_per_s_per_node": rate * service.output / nodes,
                     "prefill_wait_ms": wait["prefill"] * 1e3,
                     "decode_wait_ms": wait["decode"] * 1e3,
                     "ttft_ms": ttft * 1e3, "latency_s": latency})
    return rows
