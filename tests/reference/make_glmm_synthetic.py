"""Seeded generators for the synthetic GLMM test fixtures.

Usage (from the repo root)::

    python tests/reference/make_glmm_synthetic.py

Writes to ``tests/reference/data/``:

* ``glmm_bernoulli_crossed.csv``  6,000 rows, 300 subjects x 80 items,
  0/1 response, logit link
* ``glmm_gamma_crossed.csv``      3,000 rows, 150 subjects x 40 items,
  positive response, Gamma with log link
* ``glmm_poisson_offset.csv``     4,000 rows, 200 subjects x 50 items,
  counts with an exposure (``log_t`` is the offset column)
* ``glmm_probit_crossed.csv``     3,000 rows, 150 subjects x 40 items,
  0/1 response, probit link
* ``glmm_gaussian_log.csv``       2,000 rows, 100 subjects x 30 items,
  normal response, log link
* ``glmm_inverse_gaussian.csv``   2,000 rows, 100 subjects x 30 items,
  inverse Gaussian response, log link

Only numpy and the standard library are used.  Every dataset has its own
``numpy.random.default_rng(seed)``, so the files are reproducible
independently of each other.  Covariates are rounded to 6 significant digits
*before* the response is simulated, and the CSV holds exactly the rounded
values.  Integer responses are written as integers.

Design (same as ``make_synthetic.py``): subjects have lognormal activity
(sdlog 1), items Zipf-like popularity (probability proportional to
1 / rank**1.1), and every subject and every item occurs at least once.
The helpers are copied from ``make_synthetic.py`` rather than imported, so a
change there cannot alter these files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_synthetic import (  # noqa: E402  (the LMM generator's helpers, shared)
    DATA_DIR,
    ids,
    lognormal_activity,
    round6,
    sample_covering,
    sig6,
    write_csv,
    zipf_popularity,
)


def crossed_design(rng: np.random.Generator, n_rows: int, n_subj: int, n_item: int):
    s_idx = sample_covering(rng, n_rows, n_subj, lognormal_activity(rng, n_subj))
    i_idx = sample_covering(rng, n_rows, n_item, zipf_popularity(rng, n_item))
    return s_idx, i_idx


def logistic(eta: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-eta))


# --------------------------------------------------------------------------
# generators
# --------------------------------------------------------------------------
def make_bernoulli(seed: int = 20240101, n_rows: int = 6_000, n_subj: int = 300,
                   n_item: int = 80):
    """Crossed Bernoulli, logit link.

    eta = -0.3 + 0.8 x + b_subj + c_item,  b ~ N(0, 1.0^2), c ~ N(0, 0.6^2),
    x ~ N(0, 1);  y ~ Bernoulli(logistic(eta)), written as 0/1.
    """
    rng = np.random.default_rng(seed)
    s_idx, i_idx = crossed_design(rng, n_rows, n_subj, n_item)
    x = round6(rng.normal(0.0, 1.0, n_rows))
    b = rng.normal(0.0, 1.0, n_subj)
    c = rng.normal(0.0, 0.6, n_item)
    eta = -0.3 + 0.8 * x + b[s_idx] + c[i_idx]
    y = (rng.random(n_rows) < logistic(eta)).astype(int)
    return {
        "subject": ids("s", n_subj, 4)[s_idx],
        "item": ids("i", n_item, 4)[i_idx],
        "x": [sig6(v) for v in x],
        "y": y,
    }


def make_gamma(seed: int = 20240102, n_rows: int = 3_000, n_subj: int = 150,
               n_item: int = 40):
    """Crossed Gamma, log link.

    mu = exp(1.0 + 0.4 x + b_subj + c_item),  b ~ N(0, 0.5^2), c ~ N(0, 0.3^2),
    x ~ N(0, 1);  y ~ Gamma(shape 4, scale mu / 4)  (so CV = 0.5, i.e. the
    dispersion sigma^2 = 1 / shape = 0.25).  y is written with 6 significant
    digits (always > 0).
    """
    rng = np.random.default_rng(seed)
    s_idx, i_idx = crossed_design(rng, n_rows, n_subj, n_item)
    x = round6(rng.normal(0.0, 1.0, n_rows))
    b = rng.normal(0.0, 0.5, n_subj)
    c = rng.normal(0.0, 0.3, n_item)
    mu = np.exp(1.0 + 0.4 * x + b[s_idx] + c[i_idx])
    shape = 4.0
    y = rng.gamma(shape, mu / shape)
    y = round6(y)
    assert np.all(y > 0)
    return {
        "subject": ids("s", n_subj, 4)[s_idx],
        "item": ids("i", n_item, 4)[i_idx],
        "x": [sig6(v) for v in x],
        "y": [repr(float(v)) for v in y],
    }


def make_poisson_offset(seed: int = 20240103, n_rows: int = 4_000, n_subj: int = 200,
                        n_item: int = 50):
    """Crossed Poisson with exposure.

    t ~ Uniform(0.5, 5) (6 significant digits), log_t = log(t) (6 significant
    digits, the offset column), mu = exp(log_t - 0.5 + 0.3 x + b_subj + c_item),
    b ~ N(0, 0.5^2), c ~ N(0, 0.4^2), x ~ N(0, 1);  y ~ Poisson(mu).
    """
    rng = np.random.default_rng(seed)
    s_idx, i_idx = crossed_design(rng, n_rows, n_subj, n_item)
    x = round6(rng.normal(0.0, 1.0, n_rows))
    t = round6(rng.uniform(0.5, 5.0, n_rows))
    log_t = round6(np.log(t))
    b = rng.normal(0.0, 0.5, n_subj)
    c = rng.normal(0.0, 0.4, n_item)
    mu = np.exp(log_t - 0.5 + 0.3 * x + b[s_idx] + c[i_idx])
    y = rng.poisson(mu)
    return {
        "subject": ids("s", n_subj, 4)[s_idx],
        "item": ids("i", n_item, 4)[i_idx],
        "x": [sig6(v) for v in x],
        "t": [sig6(v) for v in t],
        "log_t": [sig6(v) for v in log_t],
        "y": y,
    }


def make_probit(seed: int = 20240104, n_rows: int = 3_000, n_subj: int = 150,
                n_item: int = 40):
    """Crossed Bernoulli, probit link (latent-variable form, exact probit).

    eta = 0.2 + 0.5 x + b_subj + c_item,  b ~ N(0, 0.7^2), c ~ N(0, 0.4^2),
    x ~ N(0, 1);  y = 1[eta + e > 0] with e ~ N(0, 1), i.e. P(y=1) = Phi(eta).
    """
    rng = np.random.default_rng(seed)
    s_idx, i_idx = crossed_design(rng, n_rows, n_subj, n_item)
    x = round6(rng.normal(0.0, 1.0, n_rows))
    b = rng.normal(0.0, 0.7, n_subj)
    c = rng.normal(0.0, 0.4, n_item)
    eta = 0.2 + 0.5 * x + b[s_idx] + c[i_idx]
    y = (eta + rng.normal(0.0, 1.0, n_rows) > 0).astype(int)
    return {
        "subject": ids("s", n_subj, 4)[s_idx],
        "item": ids("i", n_item, 4)[i_idx],
        "x": [sig6(v) for v in x],
        "y": y,
    }


def make_gaussian_log(seed: int = 20240105, n_rows: int = 2_000, n_subj: int = 100,
                      n_item: int = 30):
    """Crossed Gaussian with a log link.

    mu = exp(1.0 + 0.5 x + b_subj + c_item),  b ~ N(0, 0.3^2), c ~ N(0, 0.2^2),
    x ~ Uniform(-1, 1);  y ~ N(mu, 0.2^2), 6 significant digits.
    """
    rng = np.random.default_rng(seed)
    s_idx, i_idx = crossed_design(rng, n_rows, n_subj, n_item)
    x = round6(rng.uniform(-1.0, 1.0, n_rows))
    b = rng.normal(0.0, 0.3, n_subj)
    c = rng.normal(0.0, 0.2, n_item)
    mu = np.exp(1.0 + 0.5 * x + b[s_idx] + c[i_idx])
    y = round6(mu + rng.normal(0.0, 0.2, n_rows))
    return {
        "subject": ids("s", n_subj, 4)[s_idx],
        "item": ids("i", n_item, 4)[i_idx],
        "x": [sig6(v) for v in x],
        "y": [repr(float(v)) for v in y],
    }


def make_inverse_gaussian(seed: int = 20240106, n_rows: int = 2_000, n_subj: int = 100,
                          n_item: int = 30):
    """Crossed inverse Gaussian, log link.

    mu = exp(0.5 + 0.3 x + b_subj + c_item),  b ~ N(0, 0.3^2), c ~ N(0, 0.2^2),
    x ~ N(0, 1);  y ~ InverseGaussian(mu, shape 20) (numpy's wald), so the
    dispersion is 1/20. 6 significant digits.
    """
    rng = np.random.default_rng(seed)
    s_idx, i_idx = crossed_design(rng, n_rows, n_subj, n_item)
    x = round6(rng.normal(0.0, 1.0, n_rows))
    b = rng.normal(0.0, 0.3, n_subj)
    c = rng.normal(0.0, 0.2, n_item)
    mu = np.exp(0.5 + 0.3 * x + b[s_idx] + c[i_idx])
    y = round6(rng.wald(mu, 20.0))
    assert np.all(y > 0)
    return {
        "subject": ids("s", n_subj, 4)[s_idx],
        "item": ids("i", n_item, 4)[i_idx],
        "x": [sig6(v) for v in x],
        "y": [repr(float(v)) for v in y],
    }


def main() -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    write_csv(DATA_DIR / "glmm_bernoulli_crossed.csv", make_bernoulli())
    write_csv(DATA_DIR / "glmm_gamma_crossed.csv", make_gamma())
    write_csv(DATA_DIR / "glmm_poisson_offset.csv", make_poisson_offset())
    write_csv(DATA_DIR / "glmm_probit_crossed.csv", make_probit())
    write_csv(DATA_DIR / "glmm_gaussian_log.csv", make_gaussian_log())
    write_csv(DATA_DIR / "glmm_inverse_gaussian.csv", make_inverse_gaussian())


if __name__ == "__main__":
    main()
