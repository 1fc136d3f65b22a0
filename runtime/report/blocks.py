"""Which block of a transformer a launch belongs to, for roll-ups and plain-word causes:
attention, MoE, dense FFN, communication, or the rest (embedding, norms, head).

Classified by the launch's stream and the names the model gives its operations (the
standard library's scopes: mla/attention, moe, swiglu/ffn/mlp); the first rule that matches
wins, so a collective inside the MoE block counts as communication.
"""
from __future__ import annotations

import re

BLOCKS = ("attention", "MoE", "dense FFN", "communication", "other")
_RULES = (                              # (block, pattern on the operation's name)
    ("communication", re.compile(r"(^|\.)a2a(_\d+)?($|\.)|all_reduce|all_gather|all_to_all")),
    ("MoE", re.compile(r"(^|\.)moe(\.|$)")),
    ("attention", re.compile(r"(^|\.)(mla\w*|attn\w*|attention\w*|self_attn)(\.|$)")),
    ("dense FFN", re.compile(r"(^|\.)(swiglu\w*|ffn\w*|mlp\w*|feed_forward)(\.|$)")),
)


def block_of(name: str, stream: str = "compute", kernel: str = "") -> str:
    if stream != "compute":
        return "communication"
    for block, pattern in _RULES:
        if pattern.search(name) or (block == "communication" and pattern.search(kernel)):
            return block
    return "other"
