"""Off-chip storage of a functional run: one float32 (or int32) array per declared tensor.

Rules, stated once (docs/functional.md explains them with examples):

* A tensor holds values exactly representable in its format. Every write rounds to the
  storage dtype with the element rounding of runtime/numerics (nearest, ties to even,
  saturating); i32 tensors hold int32 indices.
* A block-scaled tensor `X` holds its *element* values; the decoded block scales live in its
  companion `X.scale`. The value an element stands for is element x scale of its block.
* A per-tensor scale (NVFP4's fp32 scale) lives in its own one-element tensor `X.tscale`; the
  GEMM applies it once to the product (`vec.tscale`).
* Views are not storage: a view is an address map, the flat index in its base of each of its
  elements, made by applying the view steps to an index array. Loads and stores through a
  view read and write the base, which equals materialising the bound views at a launch and
  writing the output views back after it, and stays right when two views of one base are
  bound to the same launch.
"""
from __future__ import annotations

import math

import numpy as np

from isa.formats import Format
from isa.program import Program, TensorDecl, scale_name, tensor_scale_name
from runtime.numerics import decode, quantize, round_to_element

SCALE_SUFFIX = ".scale"
UE8M0_EXPONENTS = (-127, 127)


class FunctionalError(Exception):
    """A program the functional mode cannot execute; the message names what and where."""


class InstructionFailed(FunctionalError):
    """An instruction whose semantics failed on its operands and attributes (the cause is
    chained). In an edited listing that is the edit's fault, said in these words; in a program
    dsc compiled it is a bug in dsc, and the cause is what to report."""


# ---- rounding to a dtype --------------------------------------------------------------------

def _round_i32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(np.int32) if x.dtype.kind in "iub" else np.rint(x).astype(np.int32)


def _round_fp32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype == np.float32 else round_to_element(x, "fp32")


def _round_ue8m0(x: np.ndarray) -> np.ndarray:
    """Nearest power of two (ties up) within UE8M0's exponents; zero stays zero (fresh
    storage), negative values become NaN (the format holds neither)."""
    x = np.asarray(x, dtype=np.float64)
    mantissa, exponent = np.frexp(np.where(x > 0, x, 1.0))
    exponent = np.clip(exponent - 1 + (mantissa >= 0.75), *UE8M0_EXPONENTS)
    out = np.ldexp(1.0, exponent).astype(np.float32)
    out = np.where(x == 0, np.float32(0), out)
    return np.where((x < 0) | np.isnan(x), np.float32(np.nan), out).astype(np.float32)


_SPECIAL = {"i32": _round_i32, "fp32": _round_fp32, "ue8m0": _round_ue8m0}


def round_to_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    """`x` as stored in `dtype`: int32 for i32, float32 values of the dtype otherwise."""
    if dtype in _SPECIAL:
        return _SPECIAL[dtype](x)
    x = np.asarray(x)
    return round_to_element(x.astype(np.float32) if x.dtype.kind in "iub" else x, dtype)


def zeros(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.zeros(shape, dtype=np.int32 if dtype == "i32" else np.float32)


# ---- views as address maps ------------------------------------------------------------------

def _apply_step(index: np.ndarray, step) -> np.ndarray:
    if step.op == "transpose":
        return np.transpose(index, step.arg)
    if step.op == "reshape":
        return index.reshape(step.arg)
    axis, start, stop = step.arg
    return np.take(index, np.arange(start, stop), axis=axis)


def view_index(decl: TensorDecl, base_shape: tuple[int, ...]) -> np.ndarray:
    """Flat index in the base of every element of the view `decl`, in the view's shape."""
    index = np.arange(math.prod(base_shape)).reshape(base_shape)
    for step in decl.steps:
        index = _apply_step(index, step)
    if index.shape != tuple(decl.shape):
        raise FunctionalError(f"view {decl.name}: its steps give shape {list(index.shape)}, "
                              f"declared {list(decl.shape)}")
    return index


def _clip(starts, sizes, shape):
    """(slices into the tensor, slices into the box) of the in-bounds part of a box."""
    if len(sizes) != len(shape):
        raise FunctionalError(f"a box of rank {len(sizes)} on a tensor of rank {len(shape)}")
    inner, outer = [], []
    for start, size, dim in zip(starts, sizes, shape):
        lo, hi = max(start, 0), min(start + size, dim)
        hi = max(hi, lo)
        inner.append(slice(lo, hi))
        outer.append(slice(lo - start, hi - start))
    return tuple(inner), tuple(outer)


# ---- the memory ----------------------------------------------------------------------------

class Memory:
    """Every tensor of a program: arrays for the storage tensors, address maps for views."""

    def __init__(self, program: Program):
        self.decls = program.tensor_table()
        self.arrays: dict[str, np.ndarray] = {}
        self.dtypes: dict[str, str] = {}
        self.written: set[str] = set()          # storage tensors that hold a value
        self._index: dict[str, np.ndarray] = {}
        for decl in program.tensors:
            if decl.base is None:
                self.dtypes[decl.name] = self._storage_dtype(decl)
                self.arrays[decl.name] = zeros(decl.shape, self.dtypes[decl.name])

    # -- what a tensor is --

    def decl(self, name: str) -> TensorDecl:
        try:
            return self.decls[name]
        except KeyError:
            raise FunctionalError(f"no tensor '{name}' in the program") from None

    def root(self, name: str) -> str:
        decl = self.decl(name)
        return decl.base or decl.name

    def storage_dtype(self, name: str) -> str:
        return self.dtypes[self.root(name)]

    def _storage_dtype(self, decl: TensorDecl) -> str:
        return decl.dtype

    def _flat_index(self, name: str) -> np.ndarray:
        if name not in self._index:
            decl = self.decl(name)
            self._index[name] = view_index(decl, self.decl(decl.base).shape)
        return self._index[name]

    # -- reading and writing --

    def read(self, name: str) -> np.ndarray:
        """The whole tensor (a copy for views)."""
        decl = self.decl(name)
        if decl.base is None:
            return self.arrays[name]
        return self.arrays[decl.base].reshape(-1)[self._flat_index(name)]

    def read_box(self, name: str, starts, sizes) -> np.ndarray:
        """The box `starts:+sizes`, zero where it leaves the tensor."""
        decl = self.decl(name)
        inner, outer = _clip(starts, sizes, decl.shape)
        out = zeros(tuple(sizes), self.storage_dtype(name))
        if decl.base is None:
            out[outer] = self.arrays[name][inner]
        else:
            out[outer] = self.arrays[decl.base].reshape(-1)[self._flat_index(name)[inner]]
        return out

    def write_box(self, name: str, starts, sizes, values: np.ndarray) -> None:
        """Store `values` (shaped like the box) into its in-bounds part, rounded to the dtype."""
        decl = self.decl(name)
        root = decl.base or decl.name
        inner, outer = _clip(starts, sizes, decl.shape)
        part = round_to_dtype(values[outer], self.dtypes[root])
        if decl.base is None:
            self.arrays[name][inner] = part
        else:
            self.arrays[root].reshape(-1)[self._flat_index(name)[inner]] = part
        self.written.add(root)

    def write_rows(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        """Store `values` [n, last dim] into rows `rows` of the tensor seen as [rows, last dim]."""
        decl = self.decl(name)
        root = decl.base or decl.name
        width = decl.shape[-1] if decl.shape else 1
        count = math.prod(decl.shape) // width
        if np.any(rows >= count):
            raise FunctionalError(f"row index out of range [0, {count}) for tensor {name}")
        part = round_to_dtype(values, self.dtypes[root])
        if decl.base is None:
            self.arrays[name].reshape(count, width)[rows] = part
        else:
            flat = self._flat_index(name).reshape(count, width)[rows]
            self.arrays[root].reshape(-1)[flat] = part
        self.written.add(root)

    def value(self, name: str) -> np.ndarray:
        """What a tensor stands for: elements x block scales for a block-scaled one."""
        decl = self.decl(name)
        values = self.read(name)
        if decl.scaling is None:
            return values
        scales = self.read(scale_name(name))
        if decl.scaling.tensor_dtype:
            # The same float32 divisor the quantiser used: block scale x tensor scale, then x element.
            tensor_scale = self.read(tensor_scale_name(decl.base or name)).reshape(-1)[0]
            scales = (scales * tensor_scale).astype(np.float32)
        return (values * expand_scales(scales, decl.scaling.block, decl.shape)).astype(np.float32)

    # -- feeds --

    def store(self, name: str, value: np.ndarray) -> None:
        """Store a fed value in its declared format (quantised when block-scaled)."""
        decl = self.decl(name)
        value = np.asarray(value)
        if value.shape != tuple(decl.shape):
            raise FunctionalError(f"the value fed for {name} has shape {list(value.shape)}, "
                                  f"expected {list(decl.shape)}")
        if decl.scaling is None:
            self.arrays[name] = round_to_dtype(value, self.dtypes[name]).copy()
            self.written.add(name)
            return
        q = quantize(value.astype(np.float32), Format(decl.dtype, decl.scaling))
        sname = scale_name(name)
        self.arrays[name] = decode(q.codes, decl.dtype).copy()
        self.arrays[sname] = round_to_dtype(q.scales, self.dtypes[sname]).copy()
        self.written.update((name, sname))
        if q.tensor_scale is not None:           # NVFP4: the per-tensor scale, its own tensor
            tname = tensor_scale_name(name)
            self.arrays[tname] = np.array([q.tensor_scale], dtype=np.float32)
            self.written.add(tname)


def expand_scales(scales: np.ndarray, block: tuple[int, int], shape: tuple[int, ...]) -> np.ndarray:
    """One scale per block of the last two dims, repeated over the block and cropped."""
    lead = tuple(shape[:-2]) if len(shape) >= 2 else ()
    rows, cols = (shape[-2], shape[-1]) if len(shape) >= 2 else (1, shape[-1] if shape else 1)
    grid = scales.reshape(lead + scales.shape[-2:])
    full = np.repeat(np.repeat(grid, block[0], axis=-2), block[1], axis=-1)[..., :rows, :cols]
    return full.reshape(shape)
