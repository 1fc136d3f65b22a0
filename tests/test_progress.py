"""Progress on a terminal: compilation names its stages, simulation counts launches; nothing
is shown when stderr is not a terminal or CI is set, and the line is cleared at the end."""
import io

import pytest

from cli_helpers import in_repo_root  # noqa: F401  (autouse fixture)
from compiler.cli import output
from compiler.cli.main import main


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch):
    """A terminal for stderr, installed by the test itself (pytest's own capture replaces
    sys.stderr after fixtures run), and a clock that moves a second per reading."""
    screen = Terminal()
    monkeypatch.delenv("CI", raising=False)
    ticks = iter(range(0, 10_000))
    monkeypatch.setattr(output, "time", type("Clock", (), {
        "monotonic": staticmethod(lambda: float(next(ticks)))}))
    return lambda: monkeypatch.setattr("sys.stderr", screen) or screen


def test_compilation_and_simulation_show_progress_on_a_terminal(terminal):
    terminal = terminal()
    assert main(["run", "examples/gemm.ds", "--target", "h800"]) == 0
    shown = terminal.getvalue()
    for stage in ("frontend", "fuse", "lower", "place"):
        assert f"\rcompiling: after {stage}" in shown
    assert "\rsimulating 1/1" in shown
    assert shown.endswith("\r" + " " * 60 + "\r")    # cleared: the report stands alone


def test_no_progress_under_ci_or_off_a_terminal(terminal, monkeypatch):
    terminal = terminal()
    monkeypatch.setenv("CI", "true")
    assert main(["compile", "examples/gemm.ds", "--target", "h800", "-o", "-"]) == 0
    assert terminal.getvalue() == ""
    monkeypatch.delenv("CI")
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert main(["compile", "examples/gemm.ds", "--target", "h800", "-o", "-"]) == 0
    assert terminal.getvalue() == ""
