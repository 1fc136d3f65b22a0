"""Per-layer lists: `NAME[i]` reads an entry of a list, and inside a repeat its name (`layer`)
holds the iteration's number in the model, so `ratios[layer]` gives each layer its own value.
A repeat whose layers read different entries is built as runs of identical bodies: a run
long enough is a window (one body stands for many), never more iterations than differ."""
from __future__ import annotations

from compiler.frontend import load_model
from compiler.ir.graph import Steady
from compiler.stats import model_stats
from ds_errors import check, fails, main  # noqa: F401

MODEL = """ratios = {ratios}
model m {{
  size T = 4, d = 64
  n_layers = {n}
  input x: [T, d]
  h = x
  repeat n_layers as layer {{
    weight w: [d, d * ratios[layer]]
    h = slice(h @ w, 1, 0, d)
  }}
  output y = h
}}
"""


def build(tmp_path, ratios, n=None, text=MODEL, overrides=None):
    path = tmp_path / "m.ds"
    path.write_text(text.format(ratios=list(ratios), n=len(ratios) if n is None else n))
    return load_model(str(path), overrides)


def widths(graph) -> dict[str, int]:
    return {n.name: n.type.shape[1] for n in graph.nodes() if n.op == "weight"}


def test_each_layer_reads_its_own_entry(tmp_path):
    g = build(tmp_path, [1, 3, 2, 1, 3])
    assert widths(g) == {f"layer.{i}.w": 64 * r for i, r in enumerate([1, 3, 2, 1, 3])}
    # parameters: 64 x 64 per unit of ratio, (1 + 3 + 2 + 1 + 3) units
    assert model_stats(g).params == 64 * 64 * 10


def test_a_run_of_equal_entries_is_a_window(tmp_path):
    ratios = [1, 1] + [2] * 20 + [3]
    g = build(tmp_path, ratios)
    # layers 0, 1 differ from layer 2 on; 2 .. 21 read the same entry: 2, 3 built, layer.4
    # stands for 17 (4 .. 20), then 21 (the run's last), then layer 22 (ratio 3)
    assert g.steady == (Steady("layer", 0, 4, 17),)
    built = widths(g)
    assert built["layer.4.w"] == 128 and g.copies("layer.4.w") == 17
    assert g.model_names("layer.6.w") == ["layer.22.w"] and built["layer.6.w"] == 192
    assert model_stats(g).params == 64 * 64 * sum(ratios)


def test_each_long_run_of_a_repeat_is_a_window(tmp_path):
    ratios = [1] * 10 + [2] * 10
    g = build(tmp_path, ratios)
    # run 1: layer.3 stands for 3 .. 8, layer.4 is 9; run 2 (10 .. 19): layer.5 is 10,
    # layer.6 11, layer.7 stands for 12 .. 18, layer.8 is 19
    assert g.steady == (Steady("layer", 0, 3, 6), Steady("layer", 4, 7, 7))
    assert g.model_names("layer.8.w") == ["layer.19.w"]
    assert model_stats(g).params == 64 * 64 * sum(ratios)


def test_a_repeat_without_lists_keeps_its_window(tmp_path):
    g = build(tmp_path, [2] * 12)
    # the input is read as h before the first layer only: layers 1 .. 11 are alike
    assert g.steady == (Steady("layer", 0, 3, 8),)


def test_alternating_entries_are_a_window_of_cycles(tmp_path):
    ratios = [1, 2] * 20
    g = build(tmp_path, ratios)
    # layer 0 reads the input, layers 1 .. 39 alternate: three cycles of two from layer 1
    # (1-2, 3-4, 5-6), the third (layers 5, 6) standing for 16 cycles (5 .. 36), then the
    # last three layers (37, 38, 39) as the window's 7, 8, 9
    assert g.steady == (Steady("layer", 0, 5, 16, period=2),)
    assert len(widths(g)) == 10
    assert g.copies("layer.5.w") == g.copies("layer.6.w") == 16 and g.copies("layer.7.w") == 1
    assert g.model_names("layer.6.w") == [f"layer.{i}.w" for i in range(6, 37, 2)]
    assert g.model_names("layer.7.w") == ["layer.37.w"]
    assert widths(g)["layer.7.w"] == 128 and widths(g)["layer.9.w"] == 128
    assert model_stats(g).params == 64 * 64 * sum(ratios)


def test_a_cycle_too_short_to_leave_one_out_is_built_whole(tmp_path):
    g = build(tmp_path, [1, 2] * 4)
    assert g.steady == () and len(widths(g)) == 8


def test_numbers_continue_across_repeats_of_the_same_name(tmp_path):
    text = """ratios = {ratios}
model m {{
  size T = 4, d = 64
  input x: [T, d]
  h = x
  repeat 10 as layer {{
    h = h @ x_w(d)
  }}
  repeat 3 as layer {{
    weight w: [d, d * ratios[layer]]
    h = slice(h @ w, 1, 0, d)
  }}
  output y = h
}}
block x_w(d) {{
  weight w: [d, d]
  return w
}}
"""
    ratios = [9] * 10 + [1, 2, 3]
    g = build(tmp_path, ratios, text=text)
    assert g.steady == (Steady("layer", 0, 3, 6),)     # the first repeat: layer.3 is 3 .. 8
    # its layer 9 is layer.4 of the window; the second repeat's layers 10, 11, 12 are built
    # as layer.5 .. layer.7 and read entries 10, 11, 12
    assert {k: v for k, v in widths(g).items() if k.endswith(".w") and "x_w" not in k} == \
        {"layer.5.w": 64, "layer.6.w": 128, "layer.7.w": 192}


def test_a_number_read_other_than_as_an_index_makes_every_layer_distinct(tmp_path):
    text = MODEL.replace("d * ratios[layer]", "d * (layer % 2 + 1)")
    g = build(tmp_path, [0] * 8, text=text)
    assert g.steady == () and widths(g)["layer.5.w"] == 128


def test_the_layer_name_is_bound_only_inside_its_repeat(tmp_path):
    text = MODEL.replace("output y = h", "output y = h * layer")
    err = fails(tmp_path, text.format(ratios=[1, 1], n=2))
    check(err, main(tmp_path), 11, 18, ["unknown name 'layer'"])


# ---- errors ------------------------------------------------------------------------------

def test_a_list_shorter_than_its_repeat(tmp_path):
    err = fails(tmp_path, MODEL.format(ratios=[1, 2, 1], n=5))
    check(err, main(tmp_path), 8, 30, ["list 'ratios' has 3 entries", "layer 0 .. 4"],
          ["at least 5 entries, one per layer"])


def test_a_list_shortened_by_set_is_caught_too(tmp_path):
    path = tmp_path / "m.ds"
    path.write_text(MODEL.format(ratios=[1, 2, 1], n=3))
    err = fails(tmp_path, path.read_text(), {"n_layers": "4"})
    check(err, main(tmp_path), 8, 30, ["has 3 entries", "layer 0 .. 3"])


def test_an_index_out_of_range(tmp_path):
    err = fails(tmp_path, "r = [1, 2]\nmodel m {\n  input x: [4]\n  output y = x * r[2]\n}\n")
    check(err, main(tmp_path), 4, 20, ["index 2 is out of range for list 'r' of 2 entries"],
          ["an index from 0 to 1"])


def test_a_negative_or_fractional_index(tmp_path):
    err = fails(tmp_path, "r = [1, 2]\nmodel m {\n  input x: [4]\n  output y = x * r[-1]\n}\n")
    check(err, main(tmp_path), 4, 20, ["index -1 is out of range"])
    err = fails(tmp_path, "r = [1, 2]\nmodel m {\n  input x: [4]\n  output y = x * r[0.5]\n}\n")
    check(err, main(tmp_path), 4, 20, ["the index of 'r' must be an integer"])


def test_indexing_what_is_not_a_list(tmp_path):
    err = fails(tmp_path, "r = 3\nmodel m {\n  input x: [4]\n  output y = x * r[0]\n}\n")
    check(err, main(tmp_path), 4, 18, ["'r' is int 3, not a list"], ["the name of a list"])


def test_an_index_needs_its_closing_bracket(tmp_path):
    err = fails(tmp_path, "r = [1, 2]\nmodel m {\n  input x: [4]\n  output y = x * r[0\n}\n")
    check(err, main(tmp_path), 4, 19, ["this '[' is never closed"])


# ---- compiled once per run, stretched back to every layer ----------------------------------

def _windowed_and_whole(tmp_path, monkeypatch, ratios: list[int]):
    """The model compiled as windows and unrolled, and how many layers each lowering saw."""
    import compiler.driver as driver
    from compiler.driver import compile_model
    path = tmp_path / "m.ds"
    path.write_text(MODEL.format(ratios=ratios, n=len(ratios)))
    lowered = []
    real_lower = driver.lower
    monkeypatch.setattr(driver, "lower", lambda g, t: lowered.append(g) or real_lower(g, t))
    window = compile_model(str(path), "h800", {})
    whole = compile_model(str(path), "h800", {}, unroll=True)
    layers = [len({n.name.split(".")[1] for n in g.nodes() if n.name.startswith("layer.")})
              for g in lowered]
    return window, whole, layers


def test_runs_are_lowered_once_and_stretched_to_the_unrolled_program(tmp_path, monkeypatch):
    from isa.listing import render
    window, whole, layers = _windowed_and_whole(tmp_path, monkeypatch, [1] * 10 + [2] * 10)
    # the window lowers 9 layers (5 of the first run, 4 of the second), not 20
    assert layers == [9, 20]
    assert render(window.program) == render(whole.program)


def test_cycles_are_lowered_once_and_stretched_to_the_unrolled_program(tmp_path, monkeypatch):
    from isa.assembler import parse_listing
    from isa.listing import render
    window, whole, layers = _windowed_and_whole(tmp_path, monkeypatch, [1, 2] * 20)
    assert layers == [10, 40]
    text = render(window.program)
    assert text == render(whole.program) and window.notes == whole.notes
    assert "repeat i 1..37 step 2" in text              # 19 cycles of two layers, then 39
    assert render(parse_listing(text)) == text
