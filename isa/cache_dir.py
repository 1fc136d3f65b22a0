"""Where dsc keeps what it can compute again: kernel simulations (runtime/sim_cache.py) and
the parser's tables (compiler/frontend/parser.py).

`$DSC_CACHE` names the directory (`off`: keep nothing on disk); by default it is
`$XDG_CACHE_HOME/dsc`, else `~/.cache/dsc`. Everything kept there is keyed by what it was
computed from, so a stale entry is never used, and deleting the directory only costs time.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(part: str) -> Path | None:
    """The subdirectory `part` of the cache directory, or None when caching on disk is off."""
    setting = os.environ.get("DSC_CACHE")
    if setting == "off":
        return None
    root = Path(setting) if setting else \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dsc"
    return root / part
