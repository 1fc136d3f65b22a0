"""A model's `deploy { ... }` block: the deployment it is meant for, checked where it is written.

    deploy {
      devices 144
      attn dp
      moe ep
      micro_batches 2
      place kv_cache=host
    }

`dsc run --devices N --plan ...` overrides it (isa/deployment.py says what each key means);
`place ROLE=MEMORY` (any number of them) puts a role's tensors in a memory of the target
(isa/placement.py), and `--place` overrides it role by role.
"""
from __future__ import annotations

from compiler.errors import DscError, did_you_mean
from compiler.frontend import ast
from isa.deployment import DeploymentError, make_deployment
from isa.placement import ROLES, PlacementError, parse_placement, placement_text

KEYS = {"devices": int, "attn": str, "ffn": str, "moe": str, "micro_batches": int,
        "overlap": str, "a2a": str, "launch": str, "place": str, "load": str, "redundant": int,
        "comm_cores": int}


def build_deploy(model: ast.ModelDef) -> dict[str, int | str]:
    blocks = [s for s in model.body if isinstance(s, ast.Deploy)]
    if len(blocks) > 1:
        raise DscError("duplicate declaration: a second deploy block", blocks[1].loc,
                       "one deploy block per model")
    if not blocks:
        return {}
    return deploy_entries(blocks[0].entries, blocks[0].loc)


def deploy_entries(entries, where) -> dict[str, int | str]:
    """Deploy keys checked one by one and as a plan (`where`: the block's position)."""
    out: dict[str, int | str] = {}
    for entry in entries:
        kind = KEYS.get(entry.key)
        if kind is None:
            raise DscError(f"unknown deploy key '{entry.key}'{did_you_mean(entry.key, KEYS)}",
                           entry.loc, "one of " + ", ".join(KEYS))
        if entry.key == "place":
            out["place"] = _place_item(entry, out.get("place", ""))
            continue
        if entry.key in out:
            raise DscError(f"duplicate declaration: deploy key '{entry.key}' is given twice",
                           entry.loc, "each key once")
        if not isinstance(entry.value, kind):
            raise DscError(f"deploy {entry.key} {entry.value}: expected "
                           f"{'an integer' if kind is int else 'a mode name'}", entry.loc,
                           "e.g. devices 32, attn dp, moe ep, micro_batches 2, "
                           "load \"zipf:0.8\"")
        out[entry.key] = entry.value
    plan = {k: v for k, v in out.items() if k not in ("devices", "place")}
    try:
        make_deployment(int(out.get("devices", 1)), 1, plan)
    except DeploymentError as err:
        culprit = next((e for e in entries if e.key == err.key), None)
        raise DscError(str(err), culprit.loc if culprit else where,
                       "a plan that the devices allow") from None
    return out


def deploy_locations(model: ast.ModelDef) -> dict[str, "Loc"]:
    """`deploy.KEY` -> where the entry is written (the first, for repeated `place`)."""
    out = {}
    for block in (s for s in model.body if isinstance(s, ast.Deploy)):
        for entry in block.entries:
            out.setdefault(f"deploy.{entry.key}", entry.loc)
    return out


def _place_item(entry: ast.DeployEntry, earlier: str) -> str:
    """`place kv_cache=host` checked for its role (the memory is the target's to know);
    the items so far, joined by commas."""
    text = str(entry.value)
    try:
        policy = parse_placement(f"{earlier},{text}")
    except PlacementError as err:
        raise DscError(str(err), entry.loc, "place ROLE=MEMORY, ROLE one of "
                       + ", ".join(ROLES)) from None
    return placement_text(policy)
