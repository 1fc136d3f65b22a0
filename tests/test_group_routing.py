"""Group-limited routing: a group ranks by the sum of its `group_best` best scores (two in
DeepSeek-V3, one, its maximum, in DeepSeek-V2's group_limited_greedy), and only the best
`topk_groups` groups' experts compete. Checked by hand, and through the ISA on h800."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.cli.functional import check_numerics
from compiler.driver import compile_model
from isa.program import walk
from isa.routing import topk_select

# Two groups of three experts. Group 0: one strong expert (0.9) and two weak ones; group 1:
# three middling ones (0.5, 0.45, 0.4). By its best expert group 0 wins (0.9 > 0.5); by its
# two best, group 1 (0.95 > 0.9 + 0.0).
SCORES = np.array([[0.9, 0.0, 0.0, 0.5, 0.45, 0.4]], dtype=np.float32)


@pytest.mark.parametrize("group_best, chosen", [(1, [0, 1]), (2, [3, 4])])
def test_groups_rank_by_their_best_scores(group_best, chosen):
    got = topk_select(SCORES, 2, groups=2, topk_groups=1, group_best=group_best)
    assert got.tolist() == [chosen]


def test_v2_routing_runs_through_the_isa(tmp_path):
    text = """
model routing {
  size T = 16
  precision { default fp32 weights fp32 activations fp32 kv_cache fp32 }
  input s: [T, 64]
  w, idx = topk(softmax(s), 6, groups=8, topk_groups=3, group_best=1)
  output chosen = idx
  output weights = w
}"""
    path = tmp_path / "routing.ds"
    path.write_text(text)
    compiled = compile_model(str(path), "h800", {})
    topks = [i for k in compiled.program.kernels for i in walk(k.body) if i.op == "vec.topk"]
    assert topks and all(dict((a.key, a.value) for a in i.args if hasattr(a, "key"))
                         ["group_best"] == 1 for i in topks)
    result = check_numerics(compiled)
    equal, total = result.indices
    assert equal == total == 16 * 6
