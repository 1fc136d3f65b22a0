"""Waiting for a batch slot: the M/D/c queue a serving cluster is taken to be.

Requests arrive as a Poisson stream (many independent users); a cluster has `c` slots (the
requests its step holds: prompts per prefill step, sequences per decode step), and a request
holds one for a fixed time (one prefill step; output / tokens-per-step decode steps), the
simulated step being deterministic. With continuous batching a slot takes the next request
when it frees, so the cluster is c servers with deterministic service: M/D/c.

M/D/c has no closed form; the Allen-Cunneen approximation scales the M/M/c wait (Erlang C)
by (Ca^2 + Cs^2) / 2, the squared coefficients of variation of arrivals (1, Poisson) and
service (0, deterministic): half the M/M/c wait. For one server it is exact (the
Pollaczek-Khinchine formula). A step-synchronous batch (a request waits for the next step to
start) would wait up to one more step; that is not modelled.
"""
from __future__ import annotations

import math


def erlang_c(servers: int, load: float) -> float:
    """Probability that an arrival waits, for `servers` servers offered `load` Erlangs
    (load < servers), by the Erlang B recursion (stable for many thousands of servers)."""
    if load <= 0:
        return 0.0
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    rho = load / servers
    return b / (1 - rho * (1 - b))


def md_c_wait(rate: float, service: float, servers: int) -> float:
    """Mean wait in the queue (seconds) of an M/D/c queue: `rate` arrivals per second, a
    `service`-second hold, `servers` slots. Infinite at or beyond capacity."""
    load = rate * service
    if load >= servers:
        return math.inf
    return 0.5 * erlang_c(servers, load) * service / (servers - load)
