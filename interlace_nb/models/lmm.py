"""LinearMixedModel: state plus ``fit()``; results are read off the fitted state."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from .. import results
from ..accumulate import Accumulated, accumulate_in_memory
from ..data import DataError
from ..design import Design, build_design
from ..fitting.gradient import average_information, gradient_and_information, gradient_at
from ..fitting.lmm import LmmSolution, profiled_criterion, solve_at
from ..fitting.optimize import (
    OptimResult,
    convergence_messages,
    finite_difference_derivatives,
    gradient_difference_derivatives,
    minimize_ai_newton,
    minimize_ai_newton_values,
    minimize_bobyqa,
    minimize_bobyqa_newton,
    minimize_lbfgsb,
)
from ..kernels import effects
from ..linalg import blas_threads_for
from ..predictor import Predictor, build_layout, predictor_in_engine_order
from ..streaming import EncodedBatch, StreamedDesign, build_streamed_design, encoded_batches
from .base import (
    SINGULAR_TOLERANCE,
    ConvergenceWarning,
    MixedModelBase,
    collector_paused,
)

if TYPE_CHECKING:
    import pandas as pd

#: What a gradient costs in values with the blocked factorisation (2.5 to 2.9 in the
#: optimiser study, docs/design.md; about 3 on B2 and B3).
GRADIENT_COST = 3.0

#: Widest dense block for which "auto" takes a gradient optimiser. The gradient needs
#: S^-1, 8 m^2 bytes more, and its selected inverse reads every first-term level's
#: pairs of rows in it: on B5 (16,000 wide) a value took about 45 s and a value with
#: gradient about 150 s, 2 GB more (11.4 against 6.0 GB peak), so differences of
#: values cost less.
GRADIENT_MAX_DENSE = 8000


#: BOBYQA's first trust region from the variance-ratio start, relative to each theta
#: (not below MOMENT_START_FLOOR): from NLopt's default (about |theta0|) B5-like data
#: took 46 values, from 0.1 20 (docs/design.md, "Optimiser").
MOMENT_START_STEP = 0.1
MOMENT_START_FLOOR = 0.1

#: With at most this many thetas "auto" ends BOBYQA early and polishes by Newton steps
#: on the convergence check's derivatives (fitting/optimize.py, minimize_bobyqa_newton).
POLISH_MAX_THETAS = 2

#: Optimisers that start from the variance-ratio start, and whose convergence check may
#: difference the exact gradient.
GRADIENT_OPTIMIZERS = ("ai_newton", "lbfgsb")
#: What fit(optimizer=...) accepts.
OPTIMIZERS = ("auto", "ai_newton", "lbfgsb", "bobyqa", "bobyqa_newton")

#: A random-effects column counts as lying in the span of X when the part of its
#: weighted squared norm that X does not explain is below this fraction.
SPANNED_TOLERANCE = 1e-7

LOG_2 = float(np.log(2.0))


class LinearMixedModel(MixedModelBase):
    """A linear mixed model in lme4's formulation (profiled REML or ML).

    Build it with :func:`interlace_nb.lmm`; the constructor reads the data and
    builds the theta-free Gram blocks (``streaming=True``: from a LazyFrame in
    batches of ``batch_size`` rows, keeping no rows), ``fit()`` optimises the
    profiled criterion over theta.
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
        streaming: bool = False,
        batch_size: int | None = None,
    ):
        with collector_paused():
            started = time.perf_counter()
            self.formula = formula
            self.reml = bool(reml)
            self.offset_column = offset if isinstance(offset, str) else None
            self.streaming = bool(streaming)
            if batch_size is not None and not self.streaming:
                raise ValueError("batch_size is only used with streaming=True")
            self.design: Design | StreamedDesign
            if self.streaming:
                self.design = build_streamed_design(
                    formula, data, weights=weights, offset=offset, na_action=na_action,
                    batch_size=batch_size,
                )
                d = self.design
                accumulated = d.accumulated
            else:
                self.design = build_design(
                    formula, data, weights=weights, offset=offset, na_action=na_action
                )
                d = self.design
                check_residual_dof(len(d.y), len(d.x_names), d.dropped_x_names)
                accumulated = accumulate_in_memory(d, factorization)
            check_residual_dof(accumulated.gram.n, len(d.x_names), d.dropped_x_names)
            check_response_varies(accumulated, d.parsed.response, d.has_offset, d.n_dropped)
            #: the Gram blocks are for y 2^-k (accumulate.response_exponent; k = 0 unless
            #: y is extreme in size): estimates are mapped back by 2^k, criteria shifted
            self._response_exponent = accumulated.response_exponent
            self.terms = list(d.terms)
            self.layout = build_layout(self.terms)
            # The Gram blocks are for y minus its weighted least-squares fit: beta shifts by
            # those coefficients exactly, and pwrss, computed by subtraction from the Gram
            # blocks, keeps its digits when y has a large mean.
            self._beta_shift = accumulated.beta_shift
            self._start_variances = (accumulated.between_variances, accumulated.response_variance)
            if accumulated.level_orders is None:
                self.predictor = predictor_in_engine_order(
                    self.terms, self.layout, accumulated.gram, factorization,
                    accumulated.level_counts,
                )
            else:  # built in the engine's order already
                self.predictor = Predictor(
                    self.terms, self.layout, accumulated.gram, factorization,
                    accumulated.level_orders,
                )
            self.setup_seconds = time.perf_counter() - started
            self.theta_lower = np.concatenate([t.theta_lower() for t in self.terms])
            self._solution: LmmSolution | None = None
            self._best_solved: tuple[np.ndarray, LmmSolution] | None = None
            self._theta_hat = np.zeros(0)
            self.optimizer = ""
            self.optimizer_status = ""
            self.n_evals = 0
            self.fit_seconds = float("nan")
            self.convergence_messages: list[str] = []
            self.na_message = self._report_design()

    # ----------------------------------------------------------------- fitting
    def objective(self, theta: np.ndarray) -> float:
        """The profiled REML criterion (or ML deviance) at ``theta``, as lme4's devfun."""
        return self._objective(theta) + self._criterion_shift(self.reml)

    def objective_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The criterion at ``theta`` and its exact gradient in theta."""
        value, grad = self._objective_and_gradient(theta)
        return value + self._criterion_shift(self.reml), grad

    def objective_gradient_information(
        self, theta: np.ndarray
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """The criterion at ``theta``, its exact gradient and the average information
        (a positive semi-definite approximation of its Hessian)."""
        value, grad, info = self._objective_gradient_information(theta)
        return value + self._criterion_shift(self.reml), grad, info

    def objective_and_information(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The criterion at ``theta`` and the average information, without the gradient."""
        value, info = self._objective_and_information(theta)
        return value + self._criterion_shift(self.reml), info

    # The optimiser's versions: the criterion for the response as fitted, y 2^-k. They
    # differ from the public ones by a constant, 0 unless the response was rescaled;
    # the optimiser works without it so that no digits are lost to a large shift.
    def _objective(self, theta: np.ndarray) -> float:
        return self._solve(theta).objective

    def _objective_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        solution = self._solve(theta)
        return solution.objective, gradient_at(self.predictor, solution, self.reml)

    def _objective_gradient_information(
        self, theta: np.ndarray
    ) -> tuple[float, np.ndarray, np.ndarray]:
        solution = self._solve(theta)
        grad, info = gradient_and_information(self.predictor, solution, self.reml)
        return solution.objective, grad, info

    def _objective_and_information(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        solution = self._solve(theta)
        return solution.objective, average_information(self.predictor, solution, self.reml)

    def _criterion_shift(self, reml: bool) -> float:
        """What -2 log L (REML: the REML criterion) gains from y 2^-k to y: 2 dof k log 2
        with dof = n (ML) or n - p (REML); 0.0 when the response was not rescaled."""
        if not self._response_exponent:
            return 0.0
        dof = self.nobs - self.n_fixed if reml else self.nobs
        return 2.0 * dof * self._response_exponent * LOG_2

    def _solve(self, theta: np.ndarray) -> LmmSolution:
        """solve_at, keeping the lowest criterion's solution (fit() then needs no
        factorisation more at the optimum)."""
        theta = np.array(theta, dtype=float)
        solution = solve_at(self.predictor, theta, self.reml)
        best = self._best_solved
        if best is None or solution.objective < best[1].objective:
            self._best_solved = (theta, solution)
        return solution

    def fit(
        self,
        *,
        start: np.ndarray | None = None,
        check_convergence: bool = True,
        optimizer: str = "auto",
        _stacklevel: int = 2,
    ) -> LinearMixedModel:
        """Minimise the profiled criterion over theta; returns self.

        ``optimizer`` is "ai_newton" (Newton steps on the average information with
        the exact gradient, then one on the convergence check's Hessian; where a
        gradient is expensive, with differences of values and the check's
        stencil), "lbfgsb" (L-BFGS-B with the exact gradient), "bobyqa" (lme4's
        derivative-free default, with its stopping rule), "bobyqa_newton" (BOBYQA
        to a loose tolerance, then Newton steps on the convergence check's
        derivatives) or "auto": "ai_newton" with the blocked factorisation, with a
        dense block wider than GRADIENT_MAX_DENSE only for at most POLISH_MAX_THETAS
        thetas; otherwise, and with CHOLMOD (whose selected inversion makes a
        gradient cost about 13 evaluations), "bobyqa_newton" with at most
        POLISH_MAX_THETAS thetas, "bobyqa" with more.
        Doubtful convergence (lme4's gradient and Hessian checks) raises a
        ConvergenceWarning, a boundary fit a SingularFitWarning.
        """
        with collector_paused():
            started = time.perf_counter()
            theta0 = self.default_start() if start is None else np.asarray(start, dtype=float)
            if theta0.shape != self.theta_lower.shape:
                raise ValueError(f"start must have {len(self.theta_lower)} values (one per theta)")
            if optimizer not in OPTIMIZERS:
                raise ValueError(
                    f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}, "
                    f"got {optimizer!r}"
                )
            if optimizer == "auto":
                optimizer = self._default_optimizer(theta0)
            if start is None and optimizer in GRADIENT_OPTIMIZERS:
                ratio_start = self._variance_ratio_start
                theta0 = theta0 if ratio_start is None else ratio_start.copy()
            self._best_solved = None
            with blas_threads_for(self.predictor.dense_size):
                result = self._minimize(theta0, optimizer)
                theta = np.maximum(result.x, self.theta_lower)
                messages = list(result.messages)
                self.n_evals = result.n_evals
                self.optimizer = optimizer
                self.optimizer_status = result.status
                if check_convergence:
                    free = ~((self.theta_lower == 0.0) & (theta < SINGULAR_TOLERANCE))
                    grad, hess = self._derivatives_at(theta, result, optimizer)
                    messages += convergence_messages(grad, hess, free)
                messages += self._unidentified_messages()
                best = self._best_solved
                if best is not None and np.array_equal(best[0], theta):
                    self._solution = best[1]
                else:
                    self._solution = solve_at(self.predictor, theta, self.reml)
            self._best_solved = None
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
            self._warn_if_singular(_stacklevel)
            self.__dict__.pop("_conditional_variances", None)
            self.__dict__.pop("_scaled_residual_quantiles", None)
            return self

    def _unidentified_messages(self) -> list[str]:
        """Variances the data cannot identify, whatever the optimiser reports: with one
        residual degree of freedom the REML criterion does not depend on theta at all;
        a term whose columns lie in the span of X (its factor is also a fixed effect)
        drops out of it (ML: only pulls its variance to zero)."""
        n, p = self.nobs, self.n_fixed
        if n - p == 1:
            return [
                f"the variances of the random effects are not identified: {n} rows and {p} "
                "fixed effects leave one residual degree of freedom, which cannot separate "
                "them from the residual variance (the criterion does not depend on theta); "
                "use more rows or fewer fixed effects"
            ]
        messages = []
        for k, term in enumerate(self.terms):
            if self._spanned_by_fixed_effects(k):
                messages.append(
                    f"the variance of the random-effects term ({term.lhs} | {term.group}) is not "
                    "identified: its columns lie in the span of the fixed effects (is "
                    f"{term.group!r}, or a variable that determines it, also a fixed effect?), "
                    "so the data say nothing about it; drop the term or that fixed effect"
                )
        return messages

    def _spanned_by_fixed_effects(self, k: int) -> bool:
        """Whether every column of term k's Z lies in the (weighted) span of X, read off
        the Gram blocks: z'Wz - z'WX (X'WX)^-1 X'Wz is 0 to SPANNED_TOLERANCE."""
        gram = self.predictor.gram
        if self.n_fixed == 0:
            return False
        start = int(self.layout.term_col_offset[k])
        stop = start + self.terms[k].size * self.terms[k].n_levels
        try:
            lower = np.linalg.cholesky(gram.xtx)
        except np.linalg.LinAlgError:
            return False
        half = np.linalg.solve(lower, np.asarray(gram.ztx[start:stop]).T)
        total = gram.ztz.diagonal()[start:stop]
        unexplained = total - (half * half).sum(axis=0)
        return bool((unexplained <= SPANNED_TOLERANCE * total).all())

    def _derivatives_at(
        self, theta: np.ndarray, result: OptimResult, optimizer: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gradient and Hessian for lme4's convergence checks.

        Second differences of values, with lme4's central stencil on the diagonal
        and a forward one off it (2n + n(n - 1)/2 values against lme4's 2n^2; 5
        against 8 for two thetas, each 40-50 s on B5). After a gradient optimiser,
        where gradients are cheap and that is cheaper (four thetas or more), the
        exact gradient at the optimum and forward differences of the gradient: n more
        gradients, each about GRADIENT_COST values. ai_newton brings its own check.
        """
        if result.hess is not None and np.array_equal(theta, result.x):
            return result.grad, result.hess
        n = len(theta)
        value_cost = 2 * n + n * (n - 1) / 2
        cheap = optimizer in GRADIENT_OPTIMIZERS and self._gradient_is_cheap()
        if cheap and n * GRADIENT_COST < value_cost:
            at_optimum = result.grad if np.array_equal(theta, result.x) else None
            return gradient_difference_derivatives(
                self._objective_and_gradient, theta, self.theta_lower,
                central=False, grad_at_x=at_optimum,
            )
        at_optimum = result.fun if np.array_equal(theta, result.x) else None
        return finite_difference_derivatives(
            self._objective, theta, self.theta_lower, f0=at_optimum, forward_cross=True
        )

    def _default_optimizer(self, theta0: np.ndarray) -> str:
        """Average-information Newton with the blocked factorisation, if the gradient is
        cheap (dense block at most GRADIENT_MAX_DENSE wide) or there are at most
        POLISH_MAX_THETAS thetas; BOBYQA otherwise (see the constants)."""
        few_thetas = len(theta0) <= POLISH_MAX_THETAS
        if self.predictor.factorization == "blocked" and (self._gradient_is_cheap() or few_thetas):
            return "ai_newton"
        return "bobyqa_newton" if few_thetas else "bobyqa"

    def _gradient_is_cheap(self) -> bool:
        """Whether a gradient costs a few values (GRADIENT_COST), not many: the blocked
        factorisation with a dense block at most GRADIENT_MAX_DENSE wide."""
        pred = self.predictor
        return pred.factorization == "blocked" and pred.dense_size <= GRADIENT_MAX_DENSE

    def _minimize(self, theta0: np.ndarray, optimizer: str) -> OptimResult:
        if optimizer == "bobyqa":
            return minimize_bobyqa(self._objective, theta0, self.theta_lower,
                                   initial_step=self._first_trust_region(theta0))
        if optimizer == "bobyqa_newton":
            return minimize_bobyqa_newton(self._objective, theta0, self.theta_lower,
                                          initial_step=self._first_trust_region(theta0))
        if optimizer == "ai_newton" and self._gradient_is_cheap():
            return minimize_ai_newton(self._objective_gradient_information,
                                      self._objective_and_gradient, theta0, self.theta_lower)
        if optimizer == "ai_newton":
            return minimize_ai_newton_values(self._objective_and_information, self._objective,
                                             theta0, self.theta_lower)
        return minimize_lbfgsb(self._objective_and_gradient, theta0, self.theta_lower)

    def _first_trust_region(self, theta0: np.ndarray) -> np.ndarray | None:
        """BOBYQA's first step: MOMENT_START_STEP of each theta from the variance-ratio
        start (a consistent estimate; NLopt's default, about |theta0|, searched far
        from it), NLopt's default from any other start."""
        if not self._from_moment_start(theta0):
            return None
        return MOMENT_START_STEP * np.maximum(theta0, MOMENT_START_FLOOR)

    def _from_moment_start(self, theta0: np.ndarray) -> bool:
        moments = self._moment_start()
        return moments is not None and np.array_equal(theta0, moments)

    def default_start(self) -> np.ndarray:
        """lme4's starting theta.

        The identity, except when every term is a random intercept on its
        own factor: then lme4 (mkLmerDevfun) starts from the ratio of each
        factor's between-group variance of y to what is left, which saves
        evaluations on crossed designs.
        """
        moments = self._moment_start()
        if moments is None:
            return np.concatenate([t.theta_start() for t in self.terms])
        return moments

    def _moment_start(self) -> np.ndarray | None:
        """The variance-ratio start where lme4 takes it (see default_start), else None."""
        intercepts_only = all(t.column_names == ("Intercept",) for t in self.terms)
        one_term_per_factor = len({t.factors for t in self.terms}) == len(self.terms)
        if not (intercepts_only and one_term_per_factor):
            return None
        ratio_start = self._variance_ratio_start
        return None if ratio_start is None else ratio_start.copy()

    @cached_property
    def _variance_ratio_start(self) -> np.ndarray | None:
        """lme4's variance-ratio start carried to every term: a term's diagonal thetas
        are sqrt(between-level variance of y of its factor / what no factor explains),
        divided by the root mean square of the column for a covariate; off-diagonal
        ones are 0. None when the factors explain all of var(y).

        L-BFGS-B starts here: on InstEval with (0 + service | dept) it took 17 calls
        against 27 from lme4's identity. Computed once per model (a pass over Z'Z's
        diagonal; default_start, the optimiser's choice and BOBYQA's first step ask).
        """
        between, total = self._start_variances
        per_factor = {t.factors: float(b) for t, b in zip(self.terms, between, strict=True)}
        residual = total - sum(per_factor.values())
        if not residual > 0:
            return None
        diagonal = self.predictor.gram.ztz.diagonal()
        parts = []
        for k, term in enumerate(self.terms):
            start = int(self.layout.term_col_offset[k])
            squares = diagonal[start : start + term.size * term.n_levels]
            mean_square = squares.reshape(term.n_levels, term.size).sum(axis=0) / self.nobs
            scale = np.ones(term.size)
            for j, name in enumerate(term.column_names):
                if name != "Intercept" and mean_square[j] > 0:
                    scale[j] = np.sqrt(mean_square[j])
            theta = np.zeros(term.n_theta)
            theta[term.theta_lower() == 0.0] = np.sqrt(between[k] / residual) / scale
            parts.append(theta)
        return np.concatenate(parts)

    @property
    def is_fitted(self) -> bool:
        return self._solution is not None

    @property
    def spherical_modes(self) -> np.ndarray:
        return np.ldexp(self.solution.u, self._response_exponent)

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
        with np.errstate(over="ignore"):  # a response beyond about 1e154: inf (sigma is finite)
            return float(np.ldexp(self._fitted_sigma2, 2 * self._response_exponent))

    @property
    def _fitted_sigma2(self) -> float:
        """sigma^2 for the response as fitted, y 2^-k (the variances of a response
        beyond about 1e154 in size overflow on the caller's scale; their SDs do not)."""
        return self.solution.sigma2(self.nobs, self.n_fixed, self.reml)

    @property
    def sigma(self) -> float:
        """Residual standard deviation."""
        return float(np.ldexp(np.sqrt(self._fitted_sigma2), self._response_exponent))

    @property
    def beta(self) -> np.ndarray:
        """Fixed-effects estimates, in the order of ``design.x_names``."""
        return np.ldexp(self.solution.beta + self._beta_shift, self._response_exponent)

    def vcov(self) -> np.ndarray:
        """Covariance of the fixed effects: sigma^2 (R_X' R_X)^{-1}."""
        with np.errstate(over="ignore"):  # a response beyond about 1e154: inf (bse is finite)
            return np.ldexp(self._fitted_vcov(), 2 * self._response_exponent)

    def _fitted_vcov(self) -> np.ndarray:
        rx_inv = np.linalg.inv(self.solution.rx)
        return self._fitted_sigma2 * rx_inv @ rx_inv.T

    @property
    def bse(self) -> pd.Series:
        """Standard errors of the fixed effects by term name (statsmodels)."""
        import pandas as pd

        se = np.ldexp(np.sqrt(np.diag(self._fitted_vcov())), self._response_exponent)
        return pd.Series(se, index=list(self.design.x_names), name="bse")

    bse_fe = bse

    def varcorr(self) -> pl.DataFrame:
        """Variance components like lme4's as.data.frame(VarCorr(m))."""
        sigma2 = self._fitted_sigma2
        covs = [sigma2 * c for c in self.relative_covariances()]
        frame = results.varcorr_frame(self.terms, covs, sigma2)
        k = self._response_exponent
        if not k:
            return frame
        sd_rows = frame.get_column("term2").is_null().to_numpy()
        sdcor = frame.get_column("sdcor").to_numpy()
        with np.errstate(over="ignore"):  # variances of a response beyond 1e154: inf
            vcov = np.ldexp(frame.get_column("vcov").to_numpy(), 2 * k)
        return frame.with_columns(
            pl.Series("vcov", vcov),
            pl.Series("sdcor", np.where(sd_rows, np.ldexp(sdcor, k), sdcor)),
        )

    VarCorr = varcorr

    def linear_predictor(self, include_re: bool = True) -> np.ndarray:
        """X beta + offset (+ Z b) for the rows used in the fit (a pass if streamed)."""
        if isinstance(self.design, StreamedDesign):
            parts = [eta for _, eta in self._streamed_rows(include_re)]
            return np.concatenate(parts) if parts else np.zeros(0)
        return super().linear_predictor(include_re)

    def _streamed_rows(self, include_re: bool) -> Iterator[tuple[EncodedBatch, np.ndarray]]:
        """Each batch of a streamed fit's rows, read again, with its linear predictor."""
        d = self.design
        assert isinstance(d, StreamedDesign)
        blocks = [np.ascontiguousarray(b) for b in self.random_effect_blocks()]
        beta = self.beta
        for batch in encoded_batches(d.source):
            eta = batch.x[:, d.kept_columns] @ beta + batch.offset
            if include_re:
                for k, block in enumerate(blocks):
                    effects.add_random_effects(batch.codes[k], batch.z[k], block, eta)
            yield batch, eta

    def fitted_batches(self, include_re: bool = True) -> Iterator[pl.DataFrame]:
        """The rows used, batch by batch: ``row`` (0-based, in the data), ``fitted``, ``resid``.

        For a streamed fit each call reads the data again, one batch in
        memory at a time (write the batches to disk to keep them); in memory
        it yields a single frame.
        """
        self.solution  # noqa: B018 (raises when not fitted)
        if isinstance(self.design, StreamedDesign):
            for batch, eta in self._streamed_rows(include_re):
                yield _fitted_frame(batch.row_index, eta, batch.y - eta)
        else:
            eta = self.linear_predictor(include_re)
            yield _fitted_frame(self.design.model_frame.row_index, eta, self.design.y - eta)

    @property
    def fittedvalues(self) -> np.ndarray:
        """Fitted values (with random effects) for the rows used, in data order.

        Streamed fits compute them in a further pass over the data.
        """
        return self.linear_predictor()

    @property
    def resid(self) -> np.ndarray:
        """Response residuals y - fitted for the rows used, in data order (a pass if streamed)."""
        if isinstance(self.design, StreamedDesign):
            parts = [batch.y - eta for batch, eta in self._streamed_rows(True)]
            return np.concatenate(parts) if parts else np.zeros(0)
        return self.design.y - self.fittedvalues

    @property
    def used_rows(self) -> np.ndarray:
        """Row numbers (0-based) of the caller's data that the fit used (a pass if streamed)."""
        if isinstance(self.design, StreamedDesign):
            parts = [b.row_index for b in encoded_batches(self.design.source)]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return super().used_rows

    @cached_property
    def _scaled_residual_quantiles(self) -> np.ndarray:
        """Min, quartiles and max of sqrt(w) * resid / sigma, as lme4's summary prints."""
        if isinstance(self.design, StreamedDesign):
            parts = [
                (batch.y - eta) * np.sqrt(batch.weights)
                for batch, eta in self._streamed_rows(True)
            ]
            scaled = np.concatenate(parts) / self.sigma
        else:
            scaled = self.resid * np.sqrt(self.design.weights) / self.sigma
        return np.quantile(scaled, [0.0, 0.25, 0.5, 0.75, 1.0])

    def scaled_residual_quantiles(self) -> np.ndarray:
        return self._scaled_residual_quantiles

    # ------------------------------------------------------------ likelihood
    @property
    def reml_criterion(self) -> float | None:
        return self.solution.objective + self._criterion_shift(True) if self.reml else None

    @property
    def deviance(self) -> float:
        """-2 log-likelihood (ML); for REML fits, the ML deviance at the REML estimates."""
        s = self.solution
        return profiled_criterion(
            s.ld_l2, s.ld_rx2, s.pwrss, self.nobs, self.n_fixed,
            self.predictor.gram.sum_log_weights, reml=False,
        ) + self._criterion_shift(False)

    def loglik(self) -> float:
        """Log-likelihood as lme4's logLik: the REML one for REML fits."""
        return -0.5 * (self.solution.objective + self._criterion_shift(self.reml))

    logLik = loglik

    @property
    def df_model(self) -> int:
        """Parameters counted by AIC/BIC: fixed effects, theta, sigma."""
        return self.n_fixed + len(self.theta_lower) + 1

    def summary_header(self) -> list[str]:
        """Title, formula and criteria lines of the summary."""
        method = "REML" if self.reml else "maximum likelihood"
        lines = [f"Linear mixed model fit by {method} [interlace_nb]", f"Formula: {self.formula}"]
        lines += self._weights_offset_lines()
        if self.reml:
            lines.append(f"REML criterion at convergence: {self.reml_criterion:.4f}")
        else:
            lines.extend(results.criteria_table(self))
        return lines


def check_residual_dof(n: int, p: int, dropped: tuple[str, ...]) -> None:
    """Refuse a model with no residual degrees of freedom (p >= n): neither ML nor REML
    can estimate the residual variance, and the criterion is not finite."""
    if n - p > 0:
        return
    columns = f"{p + len(dropped)} fixed-effect columns"
    if dropped:
        columns += f" ({p} after dropping the rank-deficient {', '.join(dropped)})"
    raise DataError(
        f"the model has no residual degrees of freedom: {n} rows and {columns}, so the "
        "residual variance cannot be estimated; remove fixed-effect terms or use more rows "
        "(a mixed model needs fewer fixed effects than rows)"
    )


def check_response_varies(
    accumulated: Accumulated, response: str, has_offset: bool, n_dropped: int
) -> None:
    """Refuse a constant response (without an offset): there is no variation to split
    into variance components, and the criterion is not finite."""
    if has_offset or not accumulated.response_variance == 0.0:
        return
    after = " after dropping rows with missing values" if n_dropped else ""
    raise DataError(
        f"response {response!r} is constant (all {accumulated.gram.n} values are "
        f"{accumulated.first_response!r}){after}; a mixed model needs variation in the "
        "response. Check the response column (and the rows kept)"
    )


def _fitted_frame(rows: np.ndarray, fitted: np.ndarray, resid: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {"row": rows.astype(np.int64), "fitted": fitted, "resid": resid},
        schema={"row": pl.Int64, "fitted": pl.Float64, "resid": pl.Float64},
    )
