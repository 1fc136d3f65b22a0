"""Checking a user error of a .ds model: `fails(...)` builds a model that must fail and
`check(...)` asserts the rendering contract: `file:line:col: error: MESSAGE`, the source line, a
caret under the column, `expected: ...`. pytest.raises(DscError) also proves that nothing else
escapes."""
from __future__ import annotations

import pytest

from compiler.errors import DscError
from compiler.frontend import load_model


def fails(tmp_path, text: str, overrides=None, **others) -> DscError:
    for name, body in others.items():
        (tmp_path / f"{name}.ds").write_text(body)
    path = tmp_path / "m.ds"
    path.write_text(text)
    with pytest.raises(DscError) as info:
        load_model(str(path), overrides)
    return info.value


def check(err: DscError, file: str, line: int, col: int, words=(), expected=()):
    assert (err.loc.file, err.loc.line, err.loc.col) == (file, line, col), str(err)
    for word in words:
        assert word in err.message, str(err)
    for word in expected:
        assert err.expected and word in err.expected, str(err)
    rendered = str(err).splitlines()
    assert rendered[0] == f"{file}:{line}:{col}: error: {err.message}"
    assert rendered[2].index("^") - rendered[2].index("|") - 2 == col - 1
    assert rendered[3].startswith("expected: ")


def main(tmp_path) -> str:
    return str(tmp_path / "m.ds")
