"""Reference evaluation of a Graph with each op's numpy reference, and random feeds for it.

This is the full-precision answer that the simulator's functional mode and the precision
passes are measured against, so it deliberately ignores storage formats: every float value is
float32 whatever its dtype or scaling. Only integer dtypes (token ids, expert indices) are kept
as integers, because their values index into other tensors.
"""
from __future__ import annotations

import math
import zlib

import numpy as np

from compiler.errors import DscError
from compiler.ir.graph import Graph, Node, TensorType
from compiler.ir.ops import OPS, OpDef
from isa.formats import DTYPES

# Integer operands that index something, and the bound their values must stay below:
# (op, operand position) -> exclusive upper bound, from the user node and its operand types.
_INDEX_BOUNDS = {
    ("embedding", 0): lambda user, types: types[1].shape[0],       # table rows
    ("dispatch", 1): lambda user, types: user.attr("experts"),
    ("combine", 1): lambda user, types: types[0].shape[0],         # experts of y
    ("gather", 1): lambda user, types: types[0].shape[1],          # rows of a sequence
}
_SMALL_INT_BOUND = 4


def is_integer(t: TensorType) -> bool:
    """Integer values (indices), as opposed to a low-precision encoding of real numbers."""
    return DTYPES[t.format.dtype].kind == "int" and t.format.scaling is None


def _value_dtype(t: TensorType) -> type:
    return np.int32 if is_integer(t) else np.float32


def _is_fed(op: OpDef) -> bool:
    # Sources with a declared type get their values from outside; `const` carries its own.
    return op.category == "source" and op.result == "declared"


# ---------------------------------------------------------------------------- random feeds

def _rng(seed: int, name: str) -> np.random.Generator:
    """One generator per source, keyed by its name, so adding a node leaves others' values."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _index_bound(g: Graph, node: Node) -> int:
    bounds = []
    for user in g.users(node.id):
        types = [g.node(i).type for i in user.inputs]
        for pos, nid in enumerate(user.inputs):
            rule = _INDEX_BOUNDS.get((user.op, pos))
            if nid == node.id and rule:
                bounds.append(rule(user, types))
    return max(1, min(bounds, default=_SMALL_INT_BOUND))


def _float_values(op: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    values = rng.standard_normal(shape)
    if op != "weight":
        return values                                   # inputs and caches: N(0, 1)
    if len(shape) >= 2:
        return values / math.sqrt(shape[-2])            # keeps x @ w at unit scale
    return 1 + 0.1 * values                             # norm scales sit near 1


def random_feeds(g: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic values for every input, weight and cache of `g`, by node name."""
    feeds = {}
    for node in g.nodes():
        if not _is_fed(OPS[node.op]):
            continue
        rng = _rng(seed, node.name)
        shape = node.type.shape
        if is_integer(node.type):
            feeds[node.name] = rng.integers(0, _index_bound(g, node), shape, dtype=np.int32)
        else:
            feeds[node.name] = _float_values(node.op, shape, rng).astype(np.float32)
    return feeds


# ------------------------------------------------------------------------------ evaluation

def _feed(node: Node, feeds: dict[str, np.ndarray]) -> np.ndarray:
    if node.name not in feeds:
        raise DscError(f"no value fed for {node.op} %{node.name}", node.loc)
    value = np.asarray(feeds[node.name])
    if value.shape != node.type.shape:
        raise DscError(f"the value fed for %{node.name} has shape {list(value.shape)}, "
                       f"expected {list(node.type.shape)}", node.loc)
    return value


def evaluate(g: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every node's value by name, in float32 (int32 for integer results).

    Sources take their values from `feeds` (names not in the graph are ignored, so one set of
    feeds serves a graph before and after a pass); other nodes apply their OpDef's reference
    to their operands' values with the op's default attributes filled in.
    """
    by_id: dict[int, np.ndarray] = {}
    for node in g.nodes():
        op = OPS[node.op]
        if _is_fed(op):
            value = _feed(node, feeds)
        else:
            ins = [by_id[i] for i in node.inputs]
            value = op.reference(ins, op.full_attrs(node.attr_dict))
        by_id[node.id] = np.asarray(value).astype(_value_dtype(node.type))
    return {g.node(nid).name: value for nid, value in by_id.items()}


def model_reference(g: Graph, seed: int | None = 0,
                    feeds: dict[str, np.ndarray] | None = None) -> dict:
    """What a functional run is compared with, as plain data (the runtime's `Reference`):
    the feeds (random_feeds(g, seed) unless given), the graph evaluated on them, the outputs,
    the fed sources and outputs as (name, role, shape), the formats in use by role and the
    policy."""
    if feeds is None:
        feeds = random_feeds(g, seed)
    else:
        seed = None
    interface = [(n.name, n.op, n.type.shape) for n in g.nodes() if n.name in feeds]
    interface += [(g.node(o).name, "output", g.node(o).type.shape) for o in g.outputs]
    return {"model": g.model, "seed": seed, "feeds": feeds, "values": evaluate(g, feeds),
            "outputs": tuple(g.node(o).name for o in g.outputs), "interface": tuple(interface),
            "formats": role_formats(g), "policy": {role: str(f) for role, f in g.policy.items()}}


def role_formats(g: Graph) -> dict[str, dict[str, int]]:
    """Formats in use: weights and caches as declared, activations as the GEMMs read them
    (the first operand of every contraction); by format, how many tensors."""
    counts: dict[str, dict[str, int]] = {"weights": {}, "activations": {}, "kv_cache": {}}
    for node in g.nodes():
        if node.op == "weight":
            role, fmt = "weights", node.type.format
        elif node.op == "cache":
            role, fmt = "kv_cache", node.type.format
        elif OPS[node.op].category == "contraction":
            role, fmt = "activations", g.node(node.inputs[0]).type.format
        else:
            continue
        counts[role][str(fmt)] = counts[role].get(str(fmt), 0) + 1
    return {role: dict(sorted(c.items(), key=lambda kv: -kv[1])) for role, c in counts.items()}
