"""Placement: each tensor's home memory by role, from the deploy block or --place, shown in the
listing (and read back), costed over its route, and checked against each memory's capacity.
The user-written CXL pool target works from its file alone."""
from __future__ import annotations

from pathlib import Path

import pytest

from cli_helpers import dsc, in_repo_root  # noqa: F401
from compiler.driver import compile_model
from compiler.errors import DscError
from isa.assembler import parse_listing
from isa.listing import render
from isa.placement import PlacementError, parse_placement
from isa.target_loader import load_target
from runtime.interpreter import run_program

ROOT = Path(__file__).resolve().parent.parent
CXL = "examples/targets/npu256_cxl.toml"
LLAMA = str(ROOT / "examples" / "llama3_8b.ds")
SMALL = {"n_layers": "1", "ctx": "1024"}


def compiled(place=None, target=CXL, model=LLAMA, **options):
    return compile_model(model, str(ROOT / target) if target.endswith(".toml") else target,
                         SMALL, place=place, **options)


def test_policy_text():
    assert parse_placement("kv_cache=pool, weights=hbm") == {"kv_cache": "pool", "weights": "hbm"}
    for bad, message in (("kv=pool", "unknown role 'kv'"), ("kv_cache", "expected ROLE=MEMORY"),
                         ("kv_cache=a,kv_cache=b", "given twice")):
        with pytest.raises(PlacementError, match=message):
            parse_placement(bad)


def test_the_kv_cache_lives_in_the_pool_and_the_listing_says_so():
    c = compiled("kv_cache=pool")
    caches = [t for t in c.program.tensors if t.kind == "cache"]
    assert caches and all(t.memory == "pool" for t in caches)
    assert all(t.memory is None for t in c.program.tensors if t.kind in ("weight", "input"))
    text = render(c.program)
    assert "cache in=pool" in text
    back = parse_listing(text, "x.lst", c.target)
    assert back.tensors == c.program.tensors
    assert render(back) == text


def test_the_pool_carries_the_cache_reads_over_its_link():
    """Attention reads both caches (16 requests x 1025 positions x 8 heads x 128 x bf16)
    once: the step's new K and V rows from L2, where the kernel before left them, the rest
    from the pool over the link inward; the new rows go out over the link outward when they
    drain. Nothing else touches the pool."""
    run = run_program(compiled("kv_cache=pool").program, load_target(str(ROOT / CXL)))
    default = run_program(compiled().program, load_target(str(ROOT / CXL)))
    moved = lambda rr, rid: sum(r.result.resource_bytes.get(rid, 0.0) for r in rr.launches)
    reads, writes = 2 * 16 * 1025 * 8 * 128 * 2, 2 * 16 * 8 * 128 * 2
    assert moved(run, "cxl.cxl>d0") == reads - writes
    assert moved(run, "cxl.d0>cxl") == writes
    assert moved(run, "pool") == reads
    assert moved(default, "pool") == 0
    assert moved(default, "hbm") - moved(run, "hbm") == pytest.approx(reads, rel=1e-9)
    assert run.cycles > default.cycles                  # 64 GB/s, not 4 TB/s


def test_the_deploy_block_places_and_the_command_line_overrides(tmp_path):
    text = (ROOT / "examples" / "llama3_8b.ds").read_text().replace(
        "  precision {", "  deploy {\n    place kv_cache=pool\n    place weights=hbm\n  }\n\n"
                         "  precision {", 1)
    model = tmp_path / "m.ds"
    model.write_text(text)
    placed = compiled(model=str(model))
    assert {t.memory for t in placed.program.tensors if t.kind == "cache"} == {"pool"}
    back = compiled("kv_cache=hbm", model=str(model))
    assert {t.memory for t in back.program.tensors if t.kind == "cache"} == {None}


def test_unknown_memory_is_refused_with_the_targets_memories():
    with pytest.raises(DscError) as info:
        compiled("kv_cache=host")
    assert "has no memory 'host'" in str(info.value) and "hbm, pool" in str(info.value.expected)


def test_a_memory_too_small_for_what_is_placed_in_it(tmp_path):
    small = (ROOT / CXL).read_text().replace("bytes = 1000000000000", "bytes = 1000000")
    path = tmp_path / "small.toml"
    path.write_text(small)
    with pytest.raises(DscError, match="does not fit npu256_cxl's pool: the kv_cache placed"):
        compiled("kv_cache=pool", target=str(path))


def test_the_cli_places_and_a_listing_names_an_unknown_memory(capsys, tmp_path):
    code, out, err = dsc(capsys, "run", "examples/llama3_8b.ds", "--target", CXL,
                         "--set", "n_layers=1", "--place", "kv_cache=pool")
    assert code == 0, err
    assert "placed in pool: 2 tensors" in out and "pool requests" in out
    code, listing, err = dsc(capsys, "compile", "examples/llama3_8b.ds", "--target", CXL,
                             "--set", "n_layers=1", "--place", "kv_cache=pool")
    assert code == 0, err
    path = tmp_path / "x.lst"
    path.write_text(listing)
    code, out, err = dsc(capsys, "run", str(path), "--target", "h800")
    assert code == 1 and "in=pool: target h800 has no such memory" in err, err
    code, out, err = dsc(capsys, "run", str(path), "--target", CXL, "--place", "weights=pool")
    assert code == 1 and "--place" in err and "do not apply" in err
