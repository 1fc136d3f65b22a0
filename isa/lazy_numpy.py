"""numpy, imported the first time it is used: most commands (compile, run, a GEMM what-if)
never compute with arrays, and importing numpy is a fifth of such a command's time. The
modules on every command's path (the op and vector-op catalogues, whose numpy semantics only
functional mode runs; the verifier; the simulator's work-item tables) import `np` from here.
"""
from __future__ import annotations

import importlib
import types


class _Lazy(types.ModuleType):
    def __getattr__(self, name: str):
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)     # later reads are plain attribute reads
        return getattr(module, name)


np = _Lazy("numpy")
