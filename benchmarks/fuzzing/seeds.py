"""The material mutations start from: the examples (shrunk to small sizes so a case stays
cheap), the standard library, every builtin target as `dsc targets show` prints it, and
listings compiled from small models for each target.

Everything here is computed once per process from the repository (the fuzz parent builds it
before forking its workers) and is the same on every run, so a case depends only on its seed.
"""
from __future__ import annotations

import contextlib
import functools
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {p.name: p.read_text() for p in sorted((ROOT / "examples").glob("*.ds"))}
STDLIB = {p.name: p.read_text() for p in sorted((ROOT / "compiler" / "stdlib").glob("*.ds"))}
EXTRA_TARGETS = {p.name: p.read_text() for p in sorted((ROOT / "examples" / "targets").glob("*.toml"))}

# Sizes that keep each example to milliseconds of compile and simulation. The real
# configurations are exercised too (`FULL_SIZE`), with only their layer count and batch cut.
SMALL_SIZES = {
    "gemm.ds": {"M": 256, "N": 512, "K": 256},
    "grouped.ds": {"G": 2, "M": 128, "N": 256, "K": 256},
    "tiny_moe.ds": {},
    "llama3_8b.ds": {"batch": 2, "ctx": 64, "dim": 256, "vocab": 512, "n_layers": 1,
                     "heads": 4, "kv_heads": 2, "head_dim": 64, "ffn_inter": 512},
    "deepseek_v3.ds": {"batch": 2, "ctx": 64, "dim": 256, "vocab": 512, "n_layers": 2,
                       "n_dense": 1, "dense_inter": 512, "n_experts": 8, "top_k": 2,
                       "moe_inter": 128, "n_groups": 2, "topk_groups": 1, "heads": 4,
                       "q_lora_rank": 64, "kv_lora_rank": 64, "qk_nope_head_dim": 32,
                       "qk_rope_head_dim": 16, "v_head_dim": 32},
    "deepseek_v3_prefill.ds": {"batch": 2, "seq": 16, "dim": 256, "vocab": 512, "n_layers": 2,
                               "n_dense": 1, "dense_inter": 512, "n_experts": 8, "top_k": 2,
                               "moe_inter": 128, "n_groups": 2, "topk_groups": 1, "heads": 4,
                               "q_lora_rank": 64, "kv_lora_rank": 64, "qk_nope_head_dim": 32,
                               "qk_rope_head_dim": 16, "v_head_dim": 32},
}
FULL_SIZE_SETS = {"deepseek_v3.ds": ["n_layers=2", "n_dense=1", "batch=2"],
                  "llama3_8b.ds": ["n_layers=1", "batch=2"]}
# How often each example is the base of a mutated model (cheap ones more often).
EXAMPLE_WEIGHTS = {"gemm.ds": 5, "grouped.ds": 3, "tiny_moe.ds": 2, "llama3_8b.ds": 2,
                   "deepseek_v3.ds": 2, "deepseek_v3_prefill.ds": 1}


@functools.lru_cache(maxsize=None)
def small_example(name: str) -> str:
    """The example with its sizes replaced by the small ones (at their definitions)."""
    lines = EXAMPLES[name].split("\n")
    for size, value in SMALL_SIZES[name].items():
        pattern = re.compile(rf"^([^#]*\b{size}\s*=\s*)\d+")      # a definition, not a comment
        number = next(i for i, line in enumerate(lines) if pattern.match(line))
        lines[number] = pattern.sub(rf"\g<1>{value}", lines[number])
    return "\n".join(lines)


def run_dsc(argv: list[str]) -> tuple[int, str, str]:
    """dsc's entry point in this process: (exit status, stdout, stderr)."""
    from compiler.cli.main import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


@functools.lru_cache(maxsize=1)
def target_texts() -> dict[str, str]:
    """Builtin targets as `dsc targets show` prints them (with the derived figures as
    comments), plus the example target files."""
    from isa.target_loader import builtin_names
    texts = {}
    for name in builtin_names():
        status, out, _ = run_dsc(["targets", "show", name])
        assert status == 0, name
        texts[name] = out
    texts.update({name.removesuffix(".toml"): text for name, text in EXTRA_TARGETS.items()})
    return texts


# (label, model, target, extra options) of the listings that listing mutations start from.
LISTING_SOURCES = [("gemm", "gemm.ds", t, []) for t in
                   ("h800", "a100", "h20", "b200", "ascend910b")] + [
    ("grouped", "grouped.ds", "h800", []),
    ("grouped", "grouped.ds", "ascend910b", []),
    ("gemm-numa", "gemm.ds", "b200", ["--die-mode", "numa"]),
    ("tiny_moe", "tiny_moe.ds", "h800", []),
    ("llama", "llama3_8b.ds", "h800", []),
    ("deepseek-ep4", "deepseek_v3.ds", "h800", ["--devices", "4", "--ignore-capacity"]),
]


# The model each listing label was compiled from (for --functional --model runs).
LISTING_MODELS = {label: model for label, model, _, _ in LISTING_SOURCES}


@functools.lru_cache(maxsize=1)
def listings() -> list[tuple[str, str, str]]:
    """(label, listing text, target) compiled from the small examples."""
    import tempfile
    out = []
    with tempfile.TemporaryDirectory() as folder:
        for label, model, target, extra in LISTING_SOURCES:
            path = Path(folder) / model
            path.write_text(small_example(model))
            status, text, err = run_dsc(["compile", str(path), "--target", target] + extra)
            assert status == 0, (label, target, err)
            out.append((label, text, target))
    return out


def warm() -> None:
    """Build everything once (before forking workers, so they share it): the seed material,
    and dsc's own lazily built parsers, imports and caches, by running each kind of command."""
    import tempfile
    target_texts()
    for name in SMALL_SIZES:
        small_example(name)
    with tempfile.TemporaryDirectory() as folder:
        lst, model = Path(folder) / "x.lst", Path(folder) / "m.ds"
        lst.write_text(listings()[0][1])
        model.write_text(small_example("tiny_moe.ds"))
        for argv in (["run", str(lst), "--target", "h800", "--trace", str(lst) + ".json"],
                     ["run", str(model), "--target", "h800", "--functional"],
                     ["run", str(model), "--target", "h800", "--html", str(lst) + ".html"],
                     ["compile", str(model), "--target", "ascend910b", "--emit", "ir"],
                     ["isa", "h800"], ["targets", "schema"]):
            assert run_dsc(argv)[0] == 0, argv


def share_across_cases() -> None:
    """Build once per process what is the same from case to case, as a campaign runs tens of
    thousands of cases in one process: dsc's argument parser (parsing does not change it), and
    each target file whose name and bytes were loaded before (loading is a pure function of
    them and a target is a frozen value). Errors are not kept: they are raised afresh."""
    import compiler.cli.main as cli
    import compiler.driver as driver
    import isa.target_loader as loader
    if getattr(loader.load_target, "shared", False):
        return
    cli.build_parser = functools.lru_cache(maxsize=1)(cli.build_parser)
    load, loaded = loader.load_target, {}

    def load_target(name_or_path: str, overrides: dict | None = None, peak: bool = False):
        if overrides:                             # --target-set: loaded as dsc loads it
            return load(name_or_path, overrides, peak=peak)
        try:
            key = (name_or_path, loader.resolve_target_path(name_or_path).read_bytes(), peak)
        except (OSError, loader.TargetError):
            return load(name_or_path, peak=peak)  # its own error, as dsc gives it
        target = loaded.pop(key, None) or load(name_or_path, peak=peak)
        loaded[key] = target                      # the most recently used last
        if len(loaded) > 64:                      # mutated files are seldom loaded twice
            loaded.pop(next(iter(loaded)))
        return target

    load_target.shared = True
    loader.load_target = driver.load_target = load_target
