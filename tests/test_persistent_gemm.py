"""Persistent GEMMs: one worker per core walks the output tiles in grid order; with two
accumulators a tile's epilogue (and the next tile's fill) overlaps the next tile's main
loop, so the last partial wave costs one more main loop on the workers that run it, not a
whole lock-stepped wave. Hand-computed on a seven-core chip."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from compiler.driver import compile_model
from isa.assembler import parse_listing
from isa.listing import render
from isa.program import Loop, walk
from isa.target_loader import BUILTIN_DIR
from runtime.kernel_sim import simulate_kernel

GEMM = """
model gemm {
  size M = 256, N = 768, K = 2048
  input  a: bf16[M, K]
  weight b: bf16[K, N]
  output c: bf16[M, N] = a @ b
}
"""


@pytest.fixture(scope="module")
def seven_cores(tmp_path_factory):
    root = tmp_path_factory.mktemp("persistent")
    target = root / "seven_cores.toml"
    target.write_text((BUILTIN_DIR / "h800.toml").read_text().replace(
        'name = "h800"', 'name = "seven_cores"', 1).replace(
        "cores_per_die = 132", "cores_per_die = 7", 1))
    model = root / "gemm.ds"
    model.write_text(GEMM)
    compiled = compile_model(str(model), str(target), {})
    (kernel,) = compiled.program.kernels
    return compiled, kernel


def _cycles(compiled, kernel) -> float:
    params = compiled.program.tensor_table()
    args = dict(compiled.program.schedule[0].args)
    return simulate_kernel(kernel, {p.name: params[args[p.name]] for p in kernel.params},
                           compiled.target).cycles


def test_a_gemm_with_more_tiles_than_cores_is_persistent(seven_cores):
    compiled, kernel = seven_cores
    assert kernel.persistent and "persistent: 7 workers" in kernel.notes[2]
    acc = next(b for b in kernel.buffers if b.name == "acc")
    assert acc.slots == 2                      # one drains while the next tile fills
    text = render(compiled.program)
    assert "\n  persistent\n" in text
    assert render(parse_listing(text, target=compiled.target)) == text


def test_the_persistent_tail_costs_one_more_main_loop(seven_cores):
    """Lock-step, each wave of this compute-bound GEMM takes one tile's whole time (fill,
    main loop, epilogue), the last partial one too. Persistent, a worker runs each next
    tile's main loop while the previous epilogue drains, so the workers that take the tail
    finish one tile's time plus a main loop of k_steps x 2 bm bn bk / flops_per_cycle per
    further tile: (waves - 1) main loops after the first tile."""
    compiled, kernel = seven_cores
    tiles = math.prod(n for _, n in kernel.grid)
    waves = math.ceil(tiles / 7)
    assert waves >= 2 and tiles % 7                      # a last, partial wave
    mma = next(i for i in walk(kernel.body) if i.op == "mm.mma")
    bm, bn, bk = mma.attr("shape")
    (loop,) = [s for s in kernel.body if isinstance(s, Loop)]
    unit = compiled.target.matrix.formats["bf16"]
    main_loop = loop.count * 2 * bm * bn * bk / unit.flops_per_cycle
    lock_step = _cycles(compiled, replace(kernel, persistent=False))
    one_tile = lock_step / waves
    persistent = _cycles(compiled, kernel)
    assert persistent == pytest.approx(one_tile + (waves - 1) * main_loop, rel=0.02)
    assert lock_step - persistent > 0.02 * lock_step


def test_a_serial_epilogue_keeps_one_work_item_per_tile(tmp_path):
    """a100's mma.sync leaves no accumulator to drain while the next tile runs
    (`epilogue = "serial"`): the same GEMM there is not persistent."""
    model = tmp_path / "gemm.ds"
    model.write_text(GEMM)
    compiled = compile_model(str(model), "a100", {"M": "8192"})
    (kernel,) = compiled.program.kernels
    assert math.prod(n for _, n in kernel.grid) > compiled.target.cores
    assert not kernel.persistent
    assert next(b for b in kernel.buffers if b.name == "acc").slots == 1
