"""Streamed fits (lmm(..., streaming=True)): the same fit as in memory, rows never all held.

Small batch sizes force many batches. The accumulator sums over the rows in
data order whatever the batches, so the streamed Gram blocks, and with them
theta, beta and the criterion, agree with the in-memory fit to rounding
(in practice bit for bit); the tests ask for 1e-10 relative.
"""

from __future__ import annotations

import warnings

import naive
import numpy as np
import polars as pl
import pytest
from conftest import load_dataset, load_reference_cases
from numpy.testing import assert_allclose, assert_array_equal

import interlace_nb as ib
from interlace_nb.accumulate import GramAccumulator
from interlace_nb.datasets import load_reading_times
from interlace_nb.terms import RandomTerm

pytestmark = pytest.mark.filterwarnings(
    "ignore::interlace_nb.SingularFitWarning", "ignore::interlace_nb.ConvergenceWarning"
)

RTOL = 1e-10


def _pair(formula: str, data: object, batch_size: int, **kwargs: object):
    memory = ib.lmm(formula, data, **kwargs)
    lazy = data.lazy() if isinstance(data, pl.DataFrame) else data
    streamed = ib.lmm(formula, lazy, streaming=True, batch_size=batch_size, **kwargs)
    return memory, streamed


def _same_fit(memory: ib.LinearMixedModel, streamed: ib.LinearMixedModel) -> None:
    assert streamed.design.x_names == memory.design.x_names
    assert streamed.design.dropped_x_names == memory.design.dropped_x_names
    assert streamed.nobs == memory.nobs
    assert streamed.ngroups == memory.ngroups
    assert_allclose(streamed.theta, memory.theta, rtol=RTOL, atol=0)
    assert_allclose(streamed.beta, memory.beta, rtol=RTOL, atol=0)
    assert streamed.solution.objective == pytest.approx(memory.solution.objective, rel=RTOL)
    assert streamed.sigma == pytest.approx(memory.sigma, rel=RTOL)
    ga, gb = memory.predictor.gram, streamed.predictor.gram
    assert_array_equal(ga.ztz.indices, gb.ztz.indices)
    assert_array_equal(ga.ztz.indptr, gb.ztz.indptr)
    assert_allclose(gb.ztz.data, ga.ztz.data, rtol=1e-13)
    scale = np.abs(ga.zty).max()
    assert_allclose(gb.zty, ga.zty, rtol=1e-13, atol=1e-13 * scale)
    assert gb.sum_log_weights == pytest.approx(ga.sum_log_weights, rel=1e-13, abs=1e-13)


# ------------------------------------------------------ the same fit as in memory
CASES = {
    "sleepstudy_corr_reml": 17,  # correlated intercept and slope
    "sleepstudy_uncorr_ml": 23,  # || and ML
    "penicillin_ml": 10,  # crossed intercepts
    "pastes_nested_reml": 7,  # nested: (1 | batch/cask)
    "synth_crossed_small_reml": 333,  # crossed, with a string fixed-effects factor
    "synth_weights_reml": 1500,  # prior weights (column)
    "synth_offset_reml": 1500,  # offset (column)
    "synth_rankdef_reml": 1500,  # a redundant fixed-effects column is dropped
    "synth_nested_reml": 700,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_streamed_fit_equals_in_memory(name: str) -> None:
    case = load_reference_cases()[name]
    data = load_dataset(case["data"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # rank-deficiency notice, both paths
        memory, streamed = _pair(
            case["formula"], data, CASES[name], reml=case["reml"], weights=case["weights"],
            offset=case["offset"],
        )
    assert streamed.streaming and not memory.streaming
    _same_fit(memory, streamed)
    # and both are lme4's fit
    assert streamed.deviance == pytest.approx(case["deviance"], rel=1e-6)


READING = "np.log(rt) ~ condition + frequency + (1 + condition | subject) + (1 | item)"


@pytest.fixture(scope="module")
def reading_pair():
    data = load_reading_times()
    return data, *_pair(READING, data, 97)


def test_na_rows_dropped_as_in_memory(reading_pair) -> None:
    data, memory, streamed = reading_pair
    assert data.get_column("rt").null_count() > 0
    assert streamed.na_message == memory.na_message != ""
    _same_fit(memory, streamed)


def test_rows_are_read_again_for_residuals_and_fitted_values(reading_pair) -> None:
    _, memory, streamed = reading_pair
    assert_array_equal(streamed.used_rows, memory.used_rows)
    assert_allclose(streamed.fittedvalues, memory.fittedvalues, rtol=1e-12)
    assert_allclose(streamed.resid, memory.resid, rtol=1e-9, atol=1e-12)
    assert_allclose(streamed.predict(include_re=False), memory.predict(include_re=False),
                    rtol=1e-12)
    batches = list(streamed.fitted_batches())
    assert len(batches) == -(-streamed.nobs // 97)
    joined = pl.concat(batches)
    assert joined.columns == ["row", "fitted", "resid"]
    assert_array_equal(joined.get_column("row").to_numpy(), memory.used_rows)
    assert_allclose(joined.get_column("resid").to_numpy(), memory.resid, rtol=1e-9, atol=1e-12)
    (single,) = list(memory.fitted_batches())
    assert_allclose(single.get_column("fitted").to_numpy(), joined.get_column("fitted"),
                    rtol=1e-12)


def test_level_results_and_summary_match(reading_pair) -> None:
    data, memory, streamed = reading_pair
    ranef_m, ranef_s = memory.ranef(), streamed.ranef()
    assert ranef_s.select("group", "level", "term").equals(ranef_m.select("group", "level", "term"))
    assert_allclose(ranef_s.get_column("estimate"), ranef_m.get_column("estimate"), rtol=1e-9,
                    atol=1e-12)
    assert_allclose(ranef_s.get_column("cond_sd"), ranef_m.get_column("cond_sd"), rtol=1e-9)
    assert streamed.summary() == memory.summary()
    new = data.drop_nulls().head(20)
    assert_allclose(streamed.predict(new), memory.predict(new), rtol=1e-12)


def test_streamed_model_holds_no_rows(reading_pair) -> None:
    _, _, streamed = reading_pair
    assert not hasattr(streamed.design, "y")
    for term in streamed.terms:
        assert term.codes.shape == (0,)
        assert term.z.shape == (0, term.size)


def test_from_a_parquet_scan(tmp_path) -> None:
    path = tmp_path / "reading.parquet"
    data = load_reading_times()
    data.write_parquet(path)
    memory, streamed = _pair(READING, pl.scan_parquet(path), 200)
    _same_fit(memory, streamed)
    assert_array_equal(streamed.used_rows, memory.used_rows)


def _factor_frame(n: int = 400, seed: int = 2) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    a, b, g = rng.integers(0, 3, n), rng.integers(0, 4, n), rng.integers(0, 12, n)
    x = rng.normal(size=n)
    dose = rng.integers(1, 4, n)
    y = (0.3 * a + 0.2 * dose + x + rng.normal(size=12)[g] + 0.5 * rng.normal(size=12)[(a * 4 + b)
         % 12] + rng.normal(size=n))
    w = rng.uniform(0.5, 2.0, n)
    w[rng.integers(0, n, 15)] = np.nan  # rows dropped for missing weights
    return pl.DataFrame(
        {
            "y": y + 100.0,  # a large mean: the shift keeps the digits
            "x": x,
            "arm": pl.Series(np.array(["c", "b", "a"])[a]).cast(pl.Enum(["c", "b", "a"])),
            "site": pl.Series([f"s{v}" for v in b]).cast(pl.Categorical),
            "dose": dose,
            "g": g,
            "w": w,
            "off": rng.normal(size=n) * 0.1,
        }
    )


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x + arm + C(dose) + (1 | g) + (1 | arm:site)",
        "y ~ x * arm + (1 + x | g) + (0 + arm | site)",
        "y ~ np.log(dose) + I(x ** 2) + (1 | g) + (1 | site)",
    ],
)
def test_factor_dtypes_weights_and_offset(formula: str) -> None:
    data = _factor_frame()
    memory, streamed = _pair(formula, data, 37, weights="w", offset="off")
    assert memory.nobs < data.height and streamed.na_message == memory.na_message
    _same_fit(memory, streamed)


def test_older_polars_without_collect_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _factor_frame()
    formula = "y ~ x + arm + (1 | g) + (1 | site)"
    memory = ib.lmm(formula, data)
    monkeypatch.delattr(pl.LazyFrame, "collect_batches")
    streamed = ib.lmm(formula, data.lazy(), streaming=True, batch_size=50)
    _same_fit(memory, streamed)


def test_caller_frame_is_not_modified() -> None:
    data = _factor_frame()
    before = data.clone()
    ib.lmm("y ~ x + arm + (1 | g)", data, streaming=True, batch_size=64, weights="w")
    assert data.equals(before)


# ------------------------------------------------ the accumulator and its batches
def _random_terms(rng: np.random.Generator, n: int) -> list[RandomTerm]:
    terms = []
    f0 = rng.permutation(np.arange(n) % 9).astype(np.int64)
    f1 = rng.permutation(np.arange(n) % 5).astype(np.int64)
    for k, (levels, size) in enumerate([(9, 2), (5, 1), (9, 1)]):
        factor = "f0" if k in (0, 2) else "f1"  # terms 0 and 2 share a grouping factor
        codes = f0 if factor == "f0" else f1
        terms.append(RandomTerm(factor, (factor,), "x", tuple(f"c{j}" for j in range(size)),
                                codes, tuple(map(str, range(levels))),
                                np.ascontiguousarray(rng.normal(size=(n, size))), None))
    return terms


def test_accumulator_does_not_depend_on_the_batches() -> None:
    rng = np.random.default_rng(8)
    n = 300
    terms = _random_terms(rng, n)
    x = np.column_stack([np.ones(n), rng.normal(size=(n, 2))])
    y, w, off = rng.normal(size=n) + 50.0, rng.uniform(0.5, 2, n), rng.normal(size=n)
    shift0 = np.array([49.0, 0.1, -0.2])

    def accumulate(cuts: list[int]):
        acc = GramAccumulator(terms, 3, shift0)
        for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
            acc.add(tuple(t.codes[lo:hi] for t in terms), tuple(t.z[lo:hi] for t in terms),
                    x[lo:hi], y[lo:hi], w[lo:hi], off[lo:hi])
        return acc.finish(np.arange(3))

    whole = accumulate([])
    for cuts in ([1, 2, 3], [50, 51, 200], list(range(7, n, 7))):
        part = accumulate(cuts)
        assert_array_equal(part.gram.ztz.toarray(), whole.gram.ztz.toarray())
        assert_array_equal(part.gram.zty, whole.gram.zty)
        assert_array_equal(part.beta_shift, whole.beta_shift)
        assert_array_equal(part.between_variances, whole.between_variances)
        assert part.gram.yty == whole.gram.yty

    # and it is what the dense formulas give
    codes = [t.codes for t in terms]
    z_dense = naive.dense_z(codes, [t.z for t in terms], [t.n_levels for t in terms])
    weight = np.diag(w)
    assert_allclose(whole.gram.ztz.toarray(), z_dense.T @ weight @ z_dense, rtol=1e-12,
                    atol=1e-12)
    beta_shift = np.linalg.lstsq(x * np.sqrt(w)[:, None], (y - off) * np.sqrt(w), rcond=None)[0]
    assert_allclose(whole.beta_shift, beta_shift, rtol=1e-10)
    y_eff = y - off - x @ beta_shift
    assert_allclose(whole.gram.zty, z_dense.T @ weight @ y_eff, rtol=1e-8, atol=1e-10)
    assert whole.gram.yty == pytest.approx(y_eff @ weight @ y_eff, rel=1e-9)
    assert_allclose(whole.gram.xty, 0.0, atol=1e-9)
    assert whole.response_variance == pytest.approx(np.var(y, ddof=1), rel=1e-12)
    for term, between in zip(terms, whole.between_variances, strict=True):
        means = np.bincount(term.codes, y) / np.bincount(term.codes)
        assert between == pytest.approx(np.var(means[term.codes], ddof=1), rel=1e-12)


# ----------------------------------------------------------------- bad input
def _errors(formula: str, data: pl.DataFrame, **kwargs: object) -> tuple[str, str]:
    """The in-memory and the streamed error for the same bad input."""
    messages = []
    for streaming in (False, True):
        extra = {"streaming": True, "batch_size": 7} if streaming else {}
        with pytest.raises((ib.DataError, ib.FormulaError)) as info:
            ib.lmm(formula, data.lazy() if streaming else data, **kwargs, **extra)
        messages.append(str(info.value))
    return messages[0], messages[1]


def _bad_frame() -> pl.DataFrame:
    rng = np.random.default_rng(4)
    n = 60
    return pl.DataFrame(
        {
            "y": rng.normal(size=n),
            "x": rng.normal(size=n),
            "pos": np.exp(rng.normal(size=n)),
            "g": [f"g{k % 6}" for k in range(n)],
            "h": [f"h{k % 5}" for k in range(n)],
            "one": ["a"] * n,
            "w": rng.uniform(0.5, 2, n),
        }
    )


@pytest.mark.parametrize(
    "formula, change, kwargs, words",
    [
        ("y ~ xx + (1 | g)", None, {}, "'xx'"),
        ("y ~ x + (1 | gg)", None, {}, "'gg'"),
        ("y ~ x + (1 | g)", (pl.col("x") * np.nan).alias("x"), {},
         "entirely missing"),
        ("y ~ x + (1 | g)", pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("x"))
         .alias("x"), {"na_action": "fail"}, "na_action='fail'"),
        ("y ~ x + (1 | g)", pl.when(pl.int_range(pl.len()) < 3).then(np.inf)
         .otherwise(pl.col("x")).alias("x"), {}, "infinite values in 3"),
        ("y ~ np.log(x) + (1 | g)", None, {}, "NaN or infinite in"),
        ("y ~ x + (1 | one)", None, {}, "only one level"),
        ("y ~ x + one + (1 | g)", None, {}, "single level"),
        ("g ~ x + (1 | h)", None, {}, "numeric response"),
        ("y ~ x + (1 | g)", pl.when(pl.int_range(pl.len()) == 2).then(-1.0)
         .otherwise(pl.col("w")).alias("w"), {"weights": "w"}, "must be positive"),
    ],
)
def test_bad_input_gets_the_in_memory_message(formula, change, kwargs, words) -> None:
    data = _bad_frame()
    if change is not None:
        data = data.with_columns(change.alias(change.meta.output_name()))
    memory, streamed = _errors(formula, data, **kwargs)
    assert words in streamed
    assert streamed == memory


@pytest.mark.parametrize(
    "formula, term, function",
    [
        ("y ~ scale(x) + (1 | g)", "scale(x)", "scale"),
        ("y ~ x + center(pos) + (1 | g)", "center(pos)", "center"),
        ("y ~ x + (1 + poly(x, 2) | g)", "poly(x, 2)", "poly"),
        ("y ~ lag(x) + (1 | g)", "lag(x)", "lag"),
    ],
)
def test_whole_data_transforms_are_refused(formula: str, term: str, function: str) -> None:
    with pytest.raises(ib.FormulaError) as info:
        ib.lmm(formula, _bad_frame().lazy(), streaming=True)
    message = str(info.value)
    assert repr(term) in message and f"{function}()" in message and "streaming=False" in message


@pytest.mark.parametrize(
    "formula, term",
    [
        ("y ~ I(x - np.mean(x)) + (1 | g)", "I(x - np.mean(x))"),
        ("y ~ x + (1 + np.cumsum(pos) | g)", "np.cumsum(pos)"),
        ("I(y / y.max()) ~ x + (1 | g)", "I(y / y.max())"),
    ],
)
def test_terms_that_read_other_rows_are_refused(formula: str, term: str) -> None:
    with pytest.raises(ib.FormulaError, match="depends on other rows") as info:
        ib.lmm(formula, _bad_frame().lazy(), streaming=True)
    assert repr(term) in str(info.value)


def test_weights_array_needs_a_column_when_streaming() -> None:
    data = _bad_frame()
    with pytest.raises(ib.DataError, match="weights must be a column name when streaming"):
        ib.lmm("y ~ x + (1 | g)", data.lazy(), streaming=True, weights=data["w"].to_numpy())


@pytest.mark.parametrize("batch_size", [0, -5, 2.5, "100", True])
def test_batch_size_must_be_a_positive_integer(batch_size: object) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        ib.lmm("y ~ x + (1 | g)", _bad_frame().lazy(), streaming=True, batch_size=batch_size)


def test_batch_size_without_streaming_is_refused() -> None:
    with pytest.raises(ValueError, match="only used with streaming=True"):
        ib.lmm("y ~ x + (1 | g)", _bad_frame(), batch_size=100)


def test_failing_scan_is_wrapped(tmp_path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("y,x,g\n1.0,2.0,a\n2.0,oops,b\n")
    lazy = pl.scan_csv(path, schema_overrides={"x": pl.Float64})
    with pytest.raises(ib.DataError, match="reading columns"):
        ib.lmm("y ~ x + (1 | g)", lazy, streaming=True)


def test_command_line_streaming(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from interlace_nb.cli import main

    path = tmp_path / "reading.parquet"
    load_reading_times().write_parquet(path)
    formula = "np.log(rt) ~ condition + (1 | subject) + (1 | item)"
    assert main(["fit", str(path), formula, "--streaming", "--batch-size", "300"]) == 0
    streamed = capsys.readouterr().out
    assert main(["fit", str(path), formula]) == 0
    memory = capsys.readouterr().out

    def without_timing(text: str) -> str:  # fit_stats() shows fit_seconds
        before, after = text.split("fit_stats():")
        return before + after.split("ranef()")[1]

    assert "REML criterion" in streamed
    assert without_timing(streamed) == without_timing(memory)


def test_shift_keeps_digits_when_rows_are_sorted_by_a_large_effect() -> None:
    # y has a large mean and a huge condition effect, and the rows are sorted by condition:
    # the initial shift must come from rows spread over the data, not the first ones.
    rng = np.random.default_rng(11)
    n = 30_000
    cond = np.repeat([0.0, 1.0, 2.0], n // 3)
    g = rng.integers(0, 40, n)
    y = 1e6 + 1e5 * cond + rng.normal(size=40)[g] + rng.normal(size=n)
    data = pl.DataFrame({"y": y, "cond": cond, "g": g})
    shuffled = data[rng.permutation(n)]
    formula = "y ~ cond + (1 | g)"
    sorted_fit = ib.LinearMixedModel(formula, data, streaming=True, batch_size=4096)
    shuffled_fit = ib.LinearMixedModel(formula, shuffled)
    for theta in ([0.5], [1.0], [2.0]):
        assert sorted_fit.objective(np.array(theta)) == pytest.approx(
            shuffled_fit.objective(np.array(theta)), rel=1e-11
        )
