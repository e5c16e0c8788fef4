"""The GLM response: y, prior weights, offset and family; the per-row quantities PIRLS needs.

A response never sees the predictor (DESIGN.md idea 3). PIRLS asks it, at a
linear predictor eta, for the working weights and working response (from
the per-row first and second derivatives of the log-likelihood in eta), the
deviance, and the conditional -2 log-likelihood. A family with extra
parameters (negative binomial, Beta, ...) implements the same four methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, xlog1py, xlogy

from interlace_nb.kernels import glm as _glm

from .families import Family

LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class RowState:
    """Per-row quantities at one linear predictor (eta includes the offset)."""

    eta: np.ndarray
    mu: np.ndarray
    working_weights: np.ndarray
    working_response: np.ndarray
    deviance_terms: np.ndarray
    deviance: float


class GlmResponse:
    """A response from an exponential family with a link, as R's glm family objects.

    ``y`` is the response as R's family sees it (for binomial, the proportion
    of successes), ``prior_weights`` R's prior weights (for binomial, the
    numbers of trials, times any user weights), ``trials`` the binomial
    denominators that R's ``aic()`` uses (ones otherwise).
    """

    def __init__(
        self,
        family: Family,
        y: np.ndarray,
        prior_weights: np.ndarray,
        offset: np.ndarray,
        trials: np.ndarray | None = None,
    ):
        self.family = family
        self.y = np.ascontiguousarray(y, dtype=float)
        self.prior_weights = np.ascontiguousarray(prior_weights, dtype=float)
        self.offset = np.ascontiguousarray(offset, dtype=float)
        self.trials = np.ones_like(self.y) if trials is None else np.asarray(trials, dtype=float)
        self.n = len(self.y)
        # The saturated model's -2 log L: a constant of the data (no dispersion in it
        # only for binomial and Poisson).
        self._saturated = (
            np.nan if family.has_dispersion else self.minus_two_loglik_at(self.y, 0.0)
        )
        # For binomial (whole numbers of successes) and Poisson (whole counts), -2 log p(y|mu)
        # is the deviance plus the saturated constant: no log-gamma per evaluation.
        self._loglik_from_deviance = self._deviance_is_exact_offset()

    # ------------------------------------------------------------ per row
    def evaluate(self, eta: np.ndarray) -> RowState:
        """mu, working weights and response (offset included in z), deviance terms at eta."""
        n = self.n
        mu = np.empty(n)
        w = np.empty(n)
        z = np.empty(n)
        dev = np.empty(n)
        total = _glm.glm_row_pass(
            self.family.family_code, self.family.link_code, eta, self.y, self.prior_weights,
            mu, w, z, dev,
        )
        return RowState(eta, mu, w, z, dev, float(total))

    def evaluate_checked(self, eta: np.ndarray) -> RowState:
        """As ``evaluate``, with deviance inf if a row leaves the family's domain
        (R's valideta/validmu): PIRLS halves such a step."""
        state = self.evaluate(eta)
        if not _glm.valid_eta_mu(self.family.family_code, self.family.link_code, eta, state.mu):
            return RowState(eta, state.mu, state.working_weights, state.working_response,
                            state.deviance_terms, np.inf)
        return state

    def mean(self, eta: np.ndarray) -> np.ndarray:
        """The inverse link of eta."""
        return _linkinv(self.family.link_code, eta)

    def start_eta(self) -> np.ndarray:
        """The starting linear predictor of R's family ``initialize`` (mustart)."""
        mu = np.empty(self.n)
        eta = np.empty(self.n)
        _glm.glm_start(
            self.family.family_code, self.family.link_code, self.y, self.prior_weights, mu, eta
        )
        return eta

    @property
    def has_exact_laplace_gradient(self) -> bool:
        """Whether the Laplace deviance's gradient is exact from ``score`` and
        ``weight_derivative``: binomial or Poisson with the canonical link (the
        working weights are then the observed information) and -2 log p(y | mu)
        equal to the deviance plus a constant."""
        family = self.family
        return (
            family.name in ("binomial", "poisson") and family.is_canonical
            and self._loglik_from_deviance
        )

    def score(self, state: RowState) -> np.ndarray:
        """-1/2 d(deviance)/d(eta) per row: w (z - eta)."""
        return state.working_weights * (state.working_response - state.eta)

    def weight_derivative(self, state: RowState) -> np.ndarray:
        """d w / d eta per row for a canonical link, where w = prior V(mu): w V'(mu)."""
        if not self.has_exact_laplace_gradient:
            raise ValueError(
                f"the weight derivative is offered for canonical binomial and poisson fits, "
                f"not {self.family.name} with link {self.family.link!r}"
            )
        if self.family.name == "binomial":
            return state.working_weights * (1.0 - 2.0 * state.mu)
        return state.working_weights.copy()

    # ---------------------------------------------------------- likelihood
    def dispersion_for_aic(self, deviance: float) -> float:
        """The dispersion R's family aic() plugs in: deviance / sum(weights) (or / n)."""
        if self.family.name == "gaussian":
            return deviance / self.n
        return deviance / float(self.prior_weights.sum())

    def minus_two_loglik(self, state: RowState) -> float:
        """-2 log p(y | mu): R's ``family$aic(y, n, mu, wt, dev)`` (lme4's ``resp$aic()``)."""
        if self._loglik_from_deviance:
            return state.deviance + self._saturated
        return self.minus_two_loglik_at(state.mu, state.deviance)

    def saturated_minus_two_loglik(self) -> float:
        """-2 log p(y | mu = y): the saturated model, a constant of the data (nan for
        families with a dispersion)."""
        return self._saturated

    def _deviance_is_exact_offset(self) -> bool:
        name = self.family.name
        if name == "poisson":
            return bool(np.all(self.y == np.round(self.y)))
        if name == "binomial":
            m = self.trials if (self.trials > 1).any() else self.prior_weights
            return bool(np.all(m * self.y == np.round(m * self.y)) and np.all(m == np.round(m)))
        return False

    def minus_two_loglik_at(self, mu: np.ndarray, deviance: float) -> float:
        """-2 log p(y | mu) with the dispersion R's aic() plugs in from ``deviance``."""
        y, wt = self.y, self.prior_weights
        name = self.family.name
        if name == "binomial":
            m = self.trials if (self.trials > 1).any() else wt
            successes = np.round(m * y)
            size = np.round(m)
            log_density = (
                gammaln(size + 1.0) - gammaln(successes + 1.0) - gammaln(size - successes + 1.0)
                + xlogy(successes, mu) + xlog1py(size - successes, -mu)
            )
            coef = np.divide(wt, m, out=np.zeros_like(wt), where=m > 0)
            return float(-2.0 * np.sum(coef * log_density))
        if name == "poisson":
            log_density = xlogy(y, mu) - mu - gammaln(y + 1.0)
            return float(-2.0 * np.sum(log_density * wt))
        disp = self.dispersion_for_aic(deviance)
        if name == "Gamma":
            shape = 1.0 / disp
            scale = mu * disp
            log_density = -gammaln(shape) - shape * np.log(scale) + (shape - 1.0) * np.log(y)
            log_density = log_density - y / scale
            return float(-2.0 * np.sum(log_density * wt) + 2.0)
        if name == "inverse.gaussian":
            total_w = float(wt.sum())
            return float(total_w * (np.log(disp * 2.0 * np.pi) + 1.0)
                         + 3.0 * np.sum(np.log(y) * wt) + 2.0)
        # gaussian with any link
        return float(self.n * (np.log(2.0 * np.pi * disp) + 1.0) + 2.0 - np.sum(np.log(wt)))

    # ----------------------------------------------------------- residuals
    def residuals(self, state: RowState, kind: str) -> np.ndarray:
        """Residuals of R's residuals.glm kinds: response, pearson, deviance, working."""
        y, mu = self.y, state.mu
        if kind == "response":
            return y - mu
        if kind == "pearson":
            variance = _variance(self.family.family_code, mu)
            return (y - mu) * np.sqrt(self.prior_weights) / np.sqrt(variance)
        if kind == "deviance":
            return np.sign(y - mu) * np.sqrt(np.maximum(state.deviance_terms, 0.0))
        if kind == "working":
            return state.working_response - state.eta
        raise ValueError(
            f"residual type {kind!r} is not known; use 'response', 'pearson', 'deviance' or "
            "'working'"
        )

    def pearson_sum_of_squares(self, state: RowState) -> float:
        """sum w (y - mu)^2 / V(mu), the weighted Pearson RSS."""
        return float(np.sum(self.residuals(state, "pearson") ** 2))


def _linkinv(link: int, eta: np.ndarray) -> np.ndarray:
    out = np.empty_like(eta)
    _glm.linkinv_array(link, eta, out)
    return out


def _variance(family: int, mu: np.ndarray) -> np.ndarray:
    out = np.empty_like(mu)
    _glm.variance_array(family, mu, out)
    return out
