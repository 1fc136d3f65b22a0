"""How large a model the front end builds, and why each bound is where it is.

A model that would take minutes to compile, or whose numbers would stop being exact, is refused
while it is being built, at the statement or expression that makes it so (file:line:col), before
any pass runs. Each bound is far above what real models need.

    MAX_INT        sizes, dims, repeat counts and --set values: 2^53. FLOPs and bytes are
                   counted in 64-bit floats, exact for integers up to 2^53.
    MAX_NESTING    levels of nesting in one file's syntax (parentheses, operators, calls,
                   blocks, repeats): 100. Real models nest under 20; the builder recurses once
                   per level, and Python's stack holds about 1,000 frames.
    MAX_CALL_DEPTH block calls active at once: 32 (a real model nests three: model, mla, norm).
    MAX_OPS        operations of the model with every repeat unrolled: 50,000, twelve times
                   DeepSeek-V3's 4,159. Compiling and simulating take time per operation
                   (about a millisecond each), so the largest accepted model takes under a
                   minute; a repeat that would unroll past the bound is refused at its count,
                   after its first iteration showed how many operations one iteration adds.
"""
from __future__ import annotations

MAX_INT = 2 ** 53
MAX_NESTING = 100
MAX_CALL_DEPTH = 32
MAX_OPS = 50_000
