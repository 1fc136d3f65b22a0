"""Output files: checked before the work starts, written whole or not at all; and a progress
line for long runs.

A command's output paths are checked when it starts (`check_outputs`), so a typo in a
directory costs nothing; the files are written only when everything they hold is ready
(`write_outputs`): each goes to a temporary file in its own directory, and only when every
one is complete are they renamed into place. A failure at any point leaves no file behind
and every existing file as it was.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

from compiler.errors import DscError

STDOUT = "-"


def check_outputs(outputs: list[tuple[str, str]]) -> None:
    """Refuse, before any work, output paths that cannot be written: a missing directory, a
    directory given as the file, a place where no file can be created, one file named by two
    options. `outputs` holds (option, path) pairs; '-' is stdout."""
    seen: dict[str, str] = {}
    for option, path in outputs:
        if path != STDOUT:
            _check_path(option, path)
        where = path if path == STDOUT else os.path.realpath(path)
        if where in seen:
            raise DscError(f"{seen[where]} and {option} both write "
                           + ("stdout" if path == STDOUT else f"'{path}'"),
                           expected="a different file for each output")
        seen[where] = option


def _check_path(option: str, path: str) -> None:
    where = f"{option} '{path}'"
    if os.path.isdir(path):
        raise DscError(f"{where}: is a directory", expected="a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise DscError(f"{where}: no such directory '{os.path.dirname(path) or directory}'",
                       expected="an output file in an existing directory")
    if not _is_regular_or_new(path):
        if not os.access(path, os.W_OK):
            raise DscError(f"{where}: not writable")
        return                        # a device or a pipe (/dev/null): written in place
    try:                              # what can be created is known only by trying
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".dsc-", suffix=".tmp")
    except OSError as exc:
        raise DscError(f"{where}: cannot create a file in '{directory}': "
                       f"{exc.strerror}") from None
    os.close(fd)
    os.unlink(probe)


def write_output(path: str, text: str) -> None:
    """Write `text` to `path` ('-' is stdout), whole or not at all."""
    write_outputs([(path, text)])


def write_outputs(files: list[tuple[str, str]]) -> None:
    """Write each (path, text); '-' is stdout, written last. Every file is first written to a
    temporary file beside it; only when all are complete are they renamed into place, so a
    failure leaves no output and no temporary file behind. A device or pipe (/dev/null) is
    written in place: it cannot be replaced."""
    staged: list[tuple[str, str]] = []                 # (temporary file, its final path)
    current = ""
    try:
        for current, text in files:
            if current != STDOUT and _is_regular_or_new(current):
                staged.append((_stage(current, text), current))
        for current, text in files:
            if current != STDOUT and not _is_regular_or_new(current):
                with open(current, "w", encoding="utf-8") as f:
                    f.write(text)
        while staged:
            tmp, current = staged[-1]
            os.replace(tmp, current)
            staged.pop()
    except OSError as exc:
        raise DscError(f"cannot write '{current}': {exc.strerror}") from None
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
    for path, text in files:
        if path == STDOUT:
            sys.stdout.write(text)


def _stage(path: str, text: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".dsc-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())       # mkstemp makes it private; outputs are not
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _is_regular_or_new(path: str) -> bool:
    return os.path.isfile(path) or not os.path.exists(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class Progress:
    """`label i/n` (a simulation's launches) or `label: after STAGE` (a compilation's stages)
    on stderr, redrawn at most 10 times a second, only on a terminal and not under CI."""

    def __init__(self, label: str):
        self.label = label
        self.enabled = sys.stderr.isatty() and not os.environ.get("CI")
        self.last = 0.0
        self.start = time.monotonic()
        self.shown = False

    def __enter__(self):
        return self

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.1 and done < total):
            return
        self.last = now
        self.shown = True
        sys.stderr.write(f"\r{self.label} {done}/{total}")
        sys.stderr.flush()

    def stage(self, name: str) -> None:
        """A compile stage ended (`compile_model(clock=...)`): `label: after NAME, T s`."""
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.1:
            return
        self.last = now
        self.shown = True
        sys.stderr.write(f"\r{self.label}: after {name[:24]:<24} {now - self.start:5.1f} s")
        sys.stderr.flush()

    def __exit__(self, *exc):
        if self.shown:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()
