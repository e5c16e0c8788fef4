"""From formula and data to the arrays the engine needs: y, X, random terms, w, offset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from formulaic import model_matrix

from .data import (
    OFFSET_COLUMN,
    WEIGHTS_COLUMN,
    DataError,
    ModelFrame,
    formula_variables,
    level_codes,
    load_model_frame,
)
from .formula import ParsedFormula, parse_formula
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
    x_names: tuple[str, ...]
    dropped_x_names: tuple[str, ...]
    fixed_spec: object
    terms: tuple[RandomTerm, ...]
    weights: np.ndarray
    offset: np.ndarray
    has_weights: bool
    has_offset: bool


def _column_or_array(value: object, role: str) -> tuple[str | None, np.ndarray | None]:
    """A weights/offset argument is a column name or an array as long as the data."""
    if value is None:
        return None, None
    if isinstance(value, str):
        return value, None
    if isinstance(value, pl.Series):
        return None, value.to_numpy()
    array = np.asarray(value)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{role} must be a column name or a 1-d numeric array")
    return None, array


def _independent_columns(x: np.ndarray) -> np.ndarray:
    """Columns of X to keep, dropping later columns that earlier ones span (as R's qr)."""
    kept: list[int] = []
    basis = np.zeros((x.shape[0], 0))
    for j in range(x.shape[1]):
        column = x[:, j]
        norm = np.linalg.norm(column)
        if norm == 0.0:
            continue
        residual = column - basis @ (basis.T @ column)
        residual = residual - basis @ (basis.T @ residual)
        res_norm = np.linalg.norm(residual)
        if res_norm > RANK_TOLERANCE * norm:
            kept.append(j)
            basis = np.column_stack([basis, residual / res_norm])
    return np.array(kept, dtype=np.int64)


def _check_numeric_response(frame: pl.DataFrame, response: str) -> None:
    if response in frame.columns:
        dtype = frame.schema[response]
        if not (dtype.is_numeric() or dtype == pl.Boolean):
            raise DataError(
                f"response {response!r} has type {dtype}; a linear mixed model needs a numeric "
                f"response (cast it, e.g. pl.col({response!r}).cast(pl.Float64))"
            )


def build_design(
    formula: str,
    data: object,
    *,
    weights: object = None,
    offset: object = None,
    na_action: str = "omit",
) -> Design:
    """Parse, read the data once, and build y, X and the random terms."""
    parsed = parse_formula(formula)
    if not parsed.random_terms:
        raise DataError(
            f"formula {formula!r} has no random-effects term such as (1 | group). "
            "For a plain regression use statsmodels' OLS (smf.ols) or numpy.linalg.lstsq; "
            "to fit random intercepts write e.g. 'y ~ x + (1 | subject)'."
        )
    columns: dict[str, str] = {}
    for name in formula_variables(f"0 + {parsed.response}"):
        columns.setdefault(name, "response")
    for name in formula_variables(parsed.fixed_rhs):
        columns.setdefault(name, "fixed-effects")
    for term in parsed.random_terms:
        for name in formula_variables(term.lhs):
            columns.setdefault(name, f"random-effects term {term.text}")
        for name in term.factors:
            columns.setdefault(name, f"grouping factor in {term.text}")
    weights_col, weights_array = _column_or_array(weights, "weights")
    offset_col, offset_array = _column_or_array(offset, "offset")
    if weights_col is not None:
        columns.setdefault(weights_col, "weights")
    if offset_col is not None:
        columns.setdefault(offset_col, "offset")
    extra = {}
    if weights_array is not None:
        extra[WEIGHTS_COLUMN] = weights_array
    if offset_array is not None:
        extra[OFFSET_COLUMN] = offset_array
    model_frame = load_model_frame(data, columns, na_action=na_action, extra_columns=extra)
    frame = model_frame.frame
    _check_numeric_response(frame, parsed.response)
    for name, role in columns.items():
        if role.startswith("grouping"):
            continue
        dtype = frame.schema[name]
        if role in ("weights", "offset") and not dtype.is_numeric():
            raise DataError(f"{role} column {name!r} has type {dtype}; it must be numeric")
    pandas_frame = frame.to_pandas()

    fixed = model_matrix(
        f"{parsed.response} ~ {parsed.fixed_rhs}", pandas_frame, output="numpy", na_action="ignore"
    )
    y_matrix = np.asarray(fixed.lhs, dtype=float)
    if y_matrix.ndim != 2 or y_matrix.shape[1] != 1:
        raise DataError(
            f"response {parsed.response!r} must be one numeric column, got {y_matrix.shape[1]} "
            "columns (a factor response?)"
        )
    y = y_matrix[:, 0].copy()
    x_all = np.asarray(fixed.rhs, dtype=float)
    all_names = tuple(fixed.rhs.model_spec.column_names)
    _check_finite(y[:, None], (parsed.response,), "response")
    _check_finite(x_all, all_names, "fixed-effects term")
    keep = _independent_columns(x_all)
    x = np.ascontiguousarray(x_all[:, keep])
    x_names = tuple(all_names[j] for j in keep)
    dropped = tuple(name for j, name in enumerate(all_names) if j not in set(keep.tolist()))

    n = len(y)
    terms = []
    for spec in parsed.random_terms:
        z_matrix = model_matrix(spec.lhs, pandas_frame, output="numpy", na_action="ignore")
        z = np.ascontiguousarray(np.asarray(z_matrix, dtype=float))
        _check_finite(z, tuple(z_matrix.model_spec.column_names), f"term in {spec.text}")
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
        _check_term(term, n)
        terms.append(term)

    if weights_col is not None or weights_array is not None:
        source = weights_col or WEIGHTS_COLUMN
        w = frame.get_column(source).cast(pl.Float64).to_numpy().copy()
        if not (w > 0).all():
            raise DataError(
                f"weights {weights_col or ''} must be positive; found "
                f"{int((w <= 0).sum())} zero or negative values (drop those rows)"
            )
    else:
        w = np.ones(n)
    if offset_col is not None or offset_array is not None:
        off = frame.get_column(offset_col or OFFSET_COLUMN).cast(pl.Float64).to_numpy().copy()
    else:
        off = np.zeros(n)
    return Design(
        parsed=parsed,
        model_frame=model_frame,
        y=y,
        x=x,
        x_names=x_names,
        dropped_x_names=dropped,
        fixed_spec=fixed.rhs.model_spec,
        terms=tuple(lme4_term_order(terms)),
        weights=np.ascontiguousarray(w),
        offset=np.ascontiguousarray(off),
        has_weights=weights is not None,
        has_offset=offset is not None,
    )


def _check_term(term: RandomTerm, n: int) -> None:
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


def _check_finite(matrix: np.ndarray, names: tuple[str, ...], role: str) -> None:
    """A transform such as np.log(0) must not slip NaN or inf into the fit."""
    bad = ~np.isfinite(matrix)
    if bad.any():
        column = int(np.nonzero(bad.any(axis=0))[0][0])
        raise DataError(
            f"{role} {names[column]!r} is NaN or infinite in {int(bad[:, column].sum())} rows "
            "(a transform such as np.log of zero or a negative value?); fix the data or the term"
        )
