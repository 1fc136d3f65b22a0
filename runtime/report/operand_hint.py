"""The report's hint for a GEMM whose weights the matrix unit could read with their block
scales, were the activations in another format: block-scaled FP4 weights (MXFP4) against
activations whose scales the hardware does not apply (DeepSeek's 1x128 FP32 or UE8M0 ones,
or none) are dequantised, or their partial sums promoted, on the vector unit.

Everything is read from the target's matrix formats (`native_operands`, `block_scales`) and
the program's tensors, so a listing read back from a file gets the same hint.
"""
from __future__ import annotations

from isa.formats import ALIASES, DTYPES
from isa.mma_operands import mma_sources
from isa.program import Program, Repeat, TensorDecl
from isa.target_schema import Target


def native_activations(target: Target, a: TensorDecl, b: TensorDecl) -> tuple[str, str] | None:
    """(alias, format): the widest activation format (an alias such as mxfp8) with which a
    matrix format would read A and B as they are and apply both operands' block scales itself,
    when A as it is does not let any; None when A already does, or no alias would."""
    matrix = target.matrix
    if b.scaling is None or _applied(target, a.dtype, a.scaling, b):
        return None
    options = [(alias, f) for alias, fm in ALIASES.items()
               for f in _applying(target, fm.dtype, fm.scaling, b)]
    # the widest alias, its scales of the weights' kind (NVFP4 weights: NVFP4 activations);
    # then the format the compiler would pick for it (the fastest, one of the operands' own
    # dtypes, the narrowest)
    def rank(option):
        alias, f = option
        fm = ALIASES[alias]
        return (-DTYPES[fm.dtype].bits, fm.scaling.dtype != b.scaling.dtype,
                -matrix.formats[f].flops_per_cycle, f not in (fm.dtype, b.dtype),
                DTYPES[f].bits, option)
    return min(options, key=rank, default=None)


def activation_hints(program: Program, target: Target, kernels) -> list[str]:
    """One line per (alias, operands) over the launched `kernels` whose B is a weight, with
    what the alias would cost the other weight GEMMs: those whose weights' scales no format
    applies beside it promote their partial sums once per its (finer) block of K."""
    gemms = list(_weight_gemms(program, kernels))
    counts: dict[tuple, set] = {}
    for kernel, a, b in gemms:
        found = native_activations(target, a, b)
        if found:
            counts.setdefault((*found, b.dtype), set()).add(kernel)
    lines = []
    for (alias, fmt, weights), hinted in counts.items():
        line = (f"hint: --set activations={alias} would let the {ALIASES[alias].dtype} x "
                f"{weights} multiply run natively on {fmt}, the matrix unit applying both "
                f"block scales ({_kernels(len(hinted))})")
        slower = {kernel for kernel, a, b in gemms if _promotes_more(target, alias, a, b)}
        if slower - hinted:
            k = ALIASES[alias].scaling.block[1]
            line += (f"; {_kernels(len(slower - hinted))} whose weights' scales it cannot "
                     f"apply would promote every {k} of K, more often than now")
        lines.append(line)
    return lines


def _promotes_more(target: Target, alias: str, a: TensorDecl, b: TensorDecl) -> bool:
    """A GEMM of block-scaled operands the alias would promote more often: no format applies
    both its and the weights' scales, and its scale blocks along K are finer than A's."""
    x = ALIASES[alias]
    return (b.scaling is not None and a.scaling is not None
            and not _applied(target, x.dtype, x.scaling, b)
            and x.scaling.block[1] < a.scaling.block[1])


def _applying(target: Target, dtype: str, scaling, b: TensorDecl) -> list[str]:
    """The matrix formats that read A (`dtype`, `scaling`) and the block-scaled B as they
    are and apply both operands' scales themselves."""
    matrix = target.matrix
    return [f for f in matrix.formats
            if matrix.takes(f, dtype) and matrix.takes(f, b.dtype) and scaling is not None
            and matrix.applies_scales(f, scaling, "a")
            and matrix.applies_scales(f, b.scaling, "b")]


def _applied(target: Target, dtype: str, scaling, b: TensorDecl) -> bool:
    return bool(_applying(target, dtype, scaling, b))


def _weight_gemms(program: Program, kernels):
    """(kernel name, A, B) of each distinct matrix instruction whose B is a weight."""
    tensors = program.tensor_table()
    args = {}
    for item in _launches(program.schedule):
        args.setdefault(item.kernel, dict(item.args))
    for kernel in kernels:
        bound = args.get(kernel.name, {})
        for _, a_param, b_param in mma_sources(kernel):
            a, b = tensors.get(bound.get(a_param)), tensors.get(bound.get(b_param))
            if a is not None and b is not None and _root(b, tensors).kind == "weight":
                yield kernel.name, a, b


def _kernels(n: int) -> str:
    return f"{n} kernel{'s' if n > 1 else ''}"


def _root(t: TensorDecl, tensors: dict[str, TensorDecl]) -> TensorDecl:
    while t.kind == "view" and t.base in tensors:
        t = tensors[t.base]
    return t


def _launches(items):
    for item in items:
        if isinstance(item, Repeat):
            yield from _launches(item.body)
        else:
            yield item
