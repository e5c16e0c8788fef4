"""The fitted model's public surface: frames, attributes, warnings, prediction."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest
from conftest import load_dataset, load_reference_cases

import interlace_nb as ib
from interlace_nb.datasets import load_reading_times


@pytest.fixture(scope="module")
def sleep() -> ib.LinearMixedModel:
    return ib.lmm("Reaction ~ Days + (Days | Subject)", load_dataset("sleepstudy.csv"))


@pytest.fixture(scope="module")
def crossed() -> tuple[pl.DataFrame, ib.LinearMixedModel]:
    data = load_dataset("synth_slopes.csv")
    return data, ib.lmm("y ~ x + (1 + x | subject) + (1 | item)", data, offset="off")


def test_frames_have_the_promised_schemas(sleep: ib.LinearMixedModel) -> None:
    assert sleep.coef_table().schema == pl.Schema(
        {"term": pl.String, "estimate": pl.Float64, "std_error": pl.Float64,
         "statistic": pl.Float64, "conf_low": pl.Float64, "conf_high": pl.Float64}
    )
    assert sleep.varcorr().schema == pl.Schema(
        {"group": pl.String, "term1": pl.String, "term2": pl.String,
         "vcov": pl.Float64, "sdcor": pl.Float64}
    )
    assert sleep.ranef().schema == pl.Schema(
        {"group": pl.String, "level": pl.String, "term": pl.String,
         "estimate": pl.Float64, "cond_sd": pl.Float64}
    )
    stats = sleep.fit_stats()
    assert stats.columns == [
        "nobs", "ngroups", "reml_criterion", "deviance", "loglik", "aic", "bic", "sigma",
        "converged", "singular", "n_evals", "factorization", "fit_seconds",
    ]
    assert stats.height == 1
    assert stats["ngroups"][0] == {"Subject": 18}


def test_coef_table_is_wald(sleep: ib.LinearMixedModel) -> None:
    table = sleep.coef_table()
    row = table.row(1, named=True)
    assert row["statistic"] == pytest.approx(row["estimate"] / row["std_error"])
    assert row["conf_high"] - row["estimate"] == pytest.approx(1.959964 * row["std_error"])


def test_statsmodels_attributes(sleep: ib.LinearMixedModel) -> None:
    assert isinstance(sleep.fe_params, pd.Series)
    lme4 = load_reference_cases()["sleepstudy_corr_reml"]
    assert sleep.fe_params["Days"] == pytest.approx(lme4["fixef"][1], rel=1e-6)
    assert sleep.bse["Days"] == pytest.approx(lme4["se"][1], rel=1e-4)
    assert sleep.scale == pytest.approx(sleep.sigma**2)
    y = load_dataset("sleepstudy.csv")["Reaction"].to_numpy()
    np.testing.assert_allclose(sleep.resid + sleep.fittedvalues, y)
    effects = sleep.random_effects["Subject"]
    assert list(effects.columns) == ["Intercept", "Days"]
    assert effects.shape == (18, 2)
    ranef = sleep.ranef().filter(pl.col("term") == "Days")["estimate"].to_numpy()
    np.testing.assert_allclose(effects["Days"].to_numpy(), ranef)
    assert sleep.fixef() == dict(zip(sleep.fe_params.index, sleep.fe_params, strict=True))
    assert sleep.logLik() == pytest.approx(lme4["loglik"], rel=1e-9)


def test_summary_reads_like_lme4(sleep: ib.LinearMixedModel) -> None:
    text = sleep.summary()
    for piece in ("REML criterion at convergence: 1743.6283", "Random effects:",
                  "Number of obs: 180, groups:  Subject, 18", "Fixed effects:",
                  "Correlation of Fixed Effects:"):
        assert piece in text
    assert repr(sleep) == text


def test_predict_on_the_fitting_rows_matches_fitted(crossed) -> None:
    data, model = crossed
    np.testing.assert_allclose(model.predict(data), model.fittedvalues, atol=1e-10)
    np.testing.assert_allclose(
        model.predict(data, include_re=False), model.predict(include_re=False), atol=1e-10
    )


def test_predict_new_levels_get_zero_effects(crossed) -> None:
    data, model = crossed
    known = data["subject"][0]
    new = pl.DataFrame({"x": [0.5, 0.5], "subject": ["nobody", known], "item": ["none", "none"],
                        "off": [0.0, 0.0]})
    fixed = model.fe_params["Intercept"] + 0.5 * model.fe_params["x"]
    prediction = model.predict(new)
    assert prediction[0] == pytest.approx(fixed)
    subject_effects = model.random_effects["subject"].loc[known]
    assert prediction[1] == pytest.approx(
        fixed + subject_effects["Intercept"] + 0.5 * subject_effects["x"]
    )
    with pytest.raises(ib.DataError, match="not seen in the fit"):
        model.predict(new, allow_new_levels=False)


def test_predict_reports_missing_offset_and_na(crossed) -> None:
    data, model = crossed
    with pytest.raises(ib.DataError, match="'off'"):
        model.predict(data.drop("off"))
    with pytest.raises(ib.DataError, match="missing values in 'x'"):
        model.predict(data.head(3).with_columns(pl.lit(None, dtype=pl.Float64).alias("x")))


def test_singular_fit_is_reported() -> None:
    with pytest.warns(ib.SingularFitWarning):
        model = ib.lmm("Yield ~ 1 + (1 | Batch)", load_dataset("Dyestuff2.csv"))
    assert model.singular
    assert model.fit_stats()["singular"][0]
    assert "boundary (singular) fit" in model.summary()


def test_rank_deficient_columns_are_dropped_and_named() -> None:
    with pytest.warns(UserWarning, match="x_dup"):
        model = ib.lmm("y ~ x + x_dup + (1 | subject) + (1 | item)",
                       load_dataset("synth_slopes.csv"))
    assert list(model.fe_params.index) == ["Intercept", "x"]
    assert model.design.dropped_x_names == ("x_dup",)


def test_doubtful_convergence_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from interlace_nb.fitting.optimize import (
        convergence_messages,
        finite_difference_derivatives,
        minimize_bobyqa,
    )
    from interlace_nb.models import lmm as lmm_module

    def stopped_early(fun, x0, lower, **options):
        return minimize_bobyqa(fun, x0, lower, max_evals=6, **options)

    monkeypatch.setattr(lmm_module, "minimize_bobyqa", stopped_early)
    data = load_dataset("sleepstudy.csv")
    model = ib.LinearMixedModel("Reaction ~ Days + (Days | Subject)", data)
    with pytest.warns(ib.ConvergenceWarning):
        model.fit(optimizer="bobyqa")
    assert not model.converged
    assert not model.fit_stats()["converged"][0]
    assert any("evaluation limit" in m for m in model.convergence_messages)
    # a point far from the optimum must not pass lme4's gradient check

    grad, hess = finite_difference_derivatives(model.objective, np.array([0.5, 0.0, 0.5]),
                                               model.theta_lower)
    assert convergence_messages(grad, hess, np.ones(3, dtype=bool))


def test_doubtful_convergence_is_reported_with_lbfgsb(monkeypatch: pytest.MonkeyPatch) -> None:
    from interlace_nb.fitting.optimize import minimize_lbfgsb
    from interlace_nb.models import lmm as lmm_module

    def stopped_early(fun, x0, lower):
        return minimize_lbfgsb(fun, x0, lower, max_evals=2)

    monkeypatch.setattr(lmm_module, "minimize_lbfgsb", stopped_early)
    model = ib.LinearMixedModel("Reaction ~ Days + (Days | Subject)",
                                load_dataset("sleepstudy.csv"))
    with pytest.warns(ib.ConvergenceWarning):
        model.fit(optimizer="lbfgsb")
    assert not model.converged
    assert any("evaluation limit" in m for m in model.convergence_messages)


def test_objective_probes_do_not_move_the_fit(sleep: ib.LinearMixedModel) -> None:
    before = sleep.varcorr()
    sleep.objective(np.array([0.1, 0.0, 0.1]))
    assert sleep.varcorr().equals(before)
    lme4_first_mode = load_reference_cases()["sleepstudy_corr_reml"]["ranef"][0]["condval"]
    assert sleep.ranef()["estimate"][0] == pytest.approx(lme4_first_mode, rel=1e-4)


@pytest.mark.parametrize("name", ["synth_crossed_large_reml", "insteval_reml"])
def test_blocked_and_cholmod_paths_agree(name: str) -> None:
    case = load_reference_cases()[name]
    data = load_dataset(case["data"])
    blocked = ib.LinearMixedModel(case["formula"], data, factorization="blocked")
    general = ib.LinearMixedModel(case["formula"], data, factorization="cholmod")
    assert blocked.predictor.factorization == "blocked"
    assert general.predictor.factorization == "cholmod"
    for point in case["objective_at"]:
        theta = np.array(point["theta"])
        assert blocked.objective(theta) == pytest.approx(general.objective(theta), rel=1e-10)


def test_frequency_order_of_levels_is_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocked fits number later factors' levels by frequency; outputs keep the own order."""
    import interlace_nb.predictor as predictor_module
    from interlace_nb.fitting.lmm import solve_at

    case = load_reference_cases()["insteval_reml"]
    data = load_dataset(case["data"])
    ordered = ib.LinearMixedModel(case["formula"], data, factorization="blocked")
    monkeypatch.setattr(
        predictor_module, "frequency_orders", lambda terms, counts=None: [None] * len(terms)
    )
    plain = ib.LinearMixedModel(case["formula"], data, factorization="blocked")
    orders = ordered.predictor.level_orders
    assert orders[0] is None and all(order is not None for order in orders[1:])
    assert plain.predictor.user_order(np.arange(3)).tolist() == [0, 1, 2]
    theta = np.array(case["objective_at"][-1]["theta"])
    modes = []
    for model in (ordered, plain):
        solution = solve_at(model.predictor, theta, reml=True)
        b = model.predictor.user_order(model.predictor.lambda_times(solution.u))
        blocks = [model.predictor.inverse_diagonal_blocks(k) for k in range(len(model.terms))]
        modes.append((solution.objective, b, blocks))
    assert modes[0][0] == pytest.approx(modes[1][0], rel=1e-12)
    np.testing.assert_allclose(modes[0][1], modes[1][1], rtol=1e-9, atol=1e-12)
    for first, second in zip(modes[0][2], modes[1][2], strict=True):
        np.testing.assert_allclose(first, second, rtol=1e-9, atol=1e-14)


def test_demo_model_and_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from interlace_nb.cli import main

    assert main(["demo", "--ranef-rows", "3"]) == 0
    out = capsys.readouterr().out
    assert "REML criterion at convergence" in out
    assert "coef_table()" in out
    data = load_reading_times()
    assert data.height == 1792
    assert data["rt"].null_count() > 0


def test_cli_fit_reads_csv_and_reports_bad_formula(tmp_path, capsys) -> None:
    from interlace_nb.cli import main

    path = tmp_path / "pen.csv"
    load_dataset("Penicillin.csv").write_csv(path)
    assert main(["fit", str(path), "diameter ~ 1 + (1 | plate) + (1 | sample)",
                 "--out-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "varcorr.csv").exists()
    assert main(["fit", str(path), "diameter ~ 1 + (1 | plat)"]) == 2
    assert "Did you mean 'plate'" in capsys.readouterr().err


def test_statsmodels_extras(sleep: ib.LinearMixedModel) -> None:
    assert sleep.llf == sleep.loglik()
    np.testing.assert_allclose(sleep.tvalues, sleep.fe_params / sleep.bse)
    assert sleep.pvalues["Days"] == pytest.approx(1.2747e-11, rel=1e-3)
    assert sleep.pvalues["Intercept"] > 0.0
    interval = sleep.conf_int(alpha=0.1)
    assert interval.loc["Days", 1] - sleep.fe_params["Days"] == pytest.approx(
        1.644854 * sleep.bse["Days"], rel=1e-6
    )
    np.testing.assert_allclose(np.sqrt(np.diag(sleep.cov_params())), sleep.bse)


def test_double_parentheses_and_warning_location() -> None:
    data = load_dataset("Dyestuff2.csv")
    with pytest.warns(ib.SingularFitWarning) as record:
        ib.lmm("Yield ~ 1 + ((1 | Batch))", data)
    assert record[0].filename == __file__
    with pytest.warns(ib.SingularFitWarning):
        model = ib.lmm("Yield ~ 1 + (1 | Batch)", data)
    assert model.ranef(cond_sd=False)["cond_sd"].null_count() == 6


def test_the_garbage_collector_is_back_as_it_was() -> None:
    """Models are built and fitted with the cyclic collector off (models/base.py,
    collector_paused); afterwards it is as the caller had it, errors included."""
    import gc

    frame = pl.DataFrame({"y": [1.0, 2.0, 3.5, 2.5, 4.0, 3.0], "g": ["a", "a", "b", "b", "c", "c"]})
    assert gc.isenabled()
    with pytest.raises(ib.FormulaError):
        ib.LinearMixedModel("y ~ (1 | ", frame)
    assert gc.isenabled()
    gc.disable()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ib.lmm("y ~ 1 + (1 | g)", frame)
        assert not gc.isenabled()
    finally:
        gc.enable()
