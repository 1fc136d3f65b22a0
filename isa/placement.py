"""Which memory each kind of tensor lives in: the placement policy.

    --place kv_cache=host            deploy { place kv_cache=host }

A policy maps roles to memories of the target (the `[memories.NAME]` that are not caches,
or `memory` for the shorthand [memory]); a role not named stays in the memory tensors live in
by default. The place pass (compiler/passes/place.py) applies it, the listing shows it on
each tensor placed elsewhere (`in=host`), the capacity check counts each memory's share.
"""
from __future__ import annotations

ROLES = {
    "weights": "the model's weights and their scales",
    "kv_cache": "the attention caches (KV, latent KV) and their scales",
    "activations": "inputs, outputs and the values that cross kernel boundaries",
}
ROLE_OF_KIND = {"weight": "weights", "cache": "kv_cache", "input": "activations",
                "output": "activations", "temp": "activations"}


class PlacementError(ValueError):
    """A placement item that cannot be used; the message says what was expected."""


def parse_placement(text: str) -> dict[str, str]:
    """`kv_cache=host,weights=memory` -> {"kv_cache": "host", "weights": "memory"}."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        role, sep, memory = (s.strip() for s in item.partition("="))
        if not sep or not role or not memory:
            raise PlacementError(f"placement '{item}': expected ROLE=MEMORY, e.g. kv_cache=host")
        if role not in ROLES:
            raise PlacementError(f"placement {item}: unknown role '{role}' (roles: "
                                 f"{', '.join(ROLES)})")
        if role in out and out[role] != memory:
            raise PlacementError(f"placement of {role} is given twice ({out[role]}, {memory})")
        out[role] = memory
    return out


def placement_text(policy: dict[str, str]) -> str:
    return ",".join(f"{role}={policy[role]}" for role in ROLES if role in policy)


def check_memories(policy: dict[str, str], machine) -> None:
    """Every memory a policy names is one the target's tensors can live in."""
    for role, memory in policy.items():
        if memory not in machine.placeable:
            raise PlacementError(f"placement {role}={memory}: target {machine.name} has no "
                                 f"memory '{memory}' (tensors can live in "
                                 f"{', '.join(machine.placeable)})")


def roles(tensors) -> dict[str, str]:
    """The role of each declared tensor that is not a view: by its kind, a scale by the
    tensor it scales."""
    from isa.program import scale_name, tensor_scale_name
    out = {t.name: ROLE_OF_KIND[t.kind] for t in tensors if t.kind in ROLE_OF_KIND}
    for name, role in list(out.items()):
        for scale in (scale_name(name), tensor_scale_name(name)):
            out.setdefault(scale, role)
    return out
