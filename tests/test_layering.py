"""Who may import whom: isa imports neither compiler nor runtime; the runtime never reads the
compiler (its IR included); passes never reach into the lowering; only the front doors that
hand each side what it needs import both: the command line, the driver, the Python API and the
sweep runner built on it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def files(package: str, but=()) -> list[Path]:
    return [p for p in sorted((ROOT / package).rglob("*.py"))
            if not any(str(p.relative_to(ROOT)).startswith(b) for b in but)]


RULES = [
    ("isa", (), ("compiler", "runtime")),
    ("runtime", (), ("compiler",)),
    ("compiler/passes", (), ("compiler.lower", "runtime")),
    ("compiler/kernels", (), ("compiler.lower", "compiler.passes", "runtime")),
    ("compiler", ("compiler/cli", "compiler/driver.py", "compiler/api.py", "compiler/sweep"),
     ("runtime",)),
]


@pytest.mark.parametrize("package, but, forbidden", RULES, ids=[r[0] for r in RULES])
def test_imports_run_one_way(package, but, forbidden):
    wrong = [f"{path.relative_to(ROOT)} imports {name}"
             for path in files(package, but) for name in sorted(imports(path))
             if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert not wrong, "\n".join(wrong)
