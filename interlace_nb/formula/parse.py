"""Split an lme4-style formula into the fixed part and its random-effect terms.

formulaic cannot read ``(x | g)``, so bars are found here (lme4's findbars /
nobars) and formulaic only ever sees the fixed part and each bar's left side.
Expansions follow lme4: ``(1 + x || g)`` is ``(1 | g) + (0 + x | g)`` and
``(1 | a/b)`` is ``(1 | a) + (1 | b:a)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from formulaic import Formula
from formulaic.errors import FormulaicError

_IDENT_EXTRA = "._"
_OPENER = {")": "(", "]": "["}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class FormulaError(ValueError):
    """A formula that cannot be read, with a caret under the offending spot."""

    def __init__(self, message: str, formula: str | None = None, position: int | None = None):
        text = message
        if formula is not None and position is not None:
            shown = formula.replace("\n", " ").replace("\t", " ").replace("\r", " ")
            text = f"{message}\n  {shown}\n  {' ' * position}^"
        super().__init__(text)
        self.formula = formula
        self.position = position


@dataclass(frozen=True)
class RandomTermSpec:
    """One random-effects term ``(lhs | factors)`` after expansion.

    ``factors`` are the data columns whose interaction forms the grouping
    factor; ``group`` is its name as lme4 prints it (``"cask:batch"``).
    """

    lhs: str
    factors: tuple[str, ...]
    group: str
    text: str


@dataclass(frozen=True)
class ParsedFormula:
    """The formula split into response, fixed-effects right side and random terms."""

    formula: str
    response: str
    fixed_rhs: str
    random_terms: tuple[RandomTermSpec, ...]


def _split_top_level(text: str, sep: str, offset: int, formula: str) -> list[tuple[str, int]]:
    """Split ``text`` on ``sep`` at parenthesis depth 0; keep each piece's start offset."""
    pieces: list[tuple[str, int]] = []
    opened: list[int] = []
    start = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "([":
            opened.append(i)
        elif ch in ")]":
            _close(opened, text, ch, formula, offset + i)
        elif not opened and text.startswith(sep, i):
            pieces.append((text[start:i], offset + start))
            i += len(sep)
            start = i
            continue
        i += 1
    _check_all_closed(opened, text, formula, offset)
    pieces.append((text[start:], offset + start))
    return pieces


def _close(opened: list[int], text: str, ch: str, formula: str, at: int) -> None:
    """Pop the bracket that ``ch`` closes; a closer without (or unlike) its opener is an error."""
    if not opened:
        raise FormulaError(f"unmatched '{ch}'", formula, at)
    if text[opened[-1]] != _OPENER[ch]:
        raise FormulaError(
            f"'{ch}' does not match the '{text[opened[-1]]}' it closes", formula, at
        )
    opened.pop()


def _check_all_closed(opened: list[int], text: str, formula: str, offset: int) -> None:
    """Point at the outermost bracket left open (the one a ')' is missing for)."""
    if opened:
        bracket = text[opened[0]]
        closer = ")" if bracket == "(" else "]"
        raise FormulaError(
            f"unclosed '{bracket}': add the matching '{closer}'", formula, offset + opened[0]
        )


def _strip(piece: str, at: int) -> tuple[str, int]:
    """Strip whitespace, moving the offset to the first kept character."""
    lead = len(piece) - len(piece.lstrip())
    return piece.strip(), at + lead


def _signed_summands(text: str, offset: int, formula: str) -> list[tuple[str, str, int]]:
    """Split a right-hand side into (sign, summand, offset) at depth-0 '+' and '-'."""
    out: list[tuple[str, str, int]] = []
    opened: list[int] = []
    sign = "+"
    start = 0
    for i, ch in enumerate(text + "+"):
        if ch in "([":
            opened.append(i)
        elif ch in ")]":
            _close(opened, text, ch, formula, offset + i)
        elif not opened and ch in "+-":
            piece, at = _strip(text[start:i], offset + start)
            leading_unary_minus = not out and not piece and ch == "-"
            if not leading_unary_minus:
                out.append((sign, piece, at))
            sign = ch
            start = i + 1
    _check_all_closed(opened, text, formula, offset)
    return out


def _is_wrapped(text: str) -> bool:
    """True when ``text`` is one parenthesised group ``( ... )``."""
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(text) - 1:
            return False
    return True


def _check_formulaic_syntax(piece: str, at: int, formula: str, where: str) -> None:
    """Let formulaic parse one piece now, so its syntax errors point into the formula.

    formulaic marks the offending token with ``⧛ ... ⧚`` in its message; the
    marker's index in that context line is the token's offset within ``piece``.
    """
    try:
        Formula(piece)
    except (FormulaicError, SyntaxError, ValueError) as exc:
        text = _ANSI.sub("", str(exc))
        headline, _, context = text.partition("\n\n")
        marker = context.find("\u29db")
        position = at + marker if marker >= 0 and context.replace("\u29db", "").replace(
            "\u29da", ""
        ) == piece else at
        raise FormulaError(
            f"cannot read {where} {piece!r}: {headline.strip()}", formula, position
        ) from exc


def _bar_inside(piece: str) -> int | None:
    """Offset of the outermost '(' that encloses a '|' in ``piece``, if any."""
    opened: list[int] = []
    for i, ch in enumerate(piece):
        if ch == "(":
            opened.append(i)
        elif ch == ")" and opened:
            opened.pop()
        elif ch == "|" and opened:
            return opened[0]
    return None


def _check_factor_name(name: str, formula: str, at: int) -> str:
    """A grouping factor must be a plain column name (or a backquoted one)."""
    if name.startswith("`") and name.endswith("`") and len(name) > 2:
        return name[1:-1]
    if not name or not all(ch.isalnum() or ch in _IDENT_EXTRA for ch in name):
        raise FormulaError(
            f"grouping factor {name!r} must be a column name, an interaction a:b, "
            "or a nesting a/b",
            formula,
            at,
        )
    return name


def _grouping_factors(text: str, formula: str, at: int) -> list[tuple[tuple[str, ...], str]]:
    """``a`` -> [a]; ``a:b`` -> [a:b]; ``a/b/c`` -> [a, b:a, c:b:a] (lme4's naming)."""
    nest_parts = _split_top_level(text, "/", at, formula)
    chain: list[str] = []
    groups: list[tuple[tuple[str, ...], str]] = []
    for part, part_at in nest_parts:
        part, part_at = _strip(part, part_at)
        if not part:
            raise FormulaError("empty grouping factor", formula, part_at)
        names = []
        for name, name_at in _split_top_level(part, ":", part_at, formula):
            name, name_at = _strip(name, name_at)
            names.append(_check_factor_name(name, formula, name_at))
        chain = names + chain if chain else names
        groups.append((tuple(chain), ":".join(chain)))
    return groups


def _lhs_summands(lhs: str, formula: str, at: int) -> tuple[bool, list[str]]:
    """Return (has_intercept, non-intercept summands) of a bar's left side."""
    has_intercept = True
    summands = []
    for piece, piece_at in _split_top_level(lhs, "+", at, formula):
        piece, piece_at = _strip(piece, piece_at)
        for j, (sub, sub_at) in enumerate(_split_top_level(piece, "-", piece_at, formula)):
            sub, sub_at = _strip(sub, sub_at)
            if j > 0 and sub == "1":
                has_intercept = False
                continue
            if j > 0:
                raise FormulaError("only '- 1' may be subtracted in a random term", formula, sub_at)
            if sub == "0":
                has_intercept = False
            elif sub == "1":
                has_intercept = True
            elif sub:
                summands.append(sub)
    return has_intercept, summands


def _parse_bar(inner: str, inner_at: int, formula: str, text: str) -> list[RandomTermSpec]:
    """Expand one ``lhs | g`` or ``lhs || g`` into random-term specs."""
    double = _split_top_level(inner, "||", inner_at, formula)
    if len(double) > 2:
        raise FormulaError("a random term may hold only one '|' or '||'", formula, double[2][1])
    uncorrelated = len(double) == 2
    parts = double if uncorrelated else _split_top_level(inner, "|", inner_at, formula)
    if len(parts) != 2:
        raise FormulaError("a random term may hold only one '|'", formula, parts[-1][1] - 1)
    (lhs, lhs_at), (rhs, rhs_at) = (_strip(*parts[0]), _strip(*parts[1]))
    if not lhs:
        raise FormulaError(
            "missing left side in random term: write (1 | g) for a random intercept",
            formula,
            lhs_at,
        )
    if not rhs:
        raise FormulaError("missing grouping factor after '|'", formula, rhs_at)
    groups = _grouping_factors(rhs, formula, rhs_at)
    if uncorrelated:
        has_intercept, summands = _lhs_summands(lhs, formula, lhs_at)
        lhs_list = (["1"] if has_intercept else []) + [f"0 + {s}" for s in summands]
        if not lhs_list:
            raise FormulaError("random term has no effects", formula, lhs_at)
    else:
        lhs_list = [lhs]
    _check_formulaic_syntax(lhs, lhs_at, formula, "random-effects term")
    return [
        RandomTermSpec(lhs=one_lhs, factors=factors, group=name, text=text)
        for factors, name in groups
        for one_lhs in lhs_list
    ]


def parse_formula(formula: str) -> ParsedFormula:
    """Split ``formula`` into response, fixed-effects right side and random terms."""
    if not isinstance(formula, str):
        raise TypeError(f"formula must be a string such as 'y ~ x + (1 | g)', got {formula!r}")
    sides = _split_top_level(formula, "~", 0, formula)
    if len(sides) != 2:
        at = sides[2][1] - 1 if len(sides) > 2 else 0
        raise FormulaError("a formula needs exactly one '~', as in 'y ~ x + (1 | g)'", formula, at)
    (response, response_at), (rhs, rhs_at) = _strip(*sides[0]), _strip(*sides[1])
    if not response:
        raise FormulaError("missing response on the left of '~'", formula, response_at)
    if not rhs:
        raise FormulaError("missing right-hand side after '~'", formula, rhs_at)
    _check_formulaic_syntax(response, response_at, formula, "response")
    fixed: list[str] = []
    random_terms: list[RandomTermSpec] = []
    for sign, piece, piece_at in _signed_summands(rhs, rhs_at, formula):
        if not piece:
            raise FormulaError(f"empty term after '{sign}'", formula, piece_at)
        while _is_wrapped(piece) and _is_wrapped(piece[1:-1].strip()):
            # lme4 accepts ((1 | g)): drop the redundant parentheses
            inner = piece[1:-1]
            piece_at += 1 + len(inner) - len(inner.lstrip())
            piece = inner.strip()
        if _is_wrapped(piece) and "|" in piece:
            if sign == "-":
                raise FormulaError("a random term cannot be subtracted", formula, piece_at)
            random_terms.extend(_parse_bar(piece[1:-1], piece_at + 1, formula, piece))
        elif "|" in piece:
            inner = _bar_inside(piece)
            if inner is not None and inner > 0:
                raise FormulaError(
                    "a random term must be a term of its own, joined with '+', "
                    "as in 'y ~ x + (1 | g)'",
                    formula,
                    piece_at + inner,
                )
            raise FormulaError(
                "a random term must be wrapped in parentheses, as in (1 | g)",
                formula,
                piece_at + piece.index("|"),
            )
        elif piece.replace(" ", "").startswith("offset("):
            raise FormulaError(
                "offset(...) terms are not read from the formula; pass the column or an "
                "array as lmm(..., offset=...)",
                formula,
                piece_at,
            )
        else:
            _check_formulaic_syntax(piece, piece_at, formula, "fixed-effects term")
            fixed.append(piece if sign == "+" else f"- {piece}")
    fixed_rhs = " + ".join(fixed).replace("+ -", "-") if fixed else "1"
    if fixed and fixed[0].startswith("-"):
        fixed_rhs = "1 " + fixed_rhs
    return ParsedFormula(formula, response, fixed_rhs, tuple(random_terms))
