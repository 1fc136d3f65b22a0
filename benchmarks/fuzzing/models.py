""".ds models: generated from a shape-tracking template, derived from the grammar, mutated
from the examples and the standard library, and files whose imports point at odd paths.

Each generator returns `(files, model)`: the files to write in the case's directory (name ->
text or bytes) and the name of the model file to give dsc. The shape-tracking generator
mostly writes models that build (so compilation and simulation are reached, not only the
parser) with sizes drawn mostly small, sometimes odd and rarely absurd.
"""
from __future__ import annotations

import random
import re

from benchmarks.fuzzing import seeds
from benchmarks.fuzzing.grammar import NAMES, grammar_sentence
from benchmarks.fuzzing.mutate import TEXT_MUTATIONS, interesting_number, weighted

FORMATS = ("bf16", "fp32", "fp16", "fp8_e4m3", "fp8_e5m2", "int8", "mxfp8", "mxfp6", "mxfp4",
           "nvfp4", "mxint8", "fp8_e4m3 scaled(fp32, 128x128)", "fp8_e4m3 scaled(fp32, 1x128)",
           "fp8_e4m3 scaled(ue8m0, 1x128)", "fp4_e2m1 scaled(fp8_e4m3, 1x16, fp32)",
           "fp6_e3m2 scaled(ue8m0, 32x1)", "fp8_e4m3 scaled(fp32, 7x3)")


def small_dim(rng: random.Random) -> int:
    """Mostly tile-friendly small sizes, sometimes odd ones, rarely large or absurd."""
    r = rng.random()
    if r < 0.80:
        return rng.choice((1, 2, 4, 8, 16, 32, 64, 64, 128, 128, 256))
    if r < 0.95:
        return rng.choice((3, 5, 7, 24, 48, 96, 100, 129, 192, 300, 512, 1000))
    if r < 0.99:
        return rng.choice((1024, 2048, 4096, 7168))
    return rng.choice((10**5, 10**6, 2**31, 10**9, 10**12))


class _Model:
    """Text of a model under construction, with the shape of the running tensor `h`."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.lines: list[str] = []
        self.imports: set[str] = set()
        self.count = 0
        self.batch, self.seq = rng.choice((1, 2, 2, 4)), rng.choice((1, 1, 2, 4, 16))
        self.dim = rng.choice((16, 32, 64, 64, 128, 256)) if rng.random() < 0.9 else small_dim(rng)
        self.first_dim = self.dim

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def emit(self, line: str, indent: int = 1) -> None:
        self.lines.append("  " * indent + line)


def _linear(m: _Model, ind: int) -> None:
    out = small_dim(m.rng) if m.rng.random() < 0.3 else m.dim
    w = m.fresh("w")
    m.emit(f"weight {w}: {m.rng.choice(('', 'bf16', 'fp8_e4m3', 'mxfp4', 'fp32'))}"
           f"[{m.dim}, {out}]", ind)
    m.emit(f"h = h @ {w}", ind)
    m.dim = out


def _unary(m: _Model, ind: int) -> None:
    f = m.rng.choice(("silu", "relu", "exp", "sigmoid", "neg", "-"))
    m.emit(f"h = -h" if f == "-" else f"h = {f}(h)", ind)


def _scalar(m: _Model, ind: int) -> None:
    op = m.rng.choice("+-*/")
    k = m.rng.choice(("0.5", "2", "1e-3", "3", "0", interesting_number(m.rng)))
    m.emit(f"h = h {op} {k}" if m.rng.random() < 0.7 else f"h = {k} {op} h", ind)


def _residual(m: _Model, ind: int) -> None:
    f = m.rng.choice(("silu", "sigmoid", "relu"))
    m.emit(f"h = h + {f}(h)", ind)


def _norm(m: _Model, ind: int) -> None:
    if m.rng.random() < 0.5:
        m.imports.add("nn")
        m.emit(f"h = norm(h, {m.rng.choice(('1e-6', '1e-5', '0.0'))})", ind)
    else:
        w = m.fresh("g")
        m.emit(f"weight {w}: bf16[{m.dim}]", ind)
        m.emit(f"h = rmsnorm(h, {w})", ind)


def _swiglu(m: _Model, ind: int) -> None:
    m.imports.add("nn")
    m.emit(f"h = h + swiglu(h, {small_dim(m.rng)})", ind)


def _rowwise(m: _Model, ind: int) -> None:
    kind = m.rng.choice(("softmax", "sum", "mean", "max", "cast"))
    if kind == "softmax":
        m.emit("h = softmax(h)", ind)
    elif kind == "cast":
        m.emit(f'h = cast(h, "{m.rng.choice(FORMATS)}")', ind)
    else:
        m.emit(f"h = h - {kind}(h, axis=-1, keepdims=true)", ind)


def _widen(m: _Model, ind: int) -> None:
    if m.rng.random() < 0.5 or m.dim < 2:
        m.emit("h = concat([h, h])", ind)
        m.dim *= 2
    else:
        half = m.dim // 2
        m.emit(f"h = slice(h, -1, 0, {half})", ind)
        m.dim = half


def _rope(m: _Model, ind: int) -> None:
    m.emit(f"h = rope(h, offset={m.rng.choice((0, 4, 100))}, theta=10000.0)", ind)


def _moe(m: _Model, ind: int) -> None:
    m.imports.add("moe")
    rng = m.rng
    experts = rng.choice((2, 4, 8, 16)) if rng.random() < 0.95 else small_dim(rng)
    top_k = rng.choice((1, 2, min(4, experts)))
    groups = rng.choice((1, 2)) if experts % 2 == 0 else 1
    t = m.fresh("t")
    m.emit(f"{t} = reshape(h, [{m.batch} * {m.seq}, {m.dim}])", ind)
    m.emit(f"{t} = moe({t}, {experts}, {top_k}, {small_dim(rng)}, groups={groups}, "
           f"topk_groups=1, scale=2.5, shared={rng.choice((0, 1))}, "
           f"capacity={rng.choice((0, m.batch * m.seq))})", ind)
    m.emit(f"h = h + reshape({t}, [{m.batch}, {m.seq}, {m.dim}])", ind)


def _attention(m: _Model, ind: int) -> None:
    m.imports.add("attention")
    rng = m.rng
    heads = rng.choice((1, 2, 4))
    if rng.random() < 0.5:
        kv = rng.choice([k for k in (1, 2, 4) if heads % k == 0])
        m.emit(f"h = h + gqa(h, ctx, {heads}, {kv}, {rng.choice((16, 32, 64))})", ind)
    else:
        block = rng.choice(("mla_absorbed", "mla_naive"))
        m.emit(f"h = h + {block}(h, ctx, {heads}, 32, 32, 16, 8, 16)", ind)


def _einsum(m: _Model, ind: int) -> None:
    out = small_dim(m.rng)
    w = m.fresh("e")
    m.emit(f"weight {w}: [{m.dim}, {out}]", ind)
    m.emit(f'h = einsum("bsd,de->bse", h, {w})', ind)
    m.dim = out


STEPS = {_linear: 6, _unary: 3, _scalar: 2, _residual: 2, _norm: 3, _swiglu: 2, _rowwise: 3,
         _widen: 1, _rope: 1, _moe: 1, _attention: 1, _einsum: 1}
SHAPE_KEEPING = (_unary, _scalar, _residual, _norm, _swiglu, _rowwise, _moe, _attention)


def structured_model(rng: random.Random) -> dict[str, str]:
    """A model that usually builds: an input [batch, seq, dim] through a random chain of
    layers (and sometimes a repeat of shape-keeping ones) to an output."""
    m = _Model(rng)
    for _ in range(rng.randint(1, 5)):
        step = weighted(rng, STEPS)
        if rng.random() < 0.15:
            m.emit(f"repeat {rng.choice((0, 1, 2, 3))} as layer {{")
            for _ in range(rng.randint(1, 2)):
                rng.choice(SHAPE_KEEPING)(m, 2)
            m.emit("}")
        else:
            step(m, 1)
    head = [f'import "std/{name}.ds"' for name in sorted(m.imports)]
    policy = ""
    if rng.random() < 0.4:
        roles = rng.sample(("default", "weights", "activations", "kv_cache"), rng.randint(1, 3))
        policy = "  precision {\n" + "".join(f"    {r} {rng.choice(FORMATS)}\n" for r in roles) \
            + "  }\n"
    text = "\n".join(head) + f"\nmodel fuzz {{\n  size batch = {m.batch}, seq = {m.seq}, " \
        f"ctx = {rng.choice((0, 8, 64))}\n  dim = {m.first_dim}\n" + policy + \
        f"  input x: {rng.choice(('', 'bf16', 'fp32'))}[batch, seq, dim]\n  h = x\n" + \
        "\n".join(m.lines) + f"\n  output y = h\n}}\n"
    return {"model.ds": text}


def grammar_model(rng: random.Random) -> dict[str, str]:
    """Sentences of the grammar: whole files, or a model after realistic imports."""
    if rng.random() < 0.3:
        return {"model.ds": grammar_sentence(rng, "start")}
    imports = "".join(f'import "std/{n}.ds"\n' for n in ("nn", "attention", "moe")
                      if rng.random() < 0.5)
    return {"model.ds": imports + grammar_sentence(rng, "model_def")}


def mutated_example(rng: random.Random) -> dict[str, str]:
    """A small variant of an example, mutated by characters, tokens, numbers or lines."""
    name = weighted(rng, seeds.EXAMPLE_WEIGHTS)
    text = seeds.small_example(name)
    how = weighted(rng, {"chars": 3, "tokens": 4, "numbers": 4, "lines": 2, "truncate": 1})
    mutate = TEXT_MUTATIONS[how]
    text = mutate(rng, text)
    return {"model.ds": text}


def mutated_stdlib(rng: random.Random) -> dict[str, str]:
    """tiny_moe.ds (or a structured model) with one standard-library file replaced by a
    mutated copy next to it, imported by a relative path."""
    lib = rng.choice(sorted(seeds.STDLIB))
    how = weighted(rng, {"chars": 3, "tokens": 4, "numbers": 3, "lines": 2, "truncate": 1})
    files = {lib: TEXT_MUTATIONS[how](rng, seeds.STDLIB[lib])}
    model = seeds.small_example("tiny_moe.ds") if rng.random() < 0.5 else \
        structured_model(rng)["model.ds"]
    text = model.replace(f'"std/{lib}"', f'"{lib}"')
    files["model.ds"] = text if f'"{lib}"' in text else f'import "{lib}"\n' + text
    return files


ODD_IMPORTS = ("", ".", "..", "/", "std", "std/", "std/.", "std/..", "std/../stdlib/nn.ds",
               "std/nn", "std/nn.ds/", "std//nn.ds", "std/nope.ds", "sub", "sub/", "sub/x.ds",
               "model.ds", "./model.ds", "other.ds", "binary.ds", "latin1.ds", "empty.ds",
               "/dev/null", "/proc/self", "a" * 300, "x\x00y.ds", "nope.ds", "../" * 40,
               "std/moe.ds", "~/x.ds", "$HOME/x.ds", "*.ds", "sub/../other.ds")


def odd_imports(rng: random.Random) -> dict[str, object]:
    """A model importing directories, itself, binary or non-UTF-8 files, odd paths."""
    files: dict[str, object] = {
        "sub/x.ds": 'import "../other.ds"\nblock f(x: [n]) { return x }\n',
        "other.ds": rng.choice(('import "model.ds"\n', "", "block g(x: [n]) { return x }\n",
                                "model other { input a: [2]\n output b = -a }\n")),
        "binary.ds": bytes(range(256)),
        "latin1.ds": "# caf\xe9\n".encode("latin-1"),
        "empty.ds": "",
    }
    paths = rng.sample(ODD_IMPORTS, rng.randint(1, 3))
    body = structured_model(rng)["model.ds"]
    files["model.ds"] = "".join(f'import "{p}"\n' for p in paths) + body
    return files


def names_in(text: str) -> list[str]:
    """Top-level integer names a `--set` can target (a cheap textual approximation)."""
    found = re.findall(r"^\s*(?:size\s+)?([A-Za-z_]\w*)\s*=\s*[-\d]", text, re.M)
    found += re.findall(r",\s*([A-Za-z_]\w*)\s*=\s*\d", text)
    return sorted(set(found)) or list(NAMES[:5])
