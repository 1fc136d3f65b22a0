"""Writing outputs whole or not at all, and a progress line for long runs."""
from __future__ import annotations

import os
import sys
import tempfile
import time

from compiler.errors import DscError


def write_output(path: str, text: str) -> None:
    """Write `text` to `path` atomically ('-' is stdout): never a half-written file."""
    if path == "-":
        sys.stdout.write(text)
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise DscError(f"cannot write '{path}': no such directory")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".dsc-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())       # mkstemp makes it private; outputs are not
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise DscError(f"cannot write '{path}': {exc.strerror}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class Progress:
    """`label i/n` on stderr, redrawn at most 10 times a second, only on a terminal."""

    def __init__(self, label: str):
        self.label = label
        self.enabled = sys.stderr.isatty() and not os.environ.get("CI")
        self.last = 0.0
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

    def __exit__(self, *exc):
        if self.shown:
            sys.stderr.write("\r" + " " * 40 + "\r")
            sys.stderr.flush()
