"""Micro-benchmarks (pytest-benchmark); not part of the test suite (testpaths = tests/).

    python -m pytest benchmarks/test_micro.py --benchmark-enable

Each benchmark warms up once first, so Numba compile time is excluded.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import interlace_nb
from interlace_nb.predictor import build_gram

from .simulate import simulate_crossed

#: A mid-size crossed model: 100k rows, 2,000 subjects x 500 items.
MID = {"n_rows": 100_000, "n_subjects": 2_000, "n_items": 500, "seed": 11}
FORMULA = "y ~ x + (1|s) + (1|i)"


@pytest.fixture(scope="module")
def mid_data():
    return simulate_crossed(**MID)


@pytest.fixture(scope="module")
def mid_model(mid_data):
    model = interlace_nb.LinearMixedModel(FORMULA, mid_data)
    model.objective(np.ones(2))  # compile / load kernels
    return model


def test_objective_mid(benchmark, mid_model):
    """One profiled REML evaluation (rescale, refactor, solve) at q = 2,500."""
    theta = np.array([0.8, 0.5])
    value = benchmark(mid_model.objective, theta)
    assert np.isfinite(value)


def test_gram_assembly_mid(benchmark, mid_model):
    """The theta-free Gram blocks Z'Z, Z'X, X'X, ... from 100k rows."""
    d = mid_model.design
    y = d.y - d.offset

    def assemble():
        return build_gram(mid_model.terms, mid_model.layout, d.x, y, d.weights)

    assemble()
    gram = benchmark(assemble)
    assert gram.n == MID["n_rows"]


def test_model_setup_mid(benchmark, mid_data):
    """Model construction: read the frame, build X, codes and the Gram blocks."""
    interlace_nb.LinearMixedModel(FORMULA, mid_data)
    model = benchmark(interlace_nb.LinearMixedModel, FORMULA, mid_data)
    assert model.nobs == MID["n_rows"]


def test_small_fit(benchmark):
    """A whole small fit: 5k rows, 100 subjects x 40 items."""
    data = simulate_crossed(5_000, 100, 40, seed=12)

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return interlace_nb.lmm(FORMULA, data)

    fit()
    model = benchmark(fit)
    assert model.n_evals > 0
