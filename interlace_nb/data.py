"""Data in: project the columns a formula needs, check them, drop or refuse NA.

Everything the model needs from the caller's frame is read here, in one
``collect`` of a lazy projection, so only the columns the formula uses are
ever materialised. The caller's frame is never modified.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl
from formulaic import Formula
from formulaic.parser.types import Factor
from formulaic.transforms import TRANSFORMS

ROW_INDEX = "__interlace_row"
WEIGHTS_COLUMN = "__interlace_weights"
OFFSET_COLUMN = "__interlace_offset"

#: How the internal weights/offset columns are named in messages.
_DISPLAY_NAMES = {WEIGHTS_COLUMN: "weights", OFFSET_COLUMN: "offset"}

_BACKTICK = re.compile(r"`([^`]*)`")

#: Names formulaic resolves itself (its transforms, np, contrasts), never data columns
#: unless the data has a column of that name (data shadows transforms in formulaic).
_FORMULA_NAMES = frozenset(TRANSFORMS) | {"Q", "numpy"}

#: Integer factors whose range is at most this many times their length get their
#: level codes from a table over the range (data._integer_level_codes).
INTEGER_RANGE_FACTOR = 4


class DataError(ValueError):
    """Input data that cannot be fitted as given, with what to do about it."""


@dataclass(frozen=True)
class ModelFrame:
    """The rows and columns a model uses, after NA handling.

    ``frame`` holds only the needed columns; ``kept_rows`` the caller's row
    number of each of its rows, or None when no row was dropped (an index of
    every row of a large frame would cost 8 bytes a row for nothing).
    """

    frame: pl.DataFrame
    kept_rows: np.ndarray | None
    n_input_rows: int
    n_dropped: int

    @property
    def row_index(self) -> np.ndarray:
        """The caller's row number of each row of ``frame``."""
        if self.kept_rows is None:
            return np.arange(self.frame.height, dtype=np.int64)
        return self.kept_rows


def _not_a_frame(data: object) -> TypeError:
    return TypeError(
        "data must be a polars DataFrame or LazyFrame (or a pandas DataFrame), "
        f"got {type(data).__name__}"
    )


def column_names(data: object) -> list[str]:
    """The data's column names, without reading (or converting) any values."""
    if isinstance(data, pl.LazyFrame):
        return data.collect_schema().names()
    if isinstance(data, pl.DataFrame):
        return data.columns
    if isinstance(data, pd.DataFrame):
        return [str(name) for name in data.columns]
    raise _not_a_frame(data)


def _pandas_column(series: pd.Series) -> pl.Series:
    """One pandas column as Polars; a categorical keeps its level order as an Enum."""
    name = str(series.name)
    if isinstance(series.dtype, pd.CategoricalDtype):
        levels = [str(level) for level in series.cat.categories]
        codes = series.cat.codes.to_numpy()
        values = np.array(levels + [None], dtype=object)[np.where(codes < 0, len(levels), codes)]
        strings = pl.Series(name, values, dtype=pl.String)
        if len(set(levels)) == len(levels):
            return strings.cast(pl.Enum(levels))
        return strings
    return pl.from_pandas(series.rename(name))


def _from_pandas(data: pd.DataFrame, columns: Iterable[str] | None) -> pl.DataFrame:
    """Convert only the needed pandas columns; name the column that cannot be converted."""
    by_name = {str(name): name for name in data.columns}
    wanted = list(by_name) if columns is None else list(columns)
    converted = []
    for name in wanted:
        try:
            converted.append(_pandas_column(data[by_name[name]]))
        except Exception as exc:  # pyarrow/polars raise many types for mixed objects
            raise DataError(
                f"column {name!r} could not be converted from pandas ({exc}); give it one "
                f"type, e.g. df[{name!r}].astype(str) for a grouping factor"
            ) from exc
    return pl.DataFrame(converted)


def as_lazy(data: object, columns: Iterable[str] | None = None) -> pl.LazyFrame:
    """Accept a Polars DataFrame or LazyFrame (or pandas, converted at the door).

    For pandas only ``columns`` (all when None) are converted, so an unrelated
    column of mixed Python objects cannot break the fit.
    """
    if isinstance(data, pl.LazyFrame):
        return data
    if isinstance(data, pl.DataFrame):
        return data.lazy()
    if isinstance(data, pd.DataFrame):
        return _from_pandas(data, columns).lazy()
    raise _not_a_frame(data)


def _names_in_expression(expr: str) -> set[str]:
    """Variable names an expression such as ``np.log(x + 1)`` reads.

    Backquoted names (```my col```) and ``Q("my col")`` are column names too.
    """
    quoted: dict[str, str] = {}

    def placeholder(match: re.Match[str]) -> str:
        key = f"__interlace_quoted_{len(quoted)}"
        quoted[key] = match.group(1)
        return key

    try:
        tree = ast.parse(_BACKTICK.sub(placeholder, expr), mode="eval")
    except SyntaxError:
        return {expr}
    found = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "Q"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }
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
    found |= {
        quoted.get(node.id, node.id)
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and id(node) not in called
    }
    return found


def formula_variable_sources(
    rhs: str, available: Collection[str] | None = None
) -> dict[str, str]:
    """Data columns a formulaic right-hand side reads -> the factor that reads each.

    A name is a column when the data has it; otherwise names formulaic
    resolves itself (``np``, ``pi``, ...) are skipped and anything else is
    returned, so the caller can report it as a missing column.
    """
    sources: dict[str, str] = {}
    for term in Formula(rhs):
        for factor in term.factors:
            if factor.eval_method == Factor.EvalMethod.LITERAL:
                continue
            if factor.eval_method == Factor.EvalMethod.LOOKUP:
                found = {factor.expr}
            else:
                found = _names_in_expression(factor.expr)
            for name in sorted(found):
                is_column = available is not None and name in available
                if is_column or name not in _FORMULA_NAMES:
                    sources.setdefault(name, factor.expr)
    return sources


def formula_variables(rhs: str, available: Collection[str] | None = None) -> list[str]:
    """Data columns a formulaic right-hand side reads, in first-use order."""
    return list(formula_variable_sources(rhs, available))


def missing_column_error(name: str, available: Iterable[str], role: str) -> DataError:
    """An error naming the missing column and the closest names the data has."""
    available = list(available)
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
    lowered = [c for c in available if c.lower() == name.lower() and c not in close]
    close = lowered + close
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(available[:12]) + (", ..." if len(available) > 12 else "")
    return DataError(f"column {name!r} ({role}) is not in the data.{hint} Columns: {shown}")


def formulaic_frame(
    frame: pl.DataFrame, levels: dict[str, list[str]] | None = None
) -> pd.DataFrame:
    """The model frame as pandas for formulaic, with factor levels as this package orders them.

    An Enum's or Categorical's levels are those present in the rows, in
    Polars' order (an Enum's declared order), so the first present level is
    the reference level, as R's model.frame(drop.unused.levels = TRUE)
    gives lme4. ``levels`` overrides them per column (a batch of a streamed
    fit takes the levels of all its rows). Decimals become floats
    (formulaic would take them as factors).
    """
    out = {}
    for name, dtype in frame.schema.items():
        column = frame.get_column(name)
        if isinstance(dtype, (pl.Enum, pl.Categorical)):
            if levels is not None and name in levels:
                present = levels[name]
            else:
                present = column.drop_nulls().unique().sort().cast(pl.String).to_list()
            out[name] = pd.Categorical(column.cast(pl.String).to_list(), categories=present)
        elif isinstance(dtype, pl.Decimal):
            out[name] = column.cast(pl.Float64).to_numpy()
        elif dtype.is_numeric() and not column.has_nulls():
            out[name] = column.to_numpy()  # read-only view of the frame's buffer: no copy
        else:
            out[name] = column.to_pandas()
    return pd.DataFrame(out, index=pd.RangeIndex(frame.height), copy=False)


def missing_mask(schema: pl.Schema, columns: list[str]) -> pl.Expr:
    """True for rows where any of ``columns`` is null (or NaN, as R's NA)."""
    parts = []
    for name in columns:
        expr = pl.col(name).is_null()
        if schema[name].is_float():
            expr = expr | pl.col(name).is_nan()
        parts.append(expr)
    return pl.any_horizontal(parts) if parts else pl.lit(False)


def _unsupported_dtype(dtype: pl.DataType) -> bool:
    """Nested, object and binary columns cannot be model variables or factors."""
    return isinstance(dtype, (pl.List, pl.Array, pl.Struct, pl.Object, pl.Binary))


def check_na_action(na_action: str) -> None:
    if na_action not in ("omit", "fail"):
        raise ValueError(
            f"na_action must be 'omit' (drop incomplete rows, lme4's default) or 'fail' "
            f"(raise on missing values), got {na_action!r}"
        )


def describe_column(name: str, roles: dict[str, str]) -> str:
    """How a column is named in messages: its role, or 'weights'/'offset' for arrays."""
    shown = _DISPLAY_NAMES.get(name, name)
    return shown if shown != name else f"column {name!r} ({roles[name]})"


def check_column_types(schema: pl.Schema, roles: dict[str, str]) -> None:
    """Refuse nested, object and binary columns, naming the column."""
    for name in roles:
        dtype = schema[name]
        if _unsupported_dtype(dtype):
            raise DataError(
                f"{describe_column(name, roles)} has type {dtype}, which cannot be used in a "
                "model; use a numeric or string column"
            )


@dataclass(frozen=True)
class RowCounts:
    """Counts the NA policy and the checks need, however the rows were read.

    ``missing`` is per column, ``infinite`` per column among complete rows.
    """

    n_input: int
    missing: dict[str, int]
    n_incomplete: int
    infinite: dict[str, int]


def check_row_counts(counts: RowCounts, roles: dict[str, str], na_action: str) -> None:
    """Errors for empty data, all-missing columns, NA under 'fail', and infinite values."""
    n_input = counts.n_input
    if n_input == 0:
        raise DataError("the data has no rows")
    for name, nulls in counts.missing.items():
        if nulls == n_input:
            raise DataError(
                f"{describe_column(name, roles)} is entirely missing (null or NaN in all "
                f"{n_input} rows); check the column or drop it from the formula"
            )
    n_missing = counts.n_incomplete
    if n_missing and na_action == "fail":
        listed = ", ".join(
            f"{_DISPLAY_NAMES.get(k, repr(k))} ({v})" for k, v in counts.missing.items() if v
        )
        raise DataError(
            f"{n_missing} rows have missing values (na_action='fail'); missing in {listed}. "
            "Use na_action='omit' to drop incomplete rows, as lme4 does by default."
        )
    if n_missing == n_input:
        raise DataError(
            f"no rows left after dropping the {n_missing} rows with missing values in "
            + ", ".join(_DISPLAY_NAMES.get(c, repr(c)) for c in counts.missing)
            + "; no row has all of these columns observed"
        )
    for name, n_inf in counts.infinite.items():
        if n_inf:
            raise DataError(
                f"{describe_column(name, roles)} has infinite values in {n_inf} row(s); "
                "remove or replace them before fitting"
            )


def row_count_exprs(schema: pl.Schema, columns: list[str]) -> list[pl.Expr]:
    """Aggregations giving a RowCounts in one query (see :func:`row_counts_from`)."""
    complete = ~missing_mask(schema, columns)
    exprs = [pl.len().alias("__n")]
    exprs += [missing_mask(schema, [c]).sum().alias(f"__missing_{c}") for c in columns]
    exprs.append((~complete).sum().alias("__incomplete"))
    exprs += [
        (pl.col(c).is_infinite() & complete).sum().alias(f"__inf_{c}")
        for c in columns
        if schema[c].is_float()
    ]
    return exprs


def row_counts_from(row: dict[str, int], schema: pl.Schema, columns: list[str]) -> RowCounts:
    """The RowCounts from one row of :func:`row_count_exprs` results."""
    return RowCounts(
        n_input=int(row["__n"]),
        missing={c: int(row[f"__missing_{c}"]) for c in columns},
        n_incomplete=int(row["__incomplete"]),
        infinite={c: int(row[f"__inf_{c}"]) for c in columns if schema[c].is_float()},
    )


def check_columns_present(columns: dict[str, str], available: list[str]) -> None:
    for name, role in columns.items():
        if name not in available:
            raise missing_column_error(name, available, role)


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
    check_na_action(na_action)
    check_columns_present(columns, column_names(data))
    if isinstance(data, pl.DataFrame):
        frame = data.select(list(columns))  # shares the caller's buffers: no copy
    else:
        try:
            frame = as_lazy(data, list(columns)).select(list(columns)).collect()
        except pl.exceptions.PolarsError as exc:
            raise query_error(exc, columns) from exc
    n_input = frame.height
    roles = dict(columns)
    if extra_columns:
        for name, values in extra_columns.items():
            label = _DISPLAY_NAMES.get(name, name)
            if len(values) != n_input:
                raise DataError(
                    f"{label} has {len(values)} values but the data has {n_input} rows; "
                    "pass one value per row (or a column name)"
                )
            frame = frame.with_columns(pl.Series(name, np.asarray(values, dtype=float)))
            roles[name] = label
    checked = [*columns, *(extra_columns or {})]
    check_column_types(frame.schema, roles)
    counts = row_counts_from(
        frame.select(row_count_exprs(frame.schema, checked)).row(0, named=True),
        frame.schema,
        checked,
    )
    check_row_counts(counts, roles, na_action)
    kept_rows = None
    if counts.n_incomplete:
        complete = frame.select(~missing_mask(frame.schema, checked)).to_series()
        kept_rows = np.flatnonzero(complete.to_numpy()).astype(np.int64)
        frame = frame.filter(complete)
    return ModelFrame(frame, kept_rows, n_input, counts.n_incomplete)


def query_error(exc: Exception, columns: Iterable[str]) -> DataError:
    """A failing lazy query (bad scan, bad cast) as a DataError naming the columns read."""
    first = str(exc).strip().split("\n\n")[0]
    return DataError(
        f"reading columns {', '.join(map(repr, columns))} from the LazyFrame failed: {first}"
    )


def level_codes(frame: pl.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Codes 0..L-1 and labels for a grouping factor (or an interaction of several).

    Levels follow Polars' own order of the column: an Enum's declared order,
    a Categorical's ordering, otherwise sorted values (numbers numerically,
    strings by code point). Only levels present in the rows are kept (as
    lme4 drops unused levels). An interaction's levels are ordered by its
    components and labelled ``"a:b"`` in the order the factors are named.
    Codes are int32 when the rows allow (half the memory of int64). The
    levels are ranked among the distinct level combinations only, which
    dense ranks number exactly as they would number the rows, and the rows
    find their code by a join (ranking all rows sorts them: several times
    slower).
    """
    dtype = pl.Int32 if frame.height < np.iinfo(np.int32).max else pl.Int64
    if len(factors) == 1 and frame.schema[factors[0]].is_integer():
        coded = _integer_level_codes(frame.get_column(factors[0]), dtype)
        if coded is not None:
            return coded
    distinct = frame.select(list(factors)).unique()
    table = distinct.with_columns(
        _level_key(distinct, factors).cast(dtype).alias("__code"),
        pl.concat_str([pl.col(n).cast(pl.String) for n in factors], separator=":").alias(
            "__label"
        ),
    )
    codes = (
        frame.select(list(factors))
        .join(table.drop("__label"), on=list(factors), how="left", maintain_order="left")
        .get_column("__code")
        .to_numpy(writable=True)
    )
    labels = table.sort("__code").get_column("__label").to_list()
    return codes, labels


def _integer_level_codes(
    column: pl.Series, dtype: pl.DataType
) -> tuple[np.ndarray, list[str]] | None:
    """level_codes for an integer column whose range is at most a few times its
    length: a table over the range in place of a sort and a join (B2's 1M rows:
    about 10 against 70 ms per factor). None otherwise, or with nulls."""
    if column.null_count() or column.len() == 0:
        return None
    low, high = int(column.min()), int(column.max())
    if high - low > INTEGER_RANGE_FACTOR * column.len():
        return None
    offsets = column.to_numpy() - low
    present = np.zeros(high - low + 1, dtype=bool)
    present[offsets] = True
    code_of_offset = np.cumsum(present, dtype=np.int64) - 1
    codes = code_of_offset[offsets].astype(np.int32 if dtype == pl.Int32 else np.int64)
    labels = [str(value) for value in (np.flatnonzero(present) + low).tolist()]
    return codes, labels


def _level_key(frame: pl.DataFrame, factors: tuple[str, ...]) -> pl.Expr:
    """Dense rank (from 0) of each row's level combination, ordered by the components."""
    component_codes = [(pl.col(name).rank("dense") - 1).cast(pl.Int64) for name in factors]
    key = component_codes[0]
    if len(component_codes) > 1:
        sizes = [frame.select(c.max() + 1).item() for c in component_codes]
        key = pl.lit(0, dtype=pl.Int64)
        for code, size in zip(component_codes, sizes, strict=True):
            key = key * size + code
        key = (key.rank("dense") - 1).cast(pl.Int64)
    return key
