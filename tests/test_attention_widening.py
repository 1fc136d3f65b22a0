"""Attention operands the matrix format does not read as they are are converted first.

An unscaled FP8 cache against BF16 queries runs its products in BF16: each key and value tile
is widened on the vector unit (`vec.cvt`) after it is loaded, as FP8-cache kernels on BF16
tensor cores do; FP32 queries against a cache dequantised to BF16 are converted once per work
item (on split cores through the workspace). The verifier refuses a matrix instruction that
reads a buffer in a dtype its format does not take, at any width.
"""
from __future__ import annotations

import numpy as np
import pytest

from attention_models import two_head_attention
from compiler import api
from compiler.driver import compile_model
from compiler.ir.evaluate import random_feeds
from isa.assembler import ListingError, parse_listing
from isa.check import check_program
from isa.listing import render
from isa.mma_operands import mma_operands
from isa.program import Box, walk
from runtime.functional import Machine


def _model(precision: str, ctx: int = 300) -> str:
    """Two heads of 64 over separate K and V caches of ctx + 2 positions, causal."""
    return two_head_attention("widen", precision, 2, ctx)


FP8_CACHE = "default bf16 kv_cache fp8_e4m3"
FP32_QUERIES = "default fp32 weights fp32 activations fp32 kv_cache fp8_e4m3 scaled(fp32, 1x32)"


def _compiled(tmp_path, precision: str, target: str):
    path = tmp_path / "widen.ds"
    path.write_text(_model(precision))
    return compile_model(str(path), target, {})


def _attention(program):
    (kernel,) = [k for k in program.kernels if k.name.startswith("flash_attention")]
    return kernel


def _ops(kernel):
    name = lambda a: a.tensor if isinstance(a, Box) else getattr(a, "name", None)
    return [(i.op, [name(a) for a in i.operands], {"n": i.attr("n")})
            for i in walk(kernel.body)]


def _numpy_attention(q, k, v, ctx: int) -> np.ndarray:
    s = np.einsum("bshe,bthe->bhst", q, k) / np.sqrt(q.shape[-1])
    S, T = s.shape[-2:]
    s = np.where(np.arange(T)[None, :] <= ctx + np.arange(S)[:, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhst,bthe->bshe", p / p.sum(-1, keepdims=True), v)


def _functional_error(compiled, ctx: int = 300) -> float:
    feeds = random_feeds(compiled.graph, 0)
    machine = Machine(compiled.program, compiled.target)
    machine.store_feeds(feeds)
    machine.run()
    k, v = (machine.memory.value(n).astype(np.float64) for n in ("k_cache", "v_cache"))
    ref = _numpy_attention(feeds["q"].astype(np.float64), k, v, ctx)
    out = machine.memory.value("o").astype(np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize("target", ["h800", "a100", "ascend910b"])
def test_an_fp8_cache_is_widened_tile_by_tile_before_bf16_products(tmp_path, target):
    compiled = _compiled(tmp_path, FP8_CACHE, target)
    check_program(compiled.program, compiled.target)
    ops = _ops(_attention(compiled.program))
    # 302 keys in blocks of 128: three blocks, each K and V tile widened once, 128 x 64.
    converts = [(args, attrs["n"]) for op, args, attrs in ops if op == "vec.cvt"]
    assert {args[0] for args, _ in converts} in ({"ck0", "cv"}, {"vk0", "vv"})
    assert {n for _, n in converts} == {128 * 64}
    assert {args[2] for op, args, _ in ops if op == "mm.mma"} == {"ck0", "cv"}
    # Widening FP8 to BF16 is exact: the output is BF16 attention over the FP8 cache.
    assert _functional_error(compiled) < 1e-2


def test_widening_costs_vector_time_and_the_report_says_so(tmp_path):
    widened = api.run(str(_write(tmp_path, "fp8.ds", FP8_CACHE)), "h800")
    plain = api.run(str(_write(tmp_path, "bf16.ds", "default bf16")), "h800")
    row = lambda run: next(r for r in run.kernels if r.kernel.startswith("flash_attention"))
    assert row(widened).bytes < row(plain).bytes           # half the cache bytes
    compiled = _compiled(tmp_path, FP8_CACHE, "h800")
    texts = {m.text() for m in mma_operands(_attention(compiled.program))}
    assert texts == {"bf16 x fp8_e4m3 on bf16, fp8_e4m3 widened on the vector unit"}, texts


def _write(tmp_path, name: str, precision: str):
    path = tmp_path / name
    path.write_text(_model(precision))
    return path


@pytest.mark.parametrize("target", ["h800", "ascend910b"])
def test_fp32_queries_are_converted_once_per_work_item(tmp_path, target):
    compiled = _compiled(tmp_path, FP32_QUERIES, target)
    check_program(compiled.program, compiled.target)
    kernel = _attention(compiled.program)
    ops = _ops(kernel)
    query_cvts = [args for op, args, _ in ops
                  if op == "vec.cvt" and args[1].startswith(("sq", "vq"))]
    assert len(query_cvts) == 1                    # before the key loop, not inside it
    (first_mma,) = [k for k, (op, args, _) in enumerate(ops)
                    if op == "mm.mma" and args[1] in ("cq0", "sq0")][:1]
    fence = next(k for k, (op, _, _) in enumerate(ops) if op == "sync.mm")
    assert fence < first_mma
    if target == "ascend910b":      # through the workspace: vld, cvt, vst, then the cube's ld
        kinds = [op for op, args, _ in ops if any("q0" in str(a) for a in args)][:4]
        assert kinds == ["vld.tile", "vec.cvt", "vst.tile", "ld.tile"]
    assert _functional_error(compiled) < 2e-2


def test_the_verifier_refuses_a_bf16_product_of_an_fp8_tile(tmp_path):
    compiled = _compiled(tmp_path, FP8_CACHE, "h800")
    text = render(compiled.program)
    mma = next(line for line in text.splitlines()
               if line.strip().startswith("mm.mma") and "ck0[" in line)
    edited = text.replace(mma, mma.replace("ck0[", "sk0["), 1)
    with pytest.raises(ListingError, match=r"operand b sk0 holds fp8_e4m3.*widen it first"):
        parse_listing(edited, "edited.lst", compiled.target)
