"""Two micro-batches (compiler/passes/micro_batch.py): doubled activations and caches, shared
weights, the alternation of the halves, and the communication it hides."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli_helpers import dsc, in_repo_root  # noqa: F401  (autouse fixture)
from deployment_helpers import EP, MB2, TINY, assert_user_error, compiled_tiny, run_tiny

from isa.assembler import parse_listing
from isa.listing import render
from isa.program import expand_schedule
from isa.target_loader import load_target


def test_micro_batches_double_the_activations_and_share_the_weights():
    one = compiled_tiny("h800", (("batch", "4"), ("n_experts", "16")), 16, EP).program
    two = compiled_tiny("h800", (("batch", "4"), ("n_experts", "16")), 16, MB2).program
    weights = {t.name for t in one.tensors if t.kind == "weight"}
    assert weights == {t.name for t in two.tensors if t.kind == "weight"}
    caches = [t for t in one.tensors if t.kind == "cache"]
    halves = {t.name: t for t in two.tensors if t.kind == "cache"}
    assert len(halves) == 2 * len(caches)
    for t in caches:
        scope = re.match(r"^\w+\.\d+\.", t.name)[0]
        for mb in (0, 1):
            half = halves[f"{scope}mb{mb}.{t.name[len(scope):]}"]
            assert half.shape == (t.shape[0] // 2, *t.shape[1:])
    flops = lambda p: sum(l.flops for l, _ in expand_schedule(p.schedule))
    assert flops(two) == pytest.approx(flops(one))
    assert dict(two.sizes)["batch"] == 4           # the model's batch, not a micro-batch's


def test_micro_batches_alternate_and_hide_communication():
    sets = (("batch", "16"), ("n_experts", "16"))
    _, one = run_tiny("h800", sets, 16, EP)
    _, two = run_tiny("h800", sets, 16, MB2)
    names = [r.name for r in two.launches if r.stream == "network"]
    tags = [re.search(r"\.(mb\d)\.", n)[1] for n in names]
    assert tags[:4] == ["mb0", "mb1", "mb0", "mb1"]    # dispatch 0, dispatch 1, combine 0, ...
    exposed = lambda run: sum(r.exposed for r in run.launches)
    assert exposed(two) < exposed(one)
    # toy kernels are launch-bound: twice the launches cost their overhead, no more
    extra = len(two.launches) - len(one.launches)
    overhead = load_target("h800").launch_overhead_cycles
    assert one.cycles < two.cycles <= one.cycles + extra * overhead


def test_micro_batch_listing_round_trips():
    program = compiled_tiny("h800", (("batch", "4"), ("n_experts", "16")), 16, MB2).program
    target = load_target("h800")
    text = render(program)
    assert "deploy devices=16 per_node=8 attn=dp ffn=dp moe=ep mb=2" in text
    assert render(parse_listing(text, "mb2.lst", target)) == text


def test_micro_batches_need_an_even_batch(capsys):
    code, _, err = dsc(capsys, "compile", TINY, "--target", "h800", "--devices", "4",
                       "--plan", MB2, "--set", "batch=3")
    assert_user_error(code, err)
    assert "mb=2 splits the size 'batch' into equal micro-batches, but model tiny_moe has batch = 3" in err


def test_micro_batches_run_independent_work_before_waiting():
    _, run = run_tiny("h800", (("batch", "16"), ("n_experts", "16")), 16, MB2)
    order = [r.name for r in run.launches]
    first = lambda pattern: next(i for i, n in enumerate(order) if re.match(pattern, n))
    # both shared experts of layer 1 run before micro-batch 0's combine waits for its transfer
    combine0 = first(r"layer\.1\.mb0\.moe\.y\b")
    assert first(r"layer\.1\.mb0\.moe\.shared_experts") < combine0
    assert first(r"layer\.1\.mb1\.moe\.shared_experts") < combine0


def test_a_deploy_block_the_model_cannot_take_is_an_error_at_the_model_text(tmp_path, capsys):
    """The plan of a deploy block (no --plan) meets the sizes and the target only after the
    build; its errors still point at the text to fix."""
    model = tmp_path / "m.ds"
    model.write_text(Path(TINY).read_text().replace(
        "model tiny_moe {", "model tiny_moe {\n  deploy {\n    devices 4\n    micro_batches 2\n  }")
        .replace("size batch = 2", "size batch = 3"))
    code, _, err = dsc(capsys, "compile", str(model), "--target", "h800")
    assert_user_error(code, err)
    line = next(i + 1 for i, text in enumerate(model.read_text().splitlines())
                if "size batch = 3" in text)
    assert err.startswith(f"{model}:{line}:8: error: plan ")        # the whole plan, then
    assert "mb=2 splits the size 'batch'" in err.splitlines()[0]
    code, _, err = dsc(capsys, "compile", str(model), "--target", "h800", "--set", "batch=2",
                       "--plan", "attn=tp3")
    assert_user_error(code, err)
    assert err.startswith("error: plan attn=tp3")          # the command line's: no position


FIVE = MB2 + ",overlap=five_stage"
EXPERTS = re.compile(r"\.moe\.(silu|mul\.q|ye)$")          # the routed experts' GEMMs


def _after_each_transfer(run, stream="network"):
    """For each launch on `stream`: its micro-batch, and the compute launches that follow it
    until its own micro-batch's next compute launch (what the cores run while it travels)."""
    mb = lambda name: re.search(r"(^|\.)(mb\d)\.", name)[2]
    out = []
    for k, r in enumerate(run.launches):
        if r.stream != stream:
            continue
        beside = []
        for later in run.launches[k + 1:]:
            if later.stream != "compute":
                continue
            if mb(later.name) == mb(r.name):
                break
            beside.append(later.name)
        out.append((mb(r.name), r.name, beside))
    return out


def test_five_stages_hide_each_all_to_all_behind_half_an_attention():
    """overlap=five_stage: micro-batch 1 a stage behind 0, attention cut before its core, so
    every all-to-all travels while the other micro-batch runs attention; the alternation
    leaves a combine beside the other's (routed or shared) experts only."""
    sets = (("batch", "16"), ("n_experts", "16"), ("n_layers", "4"))
    _, five = run_tiny("h800", sets, 16, FIVE)
    _, alternate = run_tiny("h800", sets, 16, MB2)
    transfers = _after_each_transfer(five)
    # dispatch 0, combine 0, dispatch 1, combine 1: one micro-batch's pair, then the other's
    assert [(m, n.split(".")[-2]) for m, n, _ in transfers[:4]] == [
        ("mb0", "xe"), ("mb0", "ye"), ("mb1", "xe"), ("mb1", "ye")]
    for mb, name, beside in transfers[:-2]:        # the last layer's mb1 pair: the head beside
        assert any(".mla_absorbed." in b for b in beside), (name, beside)
        assert not any(EXPERTS.search(b) for b in beside), (name, beside)
    combines = [beside for _, n, beside in _after_each_transfer(alternate) if ".ye." in n]
    for beside in combines[:-1]:         # the other's experts, or its shared experts only
        assert not any(".mla_absorbed." in b for b in beside)
    # the same work, reordered
    flops = lambda run: sum(r.flops for r in run.launches)
    assert flops(five) == pytest.approx(flops(alternate))
    assert sorted(r.name for r in five.launches) == sorted(r.name for r in alternate.launches)


def test_five_stages_cut_attention_before_its_core():
    _, run = run_tiny("h800", (("batch", "16"), ("n_experts", "16")), 16, FIVE)
    order = [r.name for r in run.launches]
    at = lambda name: order.index(name)
    # micro-batch 1's first attention half runs between micro-batch 0's two halves
    core0, append0 = at("layer.1.mb0.mla_absorbed.o_latent"), at("layer.1.mb0.mla_absorbed.c")
    append1 = at("layer.1.mb1.mla_absorbed.c")
    assert append0 < at("layer.0.mb1.mla_absorbed.o_latent") < core0 < append1


def test_five_stage_listing_round_trips_and_reports_its_overlap():
    program = compiled_tiny("h800", (("batch", "4"), ("n_experts", "16")), 16, FIVE).program
    text = render(program)
    assert "deploy devices=16 per_node=8 attn=dp ffn=dp moe=ep mb=2 overlap=five_stage" in text
    assert render(parse_listing(text, "five.lst", load_target("h800"))) == text
    assert program.deployment.plan_text == "attn=dp,ffn=dp,moe=ep,mb=2,overlap=five_stage"


@pytest.mark.parametrize("plan, message", [
    ("attn=dp,moe=ep,overlap=five_stage", "plan overlap=five_stage: it interleaves two "
                                         "micro-batches; add mb=2"),
    ("attn=dp,moe=ep,mb=2,overlap=six", "plan overlap=six: expected one of alternate, "
                                        "five_stage"),
])
def test_a_bad_overlap_is_one_error(capsys, plan, message):
    code, _, err = dsc(capsys, "compile", TINY, "--target", "h800", "--devices", "16",
                       "--plan", plan, "--set", "batch=4")
    assert_user_error(code, err)
    assert message in err


def test_a_deploy_block_chooses_five_stages(tmp_path, capsys):
    model = tmp_path / "m.ds"
    model.write_text(Path(TINY).read_text().replace(
        "model tiny_moe {", "model tiny_moe {\n  deploy {\n    devices 8\n    micro_batches 2\n"
        "    overlap five_stage\n  }").replace("size batch = 2", "size batch = 4"))
    code, out, err = dsc(capsys, "compile", str(model), "--target", "h800")
    assert code == 0, err
    assert "mb=2 overlap=five_stage" in out
