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


def _rows_per_subject(
    rng: np.random.Generator, n_rows: int, n_subjects: int, cap: int, min_rows: int, sigma: float
) -> np.ndarray:
    """``min_rows`` each, the rest multinomial by lognormal activity; none above ``cap``."""
    if not n_subjects * min_rows <= n_rows <= n_subjects * cap:
        raise ValueError("n_rows cannot be split between subjects within min_rows and cap")
    activity = rng.lognormal(0.0, sigma, size=n_subjects)
    counts = min_rows + rng.multinomial(n_rows - n_subjects * min_rows, activity / activity.sum())
    while (excess := int(np.maximum(counts - cap, 0).sum())) > 0:
        counts = np.minimum(counts, cap)
        room = activity * (counts < cap)
        counts = counts + rng.multinomial(excess, room / room.sum())
    return counts


def _distinct_items(
    rng: np.random.Generator, counts: np.ndarray, popularity: np.ndarray, chunk_cells: int
) -> np.ndarray:
    """For subject s, ``counts[s]`` distinct items drawn by ``popularity`` without replacement.

    Gumbel top-k (log weight plus Gumbel noise, keep the k largest) is exact
    successive sampling; subjects are processed in chunks of about
    ``chunk_cells`` subject x item cells. Rows come out grouped by subject.
    """
    n_items = len(popularity)
    log_weight = np.log(popularity)
    out = np.empty(int(counts.sum()), dtype=np.int32)
    step = max(1, chunk_cells // n_items)
    pos = 0
    for lo in range(0, len(counts), step):
        keys = log_weight + rng.gumbel(size=(min(step, len(counts) - lo), n_items))
        for row, k in enumerate(counts[lo : lo + step]):
            out[pos : pos + k] = np.argpartition(keys[row], n_items - k)[n_items - k :]
            pos += k
    return out


def simulate_ratings(
    n_rows: int,
    n_subjects: int,
    n_items: int,
    seed: int,
    *,
    zipf_exponent: float = 1.0,
    activity_sigma: float = 1.0,
    min_per_subject: int = 1,
    max_share: float = 0.5,
    beta: tuple[float, float] = (3.5, 0.2),
    sd_subject: float = 0.4,
    sd_item: float = 0.5,
    sd_residual: float = 0.9,
) -> pl.DataFrame:
    """A ratings-like crossed design (columns s, i, x, y): each (s, i) pair at most once.

    Subject s gets ``min_per_subject`` rows plus a lognormal share of the rest
    (log-sd ``activity_sigma``), at most ``max_share`` of the items; its items
    are drawn without replacement by Zipf popularity 1 / rank^zipf_exponent
    (ranks shuffled across item codes; exponent 0 gives uniform items).
    y = beta0 + beta1 x + a_s + c_i + e with normal effects, as in
    ``simulate_crossed``. Raises if some item ends up with no rows.
    """
    rng = np.random.default_rng(seed)
    cap = max(min_per_subject, int(max_share * n_items))
    counts = _rows_per_subject(rng, n_rows, n_subjects, cap, min_per_subject, activity_sigma)
    popularity = 1.0 / np.arange(1, n_items + 1) ** zipf_exponent
    popularity = rng.permutation(popularity / popularity.sum())
    item = _distinct_items(rng, counts, popularity, chunk_cells=20_000_000)
    if np.bincount(item, minlength=n_items).min() == 0:
        raise ValueError("some item has no rows: use more rows or a smaller zipf_exponent")
    subject = np.repeat(np.arange(n_subjects, dtype=np.int32), counts)
    x = rng.standard_normal(n_rows)
    y = beta[0] + beta[1] * x
    y += rng.normal(0.0, sd_subject, size=n_subjects)[subject]
    y += rng.normal(0.0, sd_item, size=n_items)[item]
    y += rng.normal(0.0, sd_residual, size=n_rows)
    return pl.DataFrame([pl.Series("s", subject), pl.Series("i", item), pl.Series("x", x),
                         pl.Series("y", y)])
