"""A service: a prefill cluster and a decode cluster serving one stream of requests, as
DeepSeek serves V3 (prefill and decode disaggregated, the KV cache moved between them).

    serve deepseek_v3 {
      prefill "deepseek_v3_prefill.ds" { devices 32  attn dp  moe ep  batch 2 }
      decode "deepseek_v3.ds" { devices 144  attn dp  moe ep  batch 64  n_mtp 1 }
      prompt 4096
      output 1024
      kv_hit 0.563
      acceptance 0.85
      request_rate 200
      gpu_hour 2.0
    }

A phase names the model its step runs (relative to the serve file) and, in its braces, the
deploy keys of isa/deployment.py (`devices 32`, `attn dp`, `micro_batches 2`, ...) and any
size of the model (`batch 2`: requests per attention replica per step). The service sets the
sizes a request's shape decides: a prefill step computes `seq` = the prompt's uncached tokens
over `ctx` = its cached ones (the KV-cache hit rate); a decode step runs `seq` = 1 + n_mtp
positions (the token and the drafts it checks) over `ctx` = the prompt plus half the output
(the mean context a request decodes over). The settings:
"""
from __future__ import annotations

from dataclasses import dataclass, field

MAX = 2 ** 53

# key: (kind, lowest, highest, default or None when required, meaning)
SETTINGS: dict[str, tuple[type, float, float, object, str]] = {
    "prompt": (int, 1, 2 ** 24, None, "tokens of a request's prompt"),
    "output": (int, 1, 2 ** 24, None, "tokens a request generates"),
    "kv_hit": (float, 0.0, 1.0, 0.0, "share of the prompt's tokens whose KV entries are "
               "already cached (prefix hits): prefill computes the others over them"),
    "acceptance": (float, 0.0, 1.0, 0.0, "probability that an MTP draft token is accepted"),
    "request_rate": (float, 0.0, MAX, 0.0, "requests per second to serve (0: report one "
                     "cluster of each phase at full load)"),
    "gpu_hour": (float, 0.0, MAX, 0.0, "price of one device for one hour, for the cost per "
                 "million tokens (0: no cost)"),
}
PHASES = ("prefill", "decode")
SERVICE_SIZES = {"prefill": ("seq", "ctx"), "decode": ("seq", "ctx")}

__doc__ += "\n" + "\n".join(f"- `{k}`: {v[4]}" for k, v in SETTINGS.items()) + "\n"


@dataclass(frozen=True)
class Phase:
    name: str                     # prefill | decode
    model: str                    # path of the model its step runs
    devices: int
    plan: str                     # plan text (isa/deployment.py), devices apart
    place: str | None
    sizes: dict[str, str] = field(default_factory=dict)   # the model's sizes it sets

    @property
    def drafts(self) -> int:
        """MTP draft tokens a decode step checks per sequence."""
        return int(self.sizes.get("n_mtp", 0))


@dataclass(frozen=True)
class Service:
    name: str
    prefill: Phase
    decode: Phase
    prompt: int
    output: int
    kv_hit: float = 0.0
    acceptance: float = 0.0
    request_rate: float = 0.0
    gpu_hour: float = 0.0

    @property
    def cached(self) -> int:
        """Prompt tokens whose KV entries are already cached."""
        return min(self.prompt - 1, round(self.prompt * self.kv_hit))

    def phase_sizes(self, phase: Phase) -> dict[str, str]:
        """The sizes a phase's step runs with: its own and those the requests' shape sets."""
        if phase.name == "prefill":
            shape = {"seq": self.prompt - self.cached, "ctx": self.cached}
        else:
            shape = {"seq": 1 + phase.drafts, "ctx": self.prompt + self.output // 2}
        return {**phase.sizes, **{k: str(v) for k, v in shape.items()}}

    @property
    def tokens_per_step(self) -> float:
        """Tokens a decode step yields per sequence: the token, and each draft if it and the
        drafts before it are accepted (1 + a + a^2 + ...; MTP's drafts are sequential)."""
        return sum(self.acceptance ** i for i in range(self.decode.drafts + 1))
