"""User-facing errors: one message, a source position, the line with a caret, what was expected.

Every error the user can cause is a DscError. The CLI prints `str(err)` and exits with status 1;
nothing else is shown, so the message must stand on its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Loc:
    """A position in a .ds file. `file` is the name shown to the user (as given, or std/...)."""
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


# Source text by displayed file name, so errors can quote lines of any loaded file.
_SOURCES: dict[str, str] = {}


def register_source(file: str, text: str) -> None:
    _SOURCES[file] = text


def source_line(loc: Loc) -> str | None:
    text = _SOURCES.get(loc.file)
    if text is None:
        path = Path(loc.file)
        if not path.is_file():
            return None
        text = path.read_text()
    lines = text.splitlines()
    return lines[loc.line - 1] if 0 < loc.line <= len(lines) else None


class DscError(Exception):
    """An error in the user's input. `expected` says what would have been accepted."""

    def __init__(self, message: str, loc: Loc | None = None, expected: str | None = None,
                 notes: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.expected = expected
        self.notes = notes

    def with_note(self, note: str) -> "DscError":
        return DscError(self.message, self.loc, self.expected, self.notes + (note,))

    def __str__(self) -> str:
        head = f"{self.loc}: error: {self.message}" if self.loc else f"error: {self.message}"
        parts = [head]
        line = source_line(self.loc) if self.loc else None
        if line is not None:
            number = str(self.loc.line)
            parts.append(f" {number} | {line}")
            caret = " " * (self.loc.col - 1) + "^"
            parts.append(f" {' ' * len(number)} | {caret}")
        if self.expected:
            parts.append(f"expected: {self.expected}")
        parts.extend(f"note: {n}" for n in self.notes)
        return "\n".join(parts)


def did_you_mean(name: str, candidates) -> str:
    import difflib
    close = difflib.get_close_matches(name, sorted(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
