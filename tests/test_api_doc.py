"""docs/api.md runs: every ```python block, in order, in one namespace, from the repository
root (the blocks assert what the page says)."""
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_every_example_of_the_api_guide_runs(capsys):
    blocks = BLOCK.findall((ROOT / "docs" / "api.md").read_text())
    assert len(blocks) >= 6
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for number, code in enumerate(blocks, 1):
            exec(compile(code, f"docs/api.md block {number}", "exec"), namespace)
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert "gemm on h800" in printed and "tokens/s per device" in printed
