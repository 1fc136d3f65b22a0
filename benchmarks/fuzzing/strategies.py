"""The fuzz generators as hypothesis strategies, for property tests.

Each strategy draws a `random.Random` that hypothesis controls and hands it to the same
generator the fuzz harness uses, so a property test and a campaign explore the same inputs.
"""
from __future__ import annotations

from hypothesis import strategies as st

from benchmarks.fuzzing import listings as listing_edits
from benchmarks.fuzzing import models, targets
from benchmarks.fuzzing.cases import Case, make_case

_rngs = st.randoms(use_true_random=False)


def cases(kinds: tuple[str, ...] | None = None) -> st.SearchStrategy[Case]:
    """Whole cases (files and a command line), as the harness makes them."""
    return st.tuples(st.integers(0, 2**31), st.integers(0, 2**20)).map(
        lambda seed_index: make_case(*seed_index, kinds))


def ds_models() -> st.SearchStrategy[dict]:
    """{file name: text} of a model and what it imports (model.ds is the model)."""
    return _rngs.flatmap(lambda rng: st.just(rng.choice(
        (models.structured_model, models.grammar_model, models.mutated_example))(rng)))


def target_files() -> st.SearchStrategy[str]:
    """The TOML text of a mutated builtin target."""
    return _rngs.map(lambda rng: targets.target_file(rng)[1])


def listings() -> st.SearchStrategy[tuple[str, str]]:
    """(target, text) of an edited listing."""
    return _rngs.map(lambda rng: listing_edits.listing(rng)[1:])
