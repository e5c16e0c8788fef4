"""Tidy Polars result frames with fixed schemas, the lme4-style summary, prediction.

Schemas (promised; see docs/results.md):

- coef_table: term str, estimate f64, std_error f64, statistic f64, conf_low f64, conf_high f64
- varcorr: group str, term1 str, term2 str (null except correlations), vcov f64, sdcor f64
- ranef: group str, level str, term str, estimate f64, cond_sd f64
- fit_stats: one row (see ``fit_stats_frame``)
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import polars as pl

from .data import (
    DataError,
    as_lazy,
    column_names,
    formula_variables,
    formulaic_frame,
    missing_column_error,
)
from .kernels import effects

if TYPE_CHECKING:
    from .models.base import MixedModelBase
    from .terms import RandomTerm

COEF_SCHEMA = {
    "term": pl.String, "estimate": pl.Float64, "std_error": pl.Float64,
    "statistic": pl.Float64, "conf_low": pl.Float64, "conf_high": pl.Float64,
}
VARCORR_SCHEMA = {
    "group": pl.String, "term1": pl.String, "term2": pl.String,
    "vcov": pl.Float64, "sdcor": pl.Float64,
}
RANEF_SCHEMA = {
    "group": pl.String, "level": pl.String, "term": pl.String,
    "estimate": pl.Float64, "cond_sd": pl.Float64,
}


def coef_table(
    names: tuple[str, ...],
    estimate: np.ndarray,
    std_error: np.ndarray,
    level: float,
    statistic_name: str = "t value",
) -> pl.DataFrame:
    """Wald table of the fixed effects; GLMMs (z statistics) add two-sided p-values."""
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    statistic = estimate / std_error
    columns = {
        "term": list(names),
        "estimate": estimate,
        "std_error": std_error,
        "statistic": statistic,
        "conf_low": estimate - z * std_error,
        "conf_high": estimate + z * std_error,
    }
    schema = dict(COEF_SCHEMA)
    if statistic_name == "z value":
        columns["p_value"] = wald_p_values(statistic)
        schema["p_value"] = pl.Float64
    return pl.DataFrame(columns, schema=schema)


def wald_p_values(statistic: np.ndarray) -> np.ndarray:
    """Two-sided normal p-values, 2 * (1 - Phi(|z|)), accurate in the far tail."""
    return np.array([math.erfc(abs(value) / math.sqrt(2.0)) for value in statistic])


def varcorr_frame(
    terms: list[RandomTerm], covariances: list[np.ndarray], residual_variance: float | None
) -> pl.DataFrame:
    """Standard deviations then correlations per term, then the residual row."""
    rows = []
    for term, cov in zip(terms, covariances, strict=True):
        sd = np.sqrt(np.diag(cov))
        for i, name in enumerate(term.column_names):
            rows.append((term.group, name, None, cov[i, i], sd[i]))
        for j in range(term.size):
            for i in range(j + 1, term.size):
                denom = sd[i] * sd[j]
                corr = cov[i, j] / denom if denom > 0 else np.nan
                rows.append(
                    (term.group, term.column_names[j], term.column_names[i], cov[i, j], corr)
                )
    if residual_variance is not None:
        rows.append(("Residual", None, None, residual_variance, np.sqrt(residual_variance)))
    return pl.DataFrame(rows, schema=VARCORR_SCHEMA, orient="row")


def ranef_frame(
    terms: list[RandomTerm], modes: list[np.ndarray], variances: list[np.ndarray] | None
) -> pl.DataFrame:
    """Conditional modes (and conditional SDs) in long form, term by term."""
    parts = []
    for k, (term, block) in enumerate(zip(terms, modes, strict=True)):
        for r, name in enumerate(term.column_names):
            cond_sd = (
                np.sqrt(np.maximum(variances[k][:, r, r], 0.0))
                if variances is not None
                else None
            )
            parts.append(
                pl.DataFrame(
                    {
                        "group": [term.group] * term.n_levels,
                        "level": list(term.levels),
                        "term": [name] * term.n_levels,
                        "estimate": block[:, r],
                        "cond_sd": cond_sd if cond_sd is not None else [None] * term.n_levels,
                    },
                    schema=RANEF_SCHEMA,
                )
            )
    return pl.concat(parts)


def fit_stats_frame(model: MixedModelBase) -> pl.DataFrame:
    """nobs, ngroups (struct per factor), criteria, sigma, convergence, timing."""
    return pl.DataFrame(
        {
            "nobs": [model.nobs],
            "ngroups": [model.ngroups],
            "reml_criterion": [model.reml_criterion],
            "deviance": [model.deviance],
            "loglik": [model.loglik()],
            "aic": [model.aic],
            "bic": [model.bic],
            "sigma": [model.sigma],
            "converged": [model.converged],
            "singular": [model.singular],
            "n_evals": [model.n_evals],
            "factorization": [model.predictor.factorization],
            "fit_seconds": [model.fit_seconds],
        },
        schema_overrides={"reml_criterion": pl.Float64, "n_evals": pl.Int64},
    )


def _format_table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Right-align columns (the first ``left`` columns left-aligned), like R's print."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            str(cell).ljust(w) if i < left else str(cell).rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append(" " + " ".join(cells).rstrip())
    return lines


def _sig(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if np.isfinite(value) else "NA"


def criteria_table(model: MixedModelBase) -> list[str]:
    """The AIC / BIC / logLik / deviance / df.resid line of lme4's summary."""
    return _format_table(
        ["AIC", "BIC", "logLik", "deviance", "df.resid"],
        [[f"{model.aic:.4f}", f"{model.bic:.4f}", f"{model.loglik():.4f}",
          f"{model.deviance:.4f}", str(model.nobs - model.df_model)]],
        left=0,
    )


def summary_text(model: MixedModelBase) -> str:
    """The fit laid out like lme4's summary(merMod)."""
    lines = model.summary_header()
    quantiles = model.scaled_residual_quantiles()
    lines += ["", "Scaled residuals:"]
    lines += _format_table(
        ["Min", "1Q", "Median", "3Q", "Max"], [[f"{v:.4f}" for v in quantiles]], left=0
    )
    lines += ["", "Random effects:"]
    rows = []
    last_group = None
    for term, cov in zip(model.terms, model.relative_covariances(), strict=True):
        cov = cov * model.scale
        sd = np.sqrt(np.diag(cov))
        for i, name in enumerate(term.column_names):
            corr = []
            for j in range(i):
                denom = sd[i] * sd[j]
                corr.append(f"{cov[i, j] / denom:.2f}" if denom > 0 else "NaN")
            group = term.group if term.group != last_group or i == 0 else ""
            rows.append([group, name, _sig(cov[i, i]), _sig(sd[i]), " ".join(corr)])
            last_group = term.group
    if model.residual_variance is not None:
        rows.append(["Residual", "", _sig(model.scale), _sig(model.sigma), ""])
    lines += _format_table(["Groups", "Name", "Variance", "Std.Dev.", "Corr"], rows, left=2)
    lines.append(
        f"Number of obs: {model.nobs}, groups:  "
        + "; ".join(f"{g}, {n}" for g, n in model.ngroups.items())
    )
    if model.na_message:
        lines.append(f"({model.na_message})")
    lines += ["", "Fixed effects:"]
    se = model.bse.to_numpy()
    coef_rows = [
        [name, f"{b:.6g}", f"{s:.6g}", f"{b / s:.3f}"]
        for name, b, s in zip(model.design.x_names, model.beta, se, strict=True)
    ]
    header = ["", "Estimate", "Std. Error", model.statistic_name]
    if model.statistic_name == "z value":
        header.append("Pr(>|z|)")
        for row, p in zip(coef_rows, wald_p_values(model.beta / se), strict=True):
            row.append(f"{p:.3g}" if p >= 2e-16 else "<2e-16")
    lines += _format_table(header, coef_rows)
    if 1 < len(se) <= 12:
        lines += ["", "Correlation of Fixed Effects:"]
        corr = model.vcov() / np.outer(se, se)
        short = [name[:6] for name in model.design.x_names]
        corr_rows = [
            [short[i]] + [f"{corr[i, j]:.3f}" if j < i else "" for j in range(len(se) - 1)]
            for i in range(1, len(se))
        ]
        lines += _format_table(["", *short[:-1]], corr_rows)
    if model.design.dropped_x_names:
        lines.append(
            "fixed-effect model matrix is rank deficient; dropped: "
            + ", ".join(model.design.dropped_x_names)
        )
    if model.singular:
        lines += ["", "boundary (singular) fit: see fit_stats() and varcorr()"]
    for message in model.convergence_messages:
        lines += ["", f"convergence: {message}"]
    return "\n".join(lines)


def _new_model_matrix(spec: object, frame: pd.DataFrame, role: str) -> np.ndarray:
    """Encode new rows with a fitted formulaic spec; failures name the term."""
    try:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            matrix = np.asarray(spec.get_model_matrix(frame, na_action="ignore"), dtype=float)
    except Exception as exc:  # formulaic raises several types (unseen factor levels, ...)
        raise DataError(
            f"newdata could not be encoded for the {role} ({type(exc).__name__}: {exc}); "
            "factor columns must use levels seen in the fit"
        ) from exc
    if not np.isfinite(matrix).all():
        raise DataError(f"newdata gives NaN or infinite values in the {role}")
    return np.ascontiguousarray(matrix)


def predict_new(
    model: MixedModelBase, newdata: object, include_re: bool, allow_new_levels: bool
) -> np.ndarray:
    """Predict for new rows, encoding them with the fit's formulaic specs."""
    design = model.design
    available = column_names(newdata)
    needed: dict[str, str] = {}
    for name in formula_variables(design.parsed.fixed_rhs, available):
        needed.setdefault(name, "fixed-effects")
    if include_re:
        for term in model.terms:
            for name in formula_variables(term.lhs, available):
                needed.setdefault(name, f"random-effects term ({term.lhs} | {term.group})")
            for name in term.factors:
                needed.setdefault(name, f"grouping factor {term.group!r}")
    if design.has_offset:
        if model.offset_column is None:
            raise DataError(
                "the model was fitted with an offset array; predict(newdata) needs it as a "
                "column: refit with offset='column_name' and include that column in newdata"
            )
        needed.setdefault(model.offset_column, "offset")
    for name, role in needed.items():
        if name not in available:
            raise missing_column_error(name, available, role)
    frame = as_lazy(newdata, list(needed)).select(list(needed)).collect()
    missing = [
        name
        for name, dtype in frame.schema.items()
        if frame.get_column(name).null_count()
        or (dtype.is_float() and frame.get_column(name).is_nan().any())
    ]
    if missing:
        raise DataError(
            f"newdata has missing values in {', '.join(repr(m) for m in missing)}; "
            "drop or fill those rows before predicting"
        )
    pandas_frame = formulaic_frame(frame)
    x_new = _new_model_matrix(design.fixed_spec, pandas_frame, "fixed effects")
    x_full_names = list(design.fixed_spec.column_names)
    keep = [x_full_names.index(name) for name in design.x_names]
    eta = x_new[:, keep] @ model.beta
    if design.has_offset:
        eta = eta + frame.get_column(model.offset_column).cast(pl.Float64).to_numpy()
    if not include_re:
        return eta
    for term, block in zip(model.terms, model.random_effect_blocks(), strict=True):
        role = f"term ({term.lhs} | {term.group})"
        z_new = _new_model_matrix(term.model_spec, pandas_frame, role)
        labels = frame.select(
            pl.concat_str([pl.col(n).cast(pl.String) for n in term.factors], separator=":")
        ).to_series()
        lookup = {level: code for code, level in enumerate(term.levels)}
        codes = np.array([lookup.get(label, -1) for label in labels.to_list()], dtype=np.int64)
        if not allow_new_levels and (codes < 0).any():
            unseen = sorted({lab for lab, c in zip(labels.to_list(), codes, strict=True) if c < 0})
            raise DataError(
                f"newdata has levels of {term.group!r} not seen in the fit: {unseen[:5]}; "
                "pass allow_new_levels=True to predict them with zero random effects"
            )
        effects.add_random_effects(codes, z_new, np.ascontiguousarray(block), eta)
    return eta
