"""Bad input gets a clear error that names the column or term and says what to do.

Every case goes through the public API and must raise one of this package's
errors (DataError, FormulaError) or TypeError/ValueError for a wrong argument,
never an exception from inside NumPy, formulaic or Polars.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

import interlace_nb as ib

pytestmark = pytest.mark.filterwarnings("ignore::interlace_nb.SingularFitWarning")

N = 40


def _frame() -> pl.DataFrame:
    rng = np.random.default_rng(3)
    i = np.arange(N)
    return pl.DataFrame(
        {
            "rt": rng.normal(size=N),
            "x": rng.normal(size=N),
            "pos": np.exp(rng.normal(size=N)),
            "cond": np.array(["a", "b"])[i % 2],
            "subject": [f"s{k}" for k in i % 5],
            "item": [f"i{k}" for k in i % 4],
            "w": rng.uniform(0.5, 2.0, size=N),
            "label": ["one"] * N,
            "row": [f"r{k}" for k in i],
        }
    )


DF = _frame()


def _raises(error: type[Exception], formula: object, data: object = DF, **kwargs: object) -> str:
    with pytest.raises(error) as info:
        ib.lmm(formula, data, **kwargs)  # type: ignore[arg-type]
    # A wrapped third-party failure keeps its cause, but the raised type is ours.
    assert type(info.value).__module__.startswith(("interlace_nb", "builtins"))
    return str(info.value)


# ------------------------------------------------------------ missing columns
def test_missing_fixed_column_suggests_near_name():
    message = _raises(ib.DataError, "rt ~ xx + (1 | subject)")
    assert "'xx'" in message and "Did you mean 'x'" in message


def test_missing_column_inside_function_names_term():
    message = _raises(ib.DataError, "rt ~ np.log(poss) + (1 | subject)")
    assert "'poss'" in message and "np.log(poss)" in message and "'pos'" in message


def test_missing_column_in_bar_left_side():
    message = _raises(ib.DataError, "rt ~ x + (1 + xs | subject)")
    assert "'xs'" in message and "(1 + xs | subject)" in message and "'x'" in message


def test_missing_grouping_factor():
    message = _raises(ib.DataError, "rt ~ x + (1 | subjet)")
    assert "'subjet'" in message and "grouping factor" in message and "'subject'" in message


def test_missing_grouping_factor_in_fit():
    with pytest.raises(ib.DataError, match="'subjects'.*Did you mean 'subject'"):
        ib.fit("rt ~ cond", DF, groups=["subjects", "item"])


def test_missing_response():
    message = _raises(ib.DataError, "RT ~ x + (1 | subject)")
    assert "'RT'" in message and "response" in message and "'rt'" in message


# -------------------------------------------------------------- column values
def test_non_numeric_response():
    message = _raises(ib.DataError, "cond ~ x + (1 | subject)")
    assert "'cond'" in message and "numeric" in message


def test_grouping_factor_with_one_level():
    message = _raises(ib.DataError, "rt ~ x + (1 | label)")
    assert "'label'" in message and "one level" in message


def test_grouping_factor_with_a_level_per_row():
    message = _raises(ib.DataError, "rt ~ x + (1 | row)")
    assert "'row'" in message and f"{N} levels for {N} observations" in message


def test_all_missing_column():
    message = _raises(ib.DataError, "rt ~ x + (1 | subject)", DF.with_columns(x=None))
    assert "'x'" in message and "entirely missing" in message


def test_all_nan_column():
    data = DF.with_columns(x=pl.lit(float("nan")))
    message = _raises(ib.DataError, "rt ~ x + (1 | subject)", data)
    assert "'x'" in message and "entirely missing" in message


def test_infinite_values():
    data = DF.with_columns(x=pl.when(pl.int_range(N) == 3).then(np.inf).otherwise("x"))
    message = _raises(ib.DataError, "rt ~ x + (1 | subject)", data)
    assert "'x'" in message and "infinite" in message


def test_transform_producing_infinite_values():
    message = _raises(ib.DataError, "rt ~ np.log(x) + (1 | subject)")
    assert "np.log(x)" in message and "NaN or infinite" in message


def test_empty_after_na_removal():
    data = DF.with_columns(
        x=pl.when(pl.col("cond") == "a").then(None).otherwise("x"),
        rt=pl.when(pl.col("cond") == "b").then(None).otherwise("rt"),
    )
    message = _raises(ib.DataError, "rt ~ x + (1 | subject)", data)
    assert "no rows left" in message and "'x'" in message and "'rt'" in message


def test_empty_frame():
    assert "no rows" in _raises(ib.DataError, "rt ~ x + (1 | subject)", DF.head(0))


def test_date_as_fixed_effect():
    data = DF.with_columns(day=pl.date(2024, 1, 1))
    message = _raises(ib.DataError, "rt ~ day + (1 | subject)", data)
    assert "'day'" in message and "Date" in message


def test_nested_column():
    data = DF.with_columns(xs=pl.concat_list("x"))
    message = _raises(ib.DataError, "rt ~ xs + (1 | subject)", data)
    assert "'xs'" in message and "List" in message


# ------------------------------------------------------------------- formulas
def test_formula_without_random_term_points_to_regression():
    message = _raises(ib.FormulaError, "rt ~ x + cond")
    assert "no random-effects term" in message and "OLS" in message


@pytest.mark.parametrize(
    ("formula", "words"),
    [
        ("rt ~ x + (1|)", "missing grouping factor"),
        ("rt ~ x + (|subject)", "missing left side"),
        ("rt ~ x + 1|subject", "wrapped in parentheses"),
        ("rt ~ x + (1|subject|item)", "only one '|'"),
        ("rt ~ x + ((1|subject)", "unclosed '('"),
        ("rt ~ x + (1|subject", "unclosed '('"),
        ("rt ~ x + (1|subject))", "unmatched ')'"),
        ("rt ~ x + (1 | subject + item)", "grouping factor 'subject + item'"),
        ("rt ~ x - (1 | subject)", "cannot be subtracted"),
    ],
)
def test_malformed_bar_term(formula: str, words: str):
    message = _raises(ib.FormulaError, formula)
    assert words in message and "^" in message.splitlines()[-1]


def test_formula_not_a_string():
    with pytest.raises(TypeError, match="formula must be a string"):
        ib.lmm(["rt ~ x + (1 | subject)"], DF)  # type: ignore[arg-type]


def test_unknown_function_is_wrapped():
    with pytest.raises(ib.DataError) as info:
        ib.lmm("rt ~ nofunc(x) + (1 | subject)", DF)
    assert "nofunc(x)" in str(info.value) and "'nofunc'" in str(info.value)
    assert info.value.__cause__ is not None  # formulaic's error is chained


def test_numeric_function_on_string_column_is_wrapped():
    with pytest.raises(ib.DataError) as info:
        ib.lmm("rt ~ np.log(cond) + (1 | subject)", DF)
    assert "np.log(cond)" in str(info.value) and "'cond' is String" in str(info.value)
    assert info.value.__cause__ is not None


def test_factor_with_one_level_in_c():
    message = _raises(ib.DataError, "rt ~ C(label) + (1 | subject)")
    assert "C(label)" in message and "single level" in message and "'one'" in message


def test_factor_with_one_level_after_na_removal():
    data = DF.with_columns(rt=pl.when(pl.col("cond") == "b").then(None).otherwise("rt"))
    message = _raises(ib.DataError, "rt ~ cond + (1 | subject)", data)
    assert "'cond'" in message and "single level" in message and "missing values" in message


# ------------------------------------------------------------------ arguments
def test_negative_weights():
    data = DF.with_columns(w=pl.when(pl.int_range(N) < 2).then(-1.0).otherwise("w"))
    message = _raises(ib.DataError, "rt ~ x + (1 | subject)", data, weights="w")
    assert "'w'" in message and "positive" in message and "2 zero or negative" in message


def test_non_numeric_weights_column():
    message = _raises(ib.DataError, "rt ~ x + (1 | subject)", weights="cond")
    assert "weights" in message and "'cond'" in message and "numeric" in message


def test_non_numeric_weights_array():
    message = _raises(ib.DataError, "rt ~ x + (1 | subject)", weights=np.array(["1"] * N))
    assert "weights" in message and "numeric" in message


def test_weights_of_wrong_length():
    message = _raises(ib.DataError, "rt ~ x + (1 | subject)", weights=np.ones(N - 1))
    assert "weights" in message and f"{N - 1} values" in message and f"{N} rows" in message


def test_string_offset_column():
    message = _raises(ib.DataError, "rt ~ x + (1 | subject)", offset="cond")
    assert "offset" in message and "'cond'" in message and "numeric" in message


def test_invalid_na_action():
    with pytest.raises(ValueError, match="na_action must be 'omit'.*'drop'"):
        ib.lmm("rt ~ x + (1 | subject)", DF, na_action="drop")


@pytest.mark.parametrize("data", [DF.to_dict(as_series=False), DF.to_numpy(), None, "df.csv"])
def test_data_not_a_frame(data: object):
    with pytest.raises(TypeError, match="polars DataFrame or LazyFrame"):
        ib.lmm("rt ~ x + (1 | subject)", data)


def test_unconvertible_pandas_column_named():
    frame = DF.to_pandas()
    frame["mixed"] = pd.Series([object(), "a"] * (N // 2), dtype=object)
    message = _raises(ib.DataError, "rt ~ x + (1 | mixed)", frame)
    assert "'mixed'" in message


def test_failing_lazy_query_is_wrapped():
    lazy = DF.lazy().with_columns(x=pl.col("cond").cast(pl.Int64))
    message = _raises(ib.DataError, "rt ~ x + (1 | subject)", lazy)
    assert "LazyFrame" in message and "'x'" in message
