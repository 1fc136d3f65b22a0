"""dsc's version: the installed distribution's (pyproject.toml is its one source)."""
from __future__ import annotations

import functools


@functools.cache
def dsc_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("dsc")
    except PackageNotFoundError:      # run from a source tree that was never installed
        return "unknown"
