"""Streamed designs: the Gram blocks from a LazyFrame in row batches.

Data larger than memory is read twice with Polars' streaming engine, never
all at once:

1. **Levels and counts.** One aggregation counts rows and missing values;
   then the levels of every grouping factor and of every categorical
   fixed-effects variable are read (distinct values of complete rows only).
   From these, formulaic builds its model specs once, on a small prototype
   frame holding every level; transforms that need all rows at once
   (``scale()``, ``center()``, ``poly()``, splines, ``lag()``) are refused.
2. **Gram blocks.** Row batches are encoded with those fixed specs and the
   global level codes, and Z'WZ, Z'W[X y], [X y]'W[X y] are accumulated.
   Z'WZ's level pairs between crossed factors are kept as sorted keyed runs,
   merged as they grow (:class:`PairRuns`), so memory is O(pairs + batch).

The result is the GramSystem the in-memory path builds, so the fit is the
same. Residuals and fitted values are computed by a further pass on request.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl
from formulaic import Formula
from formulaic.errors import FormulaicWarning
from formulaic.parser.types import Factor
from formulaic.transforms import TRANSFORMS

from .accumulate import (
    Accumulated,
    GramAccumulator,
    initial_shift,
    response_exponent,
    sample_step,
)
from .data import (
    ROW_INDEX,
    DataError,
    RowCounts,
    as_lazy,
    check_column_types,
    check_columns_present,
    check_na_action,
    check_row_counts,
    column_names,
    formulaic_frame,
    level_codes,
    missing_mask,
    query_error,
    row_count_exprs,
    row_counts_from,
)
from .design import (
    check_factor_levels,
    check_numeric_response,
    check_term,
    check_variable_types,
    column_or_array,
    formulaic_matrix,
    independent_columns,
    model_columns,
    parse_mixed_formula,
)
from .formula import FormulaError, ParsedFormula
from .terms import RandomTerm, lme4_term_order

#: Rows per batch when ``batch_size`` is not given.
DEFAULT_BATCH_SIZE = 250_000

#: Rows of the data (besides one row per level) formulaic's specs are built on.
PROTOTYPE_ROWS = 1000

#: formulaic transforms whose result depends on all rows (or on the row before).
WHOLE_DATA_TRANSFORMS = frozenset(
    name for name, f in TRANSFORMS.items() if getattr(f, "__is_stateful_transform__", False)
) - {"Q"} | {"lag"}

_BACKTICK = re.compile(r"`[^`]*`")
_CODE = "__interlace_code"


@dataclass(frozen=True)
class StreamSource:
    """How to read and encode the rows again: the query, specs and level tables."""

    query: pl.LazyFrame
    batch_size: int
    formula_columns: tuple[str, ...]
    levels: dict[str, list[str]]
    response_spec: object
    fixed_spec: object
    term_specs: tuple[object, ...]
    term_roles: tuple[str, ...]
    level_tables: tuple[pl.DataFrame, ...]
    weights_column: str | None
    offset_column: str | None


@dataclass(frozen=True)
class EncodedBatch:
    """One batch of rows as arrays: ``x`` has every fixed-effects column (none dropped)."""

    row_index: np.ndarray
    y: np.ndarray
    x: np.ndarray
    z: tuple[np.ndarray, ...]
    codes: tuple[np.ndarray, ...]
    weights: np.ndarray
    offset: np.ndarray


@dataclass(frozen=True)
class StreamedDesign:
    """What the fit needs from a streamed pass; no per-row arrays.

    ``terms`` are in lme4's order with empty (0-row) ``codes`` and ``z``;
    ``accumulated`` holds the Gram blocks, the shift and the start statistics.
    """

    parsed: ParsedFormula
    x_names: tuple[str, ...]
    dropped_x_names: tuple[str, ...]
    fixed_spec: object
    terms: tuple[RandomTerm, ...]
    has_weights: bool
    has_offset: bool
    n_input_rows: int
    n_dropped: int
    accumulated: Accumulated
    kept_columns: np.ndarray
    source: StreamSource


# ----------------------------------------------------------- formula checks
def _called_names(expr: str) -> set[str]:
    """Names of the functions an expression calls (``scale`` in ``scale(x) + 1``)."""
    try:
        tree = ast.parse(_BACKTICK.sub("_", expr), mode="eval")
    except SyntaxError:
        return set()
    return {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }


def _factors(rhs: str) -> list[str]:
    """The factor expressions formulaic evaluates for a right-hand side."""
    return [
        factor.expr
        for term in Formula(rhs)
        for factor in term.factors
        if factor.eval_method != Factor.EvalMethod.LITERAL
    ]


def _formula_parts(parsed: ParsedFormula) -> list[tuple[str, str]]:
    """(right-hand side, role) for the response, the fixed part and each bar's left side."""
    parts = [(f"0 + {parsed.response}", "response"), (parsed.fixed_rhs, "fixed-effects")]
    parts += [(t.lhs, f"random-effects term {t.text}") for t in parsed.random_terms]
    return parts


def refuse_whole_data_transforms(parsed: ParsedFormula) -> None:
    """Transforms with state from all rows cannot be encoded batch by batch: say so."""
    for rhs, role in _formula_parts(parsed):
        for expr in _factors(rhs):
            found = sorted(_called_names(expr) & WHOLE_DATA_TRANSFORMS)
            if found:
                raise FormulaError(
                    f"{role} term {expr!r} uses {found[0]}(), which needs all rows at once, "
                    "so it cannot be streamed. Compute the column in the LazyFrame first "
                    "(e.g. .with_columns(((pl.col('x') - pl.col('x').mean()) / "
                    "pl.col('x').std()).alias('x_scaled'))) or fit in memory (streaming=False)."
                )


def _columns_inside_c(parsed: ParsedFormula, available: list[str]) -> set[str]:
    """Columns formulaic makes categorical through C(...): their levels are needed."""
    found: set[str] = set()
    for rhs, _ in _formula_parts(parsed):
        for expr in _factors(rhs):
            if "C" in _called_names(expr):
                found |= {c for c in available if re.search(rf"(?<![\w.]){re.escape(c)}(?!\w)",
                                                             expr)}
    return found


# --------------------------------------------------------------- reading
def _collect(queries: list[pl.LazyFrame], columns: dict[str, str]) -> list[pl.DataFrame]:
    try:
        return pl.collect_all(queries, engine="streaming")
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise query_error(exc, columns) from exc


def row_batches(query: pl.LazyFrame, batch_size: int) -> Iterator[pl.DataFrame]:
    """The query's rows in order, ``batch_size`` at a time, from the streaming engine."""
    if hasattr(pl.LazyFrame, "collect_batches"):
        batches: Iterator[pl.DataFrame] = query.collect_batches(
            chunk_size=batch_size, engine="streaming"
        )
    else:  # older Polars: one streaming collect per window
        batches = _slice_batches(query, batch_size)
    for batch in batches:
        if batch.height:
            yield batch


def _slice_batches(query: pl.LazyFrame, batch_size: int) -> Iterator[pl.DataFrame]:
    offset = 0
    while True:
        batch = query.slice(offset, batch_size).collect(engine="streaming")
        if batch.height == 0:
            return
        yield batch
        offset += batch.height


def _prototype(
    head: pl.DataFrame, distinct: dict[str, pl.Series], columns: tuple[str, ...]
) -> pl.DataFrame:
    """Rows formulaic's specs are built on: the first rows plus every level of every factor."""
    n_extra = max((len(values) for values in distinct.values()), default=0)
    cycle = np.arange(n_extra)
    extra = pl.DataFrame(
        [
            distinct[c].gather(cycle % len(distinct[c])).alias(c)
            if c in distinct
            else head.get_column(c).gather(np.zeros(n_extra, dtype=np.int64))
            for c in columns
        ]
    )
    return pl.concat([head.select(columns), extra.cast(head.select(columns).schema)])


# ----------------------------------------------------------- accumulation
def _tsqr(r: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """R of [r; rows]: the triangular factor of all rows seen so far (Q never formed)."""
    return np.linalg.qr(np.vstack([r, rows]), mode="r")


# --------------------------------------------------------------- encoding
def _encode(spec: object, frame: object, role: str) -> np.ndarray:
    """Encode a batch with a fixed formulaic spec; a failure names the term."""
    try:
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore",
                                                    over="ignore"):
            warnings.simplefilter("error", FormulaicWarning)
            matrix = spec.get_model_matrix(frame, na_action="ignore")  # type: ignore[attr-defined]
    except Exception as exc:  # formulaic raises many types, and warns on unseen levels
        raise DataError(
            f"a batch of rows could not be encoded for the {role} ({type(exc).__name__}: "
            f"{exc}); the first pass over the data saw different values"
        ) from exc
    return np.ascontiguousarray(np.asarray(matrix, dtype=float))


def check_row_wise(spec: object, frame: pd.DataFrame, role: str) -> None:
    """Refuse a term whose values depend on other rows (``x - np.mean(x)``, ``np.cumsum(x)``).

    The prototype rows are encoded at once and in two halves; a row-wise
    term gives the same values both ways, so any difference names the term.
    """
    half = len(frame) // 2
    if half == 0:
        return
    whole = _encode(spec, frame, role)
    parts = np.vstack([_encode(spec, frame.iloc[:half], role),
                       _encode(spec, frame.iloc[half:], role)])
    same = np.isclose(whole, parts, rtol=1e-12, atol=0.0, equal_nan=True).all(axis=0)
    if same.all():
        return
    column = spec.column_names[int(np.flatnonzero(~same)[0])]  # type: ignore[attr-defined]
    term = next(
        str(part.term)
        for part in spec.structure  # type: ignore[attr-defined]
        if column in part.columns
    )
    raise FormulaError(
        f"{role} term {term!r} depends on other rows (its value for a row changes when the "
        "rows are encoded in batches), so it cannot be streamed. Compute the column in the "
        "LazyFrame first (over all rows) or fit in memory (streaming=False)."
    )


def encode_batch(source: StreamSource, batch: pl.DataFrame) -> EncodedBatch:
    """One batch of complete rows as y, X (all columns), each term's z and level codes."""
    pandas_frame = formulaic_frame(batch.select(source.formula_columns), source.levels)
    y = _encode(source.response_spec, pandas_frame, "response")[:, 0].copy()
    x = _encode(source.fixed_spec, pandas_frame, "fixed effects")
    z = tuple(
        _encode(spec, pandas_frame, role)
        for spec, role in zip(source.term_specs, source.term_roles, strict=True)
    )
    codes = []
    for table in source.level_tables:
        factors = [c for c in table.columns if c != _CODE]
        joined = batch.select(factors).join(table, on=factors, how="left", maintain_order="left")
        column = joined.get_column(_CODE)
        if column.null_count():
            raise DataError(
                f"grouping factor {':'.join(factors)!r} has levels the first pass did not see; "
                "was the data changed between the passes?"
            )
        codes.append(column.to_numpy().astype(np.int64))
    n = batch.height
    w = (
        batch.get_column(source.weights_column).cast(pl.Float64).to_numpy().copy()
        if source.weights_column is not None
        else np.ones(n)
    )
    off = (
        batch.get_column(source.offset_column).cast(pl.Float64).to_numpy().copy()
        if source.offset_column is not None
        else np.zeros(n)
    )
    return EncodedBatch(
        batch.get_column(ROW_INDEX).to_numpy().astype(np.int64), y, x, z, tuple(codes), w, off
    )


def encoded_batches(source: StreamSource) -> Iterator[EncodedBatch]:
    """The complete rows again, encoded, batch by batch."""
    try:
        for batch in row_batches(source.query, source.batch_size):
            yield encode_batch(source, batch)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise query_error(exc, source.query.collect_schema().names()) from exc


@dataclass(frozen=True)
class _FirstPass:
    """What pass 1 reads: counts, sampled rows, levels, and each grouping factor's table.

    ``sample`` holds complete rows 0, k, 2k, ... (``sample_step``): the initial
    shift is fitted on them, and formulaic's specs are built on the first ones.
    """

    counts: RowCounts
    complete: pl.Expr
    sample: pl.DataFrame
    formula_columns: tuple[str, ...]
    distinct: dict[str, pl.Series]
    levels: dict[str, list[str]]
    tables: dict[tuple[str, ...], tuple[pl.DataFrame, list[str]]]


def _first_pass(
    lazy: pl.LazyFrame,
    schema: pl.Schema,
    columns: dict[str, str],
    parsed: ParsedFormula,
    weights_col: str | None,
    na_action: str,
) -> _FirstPass:
    """Pass 1: row and NA counts (checked), then the levels and the first complete rows."""
    checked = list(columns)
    count_exprs = row_count_exprs(schema, checked)
    complete = ~missing_mask(schema, checked)
    if weights_col is not None:
        count_exprs.append(((pl.col(weights_col) <= 0) & complete).sum().alias("__nonpositive"))
    (count_frame,) = _collect([lazy.select(count_exprs)], columns)
    count_row = count_frame.row(0, named=True)
    counts = row_counts_from(count_row, schema, checked)
    check_row_counts(counts, columns, na_action)
    if weights_col is not None and count_row["__nonpositive"]:
        raise DataError(
            f"weights column {weights_col!r} must be positive; found "
            f"{count_row['__nonpositive']} zero or negative values (drop those rows or fix "
            "the weights)"
        )
    good = lazy.filter(complete)
    formula_columns = tuple(
        c for c, role in columns.items()
        if not role.startswith("grouping factor") and role not in ("weights", "offset")
    )
    inside_c = _columns_inside_c(parsed, list(formula_columns))
    categorical = [
        c for c in formula_columns
        if isinstance(schema[c], (pl.String, pl.Categorical, pl.Enum)) or c in inside_c
    ]
    factor_sets = list(dict.fromkeys(t.factors for t in parsed.random_terms))
    step = sample_step(counts.n_input - counts.n_incomplete)
    sampled = good.with_row_index(ROW_INDEX).filter(pl.col(ROW_INDEX) % step == 0)
    queries = [sampled.drop(ROW_INDEX)]
    queries += [good.select(pl.col(c).unique()) for c in categorical]
    queries += [good.select(list(f)).unique() for f in factor_sets]
    sample, *found = _collect(queries, columns)
    distinct = {c: found[k].get_column(c).sort() for k, c in enumerate(categorical)}
    levels = {
        c: values.cast(pl.String).to_list()
        for c, values in distinct.items()
        if isinstance(schema[c], (pl.Categorical, pl.Enum))
    }
    tables = {}
    for k, factors in enumerate(factor_sets):
        table = found[len(categorical) + k]
        codes, labels = level_codes(table, factors)  # the in-memory order
        tables[factors] = (table.with_columns(pl.Series(_CODE, codes)), labels)
    return _FirstPass(counts, complete, sample, formula_columns, distinct, levels, tables)


# ---------------------------------------------------------------- the build
def build_streamed_design(
    formula: str,
    data: object,
    *,
    weights: object = None,
    offset: object = None,
    na_action: str = "omit",
    batch_size: int | None = None,
) -> StreamedDesign:
    """Two streaming passes over ``data``: levels and counts, then the Gram blocks."""
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
        batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_na_action(na_action)
    parsed = parse_mixed_formula(formula)
    refuse_whole_data_transforms(parsed)
    weights_col, weights_array = column_or_array(weights, "weights")
    offset_col, offset_array = column_or_array(offset, "offset")
    for array, role in ((weights_array, "weights"), (offset_array, "offset")):
        if array is not None:
            raise DataError(
                f"{role} must be a column name when streaming (an array cannot be matched to "
                f"the row batches); add it to the LazyFrame and pass {role}='column_name'"
            )
    available = column_names(data)
    columns = model_columns(parsed, available, weights_col, offset_col)
    check_columns_present(columns, available)
    lazy = as_lazy(data, list(columns)).select(list(columns))
    schema = lazy.collect_schema()
    check_column_types(schema, columns)
    check_numeric_response(schema, parsed.response)
    check_variable_types(schema, columns)

    first = _first_pass(lazy, schema, columns, parsed, weights_col, na_action)
    counts = first.counts
    n = counts.n_input - counts.n_incomplete

    # formulaic's specs, fixed once from every level
    proto = formulaic_frame(
        _prototype(first.sample.head(PROTOTYPE_ROWS), first.distinct, first.formula_columns),
        first.levels,
    )
    fixed = formulaic_matrix(
        f"{parsed.response} ~ {parsed.fixed_rhs}", proto, "fixed-effects", schema,
        response=parsed.response,
    )
    check_factor_levels(fixed.rhs, "fixed-effects", counts.n_incomplete)
    check_row_wise(fixed.lhs.model_spec, proto, "response")
    check_row_wise(fixed.rhs.model_spec, proto, "fixed-effects")
    if np.asarray(fixed.lhs).shape[1] != 1:
        raise DataError(
            f"response {parsed.response!r} must be one numeric column, got "
            f"{np.asarray(fixed.lhs).shape[1]} columns (a factor response?)"
        )
    terms: list[RandomTerm] = []
    texts: dict[int, str] = {}
    for spec in parsed.random_terms:
        z_matrix = formulaic_matrix(spec.lhs, proto, f"random-effects term {spec.text}", schema)
        check_factor_levels(z_matrix, f"random-effects {spec.text}", counts.n_incomplete)
        check_row_wise(z_matrix.model_spec, proto, f"random-effects term {spec.text}")
        width = np.asarray(z_matrix).shape[1]
        if width == 0:
            raise DataError(f"random-effects term {spec.text} has no effects")
        term = RandomTerm(
            group=spec.group,
            factors=spec.factors,
            lhs=spec.lhs,
            column_names=tuple(z_matrix.model_spec.column_names),
            codes=np.zeros(0, dtype=np.int64),
            levels=tuple(first.tables[spec.factors][1]),
            z=np.zeros((0, width)),
            model_spec=z_matrix.model_spec,
        )
        check_term(term, n)
        terms.append(term)
        texts[id(term)] = spec.text
    ordered = lme4_term_order(terms)
    roles = tuple(f"random-effects term {texts[id(t)]}" for t in ordered)
    source = StreamSource(
        query=lazy.with_row_index(ROW_INDEX).filter(first.complete),
        batch_size=int(batch_size),
        formula_columns=first.formula_columns,
        levels=first.levels,
        response_spec=fixed.lhs.model_spec,
        fixed_spec=fixed.rhs.model_spec,
        term_specs=tuple(t.model_spec for t in ordered),
        term_roles=roles,
        level_tables=tuple(first.tables[t.factors][0] for t in ordered),
        weights_column=weights_col,
        offset_column=offset_col,
    )
    all_names = tuple(fixed.rhs.model_spec.column_names)
    accumulated, keep, n_read = _accumulate(
        source, ordered, all_names, first.sample, parsed.response
    )
    if n_read != n:
        raise DataError(
            f"the second pass read {n_read} complete rows, the first {n}; was the data changed "
            "between the passes?"
        )
    return StreamedDesign(
        parsed=parsed,
        x_names=tuple(all_names[j] for j in keep),
        dropped_x_names=tuple(
            name for j, name in enumerate(all_names) if j not in set(keep.tolist())
        ),
        fixed_spec=fixed.rhs.model_spec,
        terms=tuple(ordered),
        has_weights=weights is not None,
        has_offset=offset is not None,
        n_input_rows=counts.n_input,
        n_dropped=counts.n_incomplete,
        accumulated=accumulated,
        kept_columns=keep,
        source=source,
    )


def _accumulate(
    source: StreamSource,
    terms: list[RandomTerm],
    x_names: tuple[str, ...],
    sample: pl.DataFrame,
    response: str,
) -> tuple[Accumulated, np.ndarray, int]:
    """Pass 2: every batch into the GramAccumulator; returns it finished, the kept columns, n.

    Rows with NaN or infinite values after the transforms are counted and
    reported at the end with the in-memory path's message. The columns of
    X to keep come from R of a streamed QR of X (same inner products as X).
    """
    p = len(x_names)
    first = encode_batch(source, sample.with_columns(pl.lit(0).alias(ROW_INDEX)))
    shift0 = np.zeros(p)
    exponent = 0  # the response's scale, 2^exponent, as the in-memory path chooses it
    if np.isfinite(first.x).all() and np.isfinite(first.y).all():
        target = first.y - first.offset
        exponent = response_exponent(target)
        if exponent:
            target = np.ldexp(target, -exponent)
        shift0 = initial_shift(first.x, target, first.weights)
    accumulator = GramAccumulator(terms, p, shift0, response_exponent=exponent)
    r_x = np.zeros((p, p))
    nonfinite = [np.zeros(1, dtype=np.int64), np.zeros(p, dtype=np.int64)]
    nonfinite += [np.zeros(t.size, dtype=np.int64) for t in terms]
    n = 0
    for batch in encoded_batches(source):
        n += len(batch.y)
        bad = [(~np.isfinite(m)).sum(axis=0) for m in (batch.y[:, None], batch.x, *batch.z)]
        if any(b.any() for b in bad):
            for total, b in zip(nonfinite, bad, strict=True):
                total += b
            continue
        accumulator.add(batch.codes, batch.z, batch.x, batch.y, batch.weights, batch.offset)
        r_x = _tsqr(r_x, batch.x)
    names = [(response,), x_names, *(t.column_names for t in terms)]
    roles = ["response", "fixed-effects term"]
    roles += [r.replace("random-effects term", "term in") for r in source.term_roles]
    for counts, column_names_, role in zip(nonfinite, names, roles, strict=True):
        if counts.any():
            column = int(np.nonzero(counts)[0][0])
            raise DataError(
                f"{role} {column_names_[column]!r} is NaN or infinite in {int(counts[column])} "
                "rows (a transform such as np.log of zero or a negative value?); fix the data "
                "or the term"
            )
    keep = independent_columns(r_x)
    return accumulator.finish(keep), keep, n
