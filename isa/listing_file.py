"""What makes a file a listing, known without loading the assembler: the command line asks it
of every file it is given, and a model file must not pay for reading listings."""
from __future__ import annotations

from pathlib import Path

HEADER = "; dsc listing"


def is_listing(path: str) -> bool:
    """A listing by its suffix (.lst, .isa) or its first line (`; dsc listing`)."""
    if Path(path).suffix in (".lst", ".isa"):
        return True
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(HEADER)
    except OSError:
        return False
