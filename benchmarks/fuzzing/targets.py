"""Target files: every builtin (as `dsc targets show` prints it) with one to three of its keys
missing, retyped, zeroed, negated, non-finite, huge or misspelt, or its TOML text broken."""
from __future__ import annotations

import json
import math
import random
import tomllib

from benchmarks.fuzzing import seeds
from benchmarks.fuzzing.mutate import TEXT_MUTATIONS, mutate_chars, weighted

BAD_VALUES = (0, 0.0, -1, -0.5, 1e-300, math.nan, math.inf, -math.inf, 1e300, 2**31, 2**53,
              2**63 - 1, 10**15, 10**30, "", "x", "128", True, [], [1], {}, 1.5, 3)


def _paths(data: dict, prefix=()) -> list[tuple]:
    """Dotted paths of every key (tables and leaves)."""
    out = []
    for k, v in data.items():
        out.append(prefix + (k,))
        if isinstance(v, dict):
            out += _paths(v, prefix + (k,))
    return out


def _parent(data: dict, path: tuple) -> dict:
    for k in path[:-1]:
        data = data[k]
    return data


def _mutate_value(rng: random.Random, value):
    if isinstance(value, list) and value and rng.random() < 0.5:
        items = list(value)
        op = rng.randrange(3)
        if op == 0:
            items[rng.randrange(len(items))] = rng.choice(BAD_VALUES)
        elif op == 1:
            items.pop(rng.randrange(len(items)))
        else:
            items.append(rng.choice(items))
        return items
    if isinstance(value, (int, float)) and not isinstance(value, bool) and rng.random() < 0.3:
        return value * rng.choice((10**6, 10**12, -1, 0.5, 1e-6))
    return rng.choice(BAD_VALUES)


def mutate_data(rng: random.Random, data: dict) -> dict:
    """Apply one structural mutation to parsed target data (in place) and return it."""
    path = rng.choice(_paths(data))
    parent = _parent(data, path)
    key = path[-1]
    op = weighted(rng, {"value": 6, "drop": 2, "misspell": 2, "unknown": 1, "table": 1})
    if op == "value" and not isinstance(parent[key], dict):
        parent[key] = _mutate_value(rng, parent[key])
    elif op == "drop":
        del parent[key]
    elif op == "misspell":
        parent[mutate_chars(rng, key, 1).strip() or "_"] = parent.pop(key)
    elif op == "unknown":
        parent[rng.choice(("colour", "cores", "bytes", "bandwith_gbs", "fixed_pipe"))] = 1
    else:
        parent[key] = {} if rng.random() < 0.5 else {"ops": [], "elements_per_cycle": 0}
    return data


def dump_toml(data: dict) -> str:
    """TOML text of nested tables of scalars and lists (enough for target files)."""
    lines: list[str] = []

    def table(prefix: tuple, table_data: dict) -> None:
        scalars = {k: v for k, v in table_data.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in table_data.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            lines.append(f"\n[{'.'.join(_key(k) for k in prefix)}]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars.items())
        for k, v in tables.items():
            table(prefix + (k,), v)

    table((), data)
    return "\n".join(lines) + "\n"


def _key(k: str) -> str:
    return k if k and all(c.isalnum() or c in "_-" for c in k) else json.dumps(k)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def target_file(rng: random.Random) -> tuple[str, str]:
    """(base target name, mutated TOML text)."""
    texts = seeds.target_texts()
    base = rng.choice(sorted(texts))
    text = texts[base]
    if rng.random() < 0.25:                      # broken text: TOML syntax, lines, characters
        how = weighted(rng, {"chars": 3, "lines": 3, "tokens": 2, "numbers": 3, "truncate": 1})
        return base, TEXT_MUTATIONS[how](rng, text)
    data = tomllib.loads(text)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        data = mutate_data(rng, data)
    return base, dump_toml(data)
