"""A vector kernel fills the cores before its tiles grow (compiler/lower/templates/vector.py:
_tile_shape): few rows are spread one row (or a column slice) per core, as a GPU launches one
block per row of a norm or a few hundred elements per block of an elementwise op."""
import math

import pytest

from compiler.driver import compile_model
from compiler.lower.templates.vector_tiles import _tile_shape
from isa.listing import render


def test_few_rows_are_split_down_to_one_row_then_to_columns():
    # 32 rows x 1024 bf16, 4 KB of buffers per row, 232 KB of buffer: 16 rows would fit.
    # One row per tile gives 32 tiles on 132 cores; halving the columns while the split still
    # runs in one wave: 64 tiles at 512, 128 at 256; 256 at 128 would need two waves.
    assert _tile_shape(4096, 0, 233472, 32, 1024, True, 132, 128) == (1, 256)
    # Rows that need whole rows (a norm) stop at one row per tile: 32 tiles.
    assert _tile_shape(4096, 0, 233472, 32, 1024, False, 132, 128) == (1, 1024)
    # Columns never split below the vector unit's lanes (a cycle's work).
    assert _tile_shape(512, 0, 233472, 2, 128, True, 132, 128) == (1, 128)


@pytest.mark.parametrize("rows, want", [(200, 2), (132, 1), (133, 2), (4096, 16), (100_000, 16)])
def test_many_rows_keep_tiles_as_large_as_the_buffer_and_one_wave_allow(rows, want):
    # The buffer holds 16 rows (2 slots x 16 x 4 KB <= 232 KB). 200 rows: 13 tiles of 16 leave
    # cores idle; 100 of 2 still run in one wave, 200 of 1 would not. 4096 rows: 256 tiles of
    # 16 already fill the cores.
    br, bc = _tile_shape(4096, 0, 233472, rows, 1024, False, 132, 128)
    assert (br, bc) == (want, 1024)
    assert math.ceil(rows / br) <= 132 or br == 16


def test_a_64_kb_elementwise_kernel_runs_on_128_cores(tmp_path):
    model = tmp_path / "e.ds"
    model.write_text("model e {\n  size R = 32, C = 1024\n  input x: bf16[R, C]\n"
                     "  output y = x * 2.0\n}\n")
    listing = render(compile_model(str(model), "h800", {}).program)
    assert "tiles of 1 row x 256 columns, 1 per work item" in listing
    assert "grid w=128" in listing
