"""DeepSeek-V3's multi-token prediction module (std/mtp.ds) and outputs declared in a repeat."""
from __future__ import annotations

import pytest

from cli_helpers import dsc, in_repo_root  # noqa: F401  (autouse fixture)
from deployment_helpers import assert_user_error

from compiler.frontend import load_model
from compiler.stats import model_stats

V3 = "examples/deepseek_v3.ds"


def test_the_mtp_module_has_deepseek_v3s_parameter_count():
    """The V3 MTP module: eh_proj 2 x 7168 x 7168 = 102,760,448, three norms of its own
    (21,504), one decoder layer like layers 3-60 (MLA 187,107,328, two norms 14,336, MoE
    11,320,164,608): 11,610,068,224 unique parameters, 688,100,608 active per drafted token
    without the shared embedding and head; its cache adds one layer's latent entry (576 bf16)
    per token."""
    base = model_stats(load_model(V3, {}))
    with_mtp = model_stats(load_model(V3, {"n_mtp": "1", "seq": "2"}))
    assert with_mtp.params - base.params == 102_760_448 + 21_504 + 187_107_328 + 14_336 \
        + 11_320_164_608 == 11_610_068_224
    assert with_mtp.active_params - base.active_params == 688_100_608
    assert with_mtp.kv_cache_bytes_per_token - base.kv_cache_bytes_per_token == 576 * 2


def test_each_mtp_iteration_outputs_its_draft():
    graph = load_model(V3, {"n_mtp": "1", "seq": "2", "n_layers": "4"})
    outputs = [graph.node(o) for o in graph.outputs]
    assert [o.name for o in outputs] == ["mtp.0.draft", "logits"]
    assert outputs[0].type.shape == (128, 1, 129280)        # one draft per sequence
    assert outputs[1].type.shape == (128, 2, 129280)        # the checked draft and the next
    plain = load_model(V3, {"n_layers": "4"})
    assert [plain.node(o).name for o in plain.outputs] == ["logits"]


def test_an_output_inside_a_block_is_refused(capsys, tmp_path):
    path = tmp_path / "m.ds"
    path.write_text("block b(x: [N]) {\n  output y = x * 2.0\n  return x\n}\n"
                    "model m {\n  input x: bf16[4]\n  output z = b(x) * 3.0\n}\n")
    code, _, err = dsc(capsys, "compile", str(path), "--target", "h800")
    assert_user_error(code, err)
    assert "output declaration cannot appear inside block 'b'" in err
    assert f"{path}:2:10" in err


@pytest.mark.parametrize("count", [1, 6])
def test_a_repeat_with_outputs_is_built_whole(count, tmp_path):
    """A repeat long enough to be built as a window is built whole when it declares outputs:
    every iteration's output is the model's."""
    path = tmp_path / "m.ds"
    path.write_text("model m {\n  input x: bf16[4, 8]\n  weight w: bf16[8, 8]\n  h = x\n"
                    f"  repeat {count} as step {{\n    h = h @ w\n    output y = h * 2.0\n  }}\n"
                    "}\n")
    graph = load_model(str(path), {})
    assert [graph.node(o).name for o in graph.outputs] == [f"step.{i}.y" for i in range(count)]
    assert not graph.steady
