"""Running the CLI in-process, as the CLI tests do."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from compiler.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def in_repo_root(monkeypatch):
    """Run as a user would, from the repository root with relative example paths."""
    monkeypatch.chdir(ROOT)


def dsc(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; (exit status, stdout, stderr). Usage errors exit via SystemExit."""
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


ERROR_LINE = re.compile(r"^(?:\S+: )?error: ", re.M)     # `error: ...` or `FILE:LINE:COL: error: ...`


def assert_one_error(code: int, out: str, err: str) -> None:
    """Bad input: status 1, nothing on stdout, one message on stderr, no traceback."""
    assert code == 1, err
    assert out == ""
    assert "Traceback" not in err
    assert "internal error" not in err, err
    assert len(ERROR_LINE.findall(err)) == 1, err
