"""LMM numerics at the edges (issue 13): responses of any size, variances the data
cannot identify, no residual degrees of freedom, a constant response."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest
from conftest import load_dataset

import interlace_nb as ib
from interlace_nb.accumulate import RESPONSE_EXPONENT_LIMIT, response_exponent
from interlace_nb.data import DataError

FORMULA = "Reaction ~ Days + (Days | Subject)"
SCALES = (1e-300, 1e-150, 1e-30, 1e30, 1e150, 1e300)


def _sleepstudy(scale: float = 1.0) -> pl.DataFrame:
    return load_dataset("sleepstudy.csv").with_columns(pl.col("Reaction") * scale)


@pytest.fixture(scope="module", params=[True, False], ids=["reml", "ml"])
def unscaled(request: pytest.FixtureRequest) -> ib.LinearMixedModel:
    return ib.lmm(FORMULA, _sleepstudy(), reml=request.param)


def test_response_exponent_rule() -> None:
    """Nothing changes within 2^-limit <= max|y| < 2^limit; outside, the exponent brings
    the largest value into [0.5, 1)."""
    limit = RESPONSE_EXPONENT_LIMIT
    for largest in (2.0**-limit, 1.0, 300.0, 1e30, np.nextafter(2.0**limit, 0.0)):
        assert response_exponent(np.array([0.5 * largest, -largest])) == 0
    assert response_exponent(np.zeros(3)) == 0
    for largest in (2.0**limit, np.nextafter(2.0**-limit, 0.0), 1e-300, 1e300, 1.7e308, 5e-324):
        k = response_exponent(np.array([largest, 0.25 * largest]))
        assert k != 0
        assert 0.5 <= np.ldexp(largest, -k) < 1.0


def test_moderate_response_is_not_rescaled(unscaled: ib.LinearMixedModel) -> None:
    assert unscaled._response_exponent == 0
    assert ib.lmm(FORMULA, _sleepstudy(1e30))._response_exponent == 0


@pytest.mark.parametrize("scale", SCALES)
def test_scaled_response_reports_on_the_callers_scale(
    unscaled: ib.LinearMixedModel, scale: float
) -> None:
    """theta is scale-free; beta, sigma, modes and fitted values scale with y; -2 log L
    shifts by 2 dof log(scale), dof = n (ML) or n - p (REML)."""
    base = unscaled
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = ib.lmm(FORMULA, _sleepstudy(scale), reml=base.reml)
    assert model.converged
    np.testing.assert_allclose(model.theta, base.theta, rtol=0, atol=1e-8)
    np.testing.assert_allclose(model.beta / scale, base.beta, rtol=1e-8)
    np.testing.assert_allclose(model.bse.to_numpy() / scale, base.bse.to_numpy(), rtol=1e-7)
    assert model.sigma / scale == pytest.approx(base.sigma, rel=1e-8)
    dof = base.nobs - base.n_fixed if base.reml else base.nobs
    assert model.loglik() == pytest.approx(base.loglik() - dof * np.log(scale), rel=1e-12)
    assert model.deviance == pytest.approx(base.deviance + 2 * base.nobs * np.log(scale),
                                           rel=1e-12)
    assert model.objective(model.theta) == pytest.approx(-2.0 * model.loglik(), rel=1e-14)
    assert model.aic == pytest.approx(base.aic + 2 * dof * np.log(scale), rel=1e-12)
    sd = model.varcorr().filter(pl.col("term2").is_null())["sdcor"].to_numpy()
    base_sd = base.varcorr().filter(pl.col("term2").is_null())["sdcor"].to_numpy()
    np.testing.assert_allclose(sd / scale, base_sd, rtol=1e-7)
    modes = model.ranef(cond_sd=False)["estimate"].to_numpy()
    np.testing.assert_allclose(modes / scale, base.ranef(cond_sd=False)["estimate"].to_numpy(),
                               rtol=1e-6, atol=1e-7 * np.abs(modes / scale).max())
    np.testing.assert_allclose(model.fittedvalues / scale, base.fittedvalues, rtol=1e-8)
    np.testing.assert_allclose(model.resid / scale, base.resid, rtol=1e-6,
                               atol=1e-8 * np.abs(base.fittedvalues).max())


def test_offset_is_scaled_with_the_response() -> None:
    data = _sleepstudy().with_columns((2.0 * pl.col("Days") + 200.0).alias("off"))
    base = ib.lmm(FORMULA, data, offset="off")
    scale = 1e300
    huge = data.with_columns(pl.col("Reaction") * scale, pl.col("off") * scale)
    model = ib.lmm(FORMULA, huge, offset="off")
    assert model._response_exponent != 0
    np.testing.assert_allclose(model.theta, base.theta, rtol=0, atol=1e-8)
    np.testing.assert_allclose(model.beta / scale, base.beta, rtol=1e-8)
    np.testing.assert_allclose(model.predict(huge.head(5)) / scale, base.predict(data.head(5)),
                               rtol=1e-8)


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_streamed_fit_rescales_as_in_memory(scale: float) -> None:
    data = _sleepstudy(scale)
    in_memory = ib.lmm(FORMULA, data)
    streamed = ib.lmm(FORMULA, data.lazy(), streaming=True, batch_size=50)
    assert streamed._response_exponent == in_memory._response_exponent != 0
    np.testing.assert_array_equal(streamed.theta, in_memory.theta)
    np.testing.assert_array_equal(streamed.beta, in_memory.beta)
    assert streamed.reml_criterion == in_memory.reml_criterion
    np.testing.assert_array_equal(streamed.fittedvalues, in_memory.fittedvalues)


# ------------------------------------------------------------ not identified
def _three_rows() -> pl.DataFrame:
    return pl.DataFrame({"y": [0.3, -1.2, 2.0], "x": [0.5, 1.5, -0.2], "g": ["a", "b", "a"]})


@pytest.mark.parametrize("reml", [True, False])
def test_one_residual_degree_of_freedom_is_not_identified(reml: bool) -> None:
    """3 rows, 2 fixed effects: the REML criterion does not depend on theta."""
    data = _three_rows()
    with pytest.warns(ib.ConvergenceWarning, match="not identified: 3 rows and 2 fixed"):
        model = ib.lmm("y ~ x + (1 | g)", data, reml=reml)
    assert not model.converged
    assert any("one residual degree of freedom" in m for m in model.convergence_messages)
    if reml:  # the reason: flat
        values = [model.objective(np.array([t])) for t in (0.0, 0.5, 3.0, 20.0)]
        assert np.ptp(values) < 1e-9


def test_flat_criterion_warned_without_the_convergence_check() -> None:
    model = ib.LinearMixedModel("y ~ x + (1 | g)", _three_rows())
    with pytest.warns(ib.ConvergenceWarning, match="not identified"):
        model.fit(check_convergence=False)
    assert not model.converged


def test_grouping_factor_also_fixed_is_not_identified() -> None:
    rng = np.random.default_rng(3)
    data = pl.DataFrame({
        "y": rng.normal(size=30) + np.repeat(rng.normal(size=6), 5),
        "g": np.repeat(np.arange(6), 5).astype(str),
        "h": np.tile(np.arange(5), 6).astype(str),
    })
    with pytest.warns(ib.ConvergenceWarning, match=r"term \(1 \| g\) is not identified"):
        model = ib.lmm("y ~ g + (1 | g) + (1 | h)", data)
    assert not model.converged
    assert [m for m in model.convergence_messages if "not identified" in m] == [
        m for m in model.convergence_messages if "(1 | g)" in m
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ib.ConvergenceWarning)
        warnings.simplefilter("ignore", ib.SingularFitWarning)
        fine = ib.lmm("y ~ 1 + (1 | g) + (1 | h)", data)
    assert fine.converged


def test_well_posed_fit_is_identified(unscaled: ib.LinearMixedModel) -> None:
    assert unscaled.converged
    assert unscaled._unidentified_messages() == []


# --------------------------------------------------------- refused up front
def _four_rows() -> pl.DataFrame:
    return pl.DataFrame({
        "y": [1.0, 2.0, 4.0, 3.0], "g": ["a", "a", "b", "b"],
        "x": [0.1, 0.5, 0.2, 0.9], "z": [1.0, 3.0, 2.0, 5.0], "w": [2.0, 1.0, 1.0, 3.0],
    })


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("reml", [True, False])
def test_no_residual_degrees_of_freedom(streaming: bool, reml: bool) -> None:
    data = _four_rows()
    source = data.lazy() if streaming else data
    with pytest.raises(DataError, match=r"no residual degrees of freedom: 4 rows and 4 fixed"):
        ib.lmm("y ~ x + z + w + (1 | g)", source, reml=reml, streaming=streaming)


def test_no_residual_degrees_of_freedom_after_dropping_columns() -> None:
    with pytest.raises(DataError, match=r"6 fixed-effect columns \(4 after dropping"):
        ib.lmm("y ~ x + z + w + I(x + z) + I(2 * w) + (1 | g)", _four_rows())


@pytest.mark.parametrize("streaming", [False, True])
def test_constant_response(streaming: bool) -> None:
    data = _four_rows().with_columns(pl.lit(3.0).alias("y"))
    source = data.lazy() if streaming else data
    with pytest.raises(DataError, match=r"response 'y' is constant \(all 4 values are 3.0\)"):
        ib.lmm("y ~ x + (1 | g)", source, streaming=streaming)


def test_constant_response_after_dropping_missing_rows() -> None:
    data = pl.DataFrame({
        "y": [3.0, 3.0, 7.0, 3.0, 3.0], "g": ["a", "a", "b", "b", "b"],
        "x": [0.1, 0.5, None, 0.9, 0.3],
    })
    with pytest.raises(DataError, match="constant .* after dropping rows with missing"):
        ib.lmm("y ~ x + (1 | g)", data)
