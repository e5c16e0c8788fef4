"""From formula and data to the arrays the engine needs: y, X, random terms, w, offset."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl
from formulaic import model_matrix

from .data import (
    OFFSET_COLUMN,
    WEIGHTS_COLUMN,
    DataError,
    ModelFrame,
    column_names,
    formula_variable_sources,
    formula_variables,
    formulaic_frame,
    level_codes,
    load_model_frame,
)
from .formula import FormulaError, ParsedFormula, parse_formula
from .terms import RandomTerm, lme4_term_order

#: lme4's rank tolerance for the fixed-effects model matrix (qr(X, tol = 1e-7)).
RANK_TOLERANCE = 1e-7


@dataclass(frozen=True)
class Design:
    """Everything the fit needs, decoded from formula and data once."""

    parsed: ParsedFormula
    model_frame: ModelFrame
    y: np.ndarray
    x: np.ndarray
    x_all: np.ndarray
    kept_columns: np.ndarray
    x_names: tuple[str, ...]
    dropped_x_names: tuple[str, ...]
    fixed_spec: object
    terms: tuple[RandomTerm, ...]
    weights: np.ndarray
    offset: np.ndarray
    has_weights: bool
    has_offset: bool
    #: Binomial totals (successes + failures) of a ``cbind(successes, failures)`` response.
    trials: np.ndarray | None = None

    @property
    def n_dropped(self) -> int:
        """Rows dropped for missing values."""
        return self.model_frame.n_dropped

    @property
    def n_input_rows(self) -> int:
        return self.model_frame.n_input_rows


#: Column types formulaic can read neither as numbers nor as factors.
_TEMPORAL = (pl.Date, pl.Datetime, pl.Duration, pl.Time)


def column_or_array(value: object, role: str) -> tuple[str | None, np.ndarray | None]:
    """A weights/offset argument is a column name or an array as long as the data."""
    if value is None:
        return None, None
    if isinstance(value, str):
        return value, None
    if isinstance(value, pl.Series):
        if not value.dtype.is_numeric():
            raise DataError(f"{role} must be numeric; the Series given has type {value.dtype}")
        return None, value.cast(pl.Float64).to_numpy()
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise DataError(f"{role} must be a column name or a 1-d numeric array") from exc
    if array.ndim != 1 or not (
        np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.complexfloating)
    ):
        raise DataError(
            f"{role} must be a column name or a 1-d numeric array, got "
            f"{type(value).__name__} of {array.dtype} with shape {array.shape}"
        )
    return None, array


def independent_columns(x: np.ndarray) -> np.ndarray:
    """Columns of X to keep, dropping later columns that earlier ones span (as R's qr)."""
    kept: list[int] = []
    basis = np.zeros((x.shape[0], 0))
    for j in range(x.shape[1]):
        column = x[:, j]
        norm = np.linalg.norm(column)
        if norm == 0.0:
            continue
        residual = column - basis @ (basis.T @ column)
        residual -= basis @ (basis.T @ residual)
        res_norm = np.linalg.norm(residual)
        if res_norm > RANK_TOLERANCE * norm:
            kept.append(j)
            if j + 1 < x.shape[1]:  # no later column projects on the last one
                basis = np.column_stack([basis, residual / res_norm])
    return np.array(kept, dtype=np.int64)


def check_numeric_response(schema: pl.Schema, response: str) -> None:
    if response in schema:
        dtype = schema[response]
        if not (dtype.is_numeric() or dtype == pl.Boolean):
            raise DataError(
                f"response {response!r} has type {dtype}; a linear mixed model needs a numeric "
                f"response (cast it, e.g. pl.col({response!r}).cast(pl.Float64))"
            )


def check_variable_types(schema: pl.Schema, columns: dict[str, str]) -> None:
    """Dates and times are neither numbers nor factors to formulaic; say what to do."""
    for name, role in columns.items():
        if role.startswith("grouping"):
            continue
        dtype = schema[name]
        if isinstance(dtype, _TEMPORAL):
            raise DataError(
                f"column {name!r} ({role}) has type {dtype}; convert it to a number (e.g. "
                f"days since the first: (pl.col({name!r}) - pl.col({name!r}).min())"
                ".dt.total_days()) or to a string to use it as a factor"
            )
        if role in ("weights", "offset") and not dtype.is_numeric():
            raise DataError(
                f"{role} column {name!r} has type {dtype}; it must be numeric "
                f"(e.g. pl.col({name!r}).cast(pl.Float64))"
            )


_FACTOR_IN_MESSAGE = re.compile(r"factor `(.+?)`")
_CAUSE_IN_MESSAGE = re.compile(r"\[(\w+): (.*)\]\s*$", re.DOTALL)


def formulaic_matrix(
    spec: str, frame: pd.DataFrame, role: str, schema: pl.Schema, response: str | None = None
) -> object:
    """formulaic's model_matrix, its failures turned into a DataError naming the term."""
    try:
        # NaN/inf from a transform (np.log(0)) is reported by check_finite, not as a warning.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return model_matrix(spec, frame, output="numpy", na_action="ignore")
    except Exception as exc:  # formulaic wraps NumPy/pandas errors in several types
        text = str(exc)
        found = _FACTOR_IN_MESSAGE.search(text)
        term = found.group(1) if found else spec
        if response is not None and term.replace(" ", "") == response.replace(" ", ""):
            role = "response"
        cause = _CAUSE_IN_MESSAGE.search(text)
        kind, detail = (cause.group(1), cause.group(2)) if cause else (type(exc).__name__, text)
        if kind == "NameError":
            unknown = re.search(r"name '(.+?)' is not defined", detail)
            name = unknown.group(1) if unknown else "a name"
            hint = (
                f"{name!r} is neither a column of the data nor a function formulaic knows; "
                "use NumPy functions as np.log(x), or formulaic's C(), scale(), center(), "
                "poly(), I()"
            )
        else:
            used = [
                f"{c!r} is {schema[c]}"
                for c in schema.names()
                if re.search(rf"(?<![\w.]){re.escape(c)}(?![\w])", term)
            ]
            hint = "check the types of the columns it uses" + (
                f" ({', '.join(used)})" if used else ""
            )
        raise DataError(
            f"{role} term {term!r} could not be evaluated ({kind}: {detail.strip()}); {hint}"
        ) from exc


def check_factor_levels(matrix: object, role: str, n_dropped: int) -> None:
    """R refuses contrasts on a factor with one level; formulaic silently drops it."""
    for factor, (kind, state) in matrix.model_spec.encoder_state.items():  # type: ignore[attr-defined]
        if getattr(kind, "value", kind) != "categorical":
            continue
        levels = list(state.get("categories", []))
        if len(levels) < 2:
            after = " after dropping rows with missing values" if n_dropped else ""
            raise DataError(
                f"{role} term {factor!r} is a factor with a single level "
                f"({', '.join(map(repr, levels)) or 'none'}){after}; contrasts need at least "
                "two levels. Drop the term from the formula or check the data."
            )


def parse_mixed_formula(formula: str) -> ParsedFormula:
    """Parse, and refuse a formula without random-effects terms."""
    parsed = parse_formula(formula)
    if not parsed.random_terms:
        raise FormulaError(
            f"formula {formula!r} has no random-effects term such as (1 | group), so it is not "
            "a mixed model. For a plain regression use statsmodels' OLS (smf.ols) or "
            "numpy.linalg.lstsq; to fit random intercepts write e.g. 'y ~ x + (1 | subject)'.",
            formula,
            len(formula.rstrip()),
        )
    return parsed


def model_columns(
    parsed: ParsedFormula,
    available: list[str],
    weights_col: str | None,
    offset_col: str | None,
    response: str | None = None,
) -> dict[str, str]:
    """The data columns the model reads -> their role, for projection and messages.

    ``response`` is the response as formulaic reads it (default: as written).
    """
    columns: dict[str, str] = {}

    def need(rhs: str, role: str) -> None:
        for name, expr in formula_variable_sources(rhs, available).items():
            columns.setdefault(name, role if expr == name else f"{role} term {expr!r}")

    need(f"0 + {response or parsed.response}", "response")
    need(parsed.fixed_rhs, "fixed-effects")
    for term in parsed.random_terms:
        need(term.lhs, f"random-effects term {term.text}")
        for name in term.factors:
            columns.setdefault(name, f"grouping factor in {term.text}")
    if weights_col is not None:
        columns.setdefault(weights_col, "weights")
    if offset_col is not None:
        columns.setdefault(offset_col, "offset")
    return columns


def build_design(
    formula: str,
    data: object,
    *,
    weights: object = None,
    offset: object = None,
    na_action: str = "omit",
    binomial: bool = False,
) -> Design:
    """Parse, read the data once, and build y, X and the random terms.

    ``binomial`` (GLMMs) also accepts lme4's ``cbind(successes, failures)``
    response and a two-level factor response (the first level is failure).
    """
    parsed = parse_mixed_formula(formula)
    response_spec, cbind_parts = _response_spec(parsed, formula, binomial)
    weights_col, weights_array = column_or_array(weights, "weights")
    offset_col, offset_array = column_or_array(offset, "offset")
    columns = model_columns(
        parsed, column_names(data), weights_col, offset_col, response=response_spec
    )
    extra = {}
    if weights_array is not None:
        extra[WEIGHTS_COLUMN] = weights_array
    if offset_array is not None:
        extra[OFFSET_COLUMN] = offset_array
    model_frame = load_model_frame(data, columns, na_action=na_action, extra_columns=extra)
    frame = model_frame.frame
    if binomial and cbind_parts is None:
        frame = _binary_factor_response(frame, parsed.response)
    check_numeric_response(frame.schema, parsed.response)
    check_variable_types(frame.schema, columns)

    fixed = formulaic_matrix(
        f"{response_spec} ~ {parsed.fixed_rhs}",
        pandas_columns(frame, f"0 + {response_spec}", parsed.fixed_rhs),
        "fixed-effects",
        frame.schema,
        response=parsed.response,
    )
    check_factor_levels(fixed.rhs, "fixed-effects", model_frame.n_dropped)
    y_matrix = np.asarray(fixed.lhs, dtype=float)
    trials = None
    if cbind_parts is not None:
        y_matrix, trials = _successes_and_trials(y_matrix, cbind_parts)
    if y_matrix.ndim != 2 or y_matrix.shape[1] != 1:
        raise DataError(
            f"response {parsed.response!r} must be one numeric column, got {y_matrix.shape[1]} "
            "columns (a factor response?)"
        )
    y = y_matrix[:, 0].copy()
    x_all = np.ascontiguousarray(np.asarray(fixed.rhs, dtype=float))
    all_names = tuple(fixed.rhs.model_spec.column_names)
    check_finite(y[:, None], (parsed.response,), "response")
    check_finite(x_all, all_names, "fixed-effects term")
    keep = independent_columns(x_all)
    x = x_all if len(keep) == x_all.shape[1] else np.ascontiguousarray(x_all[:, keep])
    x_names = tuple(all_names[j] for j in keep)
    dropped = tuple(name for j, name in enumerate(all_names) if j not in set(keep.tolist()))

    n = len(y)
    terms = []
    for spec in parsed.random_terms:
        z_matrix = formulaic_matrix(
            spec.lhs, pandas_columns(frame, spec.lhs), f"random-effects term {spec.text}",
            frame.schema,
        )
        check_factor_levels(z_matrix, f"random-effects {spec.text}", model_frame.n_dropped)
        z = np.ascontiguousarray(np.asarray(z_matrix, dtype=float))
        check_finite(z, tuple(z_matrix.model_spec.column_names), f"term in {spec.text}")
        if z.shape[1] == 1 and bool((z == 1.0).all()):
            z = constant_rows(1.0, n, 1)
        if z.shape[1] == 0:
            raise DataError(f"random-effects term {spec.text} has no effects")
        codes, levels = level_codes(frame, spec.factors)
        term = RandomTerm(
            group=spec.group,
            factors=spec.factors,
            lhs=spec.lhs,
            column_names=tuple(z_matrix.model_spec.column_names),
            codes=codes,
            levels=tuple(levels),
            z=z,
            model_spec=z_matrix.model_spec,
        )
        check_term(term, n)
        terms.append(term)

    if weights_col is not None or weights_array is not None:
        source = weights_col or WEIGHTS_COLUMN
        w = frame.get_column(source).cast(pl.Float64).to_numpy().copy()
        if not (w > 0).all():
            where = f"weights column {weights_col!r}" if weights_col else "weights"
            raise DataError(
                f"{where} must be positive; found {int((w <= 0).sum())} zero or negative "
                "values (drop those rows or fix the weights)"
            )
    else:
        w = constant_rows(1.0, n)
    if offset_col is not None or offset_array is not None:
        off = frame.get_column(offset_col or OFFSET_COLUMN).cast(pl.Float64).to_numpy().copy()
    else:
        off = constant_rows(0.0, n)
    return Design(
        parsed=parsed,
        model_frame=model_frame,
        y=y,
        x=x,
        x_all=x_all,
        kept_columns=keep,
        x_names=x_names,
        dropped_x_names=dropped,
        fixed_spec=fixed.rhs.model_spec,
        terms=tuple(lme4_term_order(terms)),
        weights=w,
        offset=off,
        has_weights=weights is not None,
        has_offset=offset is not None,
        trials=trials,
    )


def pandas_columns(frame: pl.DataFrame, *specs: str) -> pd.DataFrame:
    """The columns of ``frame`` that the formulaic right-hand sides ``specs`` read, as pandas.

    Converting only these (not the grouping factors, which formulaic never
    sees) saves a copy of most of the frame; with no column (``1``) the
    frame still has the rows.
    """
    names: list[str] = []
    for spec in specs:
        names += [c for c in formula_variables(spec, frame.columns) if c not in names]
    names = [c for c in names if c in frame.columns]
    if not names:
        return pd.DataFrame(index=pd.RangeIndex(frame.height))
    return formulaic_frame(frame.select(names))


def constant_rows(value: float, n: int, width: int | None = None) -> np.ndarray:
    """A read-only view of ``value`` repeated over n rows (and ``width`` columns).

    The default weights and offset and an intercept's covariate take no
    memory this way (stride 0), where arrays would take 8 bytes a row each.
    """
    shape = (n,) if width is None else (n, width)
    return np.broadcast_to(np.float64(value), shape)


def check_term(term: RandomTerm, n: int) -> None:
    """lme4's identifiability checks on a grouping factor (all errors by default)."""
    where = f"grouping factor {term.group!r} (in ({term.lhs} | {term.group}))"
    if term.n_levels < 2:
        raise DataError(
            f"{where} has only one level; a random effect needs at least two. "
            "Drop the term or use the column as a fixed effect."
        )
    if term.n_levels >= n:
        raise DataError(
            f"{where} has {term.n_levels} levels for {n} observations; the number of levels "
            "must be smaller than the number of observations (each row its own level is "
            "confounded with the residual)."
        )
    if term.n_levels * term.size >= n:
        raise DataError(
            f"{where}: {n} observations <= {term.n_levels * term.size} random effects; the "
            "random-effects parameters and the residual variance are unidentifiable."
        )


def check_finite(matrix: np.ndarray, names: tuple[str, ...], role: str) -> None:
    """A transform such as np.log(0) must not slip NaN or inf into the fit."""
    bad = ~np.isfinite(matrix)
    if bad.any():
        column = int(np.nonzero(bad.any(axis=0))[0][0])
        raise DataError(
            f"{role} {names[column]!r} is NaN or infinite in {int(bad[:, column].sum())} rows "
            "(a transform such as np.log of zero or a negative value?); fix the data or the term"
        )


def _response_spec(
    parsed: ParsedFormula, formula: str, binomial: bool
) -> tuple[str, tuple[str, str] | None]:
    """The response as formulaic should read it, and cbind's two parts if it is one."""
    cbind_parts = _cbind_arguments(parsed.response)
    if cbind_parts is not None and not binomial:
        raise FormulaError(
            "a cbind(successes, failures) response is for binomial models; fit it with "
            "interlace_nb.glmm(..., family='binomial')",
            formula,
            0,
        )
    if cbind_parts is not None:
        return " + ".join(f"I({a})" for a in cbind_parts), cbind_parts
    if re.fullmatch(r"[A-Za-z_][\w.]*", parsed.response.strip()):
        return parsed.response, None
    # an expression: evaluate it as Python (formulaic would read y/n as nesting)
    return f"I({parsed.response})", None


def _cbind_arguments(response: str) -> tuple[str, str] | None:
    """The two expressions of ``cbind(a, b)``, or None for any other response."""
    text = response.strip()
    if not (text.startswith("cbind(") and text.endswith(")")):
        return None
    inner = text[len("cbind(") : -1]
    parts, depth, last = [], 0, 0
    for i, char in enumerate(inner):
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(inner[last:i].strip())
            last = i + 1
    parts.append(inner[last:].strip())
    if len(parts) != 2 or not all(parts):
        raise FormulaError(
            f"cbind response {response!r} needs exactly two arguments: "
            "cbind(successes, failures)",
            response,
            0,
        )
    return parts[0], parts[1]


def _successes_and_trials(
    counts: np.ndarray, parts: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """cbind(successes, failures) -> (proportion column, trials), with the checks R makes."""
    if counts.shape[1] != 2:
        raise DataError(f"cbind({parts[0]}, {parts[1]}) must give two numeric columns")
    check_finite(counts, parts, "cbind column")
    for j, part in enumerate(parts):
        bad = counts[:, j] < 0
        if bad.any():
            role = "successes" if j == 0 else "failures"
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"cbind {role} {part!r} is negative in {int(bad.sum())} row(s) (first at row "
                f"{row}: {counts[row, j]!r}); counts of successes and failures must be >= 0"
            )
    trials = counts.sum(axis=1)
    empty = trials == 0
    if empty.any():
        raise DataError(
            f"{int(empty.sum())} row(s) have no trials (cbind({parts[0]}, {parts[1]}) is 0, 0; "
            f"first at row {int(np.flatnonzero(empty)[0])}); drop those rows, they carry no "
            "information"
        )
    return (counts[:, 0] / trials)[:, None], trials


def _binary_factor_response(frame: pl.DataFrame, response: str) -> pl.DataFrame:
    """A two-level string/categorical response becomes 0/1, the first level failure (as R)."""
    if response not in frame.columns:
        return frame
    dtype = frame.schema[response]
    if dtype == pl.Boolean:
        return frame.with_columns(pl.col(response).cast(pl.Float64))
    if not (dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum))):
        return frame
    levels = sorted(frame.get_column(response).cast(pl.String).unique().to_list())
    if len(levels) != 2:
        raise DataError(
            f"response {response!r} is a factor with {len(levels)} level(s) "
            f"({', '.join(map(repr, levels[:5]))}); a binomial response needs two, "
            "the first (in sorted order) counting as failure"
        )
    return frame.with_columns(
        (pl.col(response).cast(pl.String) != levels[0]).cast(pl.Float64).alias(response)
    )
