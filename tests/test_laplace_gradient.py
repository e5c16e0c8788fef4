"""The exact gradient of the Laplace deviance (fitting/laplace_gradient.py), nAGQ = 1 and 0.

Checked against central differences of the deviance itself at points away
from the optimum, on both factorisations, with random slopes, cbind and
proportion responses, Poisson with an offset, and a design with 2,500
random-effect columns (the blocked path's dense Schur block). The per-row
kernels are compared with NumPy twins, and the Hessian from gradient
differences with second differences of values.
"""

from __future__ import annotations

import warnings

import naive
import numpy as np
import polars as pl
import pytest
from conftest import load_dataset
from interlace_nb.kernels import laplace

import interlace_nb as ib
from interlace_nb.fitting.optimize import finite_difference_derivatives

CBIND = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
CROSSED = "y ~ x + (1 | subject) + (1 | item)"


def _large_crossed() -> pl.DataFrame:
    """20,000 Bernoulli rows on 2,000 x 500 crossed levels (q = 2,500)."""
    rng = np.random.default_rng(5)
    n = 20_000
    subject = rng.integers(0, 2_000, n)
    item = rng.zipf(1.5, n) % 500
    x = rng.normal(size=n)
    eta = -0.3 + 0.5 * x + rng.normal(0, 0.8, 2_000)[subject] + rng.normal(0, 0.5, 500)[item]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    return pl.DataFrame({"y": y, "x": x, "subject": subject.astype(str),
                         "item": item.astype(str)})


CASES = {
    "cbpp_cbind": (CBIND, "cbpp.csv", {}),
    "cbpp_proportion_weights": ("incidence/size ~ period + (1 | herd)", "cbpp.csv",
                                {"weights": "size"}),
    "crossed_blocked": (CROSSED, "glmm_bernoulli_crossed.csv", {}),
    "crossed_cholmod": (CROSSED, "glmm_bernoulli_crossed.csv", {"factorization": "cholmod"}),
    "random_slope": ("y ~ x + (1 + x | subject) + (1 | item)", "glmm_bernoulli_crossed.csv", {}),
    "uncorrelated_slope_cholmod": ("y ~ x + (1 + x || subject) + (1 | item)",
                                   "glmm_bernoulli_crossed.csv", {"factorization": "cholmod"}),
    "poisson_offset": (CROSSED, "glmm_poisson_offset.csv", {"offset": "log_t"}),
    "grouseticks": ("TICKS ~ YEAR + scale(HEIGHT) + (1 | BROOD) + (1 | LOCATION)",
                    "grouseticks.csv", {"family": "poisson"}),
    "large_q": (CROSSED, None, {}),
}


def _model(name: str, n_agq: int = 1) -> ib.GeneralizedLinearMixedModel:
    formula, data_file, kwargs = CASES[name]
    kwargs = dict(kwargs, nAGQ=n_agq)
    family = kwargs.pop("family", "poisson" if "poisson" in name else "binomial")
    data = _large_crossed() if data_file is None else load_dataset(data_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular or boundary fits are not the point here
        return ib.GeneralizedLinearMixedModel(formula, data, family=family, **kwargs).fit()


def _away_from_optimum(model: ib.GeneralizedLinearMixedModel) -> np.ndarray:
    rng = np.random.default_rng(1)
    params = np.concatenate([model.theta, model.beta])
    params = params + rng.normal(0.0, 0.05, len(params))
    theta = params[: model.n_theta]
    params[: model.n_theta] = np.where(model.theta_lower == 0.0, np.abs(theta) + 0.05, theta)
    return params


def _assert_gradient_matches_differences(
    model: ib.GeneralizedLinearMixedModel, params: np.ndarray
) -> None:
    value, grad = model.objective_and_gradient(params)
    assert value == pytest.approx(model.objective(params), rel=1e-12)
    step = 1e-5
    numeric = np.array([
        (model.objective(params + step * e) - model.objective(params - step * e)) / (2 * step)
        for e in np.eye(len(params))
    ])
    # rounding of a deviance D over a step h leaves about 1e-15 D / h in the difference
    noise = 1e-15 * abs(value) / step
    assert np.abs(grad - numeric).max() <= 1e-6 * np.abs(numeric).max() + 100 * noise


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_matches_central_differences(name):
    model = _model(name)
    assert model.laplace_gradient is not None
    _assert_gradient_matches_differences(model, _away_from_optimum(model))


@pytest.mark.parametrize(
    "name", ["cbpp_cbind", "crossed_cholmod", "random_slope", "grouseticks", "large_q"]
)
def test_fast_mode_gradient_matches_central_differences(name):
    """nAGQ = 0: beta is optimised inside PIRLS, so it follows theta in the gradient."""
    model = _model(name, n_agq=0)
    _assert_gradient_matches_differences(model, model.theta + 0.07)


def test_gradient_is_small_at_the_optimum():
    model = _model("crossed_blocked")
    _, grad = model.objective_and_gradient(np.concatenate([model.theta, model.beta]))
    assert np.abs(grad).max() < 1e-3


def test_hessian_from_gradients_matches_second_differences():
    model = _model("crossed_blocked")
    params = np.concatenate([model.theta, model.beta])
    lower = np.concatenate([model.theta_lower, np.full(model.n_fixed, -np.inf)])
    _, from_values = finite_difference_derivatives(model.objective, params, lower, delta=1e-3)
    assert model.hessian is not None
    assert np.abs(model.hessian - from_values).max() <= 1e-3 * np.abs(from_values).max()


def test_fits_without_an_exact_gradient_say_so():
    data = load_dataset("glmm_probit_crossed.csv")
    model = ib.GeneralizedLinearMixedModel(CROSSED, data, family="binomial", link="probit")
    assert model.laplace_gradient is None
    with pytest.raises(ValueError, match="canonical links"):
        model.objective_and_gradient(np.array([1.0, 1.0, 0.0, 0.0]))


def test_row_kernels_match_their_twins():
    model = _model("random_slope")
    gradient = model.laplace_gradient
    predictor = model.predictor
    indptr = np.asarray(predictor.gram.ztz.indptr, dtype=np.int64)
    indices = np.asarray(predictor.gram.ztz.indices, dtype=np.int64)
    columns = gradient._row_columns[:300]
    np.testing.assert_array_equal(
        laplace.row_pattern_positions(indptr, indices, columns),
        naive.row_pattern_positions(indptr, indices, columns),
    )
    # quadratic forms of A^-1 on the pattern against a dense inverse of A
    model._refactor_at_optimum()
    inverse = predictor.system.inverse_on_pattern()
    row_values = gradient._row_values()
    out = np.empty(len(row_values))
    laplace.row_quadratic_forms(inverse, gradient._positions, row_values, out)
    q = predictor.layout.q
    z_lambda = np.zeros((len(row_values), q))
    np.put_along_axis(z_lambda, gradient._row_columns, row_values, axis=1)
    lay = predictor.layout
    lam = naive.lambda_from_metadata(lay.col_block_start, lay.col_pos, lay.col_block_size,
                                     lay.col_t_offset, predictor.t_flat)
    gram = naive.csc_dense(indptr, indices, predictor.gram.ztz.data)
    a_dense = lam.T @ gram @ lam + np.eye(q)
    np.testing.assert_allclose(out, naive.row_leverages(z_lambda, a_dense), rtol=1e-10,
                               atol=1e-13)
