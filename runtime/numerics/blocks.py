"""Block geometry: one scale per `rows x cols` block of the last two dimensions.

A 0-D array is one 1x1 matrix and a 1-D array is one row; leading dimensions are independent
matrices. Edge blocks may be partial: reductions pad with zeros, which change neither a block's
amax nor whether it holds a non-finite value.
"""
from __future__ import annotations

import numpy as np


def as_matrix_stack(x: np.ndarray) -> np.ndarray:
    """View `x` with at least two dimensions (0-D -> 1x1, 1-D -> one row)."""
    return x.reshape((1,) * max(0, 2 - x.ndim) + x.shape)


def block_grid(matrix_shape: tuple[int, ...], block: tuple[int, int]) -> tuple[int, int]:
    rows, cols = matrix_shape[-2:]
    return -(-rows // block[0]), -(-cols // block[1])


def _blocked(stack: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """[..., R, C] -> [..., R/br, br, C/bc, bc], zero-padding partial edge blocks."""
    n_rows, n_cols = block_grid(stack.shape, block)
    pad = [(0, 0)] * (stack.ndim - 2) + [(0, n_rows * block[0] - stack.shape[-2]),
                                          (0, n_cols * block[1] - stack.shape[-1])]
    padded = np.pad(stack, pad)
    return padded.reshape(*stack.shape[:-2], n_rows, block[0], n_cols, block[1])


def block_max(stack: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """Per-block maximum of a non-negative [..., R, C] array -> [..., R/br, C/bc]."""
    return _blocked(stack, block).max(axis=(-3, -1), initial=0)


def block_any(stack: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """Per-block logical OR of a boolean [..., R, C] array -> [..., R/br, C/bc]."""
    return _blocked(stack, block).any(axis=(-3, -1))


def expand_blocks(per_block: np.ndarray, block: tuple[int, int], matrix_shape: tuple[int, ...]) -> np.ndarray:
    """Repeat one value per block over the block's elements, cropped to `matrix_shape`."""
    rows, cols = matrix_shape[-2:]
    full = np.repeat(np.repeat(per_block, block[0], axis=-2), block[1], axis=-1)
    return full[..., :rows, :cols]
