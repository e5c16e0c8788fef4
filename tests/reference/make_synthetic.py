"""Seeded generators for the synthetic mixed-model test fixtures.

Usage (from the repo root)::

    python tests/reference/make_synthetic.py

Writes to ``tests/reference/data/``:

* ``synth_crossed_small.csv``  5,000 rows, 400 subjects x 150 items
* ``synth_crossed_large.csv``  60,000 rows, 3,000 subjects x 1,000 items
* ``synth_slopes.csv``         20,000 rows, 1,500 subjects x 300 items,
  correlated subject intercept + slope, item intercepts, plus columns
  ``w`` (weights), ``off`` (offset) and ``x_dup = 2 * x``
* ``synth_nested.csv``         8,000 rows, 80 schools x 5-15 classes each,
  class ids ``c1``..``c15`` reused across schools

Only numpy and the standard library are used.  Every dataset has its own
``numpy.random.default_rng(seed)`` so the files are reproducible
independently of each other.  Floats are written with 6 significant digits
(``x_dup`` is exactly ``2 * x`` of the *rounded* x, so it is written with
``repr`` to keep the exact collinearity in the decimal text).

Design notes
------------
* Subjects have lognormal "activity" (sdlog 1): row ownership is sampled with
  probability proportional to it, so subjects are unbalanced.
* Item popularity is Zipf-like: item of rank r is sampled with probability
  proportional to ``1 / r**1.1`` (rank order is randomly permuted relative to
  the item ids).
* Every subject and every item is guaranteed to occur at least once (one row
  per level is reserved, the remaining rows are sampled), so the number of
  levels in the fitted model equals the nominal number.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def sig6(v: float) -> str:
    """Format a float with 6 significant digits (shortest text for that)."""
    return repr(float(f"{v:.6g}"))


def round6(a: np.ndarray) -> np.ndarray:
    """Round an array to 6 significant digits (as floats)."""
    return np.array([float(f"{v:.6g}") for v in a])


def ids(prefix: str, n: int, width: int) -> np.ndarray:
    return np.array([f"{prefix}{i:0{width}d}" for i in range(1, n + 1)])


def sample_covering(rng: np.random.Generator, n_rows: int, n_levels: int,
                    p: np.ndarray) -> np.ndarray:
    """Level index per row: every level at least once, rest drawn with prob p."""
    if n_rows < n_levels:
        raise ValueError("need at least one row per level")
    rest = rng.choice(n_levels, size=n_rows - n_levels, replace=True, p=p)
    out = np.concatenate([np.arange(n_levels), rest])
    rng.shuffle(out)
    return out


def lognormal_activity(rng: np.random.Generator, n: int, sdlog: float = 1.0) -> np.ndarray:
    a = rng.lognormal(mean=0.0, sigma=sdlog, size=n)
    return a / a.sum()


def zipf_popularity(rng: np.random.Generator, n: int, s: float = 1.1) -> np.ndarray:
    ranks = rng.permutation(n) + 1          # item i has rank ranks[i]
    p = 1.0 / ranks.astype(float) ** s
    return p / p.sum()


def write_csv(path: Path, columns: dict[str, list[str] | np.ndarray]) -> None:
    names = list(columns)
    n = len(next(iter(columns.values())))
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(names)
        cols = [columns[k] for k in names]
        for i in range(n):
            w.writerow([c[i] for c in cols])
    print(f"wrote {path.name:26s} {n:7d} rows  {path.stat().st_size / 1e6:6.2f} MB")


# --------------------------------------------------------------------------
# generators
# --------------------------------------------------------------------------
def make_crossed(seed: int, n_rows: int, n_subj: int, n_item: int,
                 sd_subj: float = 0.8, sd_item: float = 0.5, sd_eps: float = 1.0):
    """y = 0.5 + 0.3 x + 0.2 [cond=='b'] + b_subj + b_item + eps."""
    rng = np.random.default_rng(seed)
    s_idx = sample_covering(rng, n_rows, n_subj, lognormal_activity(rng, n_subj))
    i_idx = sample_covering(rng, n_rows, n_item, zipf_popularity(rng, n_item))
    x = round6(rng.normal(0.0, 1.0, n_rows))
    cond_b = rng.random(n_rows) < 0.5
    b_subj = rng.normal(0.0, sd_subj, n_subj)
    b_item = rng.normal(0.0, sd_item, n_item)
    eps = rng.normal(0.0, sd_eps, n_rows)
    y = 0.5 + 0.3 * x + 0.2 * cond_b + b_subj[s_idx] + b_item[i_idx] + eps
    wd_s = max(4, len(str(n_subj)))
    wd_i = max(4, len(str(n_item)))
    return {
        "subject": ids("s", n_subj, wd_s)[s_idx],
        "item": ids("i", n_item, wd_i)[i_idx],
        "x": [sig6(v) for v in x],
        "cond": np.where(cond_b, "b", "a"),
        "y": [sig6(v) for v in y],
    }


def make_slopes(seed: int = 20240003, n_rows: int = 20_000, n_subj: int = 1_500,
                n_item: int = 300):
    """Correlated subject intercept + slope on x, item intercepts.

    y = 0.5 + 0.3 x + (b0_s + b1_s x) + c_i + eps / sqrt(w)
    (b0, b1) ~ N(0, [sd 0.7, sd 0.3, corr 0.4]);  c_i ~ N(0, 0.5^2);
    eps ~ N(0, 1).  The residual is scaled by 1/sqrt(w) so the weighted model
    (weights = w) is the correctly specified one.  ``off`` is pure noise
    (N(0, 0.3^2)) that is *not* part of y; it is only used as an offset term.
    """
    rng = np.random.default_rng(seed)
    s_idx = sample_covering(rng, n_rows, n_subj, lognormal_activity(rng, n_subj))
    i_idx = sample_covering(rng, n_rows, n_item, zipf_popularity(rng, n_item))
    x = round6(rng.normal(0.0, 1.0, n_rows))
    sd0, sd1, rho = 0.7, 0.3, 0.4
    cov = np.array([[sd0**2, rho * sd0 * sd1], [rho * sd0 * sd1, sd1**2]])
    b = rng.multivariate_normal([0.0, 0.0], cov, size=n_subj)
    c = rng.normal(0.0, 0.5, n_item)
    w = round6(rng.uniform(0.5, 2.0, n_rows))
    off = round6(rng.normal(0.0, 0.3, n_rows))
    eps = rng.normal(0.0, 1.0, n_rows) / np.sqrt(w)
    y = 0.5 + 0.3 * x + b[s_idx, 0] + b[s_idx, 1] * x + c[i_idx] + eps
    x_dup = 2.0 * x  # exact in binary floating point
    return {
        "subject": ids("s", n_subj, 4)[s_idx],
        "item": ids("i", n_item, 4)[i_idx],
        "x": [sig6(v) for v in x],
        "x_dup": [repr(float(v)) for v in x_dup],
        "w": [sig6(v) for v in w],
        "off": [sig6(v) for v in off],
        "y": [sig6(v) for v in y],
    }


def make_nested(seed: int = 20240004, n_rows: int = 8_000, n_school: int = 80):
    """Students in classes in schools; class ids c1..c15 reused across schools.

    y = 1 + 0.4 x + u_school + v_{school,class} + eps,
    u ~ N(0, 0.6^2), v ~ N(0, 0.4^2), eps ~ N(0, 1).
    Each school has 5..15 classes; each class gets >= 1 student, the other
    students are assigned to classes uniformly at random.
    """
    rng = np.random.default_rng(seed)
    n_class = rng.integers(5, 16, n_school)           # 5..15 inclusive
    school_of = np.repeat(np.arange(n_school), n_class)
    class_in_school = np.concatenate([np.arange(1, k + 1) for k in n_class])
    n_cls_total = len(school_of)
    cls_idx = sample_covering(rng, n_rows, n_cls_total,
                              np.full(n_cls_total, 1.0 / n_cls_total))
    u = rng.normal(0.0, 0.6, n_school)
    v = rng.normal(0.0, 0.4, n_cls_total)
    x = round6(rng.normal(0.0, 1.0, n_rows))
    eps = rng.normal(0.0, 1.0, n_rows)
    y = 1.0 + 0.4 * x + u[school_of[cls_idx]] + v[cls_idx] + eps
    # sort rows by school then class for readability (order does not matter)
    order = np.lexsort((class_in_school[cls_idx], school_of[cls_idx]))
    cls_idx, x, y = cls_idx[order], x[order], y[order]
    school_names = ids("sch", n_school, 2)
    return {
        "school": school_names[school_of[cls_idx]],
        "class": np.array([f"c{k}" for k in class_in_school[cls_idx]]),
        "x": [sig6(v_) for v_ in x],
        "y": [sig6(v_) for v_ in y],
    }


def main() -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    write_csv(DATA_DIR / "synth_crossed_small.csv",
              make_crossed(20240001, 5_000, 400, 150))
    write_csv(DATA_DIR / "synth_crossed_large.csv",
              make_crossed(20240002, 60_000, 3_000, 1_000))
    write_csv(DATA_DIR / "synth_slopes.csv", make_slopes())
    write_csv(DATA_DIR / "synth_nested.csv", make_nested())


if __name__ == "__main__":
    main()
