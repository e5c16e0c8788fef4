"""The entry points users call: lmm (alias lmer), glmm (alias glmer), the seed-style fit."""

from __future__ import annotations

from collections.abc import Sequence

from .data import column_names, missing_column_error
from .models import GeneralizedLinearMixedModel, LinearMixedModel
from .response import Family


def lmm(
    formula: str,
    data: object,
    *,
    reml: bool = True,
    weights: object = None,
    offset: object = None,
    na_action: str = "omit",
    start: object = None,
    check_convergence: bool = True,
    factorization: str = "auto",
    streaming: bool = False,
    batch_size: int | None = None,
    optimizer: str = "auto",
) -> LinearMixedModel:
    """Fit a linear mixed model written in lme4's syntax; returns the fitted model.

    ``data`` is a Polars DataFrame or LazyFrame (pandas is converted).
    ``weights`` and ``offset`` are column names or arrays with one value per
    row. ``na_action="omit"`` drops incomplete rows (lme4's default);
    ``"fail"`` raises instead. ``factorization`` picks the engine: "blocked"
    (first term block diagonal, dense Schur block for the rest; the default
    when that block is small), "cholmod" (general sparse), or "auto".

    ``streaming=True`` reads a LazyFrame (e.g. ``pl.scan_parquet(path)``) in
    batches of ``batch_size`` rows (default 250,000) with Polars' streaming
    engine, so the rows are never all in memory: one pass for the levels,
    one for the Gram blocks. The fit is the same; ``resid``,
    ``fittedvalues`` and ``fitted_batches()`` read the data again. Weights
    and offset must then be column names, and transforms that need all rows
    (``scale()``, ``center()``, ``poly()``, splines) are refused.

    ``optimizer`` is "ai_newton" (Newton steps on the average-information
    matrix with the exact gradient of the criterion, then one on the
    convergence check's Hessian: about a fifth of lme4's evaluations, the
    check's included; where a gradient is expensive, with differences of
    values instead), "lbfgsb" (L-BFGS-B with the exact gradient),
    "bobyqa" (lme4's optimiser and stopping rule: lme4's evaluations),
    "bobyqa_newton" (BOBYQA loosely, then Newton steps) or "auto" (the
    default; LinearMixedModel.fit says which it takes when).
    """
    model = LinearMixedModel(
        formula, data, reml=reml, weights=weights, offset=offset, na_action=na_action,
        factorization=factorization, streaming=streaming, batch_size=batch_size,
    )
    return model.fit(
        start=start, check_convergence=check_convergence, optimizer=optimizer, _stacklevel=3
    )


lmer = lmm


def glmm(
    formula: str,
    data: object,
    *,
    family: str | Family = "binomial",
    link: str | None = None,
    nAGQ: int = 1,  # noqa: N803 (lme4's name)
    weights: object = None,
    offset: object = None,
    na_action: str = "omit",
    start: dict | None = None,
    check_convergence: bool = True,
    factorization: str = "auto",
) -> GeneralizedLinearMixedModel:
    """Fit a generalized linear mixed model written in lme4's syntax (as glmer).

    ``family`` is "binomial", "poisson", "Gamma", "inverse.gaussian" or
    "gaussian"; ``link`` defaults to the family's canonical link. A binomial
    response is 0/1, a two-level factor, a proportion with the numbers of
    trials as ``weights``, or ``cbind(successes, failures)``. ``nAGQ=1``
    (default) is the Laplace approximation; ``nAGQ=0`` the fast mode (fixed
    effects estimated inside PIRLS); ``nAGQ>1`` adaptive Gauss-Hermite
    quadrature for a single scalar random-effects term.
    """
    model = GeneralizedLinearMixedModel(
        formula, data, family=family, link=link, nAGQ=nAGQ, weights=weights, offset=offset,
        na_action=na_action, factorization=factorization,
    )
    return model.fit(start=start, check_convergence=check_convergence, _stacklevel=3)


glmer = glmm


def fit(
    formula: str, data: object, *, groups: Sequence[str] | str, **kwargs: object
) -> LinearMixedModel:
    """Random intercepts for each factor in ``groups``.

    ``fit("rt ~ cond", df, groups=["s", "i"])`` is ``lmm("rt ~ cond + (1 | s) + (1 | i)", df)``.
    """
    if isinstance(groups, str):
        groups = [groups]
    if not groups:
        raise ValueError("groups must name at least one grouping column")
    names = column_names(data)
    for name in groups:
        if name not in names:
            raise missing_column_error(name, names, "grouping factor")
    bars = " + ".join(f"(1 | {name})" for name in groups)
    return lmm(f"{formula} + {bars}", data, **kwargs)  # type: ignore[arg-type]
