"""Load a .ds file and everything it imports into `Unit`s: parsed files with their blocks.

`import "std/NAME.ds"` reads the standard library shipped in `compiler/stdlib/`; any other
path is relative to the importing file. A file sees the blocks it defines and the blocks
defined in the files it imports directly. Each file is loaded once, however often it is
imported; an import cycle or a missing file is an error at the import.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from compiler.errors import DscError, Loc, register_source
from compiler.frontend import ast
from compiler.frontend.parser import parse
from compiler.frontend.parse_cache import cached_parse

STDLIB = Path(__file__).resolve().parent.parent / "stdlib"
STD_PREFIX = "std/"


@dataclass(frozen=True)
class BlockRef:
    """A block and the file it is written in (whose constants its body sees)."""
    defn: ast.BlockDef
    unit: "Unit"


@dataclass(eq=False)
class Unit:
    file: str                   # displayed name
    path: Path                  # resolved path on disk
    module: ast.Module
    blocks: dict[str, BlockRef] = field(default_factory=dict)
    consts: dict = field(default_factory=dict)       # filled in by the builder
    consts_ready: bool = False

    def own_blocks(self):
        return (item for item in self.module.items if isinstance(item, ast.BlockDef))

    def models(self) -> list[ast.ModelDef]:
        return [item for item in self.module.items if isinstance(item, ast.ModelDef)]


class Loader:
    def __init__(self, reserved: set[str]):
        self.reserved = reserved          # builtin names a block may not take
        self.loaded: dict[Path, Unit] = {}
        self.loading: list[tuple[Path, str]] = []      # files being loaded, outermost first

    def load_main(self, path: str) -> Unit:
        problem = _not_a_file(path)
        if problem:
            raise DscError(f"cannot read model file '{path}': {problem}",
                           expected="the path of a .ds file")
        return self._load(Path(path).resolve(), path, None)

    def _load(self, path: Path, shown: str, at: Loc | None) -> Unit:
        if path in self.loaded:
            return self.loaded[path]
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else _reason(err)
            raise DscError(f"cannot read '{shown}': {reason}", at, "a UTF-8 .ds file") from None
        register_source(shown, text)
        unit = Unit(shown, path, _parse(text, shown))
        self.loading.append((path, shown))
        imported = [self._import(unit, item) for item in unit.module.items
                    if isinstance(item, ast.Import)]
        self.loading.pop()
        self._collect_blocks(unit, imported)
        self.loaded[path] = unit
        return unit

    def _import(self, unit: Unit, item: ast.Import) -> Unit:
        path, shown = self._resolve(unit, item)
        paths = [p for p, _ in self.loading]
        if path in paths:
            chain = [name for _, name in self.loading[paths.index(path):]]
            raise DscError(f"import cycle: {' -> '.join(chain + [shown])}", item.loc,
                           "imports that do not lead back to this file")
        problem = _not_a_file(path)
        if problem:
            raise DscError(f"import not found: '{item.path}' ({path}: {problem})", item.loc,
                           f"an existing .ds file; 'std/...' names the standard library "
                           f"({', '.join(sorted(p.name for p in STDLIB.glob('*.ds')))})")
        return self._load(path, shown, item.loc)

    @staticmethod
    def _resolve(unit: Unit, item: ast.Import) -> tuple[Path, str]:
        if "\0" in item.path or not item.path.strip():
            raise DscError(f"bad import path {item.path!r}", item.loc,
                           "the path of a .ds file, e.g. \"std/nn.ds\" or \"layers.ds\"")
        try:
            return Loader._paths(unit, item)
        except (OSError, RuntimeError) as err:       # too long, a symlink loop
            raise DscError(f"bad import path '{item.path}': {_reason(err)}", item.loc,
                           "the path of a .ds file") from None

    @staticmethod
    def _paths(unit: Unit, item: ast.Import) -> tuple[Path, str]:
        if item.path.startswith(STD_PREFIX):
            rest = item.path[len(STD_PREFIX):]
            return (STDLIB / rest).resolve(), os.path.normpath(item.path)
        if unit.file.startswith(STD_PREFIX) or unit.path.parent == STDLIB:
            return (STDLIB / item.path).resolve(), os.path.normpath(STD_PREFIX + item.path)
        shown = os.path.normpath(os.path.join(os.path.dirname(unit.file), item.path))
        return (unit.path.parent / item.path).resolve(), shown

    def _collect_blocks(self, unit: Unit, imported: list[Unit]) -> None:
        for block in unit.own_blocks():
            if block.name in self.reserved:
                raise DscError(f"block '{block.name}' has the name of a builtin", block.loc,
                               "a block name that is not a builtin op or composite")
            self._add(unit, BlockRef(block, unit))
        for other in imported:
            for block in other.own_blocks():
                self._add(unit, other.blocks[block.name])

    @staticmethod
    def _add(unit: Unit, ref: BlockRef) -> None:
        earlier = unit.blocks.get(ref.defn.name)
        if earlier is not None and earlier != ref:
            raise DscError(f"block '{ref.defn.name}' is defined twice: at {earlier.defn.loc} "
                           f"and at {ref.defn.loc}", ref.defn.loc, "one block per name")
        unit.blocks[ref.defn.name] = ref


def _not_a_file(path) -> str | None:
    """Why `path` cannot be read as a file (None when it can be)."""
    try:
        path = Path(path)
        if path.is_file():
            return None
        if path.is_dir():
            return "a directory, not a file"
        return "not a regular file" if path.exists() else "no such file"
    except (OSError, ValueError) as err:            # a name too long, a NUL byte
        return _reason(err)


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err)


@lru_cache(maxsize=64)
def _parse(text: str, shown: str) -> ast.Module:
    """Syntax trees are immutable, so a file read again with the same text is parsed once
    in a process, and once across runs while its text and the front end stay the same."""
    return cached_parse(text, shown, parse)
