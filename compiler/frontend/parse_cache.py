"""Syntax trees kept on disk, so a run does not parse the standard library again.

A file's tree is a pure function of its text, the name it is shown under (positions carry
it) and the front end's source; the key hashes all three, with lark's version, so a changed
file or a changed front end never reads a stale tree. Only trees that parsed are kept: a
syntax error is raised afresh each time, with its caret. The trees are pickled, as lark
keeps its own parser tables in the same directory (isa/cache_dir.py says where; `DSC_CACHE=off`
keeps nothing); an entry that cannot be read is parsed again and rewritten.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from functools import cache
from pathlib import Path
from typing import Callable

import lark

from isa.cache_dir import cache_dir

FRONTEND = Path(__file__).resolve().parent


def cached_parse(text: str, shown: str, parse: Callable[[str, str], object]):
    """`parse(text, shown)`, or the tree an earlier run kept for the same text and name."""
    path = _path(text, shown)
    if path is not None:
        try:
            return pickle.loads(path.read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError,
                IndexError, TypeError, ValueError):
            pass                                     # absent or unreadable: parse again
    tree = parse(text, shown)
    if path is not None:
        _write(path, pickle.dumps(tree, protocol=pickle.HIGHEST_PROTOCOL))
    return tree


@cache
def _code_hash() -> str:
    """The front end's source (what a tree's shape depends on) and lark's version."""
    digest = hashlib.sha256(lark.__version__.encode())
    for path in sorted(FRONTEND.iterdir()):
        if path.suffix in (".py", ".lark"):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _path(text: str, shown: str) -> Path | None:
    where = cache_dir("trees")
    if where is None:
        return None
    key = hashlib.sha256("\0".join((_code_hash(), shown, text)).encode()).hexdigest()
    return where / f"{key}.pickle"


def _write(path: Path, data: bytes) -> None:
    """Written whole through a temporary file and renamed, so a parallel run never reads half."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=path.parent, delete=False,
                                         suffix=".tmp") as f:
            f.write(data)
        os.replace(f.name, path)
    except OSError:
        pass                          # a cache that cannot be written is only slower
