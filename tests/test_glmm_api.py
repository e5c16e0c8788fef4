"""The GLMM front end as a user meets it: responses, links, predictions, residuals,
frames, summaries, and clear errors for bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import polars as pl
import pytest
from conftest import load_dataset

import interlace_nb as ib
from interlace_nb.fitting import pirls

CBPP_FORMULA = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.fixture(scope="module")
def cbpp() -> pl.DataFrame:
    return load_dataset("cbpp.csv")


@pytest.fixture(scope="module")
def cbpp_fit(cbpp) -> ib.GeneralizedLinearMixedModel:
    return ib.glmm(CBPP_FORMULA, cbpp, family="binomial")


def _bernoulli_rows(cbpp: pl.DataFrame) -> pl.DataFrame:
    """cbpp with one 0/1 row per animal."""
    rows = []
    for herd, incidence, size, period in cbpp.iter_rows():
        rows += [(herd, period, 1)] * incidence + [(herd, period, 0)] * (size - incidence)
    return pl.DataFrame(rows, schema=["herd", "period", "y"], orient="row")


def _poisson_frame(n: int = 300, seed: int = 4) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 20, n)
    x = rng.normal(size=n)
    effect = rng.normal(0, 0.5, 20)
    y = rng.poisson(np.exp(0.3 + 0.4 * x + effect[group]))
    return pl.DataFrame({"g": [f"g{k:02d}" for k in group], "x": x, "y": y.astype(float)})


# ------------------------------------------------------------- responses


def test_glmer_is_glmm_and_cbind_equals_proportion_with_weights(cbpp, cbpp_fit):
    proportion = ib.glmer(
        "incidence / size ~ period + (1 | herd)", cbpp, family="binomial", weights="size"
    )
    assert proportion.objective_value == pytest.approx(cbpp_fit.objective_value, rel=1e-12)
    np.testing.assert_allclose(proportion.beta, cbpp_fit.beta, rtol=1e-8)


def test_bernoulli_rows_give_the_cbind_estimates(cbpp, cbpp_fit):
    """Same likelihood up to the binomial coefficients: same estimates."""
    long = ib.glmm("y ~ period + (1 | herd)", _bernoulli_rows(cbpp), family="binomial")
    np.testing.assert_allclose(long.beta, cbpp_fit.beta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(long.theta, cbpp_fit.theta, rtol=1e-5)
    coefficients = sum(
        -2 * (math.lgamma(s + 1) - math.lgamma(i + 1) - math.lgamma(s - i + 1))
        for i, s in zip(cbpp["incidence"], cbpp["size"], strict=True)
    )
    assert long.objective_value == pytest.approx(
        cbpp_fit.objective_value - coefficients, rel=1e-8
    )


def test_two_level_factor_and_boolean_responses(cbpp):
    long = _bernoulli_rows(cbpp)
    numeric = ib.glmm("y ~ period + (1 | herd)", long, family="binomial")
    labelled = long.with_columns(
        pl.when(pl.col("y") == 1).then(pl.lit("yes")).otherwise(pl.lit("no")).alias("y")
    )
    as_factor = ib.glmm("y ~ period + (1 | herd)", labelled, family="binomial")
    as_bool = ib.glmm(
        "y ~ period + (1 | herd)", long.with_columns(pl.col("y") == 1), family="binomial"
    )
    for other in (as_factor, as_bool):
        np.testing.assert_allclose(other.beta, numeric.beta, rtol=1e-10)


@pytest.mark.parametrize("link", ["probit", "cloglog", "cauchit"])
def test_binomial_links_fit(cbpp, link):
    model = ib.glmm(CBPP_FORMULA, cbpp, family="binomial", link=link)
    assert model.converged
    assert model.fit_stats()["link"][0] == link


@pytest.mark.parametrize("link", ["log", "sqrt", "identity"])
def test_poisson_links_fit(link):
    frame = _poisson_frame().with_columns(pl.col("x").abs())  # positive means on every link
    model = ib.glmm("y ~ x + (1 | g)", frame, family="poisson", link=link)
    assert model.converged
    assert np.all(model.fittedvalues > 0)


def test_a_link_that_leaves_the_domain_at_the_start_is_explained():
    frame = pl.DataFrame({"x": np.linspace(-3, 3, 60), "g": [f"g{k % 6}" for k in range(60)]})
    frame = frame.with_columns((pl.col("x") > 2).cast(pl.Float64).alias("y") * 5)
    with pytest.raises(FloatingPointError, match="PIRLS failed at the starting values"):
        ib.glmm("y ~ x + (1 | g)", frame, family="poisson", link="identity")


def test_dispersion_families_report_sigma_as_glmer():
    """sigma = sqrt((Pearson RSS + |u|^2) / n), with a Residual row in varcorr
    (the Gaussian-log and Gamma reference cases check the values against glmer)."""
    model = ib.glmm(
        "y ~ x + (1 | subject) + (1 | item)", load_dataset("glmm_gaussian_log.csv"),
        family="gaussian", link="log",
    )
    pearson = model.residuals("pearson")
    u = model.spherical_modes
    assert model.sigma == pytest.approx(np.sqrt((pearson @ pearson + u @ u) / model.nobs))
    varcorr = model.varcorr()
    assert varcorr["group"].to_list()[-1] == "Residual"
    assert varcorr["vcov"][-1] == pytest.approx(model.sigma**2)


def test_lazyframe_and_caller_data_unchanged(cbpp, cbpp_fit):
    before = cbpp.clone()
    lazy = ib.glmm(CBPP_FORMULA, cbpp.lazy(), family="binomial")
    assert lazy.objective_value == pytest.approx(cbpp_fit.objective_value, rel=1e-14)
    assert cbpp.equals(before)


# ------------------------------------------------------ results and frames


def test_predict_link_and_response(cbpp, cbpp_fit):
    eta = cbpp_fit.predict()
    mu = cbpp_fit.predict(type="response")
    np.testing.assert_allclose(mu, 1 / (1 + np.exp(-eta)), rtol=1e-12)
    np.testing.assert_allclose(mu, cbpp_fit.fittedvalues, rtol=1e-10)
    np.testing.assert_allclose(cbpp_fit.predict(cbpp), eta, rtol=1e-12)
    new = cbpp.head(2).with_columns(pl.lit("new herd").alias("herd"))
    fixed_only = cbpp_fit.predict(new, include_re=False, type="response")
    np.testing.assert_allclose(cbpp_fit.predict(new, type="response"), fixed_only)
    with pytest.raises(ValueError, match="type must be 'link' or 'response'"):
        cbpp_fit.predict(type="probability")


def test_residual_types(cbpp_fit):
    response = cbpp_fit.response
    y, mu, w = response.y, cbpp_fit.fittedvalues, response.prior_weights
    np.testing.assert_allclose(cbpp_fit.residuals("response"), y - mu)
    np.testing.assert_allclose(cbpp_fit.resid_pearson, (y - mu) * np.sqrt(w / (mu * (1 - mu))))
    deviance = cbpp_fit.resid
    assert np.all(np.sign(deviance) == np.sign(y - mu))
    assert float(deviance @ deviance) == pytest.approx(cbpp_fit.deviance, rel=1e-12)
    np.testing.assert_allclose(cbpp_fit.resid_working, (y - mu) / (mu * (1 - mu)), rtol=1e-10)
    with pytest.raises(ValueError, match="residual type 'raw' is not known"):
        cbpp_fit.residuals("raw")


def test_coef_table_has_wald_z_and_p(cbpp_fit):
    table = cbpp_fit.coef_table()
    assert table.columns[-1] == "p_value"
    z = table["estimate"] / table["std_error"]
    np.testing.assert_allclose(table["statistic"].to_numpy(), z.to_numpy())
    expected = [math.erfc(abs(v) / math.sqrt(2)) for v in z]
    np.testing.assert_allclose(table["p_value"].to_numpy(), expected)
    np.testing.assert_allclose(cbpp_fit.pvalues.to_numpy(), expected)


def test_fit_stats_and_summary(cbpp_fit):
    stats = cbpp_fit.fit_stats()
    for column in ("family", "link", "n_agq", "minus_two_loglik", "objective", "aic", "bic"):
        assert column in stats.columns
    assert stats["reml_criterion"][0] is None
    text = cbpp_fit.summary()
    assert "Family: binomial  ( logit )" in text
    assert "Laplace Approximation" in text
    assert "Pr(>|z|)" in text
    assert "Residual" not in text
    assert repr(cbpp_fit) == text


def test_nagq_zero_is_the_fast_mode(cbpp, cbpp_fit):
    fast = ib.glmm(CBPP_FORMULA, cbpp, family="binomial", nAGQ=0)
    assert fast.hessian is None
    assert fast.objective_value >= cbpp_fit.objective_value
    assert "nAGQ = 0" in fast.summary()


def test_agq_loglik_is_on_the_likelihood_scale(cbpp, cbpp_fit):
    agq = ib.glmm(CBPP_FORMULA, cbpp, family="binomial", nAGQ=9)
    # close to Laplace on the same scale, far from glmer's shifted value
    assert agq.minus_two_loglik == pytest.approx(cbpp_fit.minus_two_loglik, rel=1e-3)
    assert agq.objective_value == pytest.approx(
        agq.minus_two_loglik - agq.saturated_minus_two_loglik
    )


# -------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("formula", "frame", "kwargs", "match"),
    [
        ("y ~ x + (1 | g)", {"y": [-1.0, 2.0]}, {"family": "poisson"}, "negative counts"),
        ("y ~ x + (1 | g)", {"y": [0.5, 1.0]}, {"family": "binomial"}, "must be 0/1"),
        ("y ~ x + (1 | g)", {"y": [1.5, 0.5], "n": [2.0, 2.0]},
         {"family": "binomial", "weights": "n"}, "proportion in \\[0, 1\\]"),
        ("cbind(y, n - y) ~ x + (1 | g)", {"y": [3.0, 1.0], "n": [2.0, 2.0]},
         {"family": "binomial"}, "failures 'n - y' is negative"),
        ("cbind(y, n - y) ~ x + (1 | g)", {"y": [0.0, 1.0], "n": [0.0, 2.0]},
         {"family": "binomial"}, "no trials"),
        ("y ~ x + (1 | g)", {"y": [0.0, 1.0], "w": [0.0, 1.0]},
         {"family": "binomial", "weights": "w"}, "weights column 'w' must be positive"),
        ("y ~ x + (1 | g)", {"y": [0.0, 1.0]}, {"family": "binomial", "link": "log"},
         "link 'log' is not allowed for the binomial family"),
        ("y ~ x + (1 | g)", {"y": [0.0, 1.0]}, {"family": "negbin"}, "unknown family"),
        ("y ~ x + (1 | g)", {"y": [0.0, 2.0]}, {"family": "Gamma"}, "non-positive values"),
        ("y ~ x + (1 | g)", {"y": ["a", "b", "c"]}, {"family": "binomial"},
         "factor with 3 level"),
        ("cbind(y) ~ x + (1 | g)", {"y": [0.0, 1.0]}, {"family": "binomial"},
         "exactly two arguments"),
        ("cbind(y, n - y) ~ x + (1 | g)", {"y": [0.0, 1.0], "n": [1.0, 2.0]},
         {"family": "poisson"}, "cbind\\(successes, failures\\) response is for binomial"),
    ],
)
def test_bad_responses_get_clear_errors(formula, frame, kwargs, match):
    rows = 24
    base = {"x": np.linspace(-1, 1, rows), "g": [f"g{k % 6}" for k in range(rows)]}
    for name, values in frame.items():
        base[name] = (values * rows)[:rows] if isinstance(values[0], str) else np.resize(
            np.asarray(values, dtype=float), rows
        )
    with pytest.raises((ib.DataError, ib.FormulaError), match=match):
        ib.glmm(formula, pl.DataFrame(base), **kwargs)


@pytest.mark.parametrize(
    ("formula", "kwargs", "match"),
    [
        ("y ~ x + (1 | g) + (1 | h)", {"nAGQ": 5}, "single scalar random-effects term"),
        ("y ~ x + (1 + x | g)", {"nAGQ": 5}, "single scalar random-effects term"),
        ("y ~ x + (1 | g)", {"nAGQ": -1}, "whole number >= 0"),
        ("y ~ x + (1 | g)", {"nAGQ": 1.5}, "whole number >= 0"),
        ("y ~ x + (1 | g)", {"nAGQ": 30}, "at most 25"),
    ],
)
def test_bad_quadrature_requests(formula, kwargs, match):
    frame = _poisson_frame().with_columns(pl.col("g").str.slice(0, 2).alias("h"))
    with pytest.raises(ValueError, match=match):
        ib.glmm(formula, frame, family="poisson", **kwargs)


def test_agq_refused_for_families_with_a_dispersion():
    frame = _poisson_frame().with_columns(pl.col("y") + 1.0)
    with pytest.raises(ValueError, match="nAGQ > 1 is offered for the binomial and poisson"):
        ib.glmm("y ~ x + (1 | g)", frame, family="Gamma", nAGQ=3)


def test_complete_separation_is_reported():
    rng = np.random.default_rng(8)
    n = 200
    x = rng.normal(size=n)
    frame = pl.DataFrame({"x": x, "y": (x > 0).astype(float), "g": (np.arange(n) % 10)})
    with pytest.warns(ib.ConvergenceWarning, match="fitted probabilities numerically 0 or 1"):
        model = ib.glmm("y ~ x + (1 | g)", frame.with_columns(pl.col("g").cast(pl.String)),
                        family="binomial")
    assert not model.converged
    assert any("separation" in m for m in model.convergence_messages)


def test_pirls_failure_is_reported_not_hidden(cbpp, monkeypatch):
    monkeypatch.setattr(pirls, "MAX_ITERATIONS", 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ib.glmm(CBPP_FORMULA, cbpp, family="binomial")
    assert not model.converged
    assert any("PIRLS did not converge" in str(w.message) for w in caught)


# --------------------------------------------------------------- warm starts


def test_warm_start_keeps_the_random_effects_when_theta_moves():
    frame = _poisson_frame().with_columns(pl.col("g").str.slice(0, 2).alias("h"))
    model = ib.GeneralizedLinearMixedModel(
        "y ~ x + (1 + x | g) + (1 | h)", frame, family="poisson"
    )
    rng = np.random.default_rng(0)
    u = rng.normal(size=model.layout.q)
    old, new = np.array([0.5, 0.2, 0.4, 0.3]), np.array([0.7, -0.1, 0.2, 0.6])
    moved = model.pirls.same_effects(u, old, new)
    model.predictor.set_theta(old)
    b_old = model.predictor.lambda_times(u)
    model.predictor.set_theta(new)
    np.testing.assert_allclose(model.predictor.lambda_times(moved), b_old, atol=1e-12)


@pytest.mark.parametrize("moves_theta", [False, True])
def test_first_order_warm_start_is_closer_than_the_old_modes(cbpp, moves_theta):
    model = ib.GeneralizedLinearMixedModel(CBPP_FORMULA, cbpp, family="binomial")
    theta = np.array([0.6])
    beta = np.array([-1.4, -1.0, -1.1, -1.6])
    state = model.pirls.run(theta, beta, np.zeros(model.layout.q), update_beta=False)
    moved_theta = theta + (0.05 if moves_theta else 0.0)
    moved_beta = beta + np.array([0.05, -0.03, 0.02, 0.04])
    half_theta, half_beta = (theta + moved_theta) / 2, (beta + moved_beta) / 2
    # both guesses first: follow() needs the factor of the run that returned state
    guess, _ = model.pirls.follow(state, moved_theta, moved_beta)
    half, _ = model.pirls.follow(state, half_theta, half_beta)
    exact = model.pirls.run(moved_theta, moved_beta, state.u, update_beta=False).u
    exact_half = model.pirls.run(half_theta, half_beta, state.u, update_beta=False).u
    error = np.abs(guess - exact).max()
    assert error < 0.1 * np.abs(state.u - exact).max()
    # first order: halving the move quarters the error
    assert np.abs(half - exact_half).max() < 0.35 * error


def test_first_order_warm_start_with_beta_inside_pirls(cbpp):
    """nAGQ = 0: u and beta move together through PIRLS's joint system."""
    model = ib.GeneralizedLinearMixedModel(CBPP_FORMULA, cbpp, family="binomial", nAGQ=0)
    theta = np.array([0.6])
    state = model.pirls.run(theta, np.zeros(4), np.zeros(model.layout.q), update_beta=True)
    steps = (0.04, 0.02)
    guesses = [model.pirls.follow(state, theta + step, None) for step in steps]
    errors = []
    for step, (u, beta) in zip(steps, guesses, strict=True):
        exact = model.pirls.run(theta + step, state.beta, state.u, update_beta=True)
        errors.append(max(np.abs(u - exact.u).max(), np.abs(beta - exact.beta).max()))
        moved = max(np.abs(state.u - exact.u).max(), np.abs(state.beta - exact.beta).max())
        assert errors[-1] < 0.1 * moved
    assert errors[1] < 0.35 * errors[0]


# ------------------------------------------------------------ command line


def test_cli_fits_a_glmm(tmp_path, capsys):
    from interlace_nb.cli import main
    from interlace_nb.datasets import make_lexical_decisions

    path = tmp_path / "words.parquet"
    make_lexical_decisions().write_parquet(path)
    formula = "correct ~ frequency + (1 | subject) + (1 | word)"
    assert main(["fit", str(path), formula, "--family", "binomial", "--nagq", "0",
                 "--out-dir", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "Family: binomial  ( logit )" in printed
    table = pl.read_csv(tmp_path / "out" / "coef_table.csv")
    assert "p_value" in table.columns
    with pytest.raises(SystemExit, match="need --family"):
        main(["fit", str(path), formula, "--link", "probit"])
