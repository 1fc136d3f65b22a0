"""The chip families the memory graph opens, each run on a small case whose figures can be
computed by hand from its target file: a GPU reading its KV cache from the CPU's memory over
NVLink-C2C (gb200), a consumer card whose L2 keeps activations between kernels and an 8-card
PCIe box (rtx5090), an SRAM-only wafer (wse3), and 16 NPUs on the 8-per-server Ascend 910C
versus the flat 384-NPU supernode (ascend910c, cloudmatrix384)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from cli_helpers import dsc, in_repo_root  # noqa: F401  (autouse fixture)
from compiler.driver import compile_model
from isa.target_loader import BUILTIN_DIR, load_target
from runtime.interpreter import run_program

LLAMA = "examples/llama3_8b.ds"
ONE_LAYER = (("n_layers", "1"), ("ctx", "1024"))
# One layer's K and V caches: 16 requests x 1024 positions before the step x 8 heads x 128 x bf16.
KV_BEFORE = 2 * 16 * 1024 * 8 * 128 * 2
KV_STEP = 2 * 16 * 8 * 128 * 2                   # the step's new K and V rows


@lru_cache(maxsize=None)
def run(target: str, sets=ONE_LAYER, model=LLAMA, place=None, devices=None, plan=None):
    c = compile_model(model, target, dict(sets), place=place, devices=devices, plan=plan)
    return run_program(c.program, c.target)


def moved(r, rid: str) -> float:
    return sum(x.result.resource_bytes.get(rid, 0.0) for x in r.launches)


def seconds(cycles: float, target: str) -> float:
    return cycles / load_target(target).clock_hz


# -- gb200 -----------------------------------------------------------------------------------


def test_gb200_kv_on_host_costs_the_c2c_links_bytes_over_its_bandwidth():
    """The cache written before the step crosses NVLink-C2C inward once, the step's new rows
    outward once (attention reads those from L2, where the kernel before left them); attention, which reads it, takes that many bytes over 225 GB/s (the link,
    not the 256 GB/s of LPDDR5X, binds) and a few microseconds of latency more."""
    host, hbm = run("gb200", place="kv_cache=host"), run("gb200")
    assert moved(host, "c2c.cpu>d0") == pytest.approx(KV_BEFORE, rel=1e-12)
    assert moved(host, "c2c.d0>cpu") == KV_STEP
    assert moved(host, "host") == pytest.approx(KV_BEFORE + KV_STEP, rel=1e-12)
    assert moved(hbm, "host") == moved(hbm, "c2c") == 0
    attention = [x for x in host.launches if x.result.resource_bytes.get("c2c.cpu>d0")]
    assert [x.kernel for x in attention] == ["flash_attention_0"]
    over_link = KV_BEFORE / 225e9
    took = seconds(attention[0].end - attention[0].start, "gb200")
    assert over_link < took < over_link + 5e-6
    assert host.cycles > hbm.cycles


def test_gb200_cli_says_what_was_placed_on_host(capsys):
    code, out, err = dsc(capsys, "run", LLAMA, "--target", "gb200", "--set", "n_layers=1",
                         "--set", "ctx=1024", "--place", "kv_cache=host")
    assert code == 0, err
    assert "placed in host: 2 tensors" in out and "c2c" in out


# -- rtx5090 ---------------------------------------------------------------------------------


def keeping_nothing(tmp_path: Path) -> str:
    text = (BUILTIN_DIR / "rtx5090.toml").read_text()
    head, sep, rest = text.partition("[l2]\n")
    path = tmp_path / "rtx5090_nothing.toml"
    path.write_text(head + sep + 'keeps = "nothing"\n' + rest)
    return str(path)


def test_rtx5090_l2_serves_what_earlier_kernels_left(tmp_path, capsys):
    """What the 96 MB L2 kept for later kernels is exactly what GDDR7 no longer carries, and
    the report says so."""
    kept, empty = run("rtx5090"), run(keeping_nothing(tmp_path))
    hits = sum(x.result.kept_hits for x in kept.launches)
    assert hits > 16 * 4096 * 2                         # at least one decode activation
    assert sum(x.result.kept_hits for x in empty.launches) == 0
    assert moved(empty, "memory") - moved(kept, "memory") == pytest.approx(hits, rel=1e-6)
    assert kept.cycles < empty.cycles
    code, out, err = dsc(capsys, "run", LLAMA, "--target", "rtx5090", "--set", "n_layers=1",
                         "--set", "ctx=1024")
    assert code == 0, err
    assert f"kept in cache between kernels: {hits / 1e9:,.3f} GB" in out


def test_rtx5090_box_gathers_over_pcie_at_its_measured_rate():
    """Tensor parallel over 8 cards: the logits' all-gather sends the 7 shards a card lacks
    (16 tokens x 128,256 x bf16 x 7/8) over PCIe at 0.8 x 64 GB/s, after 10 us of latency."""
    r = run("rtx5090", devices=8, plan="attn=tp8")
    assert {x.stream for x in r.launches} == {"compute", "pcie"}
    gather = [x for x in r.launches if x.kernel == "all_gather_pcie_1"]
    nbytes = 16 * 128256 * 2 * 7 / 8
    assert [moved_one.result.resource_bytes["pcie"] for moved_one in gather] == [nbytes]
    took = seconds(gather[0].end - gather[0].start, "rtx5090")
    assert took == pytest.approx(nbytes / (0.8 * 64e9) + 10e-6, rel=1e-4)


# -- wse3 ------------------------------------------------------------------------------------


def test_wse3_reads_everything_from_its_sram_and_keeps_no_cache():
    r = run("wse3")
    families = {k for x in r.launches for k, v in x.result.resource_bytes.items() if v}
    assert families == {"sram", "sram.d0"}                  # the one instance and its family
    weights = 4096 * (4096 + 2 * 1024 + 4096 + 3 * 14336) * 2 + 2 * 128256 * 4096 * 2
    assert moved(r, "sram") >= weights + KV_BEFORE            # every weight and cache row once
    assert sum(x.result.kept_hits for x in r.launches) == 0


# -- ascend910c and cloudmatrix384 -----------------------------------------------------------


def test_the_supernode_sends_every_all_to_all_over_ub():
    """16 NPUs, 2 experts each: a token's expert is on each peer alike. On 910C servers of 8,
    7 of the 15 peers are reached over UB and 8 over RDMA; in the supernode all 15 over UB."""
    sets, plan = (("n_experts", "32"),), "attn=dp,moe=ep"
    server = run("ascend910c", sets, "examples/tiny_moe.ds", devices=16, plan=plan)
    supernode = run("cloudmatrix384", sets, "examples/tiny_moe.ds", devices=16, plan=plan)
    assert {x.stream for x in server.launches} == {"compute", "nvlink", "network"}
    assert {x.stream for x in supernode.launches} == {"compute", "nvlink"}
    first = lambda r, s: next(x for x in r.launches if x.stream == s).result.resource_bytes
    sent = first(supernode, "nvlink")["nvlink"] * 16 / 15    # what one NPU dispatches
    assert first(server, "nvlink")["nvlink"] == sent * 7 / 16
    assert first(server, "network")["network"] == sent * 8 / 16
    assert supernode.cycles < server.cycles
