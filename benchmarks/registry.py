"""The benchmark problems: a data source, a formula and the criterion (REML or ML).

A problem's ``load()`` returns a Polars DataFrame; ``r_factors`` names the
columns R must turn into factors so that lme4 fits the same model. ``label``
is the problem's name in issue 3 (B1 to B5). Large simulated problems set
``cache``: their data are written once to benchmarks/data/ (git-ignored) and
read from there afterwards.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from .simulate import simulate_crossed, simulate_ratings

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "tests" / "reference" / "data"
CACHE_DIR = REPO_ROOT / "benchmarks" / "data"

#: R factors in InstEval.csv (as tests/conftest.py FACTOR_COLUMNS): read as strings.
INSTEVAL_FACTORS = ["s", "d", "studage", "lectage", "service", "dept"]


@dataclass(frozen=True)
class Problem:
    """One benchmark problem."""

    name: str
    source: Callable[..., pl.DataFrame]
    formula: str
    reml: bool = True
    args: dict[str, Any] = field(default_factory=dict)
    r_factors: tuple[str, ...] = ("s", "i")
    description: str = ""
    label: str = ""
    cache: bool = False
    #: "gaussian" for a linear mixed model (lmer); a GLM family name for glmer.
    family: str = "gaussian"
    nagq: int = 1

    @property
    def cache_path(self) -> Path:
        """Where a cached problem's data live: name plus a hash of source and args."""
        key = json.dumps([self.source.__name__, self.args], sort_keys=True)
        digest = hashlib.sha1(key.encode()).hexdigest()[:10]
        return CACHE_DIR / f"{self.name}_{digest}.parquet"

    def load(self) -> pl.DataFrame:
        """The problem's data (simulated with its seed, read from disk or from the cache)."""
        if not self.cache:
            return self.source(**self.args)
        path = self.cache_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            self.source(**self.args).write_parquet(partial)
            partial.rename(path)
        return pl.read_parquet(path)


def load_insteval(service_dummy: bool = False) -> pl.DataFrame:
    """InstEval with factor columns as strings; ``service_dummy`` makes service 0/1 float."""
    overrides = {name: pl.String for name in INSTEVAL_FACTORS}
    frame = pl.read_csv(DATA_DIR / "InstEval.csv", schema_overrides=overrides)
    if service_dummy:
        frame = frame.with_columns(pl.col("service").cast(pl.Float64))
    return frame


CROSSED_FORMULA = "y ~ x + (1|s) + (1|i)"
INSTEVAL_FACTOR_NAMES = ("s", "d", "studage", "lectage", "dept")
#: Ratings-like shape (MovieLens): >= 20 rows per user, lognormal activity, Zipf movies.
RATINGS_SHAPE = {"min_per_subject": 20, "activity_sigma": 1.2, "zipf_exponent": 1.0,
                 "max_share": 0.65}

PROBLEMS: dict[str, Problem] = {
    p.name: p
    for p in [
        Problem(
            "crossed_100k",
            simulate_crossed,
            CROSSED_FORMULA,
            args={"n_rows": 100_000, "n_subjects": 2_000, "n_items": 500, "seed": 1},
            description="100k rows, 2,000 subjects x 500 items (Zipf items, lognormal subjects)",
        ),
        Problem(
            "crossed_1m",
            simulate_crossed,
            CROSSED_FORMULA,
            args={"n_rows": 1_000_000, "n_subjects": 20_000, "n_items": 2_000, "seed": 2},
            description="1M rows, 20,000 subjects x 2,000 items",
            label="B2",
        ),
        Problem(
            "slopes_100k",
            simulate_crossed,
            "y ~ x + (1 + x|s) + (1|i)",
            args={
                "n_rows": 100_000, "n_subjects": 2_000, "n_items": 500, "seed": 3,
                "sd_slope": 0.3,
            },
            description="crossed_100k's design with correlated subject slopes",
        ),
        Problem(
            "insteval",
            load_insteval,
            "y ~ 1 + service + (1|s) + (1|d) + (1|dept)",
            r_factors=(*INSTEVAL_FACTOR_NAMES, "service"),
            description="lme4's InstEval: 73,421 rows, 2,972 students x 1,128 lecturers x 14 depts",
        ),
        Problem(
            "insteval_service",
            load_insteval,
            "y ~ 1 + service + (1|s) + (1|d) + (1|dept) + (0 + service|dept)",
            args={"service_dummy": True},
            r_factors=INSTEVAL_FACTOR_NAMES,
            description="InstEval plus a per-department service effect (service as 0/1 dummy)",
            label="B1",
        ),
        Problem(
            "bernoulli_100k",
            simulate_crossed,
            CROSSED_FORMULA,
            reml=False,
            args={"n_rows": 100_000, "n_subjects": 2_000, "n_items": 500, "seed": 11,
                  "response": "bernoulli"},
            description="crossed Bernoulli GLMM, Laplace: 100k rows, 2,000 x 500",
            family="binomial",
        ),
        Problem(
            "bernoulli_100k_fast",
            simulate_crossed,
            CROSSED_FORMULA,
            reml=False,
            args={"n_rows": 100_000, "n_subjects": 2_000, "n_items": 500, "seed": 11,
                  "response": "bernoulli"},
            description="the same, nAGQ = 0 (fast mode)",
            family="binomial",
            nagq=0,
        ),
        Problem(
            "bernoulli_1m",
            simulate_crossed,
            CROSSED_FORMULA,
            reml=False,
            args={"n_rows": 1_000_000, "n_subjects": 20_000, "n_items": 2_000, "seed": 12,
                  "response": "bernoulli"},
            description="crossed Bernoulli GLMM, Laplace: 1M rows, 20,000 x 2,000",
            family="binomial",
        ),
        Problem(
            "bernoulli_1m_fast",
            simulate_crossed,
            CROSSED_FORMULA,
            reml=False,
            args={"n_rows": 1_000_000, "n_subjects": 20_000, "n_items": 2_000, "seed": 12,
                  "response": "bernoulli"},
            description="the same, nAGQ = 0 (fast mode)",
            family="binomial",
            nagq=0,
        ),
        Problem(
            "movielens_1m",
            simulate_ratings,
            CROSSED_FORMULA,
            args={"n_rows": 1_000_209, "n_subjects": 6_040, "n_items": 3_706, "seed": 4,
                  **RATINGS_SHAPE},
            description="ml-1m-like: 1,000,209 ratings, 6,040 users (>= 20 each) x 3,706 movies",
            label="B3",
        ),
        Problem(
            "lexicon_2m",
            simulate_ratings,
            CROSSED_FORMULA,
            args={"n_rows": 2_750_000, "n_subjects": 814, "n_items": 81_000, "seed": 5,
                  "zipf_exponent": 0.0, "activity_sigma": 0.1},
            description="English-Lexicon-like: 2.75M trials, 814 subjects (~3,400 items each)"
            " x 81,000 items (~34 subjects each)",
            label="B4",
            cache=True,
        ),
        Problem(
            "movielens_27m",
            simulate_ratings,
            CROSSED_FORMULA,
            args={"n_rows": 27_000_000, "n_subjects": 94_000, "n_items": 16_000, "seed": 6,
                  **RATINGS_SHAPE},
            description="MovieLens-32M-subset-like: 27M ratings, 94,000 users x 16,000 movies",
            label="B5",
            cache=True,
        ),
    ]
}


def get_problems(names: str | None) -> list[Problem]:
    """Problems by comma-separated names (all when ``names`` is None)."""
    if not names:
        return list(PROBLEMS.values())
    chosen = []
    for name in (n.strip() for n in names.split(",")):
        if name not in PROBLEMS:
            raise SystemExit(f"unknown problem {name!r}; known: {', '.join(PROBLEMS)}")
        chosen.append(PROBLEMS[name])
    return chosen
