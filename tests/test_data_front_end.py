"""Data in: frame types, lazy projection, grouping dtypes, missing values, no mutation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import interlace_nb as ib

pytestmark = pytest.mark.filterwarnings("ignore::interlace_nb.SingularFitWarning")

N = 72
FORMULA = "rt ~ x + cond + (1 | subject) + (1 | item)"


def _frame(seed: int = 5) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    i = np.arange(N)
    subject, item = i % 6, (i // 6) % 4
    cond = np.array(["a", "b"])[(i // 2) % 2]
    rt = (
        0.4 * rng.normal(size=N)
        + 0.3 * (cond == "b")
        + rng.normal(size=6)[subject]
        + 0.6 * rng.normal(size=4)[item]
    )
    return pl.DataFrame(
        {
            "rt": rt,
            "x": rng.normal(size=N),
            "cond": cond,
            "subject": [f"s{k}" for k in subject],
            "item": item,
            "note": ["unused"] * N,
        }
    )


DF = _frame()
REFERENCE = ib.lmm(FORMULA, DF)


def _same_fit(model: ib.LinearMixedModel, reference: ib.LinearMixedModel = REFERENCE) -> None:
    assert model.reml_criterion == pytest.approx(reference.reml_criterion, rel=1e-10)
    np.testing.assert_allclose(model.beta, reference.beta, rtol=1e-8)


# ----------------------------------------------------------------- frame types
def test_lazy_frame_gives_the_same_fit():
    _same_fit(ib.lmm(FORMULA, DF.lazy()))


def test_pandas_frame_gives_the_same_fit():
    _same_fit(ib.lmm(FORMULA, DF.to_pandas()))


def test_only_formula_columns_are_computed():
    """A column the formula does not use would raise if computed: projection skips it."""
    lazy = DF.lazy().with_columns(boom=pl.col("note").cast(pl.Int64))
    with pytest.raises(pl.exceptions.InvalidOperationError):
        lazy.select("boom").collect()
    _same_fit(ib.lmm(FORMULA, lazy))
    _same_fit(ib.fit("rt ~ x + cond", lazy, groups=["subject", "item"]))


def test_projection_reaches_the_scan(tmp_path):
    """Reading a Parquet file lazily only reads the formula's columns."""
    path = tmp_path / "data.parquet"
    DF.write_parquet(path)
    needed = ["rt", "x", "cond", "subject", "item"]
    plan = pl.scan_parquet(path).select(needed).explain()
    assert "note" not in plan
    _same_fit(ib.lmm(FORMULA, pl.scan_parquet(path)))


def test_pandas_unrelated_columns_are_not_converted():
    frame = DF.to_pandas()
    frame["blob"] = pd.Series([object(), "a", 3] * (N // 3), dtype=object)
    _same_fit(ib.lmm(FORMULA, frame))


def test_pandas_categorical_keeps_its_level_order():
    frame = DF.to_pandas()
    frame["cond"] = pd.Categorical(frame["cond"], categories=["b", "a"])
    model = ib.lmm(FORMULA, frame)
    assert list(model.fe_params.index) == ["Intercept", "x", "cond[T.a]"]


# ------------------------------------------------------------ grouping dtypes
@pytest.mark.parametrize(
    "cast",
    [
        pl.col("subject"),
        pl.col("subject").str.slice(1).cast(pl.Int64),
        pl.col("subject").str.slice(1).cast(pl.UInt8),
        pl.col("subject").cast(pl.Categorical),
        pl.col("subject").cast(pl.Enum([f"s{k}" for k in (3, 1, 0, 5, 2, 4)])),
        pl.col("subject").str.slice(1).cast(pl.Float64) / 2,
    ],
    ids=["string", "int64", "uint8", "categorical", "enum", "float"],
)
def test_grouping_factor_of_any_dtype(cast: pl.Expr):
    model = ib.lmm(FORMULA, DF.with_columns(cast.alias("subject")))
    _same_fit(model)
    assert len(model.random_effects["subject"]) == 6


def test_integer_item_levels_are_labelled_as_text():
    assert list(REFERENCE.random_effects["item"].index) == ["0", "1", "2", "3"]


# ------------------------------------------------------------- missing values
def _with_missing() -> pl.DataFrame:
    i = pl.int_range(N)
    return DF.with_columns(
        x=pl.when(i % 9 == 0).then(None).otherwise("x"),
        rt=pl.when(i == 5).then(float("nan")).otherwise("rt"),
        subject=pl.when(i == 7).then(None).otherwise("subject"),
        note=pl.lit(None, dtype=pl.String),  # unused: must not cause drops
    )


MISSING_ROWS = sorted({*range(0, N, 9), 5, 7})


def test_na_omit_drops_incomplete_rows_and_reports():
    model = ib.lmm(FORMULA, _with_missing())
    n_used = N - len(MISSING_ROWS)
    assert model.nobs == n_used
    assert model.na_message == f"{len(MISSING_ROWS)} of {N} rows dropped for missing values"
    assert model.na_message in model.summary()
    assert model.used_rows.tolist() == [r for r in range(N) if r not in MISSING_ROWS]


def test_na_omit_lines_up_with_the_rows_used():
    data = _with_missing()
    model = ib.lmm(FORMULA, data)
    complete = data.with_row_index("row").filter(
        pl.col("row").is_in(model.used_rows.tolist())
    )
    on_complete = ib.lmm(FORMULA, complete)
    _same_fit(model, on_complete)
    np.testing.assert_allclose(model.fittedvalues, on_complete.fittedvalues, rtol=1e-8)
    y_used = data["rt"].to_numpy()[model.used_rows]
    np.testing.assert_allclose(model.resid, y_used - model.fittedvalues, rtol=1e-10)
    assert len(model.fittedvalues) == len(model.resid) == model.nobs


def test_na_fail_raises_and_counts():
    with pytest.raises(ib.DataError, match=r"na_action='fail'.*'x' \(8\)"):
        ib.lmm(FORMULA, _with_missing(), na_action="fail")


def test_na_fail_without_missing_values_fits():
    _same_fit(ib.lmm(FORMULA, DF, na_action="fail"))
    assert REFERENCE.na_message == ""


def test_missing_weights_drop_rows():
    weights = np.ones(N)
    weights[[2, 3]] = np.nan
    model = ib.lmm(FORMULA, DF, weights=weights)
    assert model.nobs == N - 2 and 2 not in model.used_rows


# ----------------------------------------------------------------- no mutation
def test_polars_frame_is_not_modified():
    data = _with_missing()
    before = data.clone()
    ib.lmm(FORMULA, data, weights=np.ones(N))
    assert_frame_equal(data, before)


def test_pandas_frame_is_not_modified():
    frame = _with_missing().to_pandas()
    frame["cond"] = pd.Categorical(frame["cond"], categories=["b", "a"])
    before = frame.copy(deep=True)
    dtypes = frame.dtypes.copy()
    ib.lmm(FORMULA, frame)
    ib.fit("rt ~ x", frame, groups="subject")
    pd.testing.assert_frame_equal(frame, before)
    assert (frame.dtypes == dtypes).all()


@pytest.mark.parametrize("dtype", [pl.Int8, pl.Int32, pl.Int64, pl.UInt16, pl.UInt64])
def test_integer_factors_coded_from_a_table_as_by_sorting(dtype, monkeypatch) -> None:
    """Integer factors with a small range take a table over the range; the codes and
    labels are those of the sort-and-join path (numeric order, gaps dropped)."""
    from interlace_nb import data as data_module

    rng = np.random.default_rng(5)
    low = 0 if dtype in (pl.UInt16, pl.UInt64) else -40
    frame = pl.DataFrame({"g": rng.choice(np.arange(low, low + 90, 3), 500)}).cast({"g": dtype})
    fast = data_module.level_codes(frame, ("g",))
    monkeypatch.setattr(data_module, "INTEGER_RANGE_FACTOR", -1)
    slow = data_module.level_codes(frame, ("g",))
    np.testing.assert_array_equal(fast[0], slow[0])
    assert fast[0].dtype == slow[0].dtype
    assert fast[1] == slow[1]
    assert fast[1][:2] == [str(low), str(low + 3)]
