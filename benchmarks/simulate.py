"""Seeded simulators for unbalanced crossed designs (subjects x items).

Item popularity follows a Zipf law and subject activity a lognormal, so a few
items and subjects carry most rows, as in ratings or reaction-time data.
Every subject and every item appears at least once. All generation is
vectorised NumPy: a million rows take well under a second.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def _with_every_level(
    rng: np.random.Generator, n_rows: int, n_levels: int, probs: np.ndarray
) -> np.ndarray:
    """Level codes for ``n_rows`` rows: each level once, the rest drawn from ``probs``."""
    if n_rows < n_levels:
        raise ValueError(f"n_rows ({n_rows}) must be at least the number of levels ({n_levels})")
    drawn = rng.choice(n_levels, size=n_rows - n_levels, p=probs)
    return rng.permutation(np.concatenate([np.arange(n_levels), drawn]))


def _codes_column(name: str, codes: np.ndarray, n_levels: int, string_codes: bool) -> pl.Series:
    if not string_codes:
        return pl.Series(name, codes.astype(np.int32))
    width = len(str(n_levels - 1))
    labels = pl.Series(name, codes).cast(pl.String).str.zfill(width)
    return (name + labels).alias(name)


def simulate_crossed(
    n_rows: int,
    n_subjects: int,
    n_items: int,
    seed: int,
    *,
    zipf_exponent: float = 1.0,
    activity_sigma: float = 1.0,
    beta: tuple[float, float] = (1.0, 0.5),
    sd_subject: float = 0.8,
    sd_item: float = 0.5,
    sd_slope: float = 0.0,
    corr_slope: float = 0.3,
    sd_residual: float = 1.0,
    string_codes: bool = False,
    response: str = "gaussian",
) -> pl.DataFrame:
    """A crossed design with columns s, i, x, y.

    y = beta0 + beta1 x + a_s + c_i + (slope_s x) + e, with subject intercepts
    a_s ~ N(0, sd_subject^2), item intercepts c_i ~ N(0, sd_item^2), and, when
    ``sd_slope > 0``, subject slopes on x correlated ``corr_slope`` with the
    intercepts. Item i has popularity proportional to 1 / rank^zipf_exponent
    (ranks shuffled across item codes); subject activity is lognormal with
    log-sd ``activity_sigma``. ``string_codes`` gives labels like "s00042"
    instead of integer codes. ``response="bernoulli"`` draws y in {0, 1} with
    logit P(y = 1) equal to the linear predictor (no residual term).
    """
    if response not in ("gaussian", "bernoulli"):
        raise ValueError(f"response must be 'gaussian' or 'bernoulli', got {response!r}")
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** zipf_exponent
    popularity = rng.permutation(popularity / popularity.sum())
    activity = rng.lognormal(0.0, activity_sigma, size=n_subjects)
    activity /= activity.sum()
    subject = _with_every_level(rng, n_rows, n_subjects, activity)
    item = _with_every_level(rng, n_rows, n_items, popularity)

    x = rng.standard_normal(n_rows)
    cov = np.array(
        [
            [sd_subject**2, corr_slope * sd_subject * sd_slope],
            [corr_slope * sd_subject * sd_slope, sd_slope**2],
        ]
    )
    subject_effects = rng.multivariate_normal(np.zeros(2), cov, size=n_subjects)
    item_effects = rng.normal(0.0, sd_item, size=n_items)
    eta = (
        beta[0]
        + beta[1] * x
        + subject_effects[subject, 0]
        + subject_effects[subject, 1] * x
        + item_effects[item]
    )
    if response == "bernoulli":
        y = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)
    else:
        y = eta + rng.normal(0.0, sd_residual, size=n_rows)
    return pl.DataFrame(
        [
            _codes_column("s", subject, n_subjects, string_codes),
            _codes_column("i", item, n_items, string_codes),
            pl.Series("x", x),
            pl.Series("y", y),
        ]
    )
