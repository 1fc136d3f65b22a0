"""Storage formats in the source: literal formats, the precision policy, and role orientation.

The policy gives a format to each role: `default` (bf16 unless set), `weights`,
`activations` and `kv_cache` (each defaulting to `default`). A declaration typed only by its
dims, `weight w: [K, N]`, takes its role's format.

Role orientation: role formats are written as for an activation [tokens, K], so the block's
columns run along the reduction axis (`mxfp4` = fp4_e2m1 scaled(ue8m0, 1x32)). Weights are
stored [in, out] = [K, N], so a role format with an RxC block (R != C) applied to a weight of
rank >= 2 gets the block transposed to CxR; `mxfp4` as the weights role gives
`fp4_e2m1 scaled(ue8m0, 32x1)` on a [K, N] weight. Explicitly typed declarations are literal.
"""
from __future__ import annotations

from compiler.errors import DscError, Loc, did_you_mean
from compiler.frontend import ast
from isa.formats import ALIASES, ELEMENT_DTYPES, Format, FormatError, parse_format

ROLES = ("default", "weights", "activations", "kv_cache")
DECLARATION_ROLES = {"weight": "weights", "cache": "kv_cache", "input": "default"}
DTYPE_NAMES = tuple(ELEMENT_DTYPES) + tuple(ALIASES)
FORMAT_HINT = "DTYPE or DTYPE scaled(SCALE_DTYPE, RxC), e.g. fp8_e4m3 scaled(fp32, 1x128)"


def format_of(fexpr: ast.FormatExpr) -> Format:
    """The literal format written in a type or a precision entry."""
    if fexpr.dtype not in DTYPE_NAMES:
        raise DscError(f"unknown dtype '{fexpr.dtype}'{did_you_mean(fexpr.dtype, DTYPE_NAMES)}",
                       fexpr.loc, "one of " + ", ".join(DTYPE_NAMES))
    loc = fexpr.scaling.loc if fexpr.scaling else fexpr.loc
    return parse_text(fexpr.text(), loc)


def parse_text(text: str, loc: Loc | None, context: str | None = None) -> Format:
    """A FORMAT given as text; `context` leads the error message (default: the text)."""
    try:
        return parse_format(text)
    except FormatError as err:
        raise DscError(f"{context or f'bad format {text!r}'}: {err}", loc, FORMAT_HINT) from None


def build_policy(model: ast.ModelDef, role_texts: dict[str, str]) -> dict[str, Format]:
    """Role -> format from the model's precision block and `--set ROLE=FORMAT` overrides."""
    blocks = [s for s in model.body if isinstance(s, ast.Precision)]
    if len(blocks) > 1:
        raise DscError("duplicate declaration: a second precision block", blocks[1].loc,
                       "one precision block per model")
    entries = _entries(blocks[0]) if blocks else {}
    given = {role: format_of(entry.format) for role, entry in entries.items()}
    for role, text in role_texts.items():
        where = entries[role].loc if role in entries else (blocks[0].loc if blocks else model.loc)
        given[role] = parse_text(text, where, f"bad --set {role}={text}")
    default = given.get("default", Format("bf16"))
    if default.scaling is not None:
        where = entries["default"].loc if "default" in entries and "default" not in role_texts \
            else (blocks[0].loc if blocks else model.loc)
        raise DscError(f"default {default}: the default role is the format of every computed "
                       "value, and a block-scaled format has its scales made only by a cast "
                       "(or a cache write)", where,
                       "an unscaled default (bf16, fp8_e4m3, ...); block-scaled formats for "
                       "weights, activations or kv_cache, or cast(x, FORMAT)")
    return {role: given.get(role, default) for role in ROLES}


def _entries(block: ast.Precision) -> dict[str, ast.PrecisionEntry]:
    entries: dict[str, ast.PrecisionEntry] = {}
    for entry in block.entries:
        if entry.role not in ROLES:
            raise DscError(f"unknown precision role '{entry.role}'"
                           f"{did_you_mean(entry.role, ROLES)}", entry.loc,
                           "one of " + ", ".join(ROLES))
        if entry.role in entries:
            raise DscError(f"duplicate declaration: role '{entry.role}' is already set at "
                           f"{entries[entry.role].loc}", entry.loc, "each role once")
        entries[entry.role] = entry
    return entries


def role_format(policy: dict[str, Format], kind: str, rank: int) -> Format:
    """The format a `[dims]`-typed declaration of `kind` gets, oriented for its role."""
    fmt = policy[DECLARATION_ROLES[kind]]
    scaling = fmt.scaling
    if kind != "weight" or scaling is None or rank < 2 or scaling.block[0] == scaling.block[1]:
        return fmt
    return Format(fmt.dtype, scaling.transposed())
