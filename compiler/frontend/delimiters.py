"""Where a syntax error really starts when brackets do not pair up.

A `{` that is never closed makes the parser fail later, at whatever follows the block (the
next `block`, or the end of the file), far from the mistake. When a file's brackets do not
pair up, this module finds the bracket at fault, so the error points at it:

- a `}` while a `(` or `[` is open: that bracket (neither spans a block's end);
- any other closing bracket of the wrong kind, or one with nothing open: the closing bracket;
- a `{` never closed: the first block whose body ends, by its indentation, without a `}`
  — the first later line indented no deeper than the line that opened it should start with
  its `}`. Without such a line (one-line or unindented code) the innermost `{` still open at
  the end of the file;
- a `(` or `[` never closed: the innermost one still open at the end.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from compiler.errors import DscError, Loc

PAIRS = {"(": ")", "[": "]", "{": "}"}
# Comments and strings hide brackets; a newline starts a line whose indentation counts.
_LEXEME = re.compile(r'#[^\n]*|"[^"\n]*"|[()\[\]{}]|\n|[^\s#"()\[\]{}]+|[ \t\r\f]+')


@dataclass(frozen=True)
class _Token:
    text: str
    line: int
    col: int
    first: bool           # the first token of its line
    indent: int           # the indentation of its line


def _tokens(text: str) -> list[_Token]:
    out, line, line_start, first = [], 1, 0, True
    for m in _LEXEME.finditer(text):
        lexeme = m.group()
        if lexeme == "\n":
            line, line_start, first = line + 1, m.end(), True
            continue
        if lexeme.isspace() or lexeme.startswith("#"):
            continue
        indent = len(text[line_start:m.start()].expandtabs(8)) if first else \
            out[-1].indent
        out.append(_Token(lexeme, line, m.start() - line_start + 1, first, indent))
        first = False
    return out


def unpaired_bracket(text: str, file: str, before: tuple[int, int]) -> DscError | None:
    """The error at the bracket at fault, if the file's brackets do not pair up and that
    bracket comes before the parser's error position `before` (line, column); else None."""
    tokens = _tokens(text)
    stack: list[_Token] = []
    culprit = None
    for tok in tokens:
        if tok.text in PAIRS:
            stack.append(tok)
            continue
        if tok.text not in PAIRS.values():
            continue
        if stack and PAIRS[stack[-1].text] == tok.text:
            stack.pop()
            continue
        if tok.text == "}" and stack:          # a `(` or `[` left open inside a block
            culprit = _unclosed(stack[-1], file, f"before the '}}' at line {tok.line}, "
                                                 f"column {tok.col}")
        else:
            culprit = _stray(tok, stack, file)
        break
    else:
        if not stack:
            return None
        by_indentation = _unclosed_by_indentation(tokens)
        if by_indentation:
            opener, ender = by_indentation
            culprit = _unclosed(opener, file, f"before line {ender.line}, which is indented "
                                              "like the line that opens the block")
        else:
            culprit = _unclosed(stack[-1], file, "")
    return culprit if (culprit.loc.line, culprit.loc.col) <= before else None


def _unclosed_by_indentation(tokens: list[_Token]) -> tuple[_Token, _Token] | None:
    """The first `{` whose block ends by indentation at a line that does not close it, and
    the first token of that line."""
    for i, tok in enumerate(tokens):
        if tok.text != "{" or not _ends_line(tokens, i):
            continue
        for later in tokens[i + 1:]:
            if later.first and later.indent <= tok.indent:
                if later.text != "}":
                    return tok, later
                break
    return None


def _ends_line(tokens: list[_Token], i: int) -> bool:
    return i + 1 == len(tokens) or tokens[i + 1].first


def _unclosed(tok: _Token, file: str, where: str) -> DscError:
    return DscError(f"this '{tok.text}' is never closed", Loc(file, tok.line, tok.col),
                    f"a '{PAIRS[tok.text]}' closing it" + (f", {where}" if where else ""))


def _stray(tok: _Token, stack: list[_Token], file: str) -> DscError:
    if not stack:
        return DscError(f"unmatched '{tok.text}': nothing is open here",
                        Loc(file, tok.line, tok.col), "no closing bracket, or an opening one "
                        "before it")
    opener = stack[-1]
    return DscError(f"'{tok.text}' does not close the '{opener.text}' opened at line "
                    f"{opener.line}, column {opener.col}", Loc(file, tok.line, tok.col),
                    f"'{PAIRS[opener.text]}'")
