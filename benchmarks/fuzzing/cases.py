"""Fuzz cases: what one run of dsc is given (files and a command line), drawn from a seed.

`make_case(seed, index)` is a pure function: the same seed and index give the same case on
every machine and in every process, so a campaign is reproducible and any case can be
regenerated from its number. Four kinds of input, as a user gives them:

    ds        .ds models (generated from a template or the grammar, mutated examples and
              standard library files, odd imports), compiled, run, or run functionally
    target    target files (builtins with keys missing, retyped, zero, negative, NaN,
              infinite, huge or misspelt; broken TOML), checked, shown, or used to run models
    listing   listings of small models, edited (lines, operands, counts, tokens), run
    options   command-line values (--set, --plan, --devices, --die-mode, outputs, ...)
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from benchmarks.fuzzing import listings, models, options, seeds, targets
from benchmarks.fuzzing.mutate import weighted

KIND_WEIGHTS = {"ds": 40, "target": 20, "listing": 22, "options": 18}
BUILTIN_TARGETS = ("h800", "a100", "h20", "b200", "ascend910b")


@dataclass
class Case:
    index: int
    kind: str
    how: str                                   # the generator, e.g. "ds.structured"
    argv: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()              # files the command asks dsc to write
    # Run after the command succeeds (a compiled listing read back and run): it must succeed
    # too, since dsc must accept what it emits.
    then: list[str] | None = None

    def command(self) -> str:
        import shlex
        show = lambda argv: "dsc " + " ".join(shlex.quote(a) for a in argv)
        return show(self.argv) + (f" && {show(self.then)}" if self.then else "")


def case_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"dsc-fuzz:{seed}:{index}")


def make_case(seed: int, index: int, kinds: tuple[str, ...] | None = None) -> Case:
    rng = case_rng(seed, index)
    table = {k: w for k, w in KIND_WEIGHTS.items() if not kinds or k in kinds}
    kind = weighted(rng, table)
    return MAKERS[kind](rng, index)


def _target(rng: random.Random) -> str:
    return rng.choice(BUILTIN_TARGETS) if rng.random() < 0.4 else "h800"


def _run_command(rng: random.Random, model: str, target: str, functional: bool = True):
    """A compile, run or stats command on `model`, with the outputs it writes."""
    r = rng.random()
    if r < 0.15:
        out = rng.choice(("out.lst", "-"))
        emit = ["--emit", "ir"] if rng.random() < 0.3 else []
        return ["compile", model, "--target", target, "-o", out] + emit, \
            () if out == "-" else (out,)
    if r < 0.2:
        return ["stats", model] + (["--json"] if rng.random() < 0.5 else []), ()
    argv = ["run", model, "--target", target, "--json", "out.json"]
    outs = ["out.json"]
    if rng.random() < 0.06:                     # record mode simulates afresh: costly
        argv += ["--trace", "trace.json"]
        outs.append("trace.json")
    if functional and rng.random() < 0.05:          # numerics cost ten times a run
        argv += ["--functional", "--seed", str(rng.randrange(100))]
    return argv, tuple(outs)


def _ds_case(rng: random.Random, index: int) -> Case:
    makers = {"structured": (models.structured_model, 5), "grammar": (models.grammar_model, 3),
              "example": (models.mutated_example, 4), "stdlib": (models.mutated_stdlib, 2),
              "imports": (models.odd_imports, 1)}
    how = weighted(rng, {k: w for k, (_, w) in makers.items()})
    files = makers[how][0](rng)
    target = _target(rng)
    argv, outs = _run_command(rng, "model.ds", target, functional=how in ("structured", "stdlib"))
    then = None
    # Read back a third of the listings compiled: reading a listing costs more than the rest
    # of a small case, and the listings of one generator are much alike.
    if argv[0] == "compile" and "out.lst" in outs and "--emit" not in argv \
            and rng.random() < 0.35:
        then = ["run", "out.lst", "--target", target, "--json", "back.json"]
    return Case(index, "ds", f"ds.{how}", argv, files, outs, then)


def _target_case(rng: random.Random, index: int) -> Case:
    base, text = targets.target_file(rng)
    r = rng.random()
    if r < 0.25:
        argv, outs = ["targets", rng.choice(("check", "show")), "t.toml"], ()
        files = {}
    elif r < 0.3:
        argv, outs, files = ["isa", "t.toml"], (), {}
    else:
        name = rng.choice(("gemm.ds", "gemm.ds", "grouped.ds", "tiny_moe.ds", "structured"))
        model = models.structured_model(rng)["model.ds"] if name == "structured" \
            else seeds.small_example(name)
        files = {"model.ds": model}
        argv, outs = _run_command(rng, "model.ds", "t.toml", functional=False)
        if rng.random() < 0.15:
            argv += ["--devices", rng.choice(("2", "8", "16")), "--ignore-capacity"]
        if rng.random() < 0.1:
            argv += ["--die-mode", "numa"]
    files["t.toml"] = text
    return Case(index, "target", f"target.{base}", argv, files, outs)


def _listing_case(rng: random.Random, index: int) -> Case:
    label, target, text = listings.listing(rng)
    argv = ["run", "x.lst", "--target", target, "--json", "out.json"]
    outs = ["out.json"]
    files = {"x.lst": text}
    if rng.random() < 0.1:
        argv += ["--trace", "trace.json"]
        outs.append("trace.json")
    source = seeds.LISTING_MODELS.get(label)
    if source and rng.random() < 0.05:         # executed against the model it came from
        argv += ["--functional", "--model", "model.ds"]
        files["model.ds"] = seeds.small_example(source)
    return Case(index, "listing", f"listing.{label}", argv, files, tuple(outs))


def _options_case(rng: random.Random, index: int) -> Case:
    name = weighted(rng, {"gemm.ds": 4, "grouped.ds": 2, "tiny_moe.ds": 3, "llama3_8b.ds": 1,
                          "deepseek_v3.ds": 2, "structured": 3})
    text = models.structured_model(rng)["model.ds"] if name == "structured" \
        else seeds.small_example(name)
    names = models.names_in(text)
    target = _target(rng)
    files = {"model.ds": text}
    r = rng.random()
    if r < 0.1:                                # the other subcommands, odd names
        argv = rng.choice((["targets"], ["targets", "show", mutate_name(rng, target)],
                           ["targets", "check", mutate_name(rng, target)], ["targets", "schema"],
                           ["isa", mutate_name(rng, target)],
                           ["targets", rng.choice(("list", "", "show"))]))
        return Case(index, "options", "options.targets", argv, files)
    argv, outs = _run_command(rng, "model.ds", target)
    argv += options.model_options(rng, names) if argv[0] != "stats" else \
        sum((["--set", options.set_option(rng, names)] for _ in range(rng.randint(1, 2))), [])
    if argv[0] == "compile" and rng.random() < 0.2:
        argv += ["--stats"] if rng.random() < 0.5 else \
            ["--print-after", rng.choice(options.PASS_NAMES_SAMPLE)]
    if rng.random() < 0.08:                    # outputs where they cannot be written
        bad = rng.choice(("nodir/out.json", ".", "sub", "sub/", "/"))
        argv = [bad if a in outs else a for a in argv]
        files["sub/keep"] = ""
        outs = ()
    if name in seeds.FULL_SIZE_SETS and rng.random() < 0.02:     # the real configuration
        files["model.ds"] = seeds.EXAMPLES[name]
        argv += sum((["--set", s] for s in seeds.FULL_SIZE_SETS[name]), []) + \
            ["--ignore-capacity"]
    return Case(index, "options", f"options.{name.removesuffix('.ds')}", argv, files, outs)


def mutate_name(rng: random.Random, name: str) -> str:
    return rng.choice((name, name.upper(), name + "x", "", "nope.toml", "t.toml", ".", "/",
                       "model.ds", "isa/targets/h800.toml", "../h800"))


MAKERS = {"ds": _ds_case, "target": _target_case, "listing": _listing_case,
          "options": _options_case}
