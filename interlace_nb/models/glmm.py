"""GeneralizedLinearMixedModel: PIRLS, Laplace and adaptive Gauss-Hermite fits as lme4::glmer.

nAGQ = 0 (the fast mode) optimises theta with beta inside PIRLS; nAGQ >= 1
optimises (theta, beta) jointly, with PIRLS over u alone and the Laplace
(nAGQ = 1) or adaptive Gauss-Hermite (nAGQ > 1, one scalar term) deviance as
the objective. Canonical binomial and Poisson fits (nAGQ <= 1) use L-BFGS-B
on the exact gradient (fitting/laplace_gradient.py), the Laplace stage from
the start values; the others start the joint stage from the nAGQ = 0 fit
with BOBYQA in both stages, as glmer does.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import polars as pl

from .. import results
from ..design import Design, build_design
from ..fitting.laplace_gradient import LaplaceGradient
from ..fitting.lmm import LmmSolution, solve_at
from ..fitting.optimize import (
    OptimResult,
    convergence_messages,
    finite_difference_derivatives,
    gradient_difference_derivatives,
    minimize_bobyqa,
    minimize_lbfgsb,
)
from ..fitting.pirls import Pirls, PirlsError, PirlsState, agq_deviance, laplace_deviance
from ..linalg import blas_threads_for
from ..predictor import GramBuilder, Predictor, build_layout, engine_terms
from ..response import Family, get_family
from ..response.glm import GlmResponse
from .base import (
    SINGULAR_TOLERANCE,
    ConvergenceWarning,
    MixedModelBase,
    collector_paused,
)

#: glmer's limit on the number of quadrature points.
MAX_AGQ = 25
#: R's glm.fit threshold for "fitted probabilities numerically 0 or 1" (10 x DBL_EPSILON).
SEPARATION_EPS = 10.0 * np.finfo(float).eps

#: Step of the finite-difference Hessian in (theta, beta). lme4's deriv12 default is
#: 1e-4, but the deviance of a GLMM carries rounding noise of about 1e-12 relative
#: (sums over rows of log densities), which 1e-4 second differences amplify to
#: percent-level errors once the deviance is in the thousands; 1e-3 reproduces the
#: Hessians glmer reports to about 1e-4 (tests/reference/glmm_reference.json).
HESSIAN_STEP = 1e-3
#: Step of the Hessian from differences of the exact Laplace gradient (lme4's deriv12
#: step; the gradient carries no noise that a smaller step would amplify).
GRADIENT_HESSIAN_STEP = 1e-4

#: Stopping rule of the nAGQ = 0 stage when it only starts the joint stage (the
#: joint stage refines theta anyway): 24 instead of 36 evaluations on the 100k
#: crossed Bernoulli benchmark, 61 instead of 70 in all, the same optimum.
STAGE0_START_TOLERANCES: dict = {"ftol_abs": 1e-2, "xtol_abs": 1e-3}

#: First trust-region radius of the joint stage, relative to theta.
STAGE2_STEP = 0.1

#: Newton steps after BOBYQA (each costs one Hessian) and the relative drop in the
#: deviance a step must bring to be kept.
MAX_NEWTON_STEPS = 3
NEWTON_GAIN = 1e-12

RESIDUAL_TYPES = ("deviance", "pearson", "response", "working")


class GeneralizedLinearMixedModel(MixedModelBase):
    """A generalized linear mixed model in lme4's formulation (Laplace, AGQ or nAGQ = 0).

    Build it with :func:`interlace_nb.glmm`; ``fit()`` runs the optimisation.
    """

    statistic_name = "z value"

    def __init__(
        self,
        formula: str,
        data: object,
        *,
        family: str | Family = "binomial",
        link: str | None = None,
        nAGQ: int = 1,  # noqa: N803 (lme4's name)
        weights: object = None,
        offset: object = None,
        na_action: str = "omit",
        factorization: str = "auto",
    ):
        with collector_paused():
            started = time.perf_counter()
            self.family = family if isinstance(family, Family) else _family(family, link)
            self.n_agq = _check_n_agq(nAGQ)
            self.formula = formula
            self.reml = False
            self.offset_column = offset if isinstance(offset, str) else None
            self.design: Design = build_design(
                formula, data, weights=weights, offset=offset, na_action=na_action,
                binomial=self.family.name == "binomial",
            )
            d = self.design
            self.response = _make_response(self.family, d)
            self.terms = list(d.terms)
            if self.n_agq > 1 and not (len(self.terms) == 1 and self.terms[0].size == 1):
                raise ValueError(
                    f"nAGQ = {self.n_agq} (adaptive Gauss-Hermite) needs a single scalar random-"
                    "effects term such as (1 | group); this model has "
                    f"{_describe_terms(self.terms)}. "
                    "Use nAGQ=1 (Laplace) or nAGQ=0."
                )
            if self.n_agq > 1 and self.family.has_dispersion:
                raise ValueError(
                    "nAGQ > 1 is offered for the binomial and poisson families; the "
                    f"{self.family.name} family's likelihood has a dispersion that the "
                    "quadrature does not integrate. "
                    "Use nAGQ=1 (Laplace)."
                )
            self.layout = build_layout(self.terms)
            # the engine numbers later factors' levels by frequency (see predictor.py)
            terms_inside, orders = engine_terms(self.terms, self.layout, factorization)
            self.builder = GramBuilder(terms_inside, self.layout, d.x)
            start_rows = self.response.evaluate(self.response.start_eta())
            gram = self.builder.build(
                start_rows.working_response, start_rows.working_weights, prior_weights=False
            )
            self.predictor = Predictor(self.terms, self.layout, gram, factorization, orders)
            self.pirls = Pirls(self.predictor, self.builder, self.response, d.x)
            #: the exact gradient of the Laplace deviance where it exists (canonical binomial
            #: and poisson links, nAGQ <= 1); other fits use BOBYQA and second differences
            self.laplace_gradient = (
                LaplaceGradient(self.pirls)
                if self.n_agq <= 1 and self.response.has_exact_laplace_gradient else None
            )
            self.theta_lower = np.concatenate([t.theta_lower() for t in self.terms])
            self.n_theta = len(self.theta_lower)
            self.setup_seconds = time.perf_counter() - started
            self._state: PirlsState | None = None
            self._warm: tuple[np.ndarray, np.ndarray] | None = None
            self._warm_theta = np.zeros(0)
            #: the last PIRLS run and whether beta was inside it (for first-order warm starts)
            self._last_run: tuple[PirlsState | None, bool] = (None, False)
            self._theta_hat = np.zeros(0)
            self._beta_hat = np.zeros(0)
            self._objective_value = float("nan")
            self._vcov: np.ndarray | None = None
            self._fit_gram = None
            self.hessian: np.ndarray | None = None
            self.newton_steps = 0
            self.gradient: np.ndarray | None = None
            self.optimizer_status = ""
            self.n_evals = 0
            self.n_evals_stage0 = 0
            self.fit_seconds = float("nan")
            self.convergence_messages: list[str] = []
            self.na_message = self._report_design()

    # ------------------------------------------------------------ objectives
    def _pirls(self, theta: np.ndarray, beta: np.ndarray | None) -> PirlsState:
        """PIRLS at theta (beta fixed, or inside PIRLS when None), warm-started."""
        update_beta = beta is None
        state = None
        if self._warm is not None:
            beta0, u0 = self._warm_start(theta, beta)
            try:
                state = self.pirls.run(theta, beta0, u0, update_beta=update_beta)
            except PirlsError:
                state = None  # a warm start PIRLS could not recover from: start cold
        if state is None:
            state = self.pirls.run(
                theta, np.zeros(self.n_fixed), np.zeros(self.layout.q), update_beta=True,
                eta_start=self.response.start_eta(),
            )
            if not update_beta:
                state = self.pirls.run(theta, beta, state.u, update_beta=False)
        self._last_run = (state, update_beta)
        if np.isfinite(state.penalized_deviance):
            self._warm = (state.beta, state.u)
            self._warm_theta = np.array(theta, dtype=float)
        return state

    def _warm_start(
        self, theta: np.ndarray, beta: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(beta, u) to start PIRLS from: the last modes with the same random effects
        b = Lambda u (and the last beta when beta is inside PIRLS), or, right after a
        run of the same kind, its (u, beta) moved to first order, whichever has the
        lower penalised deviance (the first-order move is the better start for small
        steps and can be far off for large ones)."""
        warm_beta, warm_u = self._warm
        start_beta = warm_beta if beta is None else beta
        start = (start_beta, self.pirls.same_effects(warm_u, self._warm_theta, theta))
        last, beta_inside = self._last_run
        if last is not None and beta_inside == (beta is None) and (
            np.array_equal(last.u, warm_u)
        ):
            moved_u, moved_beta = self.pirls.follow(last, theta, beta)
            if self.pirls.penalized_deviance(theta, moved_beta, moved_u) < (
                self.pirls.penalized_deviance(theta, *start)
            ):
                return moved_beta, moved_u
        return start

    def _deviance(self, state: PirlsState) -> float:
        if self.n_agq > 1:
            return agq_deviance(self.pirls, state, self.n_agq)
        return laplace_deviance(self.response, state)

    def objective(self, params: np.ndarray) -> float:
        """glmer's devfun: c(theta, beta) for nAGQ >= 1, theta alone for nAGQ = 0.

        For nAGQ > 1 the value is on lme4's scale (deviance residuals), which
        differs from -2 log-likelihood by a constant of the data.
        """
        params = np.asarray(params, dtype=float)
        beta = None if self.n_agq == 0 else params[self.n_theta :]
        return self._objective_at(params[: self.n_theta], beta)

    def _stage0_objective(self, theta: np.ndarray) -> float:
        """The nAGQ = 0 criterion (beta inside PIRLS)."""
        return self._objective_at(np.asarray(theta, dtype=float), None)

    def objective_and_gradient(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        """``objective`` and its exact gradient (canonical binomial and poisson links,
        nAGQ <= 1); (inf, nan) where PIRLS fails."""
        if self.laplace_gradient is None:
            raise ValueError(
                "the exact gradient is offered for nAGQ = 0 or 1 fits of binomial or poisson "
                "responses with their canonical links"
            )
        params = np.asarray(params, dtype=float)
        beta = None if self.n_agq == 0 else params[self.n_theta :]
        try:
            state = self._pirls(params[: self.n_theta], beta)
        except PirlsError:
            self._warm = None
            return np.inf, np.full(len(params), np.nan)
        gradient = self.laplace_gradient(state, beta_inside=beta is None)
        return laplace_deviance(self.response, state), gradient

    def _objective_at(self, theta: np.ndarray, beta: np.ndarray | None) -> float:
        """The deviance after PIRLS; inf (for the optimiser) where PIRLS fails."""
        try:
            state = self._pirls(theta, beta)
        except PirlsError:
            self._warm = None
            return np.inf
        return laplace_deviance(self.response, state) if beta is None else self._deviance(state)

    # ----------------------------------------------------------------- fit
    def fit(
        self,
        *,
        start: dict[str, np.ndarray] | None = None,
        check_convergence: bool = True,
        _stacklevel: int = 2,
    ) -> GeneralizedLinearMixedModel:
        """Optimise the nAGQ = 0 criterion over theta (the fit for nAGQ = 0, the start
        for BOBYQA fits), then (nAGQ >= 1) the Laplace or AGQ deviance over
        (theta, beta); returns self.

        ``start`` may give ``theta`` (and ``beta`` for the second stage).
        Doubtful convergence raises a ConvergenceWarning, a boundary fit a
        SingularFitWarning, fitted probabilities of 0 or 1 a warning about
        separation.
        """
        with collector_paused():
            started = time.perf_counter()
            start = start or {}
            default_theta = np.concatenate([t.theta_start() for t in self.terms])
            theta0 = np.asarray(start.get("theta", default_theta), dtype=float)
            if theta0.shape != self.theta_lower.shape:
                raise ValueError(f"start['theta'] must have {self.n_theta} values (one per theta)")
            self._warm = None
            messages: list[str] = []
            try:
                state0 = self._pirls(theta0, None)
            except PirlsError as exc:
                raise FloatingPointError(
                    f"PIRLS failed at the starting values: {exc}. Check that the link suits the "
                    f"response ({self.family.name} with link {self.family.link!r}); the canonical "
                    f"link is {self.family.canonical_link!r}."
                ) from exc
            with blas_threads_for(self.predictor.dense_size):
                theta, state0, stage0 = self._first_stage(theta0, state0)
                if self.n_agq == 0:
                    result, params = stage0, theta
                else:
                    result, params = self._joint_stage(theta, state0, start.get("beta"))
                    if check_convergence:
                        messages += convergence_messages(
                            self.gradient, self.hessian, self._free(params)
                        )
                messages = result.messages + messages
                # both optimisers' evaluations (stage 0 is the whole fit for nAGQ = 0)
                self.n_evals = self.n_evals_stage0 + (result.n_evals if self.n_agq > 0 else 0)
                self.optimizer_status = result.status
                self._theta_hat = params[: self.n_theta].copy()
                self._warm = None
                if self.n_agq == 0:
                    state = self._pirls(self._theta_hat, None)
                else:
                    self._warm = (state0.beta, state0.u)
                    state = self._pirls(self._theta_hat, params[self.n_theta :])
                self._state = state
                self._beta_hat = state.beta.copy()
                self._objective_value = self._deviance(state)
            if not np.isfinite(self._objective_value):
                raise FloatingPointError(
                    "the deviance is not finite at the optimum; PIRLS failed there (check the "
                    "response and the model for separation or extreme values)"
                )
            if not state.converged:
                messages.append("PIRLS did not converge at the optimum (the conditional modes may "
                                "be inaccurate)")
            self._vcov = self._fixed_effects_covariance(messages)
            self.convergence_messages = messages
            self.fit_seconds = time.perf_counter() - started
            self.__dict__.pop("_conditional_variances", None)
            for message in messages:
                warnings.warn(message, ConvergenceWarning, stacklevel=_stacklevel)
            separation = self._separation_message()
            if separation:
                warnings.warn(separation, ConvergenceWarning, stacklevel=_stacklevel)
                self.convergence_messages.append(separation)
            self._warn_if_singular(_stacklevel)
            return self

    def _first_stage(
        self, theta0: np.ndarray, state0: PirlsState
    ) -> tuple[np.ndarray, PirlsState, OptimResult | None]:
        """The nAGQ = 0 optimisation over theta: the whole fit for nAGQ = 0, else the
        start of the joint stage. Returns theta, the PIRLS state the joint stage
        starts from (for nAGQ = 0, ``state0`` unchanged) and the optimiser's result
        (None when the joint stage starts at theta0)."""
        if self.laplace_gradient is None:
            # Before a Laplace or quadrature stage, the nAGQ = 0 fit is only its start.
            loose = {} if self.n_agq == 0 else STAGE0_START_TOLERANCES
            stage0 = minimize_bobyqa(self._stage0_objective, theta0, self.theta_lower, **loose)
        elif self.n_agq == 0:
            stage0 = minimize_lbfgsb(self.objective_and_gradient, theta0, self.theta_lower)
        else:
            # With the exact gradient the joint stage starts at theta0 and the fixed effects
            # of PIRLS there: the nAGQ = 0 optimisation would cost more evaluations than
            # it saves (docs/glmm.md).
            self.n_evals_stage0 = 0
            return theta0, state0, None
        self.n_evals_stage0 = stage0.n_evals
        theta = np.maximum(stage0.x, self.theta_lower)
        if self.n_agq > 0:  # the joint stage starts from PIRLS at theta
            self._warm = None
            state0 = self._pirls(theta, None)
        return theta, state0, stage0

    def _joint_stage(
        self, theta: np.ndarray, state0: PirlsState, beta_start: np.ndarray | None
    ) -> tuple[OptimResult, np.ndarray]:
        """Optimise the Laplace (or AGQ) deviance over (theta, beta) from theta and the
        fixed effects of ``state0``, then polish by Newton steps; sets ``gradient``,
        ``hessian`` and ``newton_steps``. Returns the optimiser's result and the point."""
        beta0 = np.asarray(state0.beta if beta_start is None else beta_start, dtype=float)
        if beta0.shape != (self.n_fixed,):
            raise ValueError(f"start['beta'] must have {self.n_fixed} values")
        params0 = np.concatenate([theta, beta0])
        lower = np.concatenate([self.theta_lower, np.full(self.n_fixed, -np.inf)])
        if self.laplace_gradient is not None:
            result = minimize_lbfgsb(self.objective_and_gradient, params0, lower)
        else:
            result = minimize_bobyqa(
                self.objective, params0, lower, initial_step=self._stage2_step(theta, state0)
            )
        params = np.concatenate(
            [np.maximum(result.x[: self.n_theta], self.theta_lower), result.x[self.n_theta :]]
        )
        params, self.gradient, self.hessian, self.newton_steps = self._newton_polish(
            params, result.fun, lower, self._free(params)
        )
        return result, params

    def _free(self, params: np.ndarray) -> np.ndarray:
        """The joint parameters not on a bound (theta at zero is)."""
        at_bound = (self.theta_lower == 0.0) & (params[: self.n_theta] < SINGULAR_TOLERANCE)
        return np.concatenate([~at_bound, np.ones(self.n_fixed, dtype=bool)])

    def _stage2_step(self, theta: np.ndarray, state0: PirlsState) -> np.ndarray:
        """First trust region of the joint stage, around the nAGQ = 0 estimates: a tenth
        of each theta, and each fixed effect's standard error there ((R_X'R_X)^-1,
        theta known). NLopt's default, about |x0|, is far too wide for so good a start
        (on the 100k crossed Bernoulli benchmark: 48 evaluations against 34)."""
        rx_inv = np.linalg.inv(state0.rx)
        se = np.sqrt(np.einsum("ij,ij->i", rx_inv, rx_inv))
        theta_step = STAGE2_STEP * np.maximum(np.abs(theta), 0.1)
        return np.concatenate([theta_step, np.maximum(se, 1e-4)])

    def _newton_polish(
        self, params: np.ndarray, value: float, lower: np.ndarray, free: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Newton steps on the free parameters with the finite-difference derivatives.

        BOBYQA's stopping rule can leave the joint (theta, beta) problem a little
        short of the optimum on flat directions; the Hessian that the standard
        errors need anyway gives a Newton step, kept only if the deviance drops.
        Returns the point, its gradient and Hessian, and the steps taken.
        """
        steps = 0
        while True:
            if self.laplace_gradient is not None:
                grad, hess = gradient_difference_derivatives(
                    self.objective_and_gradient, params, lower, delta=GRADIENT_HESSIAN_STEP
                )
            else:
                grad, hess = finite_difference_derivatives(
                    self.objective, params, lower, delta=HESSIAN_STEP, f0=value
                )
            if steps == MAX_NEWTON_STEPS:
                return params, grad, hess, steps
            index = np.flatnonzero(free)
            try:
                move = np.linalg.solve(hess[np.ix_(index, index)], grad[index])
            except np.linalg.LinAlgError:
                return params, grad, hess, steps
            candidate = params.copy()
            candidate[index] -= move
            candidate = np.maximum(candidate, lower)
            new_value = self.objective(candidate)
            if not new_value < value - NEWTON_GAIN * max(1.0, abs(value)):
                return params, grad, hess, steps
            params, value = candidate, new_value
            steps += 1

    def _fixed_effects_covariance(self, messages: list[str]) -> np.ndarray:
        """glmer's vcov: from the Hessian of the deviance in (theta, beta) for nAGQ >= 1,
        else (or if that Hessian is not positive definite) scale * (R_X' R_X)^-1."""
        if self.n_agq > 0 and self.hessian is not None:
            try:
                full = np.linalg.inv(self.hessian)
                v = full[self.n_theta :, self.n_theta :]
                v = v + v.T  # 2 x the symmetric part: the deviance is -2 log L
                if np.all(np.isfinite(v)) and np.linalg.eigvalsh(v).min() > 0:
                    return v
            except np.linalg.LinAlgError:
                pass
            messages.append(
                "variance-covariance matrix computed from the finite-difference Hessian is not "
                "positive definite: falling back to the one estimated from R_X"
            )
        return self.vcov_from_rx()

    def vcov_from_rx(self) -> np.ndarray:
        """scale * (R_X' R_X)^-1 at the final PIRLS weights (glmer's use.hessian = FALSE):
        treats theta as known."""
        rx_inv = np.linalg.inv(self._refactor_at_optimum().rx)
        return self.scale * rx_inv @ rx_inv.T

    def _refactor_at_optimum(self) -> LmmSolution:
        """Put the predictor back at the fit: working weights of the final modes, theta-hat."""
        self._last_run = (None, False)  # the predictor no longer holds that run's factor
        rows = self.state.rows
        gram = self.builder.build(
            rows.working_response - self.response.offset, rows.working_weights
        )
        self.predictor.set_gram(gram)
        return solve_at(self.predictor, self._theta_hat, reml=False)

    def _predictor_at_optimum(self) -> Predictor:
        predictor = self.predictor
        current = predictor.theta is not None and np.array_equal(predictor.theta, self._theta_hat)
        if not (current and predictor.gram is self._fit_gram):
            self._refactor_at_optimum()
            self._fit_gram = predictor.gram
        return predictor

    def _separation_message(self) -> str:
        if self.family.name != "binomial":
            return ""
        mu = self.state.rows.mu
        extreme = (mu < SEPARATION_EPS) | (mu > 1.0 - SEPARATION_EPS)
        if not extreme.any():
            return ""
        return (
            f"fitted probabilities numerically 0 or 1 occurred in {int(extreme.sum())} row(s): "
            "a sign of complete or quasi-complete separation; estimates and standard errors of "
            "the fixed effects involved are not reliable (check for a predictor that perfectly "
            "separates the outcome)"
        )

    # -------------------------------------------------------------- estimates
    @property
    def is_fitted(self) -> bool:
        return self._state is not None

    @property
    def state(self) -> PirlsState:
        """PIRLS at the optimum: modes, rows, factor pieces."""
        if self._state is None:
            raise RuntimeError("the model is not fitted yet; call fit()")
        return self._state

    @property
    def spherical_modes(self) -> np.ndarray:
        return self.state.u

    @property
    def beta(self) -> np.ndarray:
        """Fixed-effects estimates, in the order of ``design.x_names``."""
        self._require_fit()
        return self._beta_hat.copy()

    def vcov(self) -> np.ndarray:
        """Covariance of the fixed effects as glmer's vcov() (see ``fit``)."""
        self._require_fit()
        return self._vcov.copy()

    @property
    def sigma(self) -> float:
        """glmer's sigma: 1 for binomial and poisson; else sqrt(Pearson RSS + |u|^2) / n)."""
        if not self.family.has_dispersion:
            return 1.0
        state = self.state
        pwrss = self.response.pearson_sum_of_squares(state.rows) + float(state.u @ state.u)
        return float(np.sqrt(pwrss / self.nobs))

    @property
    def scale(self) -> float:
        """sigma^2: the dispersion (1 for binomial and poisson)."""
        return self.sigma**2

    @property
    def residual_variance(self) -> float | None:
        return self.scale if self.family.has_dispersion else None

    # ------------------------------------------------------------ likelihood
    @property
    def objective_value(self) -> float:
        """The optimised criterion as lme4 reports it (m@devcomp$cmp['dev'])."""
        self._require_fit()
        return self._objective_value

    @property
    def minus_two_loglik(self) -> float:
        """-2 log-likelihood. For nAGQ > 1 the true one: lme4's AGQ value plus the
        saturated model's -2 log-likelihood (glmer's logLik() omits that constant)."""
        value = self.objective_value
        if self.n_agq > 1:
            value += self.saturated_minus_two_loglik
        return value

    @property
    def saturated_minus_two_loglik(self) -> float:
        """-2 log p(y | mu = y), a constant of the data."""
        return self.response.saturated_minus_two_loglik()

    def loglik(self) -> float:
        """Log-likelihood (Laplace or adaptive Gauss-Hermite approximation)."""
        return -0.5 * self.minus_two_loglik

    logLik = loglik

    @property
    def llf(self) -> float:
        return self.loglik()

    @property
    def deviance(self) -> float:
        """glmer's deviance(): the sum of squared deviance residuals at the modes
        (not -2 log L)."""
        return self.state.rows.deviance

    @property
    def reml_criterion(self) -> None:
        return None

    @property
    def df_model(self) -> int:
        """Parameters counted by AIC/BIC: fixed effects, theta, and the dispersion if any."""
        return self.n_fixed + self.n_theta + int(self.family.has_dispersion)

    # ------------------------------------------------------ fitted, residuals
    @property
    def fittedvalues(self) -> np.ndarray:
        """Fitted means mu (with random effects) for the rows used, in data order."""
        return self.state.rows.mu.copy()

    def residuals(self, type: str = "deviance") -> np.ndarray:  # noqa: A002 (R's name)
        """Residuals as R's residuals(): deviance (default), pearson, response, working."""
        if type not in RESIDUAL_TYPES:
            raise ValueError(
                f"residual type {type!r} is not known; use one of {', '.join(RESIDUAL_TYPES)}"
            )
        return self.response.residuals(self.state.rows, type)

    @property
    def resid(self) -> np.ndarray:
        """Deviance residuals (lme4's default type)."""
        return self.residuals("deviance")

    @property
    def resid_deviance(self) -> np.ndarray:
        return self.residuals("deviance")

    @property
    def resid_pearson(self) -> np.ndarray:
        return self.residuals("pearson")

    @property
    def resid_response(self) -> np.ndarray:
        return self.residuals("response")

    @property
    def resid_working(self) -> np.ndarray:
        return self.residuals("working")

    def scaled_residuals(self) -> np.ndarray:
        """Pearson residuals over sigma (lme4's summary)."""
        return self.residuals("pearson") / self.sigma

    def predict(
        self,
        newdata: object = None,
        *,
        type: str = "link",  # noqa: A002 (lme4's name)
        include_re: bool = True,
        allow_new_levels: bool = True,
    ) -> np.ndarray:
        """Predictions on the link scale (lme4's default) or the response scale (mu)."""
        if type not in ("link", "response"):
            raise ValueError(f"type must be 'link' or 'response', got {type!r}")
        if newdata is None:
            eta = self.linear_predictor(include_re)
        else:
            eta = results.predict_new(self, newdata, include_re, allow_new_levels)
        return eta if type == "link" else self.response.mean(eta)

    # ------------------------------------------------------------ reporting
    def fit_stats(self) -> pl.DataFrame:
        """One row of fit statistics (schema in docs/results.md; GLMM columns added)."""
        frame = results.fit_stats_frame(self)
        return frame.with_columns(
            pl.lit(self.family.name).alias("family"),
            pl.lit(self.family.link).alias("link"),
            pl.lit(self.n_agq, dtype=pl.Int64).alias("n_agq"),
            pl.lit(self.minus_two_loglik).alias("minus_two_loglik"),
            pl.lit(self.objective_value).alias("objective"),
            pl.lit(self.n_evals_stage0, dtype=pl.Int64).alias("n_evals_stage0"),
        )

    def summary_header(self) -> list[str]:
        """Title, family, formula and criteria lines of the summary."""
        if self.n_agq == 0:
            method = "Laplace Approximation, nAGQ = 0 (fixed effects inside PIRLS)"
        elif self.n_agq == 1:
            method = "Laplace Approximation"
        else:
            method = f"Adaptive Gauss-Hermite Quadrature, nAGQ = {self.n_agq}"
        lines = [
            f"Generalized linear mixed model fit by maximum likelihood ({method}) [interlace_nb]",
            f" Family: {self.family.name}  ( {self.family.link} )",
            f"Formula: {self.formula}",
        ]
        lines += self._weights_offset_lines()
        lines.extend(results.criteria_table(self))
        return lines


def _family(name: str, link: str | None) -> Family:
    if not isinstance(name, str):
        raise TypeError(f"family must be a name such as 'binomial', got {type(name).__name__}")
    return get_family(name, link)


def _check_n_agq(n_agq: object) -> int:
    if isinstance(n_agq, bool) or not isinstance(n_agq, (int, np.integer)) or n_agq < 0:
        raise ValueError(f"nAGQ must be a whole number >= 0, got {n_agq!r}")
    if n_agq > MAX_AGQ:
        raise ValueError(f"nAGQ must be at most {MAX_AGQ} (as glmer), got {n_agq}")
    return int(n_agq)


def _describe_terms(terms: list) -> str:
    return ", ".join(f"({t.lhs} | {t.group})" for t in terms)


def _make_response(family: Family, design: Design) -> GlmResponse:
    """R's family initialize: proportions and trials from cbind, checks of the support."""
    if design.trials is not None:
        y = design.y
        prior = design.weights * design.trials
        if design.has_weights:
            family.validate_response(y, design.weights)
        return GlmResponse(family, y, prior, design.offset, trials=design.trials)
    y, prior = family.validate_response(
        design.y, design.weights if design.has_weights else None
    )
    return GlmResponse(family, y, prior, design.offset)
