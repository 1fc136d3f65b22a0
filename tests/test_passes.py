"""The graph passes: golden IR after each, verification after each, and what each rule does."""
from pathlib import Path

import pytest

from compiler.driver import compile_model, measure_tiles
from compiler.errors import DscError
from compiler.ir.graph import Graph
from compiler.ir.ops import OPS
from compiler.ir.text import print_graph
from compiler.ir.verify import verify
from compiler.kernels.gemm_estimate import group_problem
from compiler.kernels.groups import kernel_groups
from compiler.passes.fuse import Fuse, kernel_stats
from compiler.passes.plan import plan_kernel
from compiler.passes.precision import Precision
from compiler.passes.tile import Tile, considered
from compiler.passes.shard import Shard
from isa.program import Buf, BufferDecl, Instr, Kernel
from isa.target_loader import load_target
from runtime.interpreter import run_program

GOLDEN = Path(__file__).parent / "golden" / "ir"
DEEPSEEK = "examples/deepseek_v3.ds"
SMALL = {"n_layers": "4"}           # 3 dense layers and one MoE layer


def _after_each(model, overrides=None):
    """The graph after each graph pass (program passes report programs: left out here)."""
    seen = {}
    compile_model(model, "h800", overrides or {},
                  after=lambda name, g: seen.update({name: g}) if isinstance(g, Graph) else None)
    return seen


@pytest.mark.parametrize("pass_name", ["precision", "fuse", "tile"])
def test_ir_after_each_pass_matches_golden(pass_name, golden):
    graphs = _after_each("examples/tiny_moe.ds")
    golden(GOLDEN / f"tiny_moe.after_{pass_name}.ir", print_graph(graphs[pass_name]))


@pytest.mark.parametrize("plan", ["attn=dp,moe=ep", "attn=tp4,moe=tp4"])
def test_ir_after_shard_matches_golden(plan, golden):
    """Four devices: expert parallelism (all-to-alls around the experts) and tensor
    parallelism (split weights, heads and caches; reductions and gathers)."""
    seen = {}
    compile_model("examples/tiny_moe.ds", "h800", {"n_layers": "2"}, devices=4, plan=plan,
                  passes=[Shard()], measure=False, check_fit=False,
                  after=lambda name, g: seen.update({name: g}) if isinstance(g, Graph) else None)
    verify(seen["shard"])
    tag = plan.split(",")[0].split("=")[1]
    golden(GOLDEN / f"tiny_moe.after_shard_{tag}.ir", print_graph(seen["shard"]))


@pytest.mark.parametrize("model,overrides,devices,plan", [
    ("examples/tiny_moe.ds", {}, 4, "attn=dp,moe=ep,mb=2"),
    ("examples/tiny_moe.ds", {}, 4, "attn=tp4,moe=tp4"),
    ("examples/llama3_8b.ds", {"n_layers": "2"}, 8, "attn=tp8"),
    ("examples/deepseek_v3_prefill.ds", {"n_layers": "4", "seq": "256"}, 8, "attn=tp8,moe=tp8")])
def test_every_pass_leaves_a_valid_graph_when_deployed(model, overrides, devices, plan):
    seen = {}
    compile_model(model, "h800", overrides, devices=devices, plan=plan, measure=False,
                  check_fit=False,
                  after=lambda name, g: seen.update({name: g}) if isinstance(g, Graph) else None)
    assert seen
    for graph in seen.values():
        verify(graph)


@pytest.mark.parametrize("model,overrides", [
    ("examples/gemm.ds", {}), ("examples/grouped.ds", {}), ("examples/tiny_moe.ds", {}),
    ("examples/llama3_8b.ds", {"n_layers": "2"}), (DEEPSEEK, SMALL)])
def test_every_pass_leaves_a_valid_graph(model, overrides):
    for name, graph in _after_each(model, overrides).items():
        verify(graph)


def _groups(graph: Graph):
    return {g.name: [n.op for n in g.nodes] for g in kernel_groups(graph)}


# -- precision ------------------------------------------------------------------------------

def test_precision_quantises_activations_of_fp8_gemms_once():
    graph = _after_each(DEEPSEEK, SMALL)["precision"]
    fmt = graph.policy["activations"]
    for node in graph.nodes():
        if node.op != "matmul":
            continue
        a, b = (graph.node(i) for i in node.inputs)
        if b.type.format.dtype == "fp8_e4m3":       # a cast, or a dispatch of one (experts)
            assert a.op in ("cast", "dispatch") and a.type.format == fmt, node.name
    casts = [(n.inputs, n.type.format) for n in graph.nodes() if n.op == "cast"]
    assert len(casts) == len(set(casts))                  # one cast per value and format


def test_precision_moves_the_quantisation_before_dispatch():
    graph = _after_each(DEEPSEEK, SMALL)["precision"]
    dispatch = next(n for n in graph.nodes() if n.op == "dispatch")
    assert graph.node(dispatch.inputs[0]).op == "cast"
    assert dispatch.type.format.dtype == "fp8_e4m3"       # tokens travel in FP8 with scales
    assert all(u.op != "cast" for u in graph.users(dispatch.id))


def test_precision_leaves_bf16_gemms_alone():
    graph = _after_each(DEEPSEEK, SMALL)["precision"]
    gate = next(n for n in graph.nodes() if n.name.endswith("moe.matmul"))
    assert graph.node(gate.inputs[0]).op != "cast"        # the bf16 gate reads bf16


def test_precision_refuses_nvfp4_made_on_chip(tmp_path):
    """A per-tensor scale needs the whole tensor's amax, which a tiled kernel does not see."""
    with pytest.raises(DscError) as err:
        compile_model("examples/tiny_moe.ds", "b200", {"activations": "nvfp4"})
    assert "per-tensor" in str(err.value) and "mxfp4" in err.value.expected


# -- fuse -----------------------------------------------------------------------------------

def test_fusion_forms_the_expected_kernels():
    groups = list(_groups(_after_each(DEEPSEEK, SMALL)["fuse"]).values())
    assert ["einsum", "mul", "causal_mask", "softmax", "einsum"] in groups     # flash MLA
    assert ["rmsnorm", "cast"] in groups                                      # norm + quantise
    assert ["rmsnorm", "rope", "concat", "cache_write"] in groups             # latent -> cache
    assert ["matmul", "silu"] in groups and ["matmul", "mul", "cast"] in groups  # SwiGLU
    assert ["matmul", "add"] in groups                                        # residual epilogue


@pytest.mark.parametrize("model,overrides,form", [
    ("examples/llama3_8b.ds", {"n_layers": "1"}, ["einsum", "mul", "causal_mask", "softmax", "einsum"]),
    ("examples/tiny_moe.ds", {}, ["einsum", "mul", "causal_mask", "softmax", "einsum"]),
])
def test_flash_attention_for_gqa_and_mla(model, overrides, form):
    assert form in list(_groups(_after_each(model, overrides)["fuse"]).values())


def test_flash_attention_for_naive_mla_sums_two_score_products(tmp_path):
    model = tmp_path / "naive.ds"
    model.write_text('import "std/attention.ds"\nmodel m {\n  size B = 2, S = 4, ctx = 8\n'
                     '  input x: [B, S, 64]\n  output y = mla_naive(x, ctx, 4, 32, 32, 16, 8, 16)\n}\n')
    groups = list(_groups(_after_each(str(model))["fuse"]).values())
    assert ["einsum", "einsum", "add", "mul", "causal_mask", "softmax", "einsum"] in groups


def test_fused_attention_scores_never_touch_memory():
    """The report's off-chip bytes drop by at least the scores' write and read."""
    def offchip(passes):
        c = compile_model(DEEPSEEK, "h800", {"n_layers": "1", "n_dense": "1"}, passes=passes)
        run = run_program(c.program, c.target)
        return sum(r.result.resource_bytes["memory"] for r in run.launches), c.graph
    fused, graph = offchip(None)
    unfused, _ = offchip([Precision(), Tile()])
    scores = next(n for n in graph.nodes() if n.op == "softmax")
    assert unfused - fused >= 2 * scores.type.nbytes
    c = compile_model(DEEPSEEK, "h800", {"n_layers": "1", "n_dense": "1"})
    assert not any(t.shape == scores.type.shape for t in c.program.tensors)


def test_gate_topk_fuses_only_when_the_estimate_says_it_pays():
    decode = compile_model(DEEPSEEK, "h800", SMALL)
    big = compile_model(DEEPSEEK, "h800", {**SMALL, "batch": "8192"}, check_fit=False)
    gate = ["matmul", "sigmoid", "topk", "topk_weights"]
    assert gate not in _groups(decode.graph).values()
    assert ["matmul", "sigmoid"] in _groups(decode.graph).values()
    assert ["topk", "topk_weights"] in _groups(decode.graph).values()
    assert gate in _groups(big.graph).values()
    assert any("kept apart" in n for n in decode.notes) and any("fused into" in n for n in big.notes)


def test_fusion_cuts_kernels_and_bytes_on_the_flagship():
    counts = {}
    compile_model(DEEPSEEK, "h800", {}, check_fit=False, after=lambda name, g: counts.update(
        {name: kernel_stats(g)} if name in ("precision", "fuse") else {}))
    (k0, b0), (k1, b1) = counts["precision"], counts["fuse"]
    assert k1 < k0 * 0.7 and b1 < b0


# -- tile -----------------------------------------------------------------------------------

@pytest.mark.parametrize("model,overrides", [
    ("examples/gemm.ds", {"M": "64"}),                          # small-M decode GEMM
    ("examples/gemm.ds", {"M": "4096", "N": "4096", "K": "4096"}),  # large square GEMM
    ("examples/grouped.ds", {}),                                # grouped expert GEMM
])
def test_chosen_tile_is_the_fastest_candidate_it_ran(model, overrides):
    compiled = compile_model(model, "h800", overrides)
    graph, target = compiled.graph, compiled.target
    group = next(g for g in kernel_groups(graph) if g.kind == "gemm")
    chosen = group.nodes[0].sched_get("tile")
    problem = group_problem(group, graph, target)[0]
    tiles, total = considered(problem, target, Tile().shortlist)
    assert total > len(tiles) >= 2
    measure = measure_tiles(target)
    times = {t.sched: measure(group, graph, t) for t in tiles}
    assert chosen in times
    assert times[chosen] <= min(times.values())
    assert "simulated" in group.nodes[0].sched_get("tile_choice")


def test_tiles_respect_the_instruction_granularity_and_scale_blocks():
    graph = compile_model(DEEPSEEK, "h800", SMALL).graph
    target = load_target("h800")
    for group in kernel_groups(graph):
        if group.kind != "gemm":
            continue
        bm, bn, bk, stages, *rest = group.nodes[0].sched_get("tile")
        problem = group_problem(group, graph, target)[0]
        im, in_, ik = target.matrix.formats[problem.fmt].shape
        if rest[2:3] == [1]:           # swapped: the rows ride the instruction's N side
            im, in_ = in_, im
        assert bm % im == 0 and bn % in_ == 0 and bk % ik == 0 and stages >= 2
        if problem.a_scaling is not None:
            assert bk % problem.a_scaling.block[1] == 0


def test_a_gemm_that_cannot_fit_names_the_kernel_and_the_bytes(tmp_path):
    tiny = tmp_path / "tiny.toml"
    text = Path("isa/targets/h800.toml").read_text()
    tiny.write_text(text.replace("bytes = 233472", "bytes = 4096", 1))
    with pytest.raises(DscError) as info:
        compile_model("examples/gemm.ds", str(tiny), {})
    message = str(info.value)
    assert "'c'" in message and "bytes of smem (has 4,096)" in message
    assert "gemm.ds:6" in message


# -- plan -----------------------------------------------------------------------------------

def test_plan_reuses_bytes_only_when_accesses_are_ordered():
    # 64 rows: one wave of tiles, not a persistent kernel.
    program = compile_model("examples/gemm.ds", "h800", {"M": "64"}).program
    assert not program.kernels[0].persistent
    buffers = {b.name: b for b in program.kernels[0].buffers}
    # The epilogue's output tile takes the K loop's A tiles' bytes: ordered by mma -> promote
    # -> cvt. The A and B tiles, live together in the loop, never overlap.
    assert buffers["out"].offset == buffers["sa"].offset
    a, b = buffers["sa"], buffers["sb"]
    assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset


def test_plan_never_shares_bytes_in_a_persistent_kernel():
    """A worker's next tile loads while its previous tile's epilogue still reads `out`."""
    (kernel,) = compile_model("examples/gemm.ds", "h800", {}).program.kernels
    assert kernel.persistent
    spans = sorted((b.offset, b.offset + b.nbytes) for b in kernel.buffers if b.space == "smem")
    assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:]))


def test_plan_keeps_concurrent_buffers_apart():
    # Two buffers used by different units with no token between them may run at once.
    kernel = Kernel("k", (), (), (BufferDecl("x", "fp32", (64,), 1, "smem"),
                                  BufferDecl("y", "fp32", (64,), 1, "smem")), (),
                    (Instr("vec.cvt", (Buf("x"), Buf("x")), ()),
                     Instr("mm.mma", (Buf("y"), Buf("y"), Buf("y")), ())))
    placed = {b.name: b.offset for b in plan_kernel(kernel, load_target("h800")).buffers}
    assert placed["x"] != placed["y"]


def test_plan_counts_token_credits():
    """The matrix unit's wait takes the first of two signals of `t`: the vector unit may still
    be reading `a` (its second cvt) when the mma writes `b`, so they cannot share bytes, though
    an instruction signalling `t` comes after every access to `a`. (The verifier finds the
    race; the plan must not create it.)"""
    kernel = Kernel("k", (), (), tuple(BufferDecl(n, "fp32", (64,), 1, "smem") for n in "acb"),
                    (("t", 0),),
                    (Instr("vec.cvt", (Buf("c"), Buf("a")), (), ("t",)),
                     Instr("vec.cvt", (Buf("c"), Buf("a")), (), ("t",)),
                     Instr("mm.mma", (Buf("b"), Buf("b"), Buf("b")), ("t",))))
    placed = {b.name: b.offset for b in plan_kernel(kernel, load_target("h800")).buffers}
    assert placed["b"] >= 256 and placed["a"] != placed["c"]


def test_plan_overflow_names_the_kernel_and_the_bytes():
    kernel = Kernel("big_0", (), (), (BufferDecl("x", "fp32", (100000,), 1, "smem"),), (),
                    (Instr("vec.cvt", (Buf("x"), Buf("x")), ()),))
    with pytest.raises(DscError) as info:
        plan_kernel(kernel, load_target("h800"))
    assert "kernel big_0 needs 400,000 bytes of smem but h800 has 233,472" in str(info.value)


def test_passes_count_as_ops_of_the_registry():
    graph = _after_each(DEEPSEEK, SMALL)["tile"]
    assert all(n.op in OPS for n in graph.nodes())
