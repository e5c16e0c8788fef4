"""What linear and generalized mixed models share: estimates, tidy frames, random effects.

A subclass owns the fit. It provides ``design``, ``terms``, ``layout``,
``theta_lower``, ``_theta_hat``, ``convergence_messages``, and the hooks
below (``beta``, ``vcov``, ``scale``, ``spherical_modes``, ...).
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

import numpy as np
import pandas as pd
import polars as pl

from .. import results
from ..design import Design
from ..kernels import effects
from ..predictor import Layout, Predictor
from ..terms import RandomTerm

#: lme4's isSingular tolerance on theta entries with a lower bound of zero.
SINGULAR_TOLERANCE = 1e-4


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a model is built or fitted.

    Once Numba has loaded the kernels about 200,000 long-lived objects are
    tracked, and a full collection, which formula parsing and the optimiser's
    Python side trigger now and then, takes about 0.16 s (InstEval's setup:
    0.42 s against 0.14 s without one). The work frees its objects by reference
    counting; a cycle it leaves is collected once the collector is back on.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class ConvergenceWarning(UserWarning):
    """The optimiser stopped, but lme4's checks doubt the optimum."""


class SingularFitWarning(UserWarning):
    """A variance is estimated as zero or a correlation as +-1 (boundary fit)."""


class MixedModelBase:
    """Results common to every mixed model fitted on the predictor."""

    design: Design
    terms: list[RandomTerm]
    layout: Layout
    predictor: Predictor
    theta_lower: np.ndarray
    _theta_hat: np.ndarray
    convergence_messages: list[str]
    #: Column name of the Wald statistic in coef_table and the summary.
    statistic_name = "t value"

    # ------------------------------------------------------------------ hooks
    @property
    def is_fitted(self) -> bool:
        raise NotImplementedError

    @property
    def beta(self) -> np.ndarray:
        raise NotImplementedError

    def vcov(self) -> np.ndarray:
        raise NotImplementedError

    @property
    def scale(self) -> float:
        """The factor that turns relative covariances into covariances (sigma^2)."""
        raise NotImplementedError

    @property
    def residual_variance(self) -> float | None:
        """The Residual row of varcorr (None where the family has no dispersion)."""
        return self.scale

    @property
    def spherical_modes(self) -> np.ndarray:
        """The conditional modes u of the spherical random effects (b = Lambda u)."""
        raise NotImplementedError

    def _predictor_at_optimum(self) -> Predictor:
        raise NotImplementedError

    def loglik(self) -> float:
        raise NotImplementedError

    @property
    def df_model(self) -> int:
        raise NotImplementedError

    def scaled_residuals(self) -> np.ndarray:
        """The residuals lme4's summary shows quantiles of."""
        raise NotImplementedError

    def scaled_residual_quantiles(self) -> np.ndarray:
        """Min, quartiles and max of ``scaled_residuals()`` (the summary's line)."""
        return np.quantile(self.scaled_residuals(), [0.0, 0.25, 0.5, 0.75, 1.0])

    def _warn_if_singular(self, stacklevel: int) -> None:
        """lme4's boundary (singular) fit message as a SingularFitWarning, if it is one."""
        if self.singular:
            warnings.warn(
                "boundary (singular) fit: a variance is estimated as zero or a correlation as "
                "+-1; see fit_stats()['singular'] and varcorr()",
                SingularFitWarning,
                stacklevel=stacklevel + 1,
            )

    def _report_design(self) -> str:
        """Warn about dropped rank-deficient columns; the summary's note on missing rows."""
        d = self.design
        if d.dropped_x_names:
            warnings.warn(
                "fixed-effect model matrix is rank deficient so dropping "
                f"{len(d.dropped_x_names)} column(s): {', '.join(d.dropped_x_names)}",
                stacklevel=4,
            )
        if not d.n_dropped:
            return ""
        return f"{d.n_dropped} of {d.n_input_rows} rows dropped for missing values"

    def _weights_offset_lines(self) -> list[str]:
        """The summary's lines about prior weights and an offset, then a blank line."""
        lines = ["Weights: prior weights"] if self.design.has_weights else []
        if self.design.has_offset:
            lines.append("Offset: yes")
        return [*lines, ""]

    def _require_fit(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("the model is not fitted yet; call fit()")

    # -------------------------------------------------------------- estimates
    @property
    def nobs(self) -> int:
        return self.predictor.gram.n

    @property
    def theta(self) -> np.ndarray:
        """Relative covariance factor entries (lme4's getME(m, 'theta'))."""
        self._require_fit()
        return self._theta_hat.copy()

    @property
    def converged(self) -> bool:
        return self.is_fitted and not self.convergence_messages

    @property
    def singular(self) -> bool:
        """lme4's isSingular: a diagonal theta entry within 1e-4 of zero."""
        bounded = self.theta_lower == 0.0
        return bool((self._theta_hat[bounded] < SINGULAR_TOLERANCE).any())

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels per grouping factor (terms sharing a factor counted once)."""
        return {term.group: term.n_levels for term in self.terms}


    @property
    def n_fixed(self) -> int:
        return len(self.design.x_names)


    @property
    def fe_params(self) -> pd.Series:
        """Fixed effects by term name (statsmodels)."""
        return pd.Series(self.beta, index=list(self.design.x_names), name="fe_params")

    @property
    def bse(self) -> pd.Series:
        """Standard errors of the fixed effects by term name (statsmodels)."""
        return pd.Series(
            np.sqrt(np.diag(self.vcov())), index=list(self.design.x_names), name="bse"
        )

    bse_fe = bse

    @property
    def tvalues(self) -> pd.Series:
        """Wald statistics estimate / std_error by term name (statsmodels' name; z for GLMMs)."""
        return pd.Series(self.beta / self.bse.to_numpy(), index=self.fe_params.index,
                         name="tvalues")

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided normal-approximation p-values, as statsmodels' MixedLM reports.

        Denominator degrees of freedom (Satterthwaite, Kenward-Roger) are not
        implemented yet; lme4 itself prints no p-values.
        """
        p = results.wald_p_values(self.tvalues.to_numpy())
        return pd.Series(p, index=self.fe_params.index, name="pvalues")

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Wald confidence intervals by term name, columns 0 and 1 (statsmodels)."""
        table = self.coef_table(level=1.0 - alpha)
        return pd.DataFrame(
            {0: table["conf_low"].to_numpy(), 1: table["conf_high"].to_numpy()},
            index=self.fe_params.index,
        )

    def cov_params(self) -> pd.DataFrame:
        """Covariance of the fixed effects, labelled by term (statsmodels)."""
        names = list(self.design.x_names)
        return pd.DataFrame(self.vcov(), index=names, columns=names)

    @property
    def llf(self) -> float:
        """Log-likelihood (statsmodels' name; the REML one for REML fits)."""
        return self.loglik()

    def fixef(self) -> dict[str, float]:
        """Fixed effects as a name -> value dict (lme4's fixef)."""
        return dict(zip(self.design.x_names, self.beta.tolist(), strict=True))


    def random_effect_blocks(self) -> list[np.ndarray]:
        """Conditional modes per term as an (n_levels x p) array, lme4's b."""
        predictor = self._predictor_at_optimum()
        b = predictor.user_order(predictor.lambda_times(self.spherical_modes))
        out = []
        for k, term in enumerate(self.terms):
            start = self.layout.term_col_offset[k]
            out.append(b[start : start + term.n_levels * term.size].reshape(term.n_levels, -1))
        return out


    @property
    def random_effects(self) -> dict[str, pd.DataFrame]:
        """Conditional modes, per grouping factor: levels x effect columns (statsmodels-like)."""
        out: dict[str, pd.DataFrame] = {}
        for term, block in zip(self.terms, self.random_effect_blocks(), strict=True):
            frame = pd.DataFrame(block, index=list(term.levels), columns=list(term.column_names))
            if term.group in out:
                out[term.group] = out[term.group].join(frame, how="outer", rsuffix=".1")
            else:
                out[term.group] = frame
        return out

    def linear_predictor(self, include_re: bool = True) -> np.ndarray:
        """X beta + offset (+ Z b) for the rows used in the fit."""
        d = self.design
        eta = d.x @ self.beta + d.offset
        if include_re:
            for term, block in zip(self.terms, self.random_effect_blocks(), strict=True):
                effects.add_random_effects(term.codes, term.z, np.ascontiguousarray(block), eta)
        return eta


    @property
    def used_rows(self) -> np.ndarray:
        """Row numbers (0-based) of the caller's data that the fit used."""
        return self.design.model_frame.row_index.copy()


    @property
    def aic(self) -> float:
        return -2.0 * self.loglik() + 2.0 * self.df_model

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik() + np.log(self.nobs) * self.df_model


    # ------------------------------------------------------------ tidy frames
    def coef_table(self, level: float = 0.95) -> pl.DataFrame:
        """Fixed effects: term, estimate, std_error, statistic, conf_low, conf_high (Wald)."""
        return results.coef_table(
            self.design.x_names, self.beta, self.bse.to_numpy(), level, self.statistic_name
        )

    def varcorr(self) -> pl.DataFrame:
        """Variance components like lme4's as.data.frame(VarCorr(m))."""
        covs = [self.scale * c for c in self.relative_covariances()]
        return results.varcorr_frame(self.terms, covs, self.residual_variance)

    VarCorr = varcorr

    def relative_covariances(self) -> list[np.ndarray]:
        """Per term, the covariance of its effects in units of sigma^2 (T T')."""
        return self._predictor_at_optimum().relative_covariances()

    def ranef(self, cond_sd: bool = True) -> pl.DataFrame:
        """Conditional modes in long form: group, level, term, estimate, cond_sd."""
        variances = self._conditional_variances if cond_sd else None
        return results.ranef_frame(self.terms, self.random_effect_blocks(), variances)

    def fit_stats(self) -> pl.DataFrame:
        """One row of fit statistics (schema in docs/results.md)."""
        return results.fit_stats_frame(self)

    def summary(self) -> str:
        """An lme4-style summary."""
        return results.summary_text(self)

    def __repr__(self) -> str:
        if not self.is_fitted:
            return f"<{type(self).__name__} {self.formula!r} (not fitted)>"
        return self.summary()

    # ------------------------------------------------------------- prediction
    def predict(
        self, newdata: object = None, *, include_re: bool = True, allow_new_levels: bool = True
    ) -> np.ndarray:
        """Predictions; with ``newdata`` encoded exactly as in the fit.

        Unseen levels get zero random effects unless ``allow_new_levels`` is
        False, which raises instead. Rows of ``newdata`` with missing values
        in the columns needed raise.
        """
        if newdata is None:
            return self.linear_predictor(include_re)
        return results.predict_new(self, newdata, include_re, allow_new_levels)


    @cached_property
    def _conditional_variances(self) -> list[np.ndarray]:
        """Per term, (n_levels x p x p) conditional covariances of b given y."""
        predictor = self._predictor_at_optimum()
        out = []
        for k, term in enumerate(self.terms):
            p = term.size
            blocks = predictor.inverse_diagonal_blocks(k)
            t_start = self.layout.term_t_offset[k]
            t = predictor.t_flat[t_start : t_start + p * p].reshape(p, p)
            out.append(self.scale * np.einsum("ij,ljk,mk->lim", t, blocks, t))
        return out

