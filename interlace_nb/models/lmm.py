"""LinearMixedModel: state plus ``fit()``; results are read off the fitted state."""

from __future__ import annotations

import time
import warnings

import numpy as np

from .. import results
from ..design import Design, build_design
from ..fitting.gradient import criterion_and_gradient
from ..fitting.lmm import LmmSolution, profiled_criterion, solve_at
from ..fitting.optimize import (
    OptimResult,
    convergence_messages,
    finite_difference_derivatives,
    minimize_bobyqa,
    minimize_lbfgsb,
)
from ..linalg import blas_threads_for
from ..predictor import Predictor, build_layout, build_predictor
from .base import (
    SINGULAR_TOLERANCE,
    ConvergenceWarning,
    MixedModelBase,
    SingularFitWarning,
)


class LinearMixedModel(MixedModelBase):
    """A linear mixed model in lme4's formulation (profiled REML or ML).

    Build it with :func:`interlace_nb.lmm`; the constructor reads the data and
    builds the theta-free Gram blocks, ``fit()`` optimises the profiled
    criterion over theta.
    """

    def __init__(
        self,
        formula: str,
        data: object,
        *,
        reml: bool = True,
        weights: object = None,
        offset: object = None,
        na_action: str = "omit",
        factorization: str = "auto",
    ):
        started = time.perf_counter()
        self.formula = formula
        self.reml = bool(reml)
        self.offset_column = offset if isinstance(offset, str) else None
        self.design: Design = build_design(
            formula, data, weights=weights, offset=offset, na_action=na_action
        )
        d = self.design
        self.terms = list(d.terms)
        self.layout = build_layout(self.terms)
        # Work with y minus its weighted least-squares fit: beta shifts by the OLS
        # coefficients exactly, and pwrss, computed by subtraction from the Gram
        # blocks, keeps its digits when y has a large mean.
        self._beta_shift = _weighted_least_squares(d.x, d.y - d.offset, d.weights)
        y_eff = d.y - d.offset - d.x @ self._beta_shift
        self.predictor = build_predictor(
            self.terms, self.layout, d.x, y_eff, d.weights, factorization
        )
        self.setup_seconds = time.perf_counter() - started
        self.theta_lower = np.concatenate([t.theta_lower() for t in self.terms])
        self._solution: LmmSolution | None = None
        self._theta_hat = np.zeros(0)
        self.optimizer = ""
        self.optimizer_status = ""
        self.n_evals = 0
        self.fit_seconds = float("nan")
        self.convergence_messages: list[str] = []
        if d.dropped_x_names:
            warnings.warn(
                "fixed-effect model matrix is rank deficient so dropping "
                f"{len(d.dropped_x_names)} column(s): {', '.join(d.dropped_x_names)}",
                stacklevel=3,
            )
        if d.model_frame.n_dropped:
            self.na_message = (
                f"{d.model_frame.n_dropped} of {d.model_frame.n_input_rows} rows dropped "
                "for missing values"
            )
        else:
            self.na_message = ""

    # ----------------------------------------------------------------- fitting
    def objective(self, theta: np.ndarray) -> float:
        """The profiled REML criterion (or ML deviance) at ``theta``, as lme4's devfun."""
        return solve_at(self.predictor, np.asarray(theta, dtype=float), self.reml).objective

    def objective_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The criterion at ``theta`` and its exact gradient in theta."""
        return criterion_and_gradient(self.predictor, np.asarray(theta, dtype=float), self.reml)

    def fit(
        self,
        *,
        start: np.ndarray | None = None,
        check_convergence: bool = True,
        optimizer: str = "auto",
        _stacklevel: int = 2,
    ) -> LinearMixedModel:
        """Minimise the profiled criterion over theta; returns self.

        ``optimizer`` is "lbfgsb" (L-BFGS-B with the exact gradient), "bobyqa"
        (lme4's derivative-free default, with its stopping rule) or "auto":
        L-BFGS-B with the blocked factorisation, BOBYQA with CHOLMOD (whose
        selected inversion makes a gradient cost about 13 evaluations).
        Doubtful convergence (lme4's gradient and Hessian checks) raises a
        ConvergenceWarning, a boundary fit a SingularFitWarning.
        """
        started = time.perf_counter()
        theta0 = self.default_start() if start is None else np.asarray(start, dtype=float)
        if theta0.shape != self.theta_lower.shape:
            raise ValueError(f"start must have {len(self.theta_lower)} values (one per theta)")
        if optimizer not in ("auto", "lbfgsb", "bobyqa"):
            raise ValueError(
                f"optimizer must be 'auto', 'lbfgsb' or 'bobyqa', got {optimizer!r}"
            )
        if optimizer == "auto":
            optimizer = "lbfgsb" if self.predictor.factorization == "blocked" else "bobyqa"
        with blas_threads_for(self.predictor.dense_size):
            result = self._minimize(theta0, optimizer)
            theta = np.maximum(result.x, self.theta_lower)
            messages = list(result.messages)
            self.n_evals = result.n_evals
            self.optimizer = optimizer
            self.optimizer_status = result.status
            if check_convergence:
                free = ~((self.theta_lower == 0.0) & (theta < SINGULAR_TOLERANCE))
                at_optimum = result.fun if np.array_equal(theta, result.x) else None
                grad, hess = finite_difference_derivatives(
                    self.objective, theta, self.theta_lower, f0=at_optimum
                )
                messages += convergence_messages(grad, hess, free)
            self._solution = solve_at(self.predictor, theta, self.reml)
        self._theta_hat = theta.copy()
        if not np.isfinite(self._solution.objective):
            raise FloatingPointError(
                "the criterion is not finite at the optimum; check the data for a response "
                "with no variation or perfectly collinear random effects"
            )
        self.convergence_messages = messages
        self.fit_seconds = time.perf_counter() - started
        for message in messages:
            warnings.warn(message, ConvergenceWarning, stacklevel=_stacklevel)
        if self.singular:
            warnings.warn(
                "boundary (singular) fit: a variance is estimated as zero or a correlation as "
                "+-1; see fit_stats()['singular'] and varcorr()",
                SingularFitWarning,
                stacklevel=_stacklevel,
            )
        self.__dict__.pop("_conditional_variances", None)
        return self

    def _minimize(self, theta0: np.ndarray, optimizer: str) -> OptimResult:
        if optimizer == "bobyqa":
            return minimize_bobyqa(self.objective, theta0, self.theta_lower)
        return minimize_lbfgsb(self.objective_and_gradient, theta0, self.theta_lower)

    def default_start(self) -> np.ndarray:
        """lme4's starting theta.

        The identity, except when every term is a random intercept on its
        own factor: then lme4 (mkLmerDevfun) starts from the ratio of each
        factor's between-group variance of y to what is left, which saves
        evaluations on crossed designs.
        """
        identity = np.concatenate([t.theta_start() for t in self.terms])
        intercepts_only = all(t.column_names == ("Intercept",) for t in self.terms)
        one_term_per_factor = len({t.factors for t in self.terms}) == len(self.terms)
        if not (intercepts_only and one_term_per_factor):
            return identity
        y = self.design.y
        between = np.array([_variance_of_group_means(y, t.codes, t.n_levels) for t in self.terms])
        residual = np.var(y, ddof=1) - between.sum()
        if not residual > 0:
            return identity
        return np.sqrt(between / residual)

    @property
    def is_fitted(self) -> bool:
        return self._solution is not None

    @property
    def spherical_modes(self) -> np.ndarray:
        return self.solution.u

    @property
    def solution(self) -> LmmSolution:
        if self._solution is None:
            raise RuntimeError("the model is not fitted yet; call fit()")
        return self._solution

    def _predictor_at_optimum(self) -> Predictor:
        """The predictor with its factor at the fitted theta (objective() may move it)."""
        theta_hat = self._theta_hat
        if self.predictor.theta is None or not np.array_equal(self.predictor.theta, theta_hat):
            self.predictor.update(theta_hat)
        return self.predictor

    @property
    def scale(self) -> float:
        """Residual variance sigma^2 (statsmodels' ``scale``)."""
        return self.solution.sigma2(self.nobs, self.n_fixed, self.reml)

    @property
    def sigma(self) -> float:
        """Residual standard deviation."""
        return float(np.sqrt(self.scale))

    @property
    def beta(self) -> np.ndarray:
        """Fixed-effects estimates, in the order of ``design.x_names``."""
        return self.solution.beta + self._beta_shift

    def vcov(self) -> np.ndarray:
        """Covariance of the fixed effects: sigma^2 (R_X' R_X)^{-1}."""
        rx_inv = np.linalg.inv(self.solution.rx)
        return self.scale * rx_inv @ rx_inv.T

    @property
    def fittedvalues(self) -> np.ndarray:
        """Fitted values (with random effects) for the rows used, in data order."""
        return self.linear_predictor()

    @property
    def resid(self) -> np.ndarray:
        """Response residuals y - fitted for the rows used, in data order."""
        return self.design.y - self.fittedvalues

    # ------------------------------------------------------------ likelihood
    @property
    def reml_criterion(self) -> float | None:
        return self.solution.objective if self.reml else None

    @property
    def deviance(self) -> float:
        """-2 log-likelihood (ML); for REML fits, the ML deviance at the REML estimates."""
        s = self.solution
        return profiled_criterion(
            s.ld_l2, s.ld_rx2, s.pwrss, self.nobs, self.n_fixed,
            self.predictor.gram.sum_log_weights, reml=False,
        )

    def loglik(self) -> float:
        """Log-likelihood as lme4's logLik: the REML one for REML fits."""
        return -0.5 * (self.solution.objective)

    logLik = loglik

    @property
    def df_model(self) -> int:
        """Parameters counted by AIC/BIC: fixed effects, theta, sigma."""
        return self.n_fixed + len(self.theta_lower) + 1

    def summary_header(self) -> list[str]:
        """Title, formula and criteria lines of the summary."""
        method = "REML" if self.reml else "maximum likelihood"
        lines = [f"Linear mixed model fit by {method} [interlace_nb]", f"Formula: {self.formula}"]
        if self.design.has_weights:
            lines.append("Weights: prior weights")
        if self.design.has_offset:
            lines.append("Offset: yes")
        lines.append("")
        if self.reml:
            lines.append(f"REML criterion at convergence: {self.reml_criterion:.4f}")
        else:
            lines.extend(results.criteria_table(self))
        return lines

    def scaled_residuals(self) -> np.ndarray:
        """Residuals scaled by sigma and the prior weights (lme4's summary)."""
        return self.resid * np.sqrt(self.design.weights) / self.sigma

    def __repr__(self) -> str:
        if self._solution is None:
            return f"<LinearMixedModel {self.formula!r} (not fitted)>"
        return self.summary()

def _weighted_least_squares(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """argmin_b sum w (y - X b)^2, by QR (lstsq) on the sqrt(w)-scaled rows."""
    if x.shape[1] == 0:
        return np.zeros(0)
    root_w = np.sqrt(weights)
    coef, *_ = np.linalg.lstsq(x * root_w[:, None], y * root_w, rcond=None)
    return coef


def _variance_of_group_means(y: np.ndarray, codes: np.ndarray, n_levels: int) -> float:
    """R's var(ave(y, f)): the variance of each row's group mean (n - 1 denominator)."""
    sums = np.bincount(codes, weights=y, minlength=n_levels)
    counts = np.bincount(codes, minlength=n_levels)
    return float(np.var((sums / counts)[codes], ddof=1))
