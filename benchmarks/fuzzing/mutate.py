"""Generic text mutations shared by every input kind: characters, tokens, lines, numbers.

Each mutation takes a `random.Random` and a text and returns a new text, so a case is a pure
function of its seed. The value pools hold what breaks programs: zero, negatives, values at
and past 32/64-bit limits, non-finite floats, empty and non-ASCII text.
"""
from __future__ import annotations

import random
import re

# Integers and floats that probe edges: zero, one, negatives, powers of two around common
# limits, values that overflow 32 and 64 bits, and ones that are too large to allocate.
INTERESTING_INTS = (0, 1, 2, 3, 7, 8, 64, 127, 128, 255, 256, 1000, 4096, 65535, 65536,
                    2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**12,
                    10**18, 10**30, -1, -2, -128, -2**31, -2**63)
INTERESTING_FLOATS = ("0.0", "-0.0", "1e-300", "1e-6", "0.5", "2.5", "1e300", "1e309",
                      "-1.5", "nan", "inf", "-inf", "1.0e", "3.", ".5")
INTERESTING_TEXT = ("", " ", "x", "_", "-", "=", ",", "0x10", "1_000", "１", "é", "\t",
                    "\x00", "\\", "'", '"', "#", "[", "]", "{", "}", "(", ")", "@", "..",
                    "/", "-1", "nan", "inf", "true", "none", "null")
WEIRD_CHARS = "\x00\t\r\n \"'#@[](){}<>,.;:=+-*/%\\`~!$^&|?é€ \u202e\ufeff"

TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\s+|.", re.S)
NUMBER = re.compile(r"(?<![A-Za-z_0-9.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![A-Za-z_0-9])")


def interesting_number(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return str(rng.choice(INTERESTING_INTS))
    return rng.choice(INTERESTING_FLOATS)


def mutate_chars(rng: random.Random, text: str, count: int | None = None) -> str:
    """Insert, delete, replace, duplicate or swap a few characters."""
    chars = list(text)
    for _ in range(count or rng.randint(1, 4)):
        op = rng.randrange(5)
        i = rng.randrange(len(chars) + 1)
        if op == 0:
            chars.insert(i, rng.choice(WEIRD_CHARS + text[:200]) if text else "x")
        elif not chars:
            continue
        elif op == 1:
            del chars[min(i, len(chars) - 1)]
        elif op == 2:
            chars[min(i, len(chars) - 1)] = rng.choice(WEIRD_CHARS)
        elif op == 3:
            j = min(i, len(chars) - 1)
            chars[j:j] = chars[j:j + rng.randint(1, 40)]
        else:
            j = rng.randrange(len(chars))
            k = rng.randrange(len(chars))
            chars[j], chars[k] = chars[k], chars[j]
    return "".join(chars)


def mutate_tokens(rng: random.Random, text: str, pool: tuple[str, ...] = (),
                  count: int | None = None) -> str:
    """Delete, duplicate, swap or replace whole tokens (names, numbers, punctuation);
    replacements come from the text itself, `pool` and the interesting values."""
    tokens = TOKEN.findall(text)
    solid = [i for i, t in enumerate(tokens) if not t.isspace()]
    if not solid:
        return text + rng.choice(pool or INTERESTING_TEXT)
    words = [tokens[i] for i in solid]
    for _ in range(count or rng.randint(1, 3)):
        i = rng.choice(solid)
        op = rng.randrange(6)
        if op == 0:
            tokens[i] = ""
        elif op == 1:
            tokens[i] = tokens[i] + " " + tokens[i]
        elif op == 2:
            j = rng.choice(solid)
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif op == 3:
            tokens[i] = rng.choice(words)
        elif op == 4 and pool:
            tokens[i] = rng.choice(pool)
        else:
            tokens[i] = interesting_number(rng) if rng.random() < 0.6 else \
                rng.choice(INTERESTING_TEXT)
    return "".join(tokens)


def mutate_numbers(rng: random.Random, text: str, count: int | None = None) -> str:
    """Replace a few numeric literals by interesting values (keeps the text's structure)."""
    spans = [m.span() for m in NUMBER.finditer(text)]
    if not spans:
        return mutate_tokens(rng, text)
    chosen = sorted(rng.sample(spans, min(len(spans), count or rng.randint(1, 2))), reverse=True)
    for start, end in chosen:
        text = text[:start] + interesting_number(rng) + text[end:]
    return text


def mutate_lines(rng: random.Random, text: str, count: int | None = None) -> str:
    """Drop, duplicate, swap or move whole lines."""
    lines = text.split("\n")
    for _ in range(count or rng.randint(1, 3)):
        if len(lines) < 2:
            break
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        op = rng.randrange(4)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(j, lines[i])
        elif op == 2:
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines.insert(j, lines.pop(i))
    return "\n".join(lines)


def truncate(rng: random.Random, text: str) -> str:
    return text[:rng.randrange(len(text) + 1)]


TEXT_MUTATIONS = {"chars": mutate_chars, "tokens": mutate_tokens, "numbers": mutate_numbers,
                  "lines": mutate_lines, "truncate": truncate}


def weighted(rng: random.Random, table: dict):
    """A key of `table` drawn with the weights its values give."""
    keys = list(table)
    return rng.choices(keys, weights=[table[k] for k in keys])[0]
