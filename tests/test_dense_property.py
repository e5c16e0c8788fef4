"""The sparse engine against a brute-force dense fit on random small designs.

Hypothesis draws designs with 1-3 random-effects terms (crossed factors,
factors nested in the first one, intercepts, intercept + slope, and the
uncorrelated ``||`` form), 20-80 rows, optional weights and offset. The
profiled criterion ``model.objective(theta)`` must match
``naive.dense_criterion`` to 1e-8 relative at random thetas (zeros
included); after fitting, the conditional modes and conditional SDs must
match the dense ones at the fitted theta to 1e-6. Both factorisations
(CHOLMOD and the blocked one) are drawn.
"""

from __future__ import annotations

import warnings

import naive
import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from conftest import load_dataset
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import interlace_nb as ib

FACTORIZATIONS = ["cholmod", "blocked"]
PROPERTY_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# ------------------------------------------------------------------ designs


@st.composite
def designs(draw: st.DrawFn) -> dict:
    """A random data set and formula (structure from hypothesis, values from a seed)."""
    n = draw(st.integers(20, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    columns: dict[str, object] = {"x": rng.normal(size=n), "x2": rng.normal(size=n)}

    def factor(name: str, n_levels: int) -> np.ndarray:
        codes = rng.integers(0, n_levels, n)
        codes[:n_levels] = rng.permutation(n_levels)  # every level has a row
        rng.shuffle(codes)
        columns[name] = np.array([f"{name}{c}" for c in codes])
        return codes

    bars = []
    n_terms = draw(st.integers(1, 3))
    for k in range(n_terms):
        kind = "crossed" if k == 0 else draw(st.sampled_from(["crossed", "nested"]))
        lhs = draw(st.sampled_from(["1", "1 + x", "1 + x2", "x ||"]))
        if kind == "crossed":
            group = f"g{k}"
            factor(group, draw(st.integers(2, 8)))
        else:  # levels of h_k inside each level of g0: the interaction g0:h_k
            factor(f"h{k}", draw(st.integers(2, 3)))
            group = f"g0:h{k}"
        if lhs.endswith("||"):
            bars.append(f"(1 + {lhs[:-2].strip()} || {group})")
        else:
            bars.append(f"({lhs} | {group})")
    fixed = draw(st.sampled_from(["1", "x", "x + x2"]))
    signal = 0.5 * columns["x"] + rng.normal(size=n)
    for name in list(columns):
        if name.startswith(("g", "h")):
            level_effect = {lvl: rng.normal() for lvl in np.unique(columns[name])}
            signal = signal + np.array([level_effect[v] for v in columns[name]])
    columns["y"] = 3.0 + signal
    weights = offset = None
    if draw(st.booleans()):
        columns["w"] = rng.uniform(0.3, 3.0, n)
        weights = "w" if draw(st.booleans()) else np.asarray(columns["w"])
    if draw(st.booleans()):
        columns["off"] = rng.normal(scale=0.5, size=n)
        offset = "off" if draw(st.booleans()) else np.asarray(columns["off"])
    return {
        "formula": f"y ~ {fixed} + " + " + ".join(bars),
        "frame": pl.DataFrame(columns),
        "weights": weights,
        "offset": offset,
        "reml": draw(st.booleans()),
        "factorization": draw(st.sampled_from(FACTORIZATIONS)),
    }


def build_model(design: dict) -> ib.LinearMixedModel:
    """The unfitted model; designs lme4 would reject are skipped."""
    try:
        return ib.LinearMixedModel(
            design["formula"], design["frame"], reml=design["reml"], weights=design["weights"],
            offset=design["offset"], factorization=design["factorization"],
        )
    except ib.DataError:  # too many levels for the rows drawn
        assume(False)
        raise


def theta_strategy(sizes: list[int]) -> st.SearchStrategy:
    """Diagonal entries in [0, 2.5] (often exactly 0), off-diagonal entries in [-1.5, 1.5]."""
    diag = st.one_of(st.just(0.0), st.floats(0.0, 2.5), st.floats(0.5, 1.5))
    off = st.one_of(st.just(0.0), st.floats(-1.5, 1.5))
    lower = naive.theta_lower(sizes)
    return st.tuples(*[diag if b == 0.0 else off for b in lower]).map(np.array)


# ---------------------------------------------------------------- reference


def frame_column(design: dict, role: str) -> np.ndarray | None:
    """Weights or offset as the caller passed them, as an array."""
    value = design[role]
    if value is None or isinstance(value, np.ndarray):
        return value
    return design["frame"].get_column(value).to_numpy()


def dense_inputs(model: ib.LinearMixedModel, design: dict, sparse_z: bool = False) -> dict:
    """y, X, dense Z, weights, offset, sizes and levels for naive.dense_criterion.

    Z is built from the model's term codes and covariates in the model's column
    order, after checking them against the raw data: each row's level label is
    the data's value(s) and each covariate column the data's column.
    """
    frame = design["frame"]
    assert model.nobs == frame.height  # no missing values, every row used
    for term in model.terms:
        labels = frame.select(
            pl.concat_str([pl.col(f) for f in term.factors], separator=":")
        ).to_series().to_numpy()
        assert (np.array(term.levels)[term.codes] == labels).all(), term.group
        for r, name in enumerate(term.column_names):
            want = np.ones(frame.height) if name == "Intercept" else frame.get_column(name)
            assert_allclose(term.z[:, r], want, err_msg=f"{term.group} {name}")
    z = naive.dense_z([t.codes for t in model.terms], [t.z for t in model.terms],
                      [t.n_levels for t in model.terms])
    for k in range(len(model.terms)):
        assert model.layout.term_col_offset[k] == sum(
            t.size * t.n_levels for t in model.terms[:k]
        )
    return {
        "y": frame.get_column("y").to_numpy(),
        "x": model.design.x,
        "z": sp.csr_matrix(z) if sparse_z else z,
        "sizes": [t.size for t in model.terms],
        "n_levels": [t.n_levels for t in model.terms],
        "weights": frame_column(design, "weights"),
        "offset": frame_column(design, "offset"),
    }


def dense_at(inputs: dict, theta: np.ndarray, reml: bool) -> naive.DenseFit:
    return naive.dense_criterion(
        inputs["y"], inputs["x"], inputs["z"], theta, inputs["sizes"], inputs["n_levels"],
        reml=reml, weights=inputs["weights"], offset=inputs["offset"],
    )


def long_form(model: ib.LinearMixedModel, per_column: np.ndarray) -> np.ndarray:
    """Reorder a length-q vector to ranef()'s rows: term, then effect column, then level."""
    parts = []
    for k, term in enumerate(model.terms):
        start = model.layout.term_col_offset[k]
        block = per_column[start : start + term.n_levels * term.size].reshape(term.n_levels, -1)
        parts.extend(block[:, r] for r in range(term.size))
    return np.concatenate(parts)


# ------------------------------------------------------------------- tests


@PROPERTY_SETTINGS
@given(design=designs(), data=st.data())
def test_objective_matches_dense(design: dict, data: st.DataObject) -> None:
    model = build_model(design)
    inputs = dense_inputs(model, design)
    for _ in range(2):
        theta = data.draw(theta_strategy(inputs["sizes"]), label="theta")
        ref = dense_at(inputs, theta, design["reml"])
        assert model.objective(theta) == pytest.approx(ref.objective, rel=1e-8)


@PROPERTY_SETTINGS
@given(design=designs())
def test_fitted_ranef_matches_dense(design: dict) -> None:
    model = build_model(design)
    inputs = dense_inputs(model, design)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(check_convergence=False)  # the optimum's quality is not under test here
    theta = model.theta
    assert np.all(theta >= model.theta_lower)
    ref = dense_at(inputs, theta, design["reml"])
    assert model.solution.objective == pytest.approx(ref.objective, rel=1e-8)
    assert_allclose(model.beta, ref.beta, rtol=1e-6, atol=1e-6 * (1 + np.abs(ref.beta).max()))
    assert model.scale == pytest.approx(ref.sigma2, rel=1e-6)

    ranef = model.ranef()
    want_b = long_form(model, ref.b)
    want_sd = long_form(model, ref.cond_sd)
    b_scale = 1e-12 + np.abs(want_b).max()
    sd_scale = 1e-12 + want_sd.max()
    assert_allclose(ranef.get_column("estimate").to_numpy(), want_b, rtol=1e-6,
                    atol=1e-6 * b_scale)
    assert_allclose(ranef.get_column("cond_sd").to_numpy(), want_sd, rtol=1e-6,
                    atol=1e-6 * sd_scale)
    # fitted values: X beta + offset + Z b
    eta = inputs["x"] @ ref.beta + inputs["z"] @ ref.b
    if inputs["offset"] is not None:
        eta = eta + inputs["offset"]
    assert_allclose(model.fittedvalues, eta, rtol=1e-6, atol=1e-6 * (1 + np.abs(eta).max()))


def sparse_heavy_design(rng: np.random.Generator) -> pl.DataFrame:
    """3,000 rows, 400 x 120 crossed levels, a random slope on the first factor."""
    n = 3000

    def codes(n_levels: int) -> np.ndarray:
        return rng.permutation(np.arange(n) % n_levels)

    a, b = codes(400), codes(120)
    x = rng.normal(size=n)
    effect_a = rng.normal(size=(400, 2)) * [1.0, 0.3]
    effect_b = rng.normal(size=120) * 0.7
    y = 10.0 + 0.5 * x + effect_a[a, 0] + effect_a[a, 1] * x + effect_b[b] + rng.normal(size=n)
    return pl.DataFrame({
        "y": y, "x": x, "a": [f"a{c}" for c in a], "b": [f"b{c}" for c in b],
        "w": rng.uniform(0.5, 2.0, n),
    })


@pytest.mark.parametrize("factorization", FACTORIZATIONS)
@pytest.mark.parametrize("reml", [True, False])
def test_sparse_heavy_objective_matches_dense(reml: bool, factorization: str) -> None:
    frame = sparse_heavy_design(np.random.default_rng(7))
    design = {"frame": frame, "weights": "w", "offset": None}
    model = ib.LinearMixedModel(
        "y ~ x + (1 + x | a) + (1 | b)", frame, reml=reml, weights="w",
        factorization=factorization,
    )
    assert [t.n_levels for t in model.terms] == [400, 120]
    inputs = dense_inputs(model, design, sparse_z=True)  # Z as a matrix, products cheap
    for theta in (np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.8, -0.15, 0.3, 0.6])):
        ref = dense_at(inputs, theta, reml)
        assert model.objective(theta) == pytest.approx(ref.objective, rel=1e-8)
    # the factor is now at the last theta: its selected inverse against the dense inverse
    a_inv = np.linalg.inv(ref.a)
    for k, term in enumerate(model.terms):
        blocks = model.predictor.inverse_diagonal_blocks(k)
        p = term.size
        for level in range(0, term.n_levels, 7):
            s0 = model.layout.term_col_offset[k] + level * p
            assert_allclose(blocks[level], a_inv[s0 : s0 + p, s0 : s0 + p], rtol=1e-8,
                            atol=1e-12)


# ---------------------------------------- a response with a large mean keeps its digits


@pytest.mark.parametrize("factorization", FACTORIZATIONS)
def test_objective_with_large_response_mean(factorization: str) -> None:
    frame = load_dataset("sleepstudy.csv").with_columns(pl.col("Reaction") + 1e6)
    design = {"frame": frame.rename({"Reaction": "y"}), "weights": None, "offset": None}
    model = ib.LinearMixedModel(
        "y ~ Days + (Days | Subject)", design["frame"], factorization=factorization
    )
    inputs = dense_inputs(model, design)
    theta = np.array([0.9667, 0.0152, 0.2309])
    ref = dense_at(inputs, theta, True)
    assert model.objective(theta) == pytest.approx(ref.objective, rel=1e-8)


def test_fit_is_invariant_to_a_large_response_shift() -> None:
    frame = load_dataset("sleepstudy.csv")
    formula = "Reaction ~ Days + (Days | Subject)"
    base = ib.lmm(formula, frame)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ib.ConvergenceWarning)
        shifted = ib.lmm(formula, frame.with_columns(pl.col("Reaction") + 1e6))
    assert_allclose(shifted.theta, base.theta, rtol=1e-5)
