"""The GEMM's walk over its tiles: row by row while a wave's strips of A and B fit in L2,
else in groups of rows walked column by column (a swizzled raster), which a later wave then
re-reads from L2 instead of memory."""
import json

import pytest

from cli_helpers import dsc, in_repo_root  # noqa: F401  (autouse fixture)
from compiler.kernels.gemm_tiles import wave_block

# 4096^3 BF16 on h800 takes 256x128 tiles: 16 rows by 32 columns of tiles, 132 per wave.
MODEL = """model raster {
  size M = 4096, N = 4096, K = 4096
  input a: bf16[M, K]
  weight b: bf16[K, N]
  output c = a @ b
}
"""
SMALL_L2 = ("--target-set", "l2.bytes=4000000")


@pytest.mark.parametrize("rows, block", [(1, (5, 32)), (2, (6, 32)), (4, (8, 32)),
                                         (8, (8, 17)), (16, (16, 9))])
def test_a_wave_covers_a_block_of_tiles(rows, block):
    # 132 consecutive tiles of groups of `rows` rows x 32 columns: a group of 8 rows has 256
    # tiles, so a wave is 8 rows by ceil(132 / 8) = 17 columns; one row has 32, so a wave
    # of the plain walk touches ceil(132 / 32) = 5 rows, every column.
    assert wave_block(rows, 16, 32, 132) == block


def _compiled(tmp_path, capsys, *options) -> str:
    (tmp_path / "r.ds").write_text(MODEL)
    out = tmp_path / "r.lst"
    code, _, err = dsc(capsys, "compile", str(tmp_path / "r.ds"), "--target", "h800",
                       *options, "-o", str(out))
    assert code == 0, err
    return out.read_text()


def _offchip(tmp_path, capsys, listing: str, name: str) -> float:
    (tmp_path / f"{name}.lst").write_text(listing)
    report = tmp_path / f"{name}.json"
    code, _, err = dsc(capsys, "run", str(tmp_path / f"{name}.lst"), "--target", "h800",
                       *SMALL_L2, "--json", str(report))
    assert code == 0, err
    return json.loads(report.read_text())["bytes_offchip"]


def test_strips_that_fit_keep_the_plain_walk(tmp_path, capsys):
    # 5 rows x 256 of A and 32 columns x 128 of B over K = 4096, BF16: 44 MB < 50 MB of L2.
    listing = _compiled(tmp_path, capsys)
    assert "  grid m=16 n=32\n" in listing and "groups of" not in listing


def test_strips_that_outgrow_l2_walk_groups_of_rows(tmp_path, capsys):
    # With 4 MB of L2 the wave's strips (rows x 256 + columns x 128 elements per K) are
    # smallest for groups of 8 rows: 8 x 256 + 17 x 128 = 4,224 against 5,376 row by row.
    listing = _compiled(tmp_path, capsys, *SMALL_L2)
    assert "tiles walked in groups of 8 rows" in listing
    assert "  grid mg=2 n=32 mi=8\n" in listing
    assert "@a[0:+1, (mg*8+mi)*256:+256, k*64:+64]" in listing
    # The same kernel walked row by row re-reads more of A and B from memory.
    plain = (listing.replace("(mg*8+mi)", "m").replace("grid mg=2 n=32 mi=8", "grid m=16 n=32")
             .replace("((mg*32+n)*8+mi)", "(m*32+n)"))
    assert "mg" not in plain
    assert _offchip(tmp_path, capsys, listing, "groups") < \
        0.9 * _offchip(tmp_path, capsys, plain, "plain")
