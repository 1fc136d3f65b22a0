"""Output files: their paths are checked before any work, and they are written whole or not
at all, together, whatever fails and wherever it fails."""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from cli_helpers import assert_one_error, dsc, in_repo_root  # noqa: F401  (autouse fixture)

import compiler.cli.output as output
import compiler.driver
import runtime.report.html
from compiler.errors import DscError

GEMM = "examples/gemm.ds"
# Every output option, with the command that takes it.
OUTPUT_OPTIONS = [("compile", "-o"), ("run", "--json"), ("run", "--trace"), ("run", "--html")]


@pytest.fixture
def no_work(monkeypatch):
    """Compiling is the first piece of work of every command that writes files."""
    def refuse(*args, **kwargs):
        raise AssertionError("the work started before the output paths were checked")
    monkeypatch.setattr(compiler.driver, "compile_model", refuse)


def _bad_paths(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Kind of bad path -> (path, words the message must hold)."""
    (tmp_path / "adir").mkdir()
    paths = {"missing directory": (str(tmp_path / "nodir" / "x.out"), "no such directory"),
             "a directory": (str(tmp_path / "adir"), "is a directory")}
    if sys.platform.startswith("linux"):     # no file can be created in /proc, even by root
        paths["no file can be created"] = ("/proc/dsc-output.out", "cannot create a file")
    return paths


@pytest.mark.parametrize("command, option", OUTPUT_OPTIONS)
def test_a_bad_output_path_is_refused_before_the_work_starts(capsys, tmp_path, no_work,
                                                            command, option):
    for kind, (path, words) in _bad_paths(tmp_path).items():
        code, out, err = dsc(capsys, command, GEMM, "--target", "h800", option, path)
        assert_one_error(code, out, err)
        assert option in err and path in err and words in err, (kind, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]


def test_two_outputs_into_one_file_are_refused(capsys, tmp_path, no_work):
    code, out, err = dsc(capsys, "run", GEMM, "--target", "h800", "--json",
                         str(tmp_path / "r.json"), "--trace", str(tmp_path / "." / "r.json"))
    assert_one_error(code, out, err)
    assert "--json and --trace both write" in err
    code, out, err = dsc(capsys, "run", GEMM, "--target", "h800", "--json", "-", "--html", "-")
    assert_one_error(code, out, err)
    assert "both write stdout" in err
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_rendering_leaves_no_output(capsys, tmp_path, monkeypatch):
    """The HTML report is rendered last: when it fails, the JSON report and the trace, ready
    by then, are not written either."""
    def broken(run, provenance=None):
        raise DscError("the HTML report failed")
    monkeypatch.setattr(runtime.report.html, "html_report", broken)
    (tmp_path / "old.json").write_text("previous report\n")
    code, out, err = dsc(capsys, "run", GEMM, "--target", "h800", "--json",
                         str(tmp_path / "old.json"), "--trace", str(tmp_path / "t.json"),
                         "--html", str(tmp_path / "r.html"))
    assert_one_error(code, out, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]
    assert (tmp_path / "old.json").read_text() == "previous report\n"


def test_a_failure_while_writing_leaves_no_output(capsys, tmp_path, monkeypatch):
    """The disk fills while the second file is written: the first is not left behind, and
    neither is any temporary file."""
    staged = []
    real_stage = output._stage

    def stage(path, text):
        if staged:
            raise OSError(28, "No space left on device")
        staged.append(path)
        return real_stage(path, text)
    monkeypatch.setattr(output, "_stage", stage)
    code, out, err = dsc(capsys, "run", GEMM, "--target", "h800", "--json",
                         str(tmp_path / "r.json"), "--trace", str(tmp_path / "t.json"))
    assert_one_error(code, out, err)
    assert "No space left on device" in err and "t.json" in err
    assert list(tmp_path.iterdir()) == []


def test_all_outputs_of_a_run_are_written_whole(capsys, tmp_path):
    json_out, trace, html = (tmp_path / n for n in ("r.json", "t.json", "r.html"))
    code, out, err = dsc(capsys, "run", GEMM, "--target", "h800", "--json", str(json_out),
                         "--trace", str(trace), "--html", str(html))
    assert code == 0, err
    assert json.loads(json_out.read_text())["model"] == "gemm"
    assert json.loads(trace.read_text())["traceEvents"]
    assert html.read_text().rstrip().endswith("</html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.json", "t.json"]


def test_a_pipe_is_written_in_place(capsys, tmp_path):
    """A pipe or a device (/dev/null) is not a file to replace: it is written as it is."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this system")
    fifo = tmp_path / "listing.pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    code, out, err = dsc(capsys, "compile", GEMM, "--target", "h800", "-o", str(fifo))
    assert fifo.is_fifo(), "the pipe was replaced by a file"
    if code != 0:
        with open(fifo, "w"):           # release the reader
            pass
    reader.join(timeout=60)
    assert code == 0, err
    assert received[0].startswith("; dsc listing")
