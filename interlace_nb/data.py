"""Data in: project the columns a formula needs, check them, drop or refuse NA.

Everything the model needs from the caller's frame is read here, in one
``collect`` of a lazy projection, so only the columns the formula uses are
ever materialised. The caller's frame is never modified.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl
from formulaic import Formula
from formulaic.parser.types import Factor

ROW_INDEX = "__interlace_row"
WEIGHTS_COLUMN = "__interlace_weights"
OFFSET_COLUMN = "__interlace_offset"

#: Names formulaic resolves itself (functions and modules), never data columns.
_FORMULA_NAMES = {
    "np", "numpy", "C", "scale", "center", "standardize", "poly", "bs", "cr", "cc",
    "lag", "log", "log1p", "exp", "sqrt", "abs", "I", "Q", "T", "Treatment", "Sum",
    "Helmert", "Poly", "Diff", "contr", "math", "pi", "True", "False", "None",
}


class DataError(ValueError):
    """Input data that cannot be fitted as given, with what to do about it."""


@dataclass(frozen=True)
class ModelFrame:
    """The rows and columns a model uses, after NA handling.

    ``frame`` holds only the needed columns; ``row_index`` maps each of its
    rows to the caller's row number.
    """

    frame: pl.DataFrame
    row_index: np.ndarray
    n_input_rows: int
    n_dropped: int


def as_lazy(data: object) -> pl.LazyFrame:
    """Accept a Polars DataFrame or LazyFrame (or pandas, converted at the door)."""
    if isinstance(data, pl.LazyFrame):
        return data
    if isinstance(data, pl.DataFrame):
        return data.lazy()
    module = type(data).__module__
    if module.startswith("pandas"):
        return pl.from_pandas(data).lazy()  # type: ignore[arg-type]
    raise TypeError(
        f"data must be a polars DataFrame or LazyFrame (or a pandas DataFrame), "
        f"got {type(data).__name__}"
    )


def _names_in_expression(expr: str) -> set[str]:
    """Variable names an expression such as ``np.log(x + 1)`` reads."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return {expr}
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called.add(id(node.func))
        if isinstance(node, ast.Attribute):
            base = node
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name):
                called.add(id(base))
    return {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and id(node) not in called and node.id not in _FORMULA_NAMES
    }


def formula_variables(rhs: str) -> list[str]:
    """Data columns a formulaic right-hand side reads, in first-use order."""
    names: list[str] = []
    for term in Formula(rhs):
        for factor in term.factors:
            if factor.eval_method == Factor.EvalMethod.LITERAL:
                continue
            if factor.eval_method == Factor.EvalMethod.LOOKUP:
                found = {factor.expr}
            else:
                found = _names_in_expression(factor.expr)
            names.extend(sorted(found - set(names)))
    return names


def missing_column_error(name: str, available: Iterable[str], role: str) -> DataError:
    """An error naming the missing column and the closest names the data has."""
    available = list(available)
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(available[:12]) + (", ..." if len(available) > 12 else "")
    return DataError(f"{role} column {name!r} is not in the data.{hint} Columns: {shown}")


def _missing_mask(frame: pl.DataFrame, columns: list[str]) -> pl.Expr:
    """True for rows where any of ``columns`` is null (or NaN, as R's NA)."""
    parts = []
    for name in columns:
        expr = pl.col(name).is_null()
        if frame.schema[name].is_float():
            expr = expr | pl.col(name).is_nan()
        parts.append(expr)
    return pl.any_horizontal(parts) if parts else pl.lit(False)


def load_model_frame(
    data: object,
    columns: dict[str, str],
    *,
    na_action: str,
    extra_columns: dict[str, np.ndarray] | None = None,
) -> ModelFrame:
    """Project, collect once, and apply the NA policy.

    ``columns`` maps each needed column to its role ("response", "fixed
    effects", "grouping factor", ...), used in error messages.
    """
    if na_action not in ("omit", "fail"):
        raise ValueError(f"na_action must be 'omit' or 'fail', got {na_action!r}")
    lazy = as_lazy(data)
    schema = lazy.collect_schema()
    for name, role in columns.items():
        if name not in schema:
            raise missing_column_error(name, schema.names(), role)
    frame = lazy.select(list(columns)).with_row_index(ROW_INDEX).collect()
    n_input = frame.height
    if extra_columns:
        for name, values in extra_columns.items():
            if len(values) != n_input:
                raise DataError(
                    f"{name.strip('_').replace('interlace_', '')} has {len(values)} values "
                    f"but the data has {n_input} rows"
                )
            frame = frame.with_columns(pl.Series(name, np.asarray(values, dtype=float)))
    checked = [*columns, *(extra_columns or {})]
    if n_input == 0:
        raise DataError("the data has no rows")
    for name in checked:
        nulls = frame.select(_missing_mask(frame, [name]).sum()).item()
        if nulls == n_input:
            raise DataError(
                f"column {name!r} ({columns.get(name, 'weights/offset')}) is entirely missing; "
                "check the column or drop it from the formula"
            )
    missing = frame.select(_missing_mask(frame, checked)).to_series()
    n_missing = int(missing.sum())
    if n_missing and na_action == "fail":
        counts = {
            name: int(frame.select(_missing_mask(frame, [name]).sum()).item()) for name in checked
        }
        listed = ", ".join(f"{k!r} ({v})" for k, v in counts.items() if v)
        raise DataError(
            f"{n_missing} rows have missing values (na_action='fail'); missing in {listed}. "
            "Use na_action='omit' to drop incomplete rows, as lme4 does by default."
        )
    if n_missing:
        frame = frame.filter(~missing)
    if frame.height == 0:
        raise DataError(
            "no rows left after dropping rows with missing values in "
            + ", ".join(repr(c) for c in checked)
        )
    for name in checked:
        dtype = frame.schema[name]
        if dtype.is_float() and frame.select(pl.col(name).is_infinite().any()).item():
            raise DataError(
                f"column {name!r} ({columns.get(name, 'weights/offset')}) has infinite values; "
                "remove or replace them before fitting"
            )
    row_index = frame.get_column(ROW_INDEX).to_numpy().astype(np.int64)
    return ModelFrame(frame.drop(ROW_INDEX), row_index, n_input, n_missing)


def level_codes(frame: pl.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Codes 0..L-1 and labels for a grouping factor (or an interaction of several).

    Levels follow an Enum's or Categorical's order, else sorted values; only
    levels present in the rows are kept (as lme4 drops unused levels). An
    interaction's levels are ordered by its components and labelled
    ``"a:b"`` in the order the factors are named.
    """
    component_codes = []
    for name in factors:
        dtype = frame.schema[name]
        column = pl.col(name)
        if isinstance(dtype, (pl.Enum, pl.Categorical)):
            column = column.to_physical()
        component_codes.append((column.rank("dense") - 1).cast(pl.Int64))
    key = component_codes[0]
    if len(component_codes) > 1:
        sizes = [frame.select(c.max() + 1).item() for c in component_codes]
        key = pl.lit(0, dtype=pl.Int64)
        for code, size in zip(component_codes, sizes, strict=True):
            key = key * size + code
        key = (key.rank("dense") - 1).cast(pl.Int64)
    labelled = frame.select(
        key.alias("__code"),
        pl.concat_str([pl.col(n).cast(pl.String) for n in factors], separator=":").alias(
            "__label"
        ),
    )
    codes = labelled.get_column("__code").to_numpy().astype(np.int64)
    labels = (
        labelled.unique("__code").sort("__code").get_column("__label").to_list()
    )
    return codes, labels
