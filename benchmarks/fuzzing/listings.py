"""Listings: compiled from small models for each target, then edited the way a user might get
it wrong: lines dropped, duplicated or moved; operands, counts and attributes corrupted;
tokens waited on but never signalled, credits changed; run on another target."""
from __future__ import annotations

import random
import re

from benchmarks.fuzzing import seeds
from benchmarks.fuzzing.mutate import TEXT_MUTATIONS, interesting_number, mutate_numbers, weighted

INSTR = re.compile(r"^\s+[a-z]+\.[a-z.]+\s")


def _lines_where(lines: list[str], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return [i for i, line in enumerate(lines) if rx.search(line)]


def _edit_line(rng: random.Random, lines: list[str], pattern: str, edit) -> list[str]:
    found = _lines_where(lines, pattern)
    if found:
        i = rng.choice(found)
        lines[i] = edit(lines[i])
    return lines


def _count(rng: random.Random) -> str:
    return str(rng.choice((0, 1, 2, 3, 5, 7, 64, 1000, 10**6, 10**9, 2**31, 10**18, -1)))


def corrupt_operand(rng: random.Random, lines: list[str]) -> list[str]:
    """A number inside one instruction (box starts and sizes, slots, attributes)."""
    return _edit_line(rng, lines, INSTR.pattern, lambda line: mutate_numbers(rng, line))


def corrupt_attr(rng: random.Random, lines: list[str]) -> list[str]:
    """One `name=value` attribute of an instruction: a bad number, shape or format."""
    def edit(line: str) -> str:
        attrs = list(re.finditer(r"(\w+)=(\S+)", line))
        if not attrs:
            return line
        m = rng.choice(attrs)
        value = rng.choice((interesting_number(rng), "0x128x128", "128x0x128", "1x1x1",
                            "-64x8x16", "bf16", "fp4_e2m1", "nope", "k==0", "k%0", "1/0", "",
                            "99999999x99999999x99999999", "m*n*k"))
        return line[:m.start(2)] + value + line[m.end(2):]
    return _edit_line(rng, lines, INSTR.pattern, edit)


def corrupt_slot(rng: random.Random, lines: list[str]) -> list[str]:
    """A ring-buffer slot index `k%4` -> another modulus or expression."""
    return _edit_line(rng, lines, r"\[\w+%\d+\]", lambda line: re.sub(
        r"\[(\w+)%(\d+)\]", lambda m: f"[{m.group(1)}%{rng.choice(('0', '1', '3', '5', '99', '-1'))}]"
        if rng.random() < 0.7 else f"[{rng.choice(('k', 'k+1', '-1', '99', 'k//0', 'm*n'))}]",
        line, count=1))


def corrupt_counts(rng: random.Random, lines: list[str]) -> list[str]:
    """A grid dimension, loop count, buffer slot count or token credit."""
    which = rng.randrange(5)
    if which == 0:
        return _edit_line(rng, lines, r"^\s+grid ", lambda line: re.sub(
            r"=(\d+)", lambda m: "=" + _count(rng), line, count=1))
    if which == 1:
        return _edit_line(rng, lines, r"^\s+loop \w+ \d+", lambda line: re.sub(
            r"(loop \w+ )\d+", lambda m: m.group(1) + _count(rng), line))
    if which == 2:
        return _edit_line(rng, lines, r"^\s+buffer .* x\d+", lambda line: re.sub(
            r" x\d+", lambda m: " x" + _count(rng), line))
    if which == 3:
        return _edit_line(rng, lines, r"^\s+token ", lambda line: re.sub(
            r"=(\d+)", lambda m: "=" + _count(rng), line, count=1))
    return _edit_line(rng, lines, r"^\s+buffer .*@\d+", lambda line: re.sub(
        r"@\d+", lambda m: "@" + _count(rng), line))


def corrupt_shapes(rng: random.Random, lines: list[str]) -> list[str]:
    """A declared tensor, view or buffer shape, or a launch's flops."""
    if rng.random() < 0.3:
        return _edit_line(rng, lines, r"flops=", lambda line: re.sub(
            r"flops=\S+", "flops=" + rng.choice(("0", "-1.0", "nan", "inf", "1e308", "-inf",
                                                  "1e400")), line))
    return _edit_line(rng, lines, r"^\s*(tensor|view|buffer) ", lambda line: re.sub(
        r"\[([\d,]+)\]", lambda m: "[" + ",".join(_count(rng) if rng.random() < 0.4 else d
                                                  for d in m.group(1).split(",")) + "]",
        line, count=1))


def orphan_wait(rng: random.Random, lines: list[str]) -> list[str]:
    """An instruction waits on a token nobody signals (declared with no credit, or not at
    all); or a signal is removed so its waiters never run."""
    op = rng.randrange(3)
    if op == 0:
        found = _lines_where(lines, r"^\s+token ")
        if found:
            lines[found[0]] += " never=0"
        return _edit_line(rng, lines, INSTR.pattern,
                          lambda line: re.sub(r"(wait\()", r"\1never,", line, count=1)
                          if "wait(" in line else line + "  wait(never)")
    if op == 1:
        return _edit_line(rng, lines, INSTR.pattern, lambda line: line + "  wait(ghost)")
    return _edit_line(rng, lines, r"signal\(", lambda line: re.sub(r"\s*signal\([^)]*\)", "", line))


def retarget(rng: random.Random, lines: list[str]) -> list[str]:
    """The header names another target (the listing is run on a different one below)."""
    lines[0] = re.sub(r"target \S+", "target " + rng.choice(("h800", "a100", "nope", "")),
                      lines[0])
    return lines


def schedule_edit(rng: random.Random, lines: list[str]) -> list[str]:
    """Launch bindings, repeat ranges."""
    if rng.random() < 0.5:
        return _edit_line(rng, lines, r"^\s+repeat \w+ \d+\.\.\d+", lambda line: re.sub(
            r"(\d+)\.\.(\d+)", lambda m: f"{_count(rng)}..{_count(rng)}", line))
    return _edit_line(rng, lines, r"^\s+launch ", lambda line: re.sub(
        r"=([\w.{}]+)", lambda m: "=" + rng.choice(("a", "nope", "c.gmn", "{i}", "x")), line,
        count=1))


def _text(how: str):
    def edit(rng: random.Random, lines: list[str]) -> list[str]:
        return TEXT_MUTATIONS[how](rng, "\n".join(lines)).split("\n")
    return edit


EDITS = {corrupt_operand: 5, corrupt_attr: 4, corrupt_slot: 3, corrupt_counts: 5,
         corrupt_shapes: 3, orphan_wait: 3, retarget: 1, schedule_edit: 2,
         _text("lines"): 4, _text("chars"): 2, _text("tokens"): 2, _text("truncate"): 1}
# The deployment listings are large and slow to run: mostly edit the small ones.
SOURCE_WEIGHTS = {"gemm": 6, "grouped": 3, "gemm-numa": 2, "tiny_moe": 1, "llama": 1,
                  "deepseek-ep4": 0.5}


def listing(rng: random.Random) -> tuple[str, str, str]:
    """(label, target to run on, edited listing text)."""
    sources = seeds.listings()
    weights = [SOURCE_WEIGHTS[label] for label, _, _ in sources]
    label, text, target = rng.choices(sources, weights=weights)[0]
    lines = text.split("\n")
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        lines = weighted(rng, EDITS)(rng, lines)
    if rng.random() < 0.05:
        target = rng.choice(("h800", "a100", "h20", "b200", "ascend910b"))
    return label, target, "\n".join(lines)

