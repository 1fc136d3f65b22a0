"""Parse .ds text into the syntax tree of `ast.py`.

The grammar is `ds.lark` (LALR, contextual lexer). Every lark exception becomes a DscError at
the offending position, naming what was found and what the grammar would have accepted there.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import lark
from lark import Token, Transformer, v_args
from lark.lexer import PatternStr

from compiler.errors import DscError, Loc
from compiler.frontend import ast
from compiler.frontend.limits import MAX_NESTING
from compiler.frontend.delimiters import unpaired_bracket
from isa.cache_dir import cache_dir

GRAMMAR = Path(__file__).with_name("ds.lark")

# Friendly names for the regex terminals; string terminals are shown as quoted text.
TERMINAL_NAMES = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
    "BLOCK": "a block size like 1x128", "$END": "end of file",
}
TOKEN_KINDS = {"NAME": "name", "INT": "integer", "FLOAT": "number", "STRING": "string",
               "BLOCK": "block size"}
OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "DSLASH", "PERCENT", "AT"}


@lru_cache(maxsize=1)
def _lark() -> lark.Lark:
    """The parser; its tables are kept in dsc's cache directory (lark checks they were built
    from this grammar, these options and this lark before using them)."""
    where = cache_dir("parsers")
    cache = False
    if where is not None:
        try:
            where.mkdir(parents=True, exist_ok=True)
            cache = str(where / "ds.lark.pickle")
        except OSError:
            pass
    return lark.Lark(GRAMMAR.read_text(), parser="lalr", lexer="contextual",
                     propagate_positions=True, maybe_placeholders=True, cache=cache)


def parse(text: str, file: str) -> ast.Module:
    """Parse one file's text; `file` is the name shown in positions and errors."""
    try:
        tree = _lark().parse(text)
    except lark.exceptions.UnexpectedInput as err:
        raise _syntax_error(err, text, file) from None
    except lark.exceptions.LarkError as err:      # defensive: any other parser failure
        raise DscError(f"cannot parse: {err}", Loc(file, 1, 1), "valid .ds source") from None
    _check_nesting(tree, file)
    try:
        return _ToAst(file).transform(tree)
    except lark.exceptions.VisitError as err:
        if isinstance(err.orig_exc, DscError):
            raise err.orig_exc from None
        meta = getattr(err.obj, "meta", None)
        loc = Loc(file, getattr(meta, "line", 1), getattr(meta, "column", 1))
        raise DscError(f"cannot read this: {err.orig_exc}", loc, "valid .ds source") from None
    except RecursionError:
        raise DscError("expression nested too deeply", Loc(file, 1, 1),
                       "fewer nested parentheses or brackets") from None


def _check_nesting(tree: lark.Tree, file: str) -> None:
    """Refuse syntax nested deeper than the builder can follow (compiler/frontend/limits.py),
    at the construct that goes past the bound; walked with a stack, not recursion."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            line, col = _first_position(node)
            raise DscError(f"nested more than {MAX_NESTING} levels deep", Loc(file, line, col),
                           "fewer nested parentheses, operators, calls or blocks (split a long "
                           "expression with assignments)")
        stack.extend((child, depth + 1) for child in node.children
                     if isinstance(child, lark.Tree))


def _first_position(node) -> tuple[int, int]:
    meta = node.meta
    if not getattr(meta, "empty", True):
        return meta.line, meta.column
    return 1, 1


# ---- errors ------------------------------------------------------------------------------

def _syntax_error(err, text: str, file: str) -> DscError:
    """The parser's error; or, when brackets do not pair up, the error at the bracket at
    fault (an unclosed `{` makes the parser fail only where the next block starts)."""
    found = _parser_error(err, text, file)
    unpaired = unpaired_bracket(text, file, (found.loc.line, found.loc.col))
    if unpaired is None:
        return found
    if unpaired.loc == found.loc:
        return unpaired
    return unpaired.with_note(f"the parser stopped at {found.loc}: {found.message}")


def _parser_error(err, text: str, file: str) -> DscError:
    expected = _expected(_accepted(err))
    if isinstance(err, lark.exceptions.UnexpectedCharacters):
        char = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        return DscError(f"syntax error: unexpected character {char!r}",
                        Loc(file, err.line, err.column), expected)
    if isinstance(err, lark.exceptions.UnexpectedToken) and err.token.type != "$END":
        token = err.token
        return DscError(f"syntax error: unexpected {_describe(token)}",
                        Loc(file, token.line, token.column), expected)
    return DscError("syntax error: unexpected end of file", _end_loc(text, file), expected)


def _accepted(err) -> set[str]:
    """Terminals the parser accepts at the error, simulating reductions (the LALR table's
    own expected set merges lookaheads from other contexts)."""
    parser = getattr(err, "interactive_parser", None)
    if parser is not None:
        try:
            return set(parser.accepts())
        except lark.exceptions.LarkError:
            pass
    return set(getattr(err, "expected", None) or getattr(err, "allowed", None) or ())


def _describe(token: Token) -> str:
    if token.type in TOKEN_KINDS:
        return f"{TOKEN_KINDS[token.type]} {str(token)!r}"
    return repr(str(token))


def _terminal_text(name: str) -> str:
    if name in TERMINAL_NAMES:
        return TERMINAL_NAMES[name]
    try:
        pattern = _lark().get_terminal(name).pattern
    except KeyError:
        return name.lower()
    return repr(pattern.value) if isinstance(pattern, PatternStr) else name.lower()


def _expected(names) -> str | None:
    names = set(names)
    if not names:
        return None
    operators = names & OPERATORS
    if operators == {"MINUS"}:          # only unary minus can come here
        operators = set()
    shown = sorted(_terminal_text(n) for n in names - operators)
    if operators:
        shown.append("an operator")
    return shown[0] if len(shown) == 1 else "one of: " + ", ".join(shown)


def _end_loc(text: str, file: str) -> Loc:
    """Just after the last character that is not blank or inside a comment."""
    lines = text.splitlines() or [""]
    for number in range(len(lines), 0, -1):
        code = lines[number - 1].split("#", 1)[0].rstrip()
        if code:
            return Loc(file, number, len(code) + 1)
    return Loc(file, 1, 1)


# ---- parse tree -> ast ---------------------------------------------------------------------

@v_args(meta=True)
class _ToAst(Transformer):
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _loc(self, meta) -> Loc:
        return Loc(self.file, getattr(meta, "line", 1), getattr(meta, "column", 1))

    def _tok(self, token: Token) -> Loc:
        return Loc(self.file, token.line, token.column)

    # file items
    def start(self, meta, items):
        return ast.Module(self.file, tuple(items))

    def import_stmt(self, meta, c):
        return ast.Import(c[0][1:-1], self._loc(meta))

    def block_def(self, meta, c):
        name, *params, body = c
        params = tuple(p for p in params if p is not None)
        return ast.BlockDef(str(name), params, body, self._tok(name))

    def const_def(self, meta, c):
        return ast.ConstDef(str(c[0]), c[1], self._tok(c[0]))

    def model_def(self, meta, c):
        return ast.ModelDef(str(c[0]), c[1], self._loc(meta))

    def serve_def(self, meta, c):
        return ast.ServeDef(str(c[0]), tuple(c[1:]), self._loc(meta))

    def serve_phase(self, meta, c):
        return ast.ServePhase(str(c[0]), str(c[1])[1:-1], tuple(c[2:]), self._tok(c[0]),
                              self._tok(c[1]))

    def serve_setting(self, meta, c):
        token = c[1]
        value = int(token) if token.type == "INT" else float(token) if token.type == "FLOAT" \
            else str(token)[1:-1]
        return ast.ServeSetting(str(c[0]), value, self._tok(c[0]))

    def tensor_param(self, meta, c):
        return ast.Param(str(c[0]), c[1], None, self._tok(c[0]))

    def number_param(self, meta, c):
        return ast.Param(str(c[0]), None, c[1], self._tok(c[0]))

    def pattern(self, meta, c):
        return tuple(d for d in c if d is not None)

    def pat_dim(self, meta, c):
        token = c[0]
        value = int(token) if token.type == "INT" else str(token)
        return ast.PatDim(value, self._tok(token))

    def body(self, meta, c):
        return tuple(c)

    # statements
    def size_stmt(self, meta, c):
        return ast.SizeStmt(tuple(c), self._loc(meta))

    def size_item(self, meta, c):
        return ast.SizeItem(str(c[0]), c[1], self._tok(c[0]))

    def assign(self, meta, c):
        return ast.Assign(str(c[0]), c[1], self._tok(c[0]))

    def destructure(self, meta, c):
        return ast.Destructure(tuple(str(n) for n in c[:-1]), c[-1], self._loc(meta))

    def precision(self, meta, c):
        return ast.Precision(tuple(c), self._loc(meta))

    def prec_entry(self, meta, c):
        return ast.PrecisionEntry(str(c[0]), c[1], self._tok(c[0]))

    def deploy(self, meta, c):
        return ast.Deploy(tuple(c), self._loc(meta))

    def deploy_entry(self, meta, c):
        value = int(c[1]) if c[1].type == "INT" else \
            str(c[1])[1:-1] if c[1].type == "STRING" else str(c[1])
        if len(c) > 2:                                  # place ROLE=MEMORY
            value = f"{value}={c[2]}"
        return ast.DeployEntry(str(c[0]), value, self._tok(c[0]))

    def decl(self, meta, c):
        kind, name, type_ = c
        return ast.Decl(str(kind), str(name), type_, self._tok(name))

    def decl_kind(self, meta, c):
        return c[0]

    def output(self, meta, c):
        return ast.Output(str(c[0]), c[1], c[2], self._tok(c[0]))

    def repeat(self, meta, c):
        count, name, body = c
        return ast.Repeat(count, str(name) if name is not None else None, body, self._loc(meta))

    def return_stmt(self, meta, c):
        return ast.Return(tuple(c), self._loc(meta))

    # types
    def typed(self, meta, c):
        name, dims, scaling = c
        return ast.TypeExpr(ast.FormatExpr(str(name), scaling, self._tok(name)), dims,
                            self._loc(meta))

    def role_typed(self, meta, c):
        return ast.TypeExpr(None, c[0], self._loc(meta))

    def dims(self, meta, c):
        return tuple(d for d in c if d is not None)

    def format(self, meta, c):
        return ast.FormatExpr(str(c[0]), c[1], self._tok(c[0]))

    def scaling(self, meta, c):
        dtype, block, tensor = c
        rows, cols = (int(v) for v in str(block).split("x"))
        return ast.ScalingExpr(str(dtype), (rows, cols), str(tensor) if tensor else None,
                               self._loc(meta))

    # expressions
    def int_lit(self, meta, c):
        return ast.Num(int(c[0]), self._tok(c[0]))

    def float_lit(self, meta, c):
        value = float(c[0])
        if math.isinf(value):
            raise DscError(f"the number {c[0]} is too large for a 64-bit float",
                           self._tok(c[0]), "a number below about 1.8e308")
        return ast.Num(value, self._tok(c[0]))

    def str_lit(self, meta, c):
        return ast.Str(c[0][1:-1], self._tok(c[0]))

    def true_lit(self, meta, c):
        return ast.Bool(True, self._loc(meta))

    def false_lit(self, meta, c):
        return ast.Bool(False, self._loc(meta))

    def name(self, meta, c):
        return ast.Name(str(c[0]), self._tok(c[0]))

    def index(self, meta, c):
        return ast.Index(str(c[0]), c[1], self._tok(c[0]))

    def list_lit(self, meta, c):
        return ast.ListExpr(tuple(x for x in c if x is not None), self._loc(meta))

    def neg(self, meta, c):
        return ast.Neg(c[1], self._tok(c[0]))

    def binop(self, meta, c):
        left, op, right = c
        return ast.BinOp(str(op), left, right, self._tok(op))

    def call(self, meta, c):
        name, *args = c
        args = [a for a in args if a is not None]
        for before, after in zip(args, args[1:]):
            if isinstance(before, ast.KwArg) and not isinstance(after, ast.KwArg):
                raise DscError(f"positional argument after keyword argument '{before.name}'",
                               ast.start_loc(after), "keyword arguments after all positional ones")
        positional = tuple(a for a in args if not isinstance(a, ast.KwArg))
        keywords = tuple(a for a in args if isinstance(a, ast.KwArg))
        return ast.Call(str(name), positional, keywords, self._tok(name))

    def posarg(self, meta, c):
        return c[0]

    def kwarg(self, meta, c):
        return ast.KwArg(str(c[0]), c[1], self._tok(c[0]))

