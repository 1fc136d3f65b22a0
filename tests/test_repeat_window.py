"""Model-level repeats compiled as windows: each distinct layer body once, the program stretched
back to every layer, and the result exactly what compiling every layer gives."""
from __future__ import annotations

import json

import pytest

import compiler.driver as driver
from compiler.driver import compile_model
from compiler.errors import DscError
from compiler.frontend import load_model
from compiler.ir.graph import Steady
from compiler.ir.text import parse_graph, print_graph
from compiler.lower.stretch import NotSteady, stretch
from compiler.stats import model_stats
from isa.listing import render
from runtime.interpreter import run_program
from runtime.report.json_report import report_dict

DEEPSEEK = "examples/deepseek_v3.ds"


def iterations(graph, name="layer") -> list[int]:
    return sorted({int(n.name.split(".")[1]) for n in graph.nodes()
                   if n.name.startswith(name + ".")})


def build(tmp_path, text: str, **options):
    path = tmp_path / "m.ds"
    path.write_text(text)
    return load_model(str(path), **options)


# ---- the front end builds windows ---------------------------------------------------------

def test_the_flagship_is_built_as_a_window_of_its_moe_layers():
    g = load_model(DEEPSEEK)
    # 3 dense layers (too few to leave any out), then the MoE repeat: its first layer, two
    # identical ones, its last; layer.5 stands for the 55 layers 5..59, layer.6 is layer.60.
    assert g.steady == (Steady("layer", 3, 5, 55),)
    assert iterations(g) == [0, 1, 2, 3, 4, 5, 6]
    assert g.copies("layer.5.moe.w1") == 55 and g.copies("layer.4.moe.w1") == 1
    assert g.copies("layer.50.moe.w1") == 1 and g.copies("layer.5") == 1
    assert g.model_names("layer.6.h") == ["layer.60.h"]
    assert g.model_names("layer.5.h") == [f"layer.{i}.h" for i in range(5, 60)]
    assert g.model_names("layer.4.h") == ["layer.4.h"] and g.model_names("h") == ["h"]


def test_unroll_builds_every_iteration():
    g = load_model(DEEPSEEK, {"n_layers": "9"}, unroll=True)
    assert g.steady == () and iterations(g) == list(range(9))


@pytest.mark.parametrize("n_layers, steady", [
    ("5", ()), ("7", ()),                                  # 2 or 4 MoE layers: all built
    ("8", (Steady("layer", 3, 5, 2),)),                    # the smallest window that saves one
    ("200", (Steady("layer", 3, 5, 194),))])
def test_a_repeat_is_windowed_only_when_that_leaves_iterations_out(n_layers, steady):
    assert load_model(DEEPSEEK, {"n_layers": n_layers}).steady == steady


SHAPES = """model m {{
  size B = 4, D = 8
  input x: bf16[B, D]
  h = x * 2.0
  {before}
  repeat 9 {{
    weight w: bf16[D, D]
    {body}
  }}
  output y = h @ w
}}"""


def test_a_body_whose_input_changes_type_is_built_until_it_settles(tmp_path):
    # h is fp32 after the first iteration's cast: iterations 1.. are alike, so the window is
    # the first, then from the first alike one: it, two more (the second stands for five),
    # and the last
    g = build(tmp_path, SHAPES.format(before="", body='h = cast(h @ w, "fp32")'))
    assert g.steady == (Steady("layer", 0, 3, 5),)
    assert iterations(g) == [0, 1, 2, 3, 4]


def test_a_body_that_keeps_changing_is_built_whole(tmp_path):
    # the value read grows every iteration: no two iterations build the same nodes
    g = build(tmp_path, SHAPES.format(before="k = 1", body="k = k * 2\n    h = h + reshape(h, [B, D])"))
    assert g.steady == () and iterations(g) == list(range(9))


def test_two_names_for_one_node_are_a_different_body(tmp_path):
    # before the loop a and h are one node, after an iteration two: a body reading both
    # builds `add(x, x)` first and `add(h, a)` after, so the window starts after that
    g = build(tmp_path, SHAPES.format(before="a = h", body="h = h + a\n    a = a @ w"))
    assert g.steady == (Steady("layer", 0, 3, 5),)


def test_a_name_that_hides_a_constant_counts(tmp_path):
    # the first iteration reads the file constant `scale`, later ones the variable bound in
    # the body under that name
    g = build(tmp_path, "scale = 2.0\n" + SHAPES.format(
        before="", body="h = h * scale\n    scale = 3.0"))
    assert g.steady == (Steady("layer", 0, 3, 5),)


def test_repeats_inside_repeats_and_blocks_are_built_whole(tmp_path):
    g = build(tmp_path, """block twice(x: [..., d]) {
  repeat 6 as inner { x = x + x }
  return x
}
model m {
  size B = 4, D = 8
  input x: bf16[B, D]
  h = x
  repeat 6 as outer {
    repeat 6 as sub { h = h * 2.0 }
    h = twice(h)
  }
  output y = h
}""")
    assert [s.name for s in g.steady] == ["outer"]
    assert any(n.name.startswith("outer.3.sub.5.") for n in g.nodes())
    assert any(n.name.startswith("outer.0.twice.inner.5.") for n in g.nodes())


def test_a_later_repeat_of_the_same_name_continues_the_window_numbering(tmp_path):
    g = build(tmp_path, SHAPES.format(before="", body="h = h @ w").replace(
        "output y", "repeat 12 {\n    h = h + h\n  }\n  output y"))
    first, second = g.steady
    assert first == Steady("layer", 0, 2, 6) and second == Steady("layer", 4, 6, 9)
    assert iterations(g) == list(range(8))


# ---- totals over the model ----------------------------------------------------------------

@pytest.mark.parametrize("model, sizes", [
    (DEEPSEEK, {}), ("examples/llama3_8b.ds", {}),
    ("examples/deepseek_v3_prefill.ds", {"n_layers": "12"})])
def test_stats_count_every_iteration_a_steady_one_stands_for(model, sizes):
    assert model_stats(load_model(model, sizes)) == \
        model_stats(load_model(model, sizes, unroll=True))


# ---- the program is what compiling every layer gives -------------------------------------

CASES = [
    ("deepseek one device", DEEPSEEK, "h800", {"n_layers": "9"}, {}),
    ("deepseek EP16 mb=2", DEEPSEEK, "h800", {"n_layers": "10"},
     {"devices": 16, "plan": "attn=dp,moe=ep,mb=2"}),
    ("deepseek TP8", DEEPSEEK, "h800", {"n_layers": "9", "batch": "16"},
     {"devices": 8, "plan": "attn=tp8,moe=tp8"}),
    ("prefill a2a=node", "examples/deepseek_v3_prefill.ds", "h800",
     {"n_layers": "9", "seq": "256"}, {"devices": 32, "plan": "attn=dp,moe=ep,mb=2,a2a=node"}),
    ("llama NUMA", "examples/llama3_8b.ds", "b200", {"n_layers": "7"}, {"die_mode": "numa"}),
]


@pytest.mark.parametrize("label, model, target, sizes, options", CASES,
                         ids=[c[0] for c in CASES])
def test_the_stretched_program_is_the_unrolled_one(label, model, target, sizes, options):
    window = compile_model(model, target, sizes, check_fit=False, **options)
    whole = compile_model(model, target, sizes, check_fit=False, unroll=True, **options)
    assert window.graph.steady and not whole.graph.steady
    assert window.program == whole.program
    assert render(window.program) == render(whole.program)
    assert window.notes == whole.notes


def test_the_flagship_listing_and_report_are_the_unrolled_ones():
    options = {"devices": 144, "plan": "attn=dp,moe=ep,mb=2"}
    window = compile_model(DEEPSEEK, "h800", {}, **options)
    whole = compile_model(DEEPSEEK, "h800", {}, unroll=True, **options)
    assert render(window.program) == render(whole.program)
    reports = [json.dumps(report_dict(run_program(c.program, c.target)), sort_keys=True)
               for c in (window, whole)]
    assert reports[0] == reports[1]


def test_print_after_a_program_pass_shows_every_layer():
    seen = {}
    compile_model(DEEPSEEK, "h800", {"n_layers": "9"}, check_fit=False,
                  after=lambda name, result: seen.setdefault(name, result))
    assert seen["tile"].steady                                   # the graph: a window
    whole = compile_model(DEEPSEEK, "h800", {"n_layers": "9"}, check_fit=False, unroll=True)
    assert render(seen["place"]) == render(whole.program)
    assert "repeat i 4..7" in render(seen["plan"])               # stretched before shown


def test_a_window_that_does_not_fold_is_refused():
    program = compile_model(DEEPSEEK, "h800", {"n_layers": "5"}).program
    with pytest.raises(NotSteady, match="layer.3 does not fold with layer.2"):
        stretch(program, (Steady("layer", 0, 3, 4),))


def test_the_driver_compiles_every_layer_when_the_window_is_not_steady(monkeypatch):
    calls = []

    def refuse(program, steady):
        calls.append(steady)
        if steady:
            raise NotSteady("pretend")
        return program
    monkeypatch.setattr(driver, "stretch", refuse)
    compiled = compile_model(DEEPSEEK, "h800", {"n_layers": "9"}, check_fit=False)
    assert calls[0] and not compiled.graph.steady
    assert iterations(compiled.graph) == list(range(9))


# ---- the IR text shows the window -----------------------------------------------------------

def test_ir_text_round_trips_a_window():
    g = load_model("examples/llama3_8b.ds")
    text = print_graph(g)
    assert "\nrepeat layer from 0: layer.2 times 29\n" in text
    assert parse_graph(text) == g and print_graph(parse_graph(text)) == text


@pytest.mark.parametrize("line, message", [
    ("repeat layer from 3: block.5 times 55", "is not an iteration of repeat 'layer'"),
    ("repeat layer from 3: layer.5 times 1", "N at least 2"),
    ("repeat layer from 5: layer.5 times 9", "INDEX above 5"),
])
def test_ir_text_refuses_a_bad_repeat_line(line, message):
    with pytest.raises(DscError) as info:
        parse_graph(f"model m\n{line}\n")
    assert info.value.loc.line == 2 and message in str(info.value)
