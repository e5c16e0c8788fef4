"""PIRLS and the Laplace / adaptive Gauss-Hermite deviance of a GLMM.

For given theta (and, with nAGQ >= 1, given beta) PIRLS finds the
conditional modes u of the spherical random effects by minimising the
penalised deviance ``sum(dev(y, mu)) + |u|^2``. Each iteration is one
weighted linear mixed model solve: the Gram blocks are rebuilt for the
working weights and response on the fixed sparsity pattern (one pass over
the rows), the factor is refreshed, and the step is halved until the
penalised deviance does not increase (as lme4's pwrssUpdate).

The Laplace deviance (lme4's nAGQ = 1 objective) is then
``-2 log p(y | mu) + log|L|^2 + |u|^2``, with L the factor at the final
working weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels import effects
from ..predictor import GramBuilder, Predictor
from ..response.glm import GlmResponse, RowState
from .lmm import solve_at

#: Relative change of the penalised deviance at which PIRLS stops.
PIRLS_TOLERANCE = 1e-12
#: A final step that still lowers the penalised deviance by more than this
#: (relative) means PIRLS did not converge.
PIRLS_DOUBT = 1e-7
MAX_ITERATIONS = 100
MAX_STEP_HALVINGS = 10


class PirlsError(FloatingPointError):
    """PIRLS could not find the conditional modes (divergence or no decrease)."""


@dataclass(frozen=True)
class PirlsState:
    """The conditional modes at (theta, beta) and what the deviance needs."""

    theta: np.ndarray
    beta: np.ndarray
    u: np.ndarray
    rows: RowState
    penalized_deviance: float
    ld_l2: float
    rx: np.ndarray
    iterations: int
    converged: bool


class Pirls:
    """PIRLS over a fixed predictor structure and response.

    ``update_beta=True`` (nAGQ = 0) solves for u and beta jointly;
    ``False`` holds beta fixed and solves for u only.
    """

    def __init__(
        self, predictor: Predictor, builder: GramBuilder, response: GlmResponse, x: np.ndarray
    ):
        self.predictor = predictor
        self.builder = builder
        self.response = response
        self.x = x
        self._no_columns = np.zeros((x.shape[0], 0))

    def linear_predictor(self, theta: np.ndarray, beta: np.ndarray, u: np.ndarray) -> np.ndarray:
        """offset + X beta + Z Lambda(theta) u."""
        predictor = self.predictor
        predictor.set_theta(theta)
        eta = self.response.offset + self.x @ beta
        b = predictor.lambda_times(u)
        for k, term in enumerate(predictor.terms):
            start = predictor.layout.term_col_offset[k]
            block = b[start : start + term.n_levels * term.size].reshape(term.n_levels, -1)
            effects.add_random_effects(term.codes, term.z, np.ascontiguousarray(block), eta)
        return eta

    def run(
        self,
        theta: np.ndarray,
        beta: np.ndarray,
        u: np.ndarray,
        *,
        update_beta: bool,
        eta_start: np.ndarray | None = None,
    ) -> PirlsState:
        """Iterate from (beta, u), or from ``eta_start`` (R's mustart) when given.

        Each iteration factors at the current working weights; it stops when
        the step lowers the penalised deviance by less than PIRLS_TOLERANCE
        (relative) and keeps the current point, so the factor and the modes
        belong together.
        """
        response = self.response
        theta = np.asarray(theta, dtype=float)
        if eta_start is not None:
            eta = eta_start
            current = np.inf
        else:
            eta = self.linear_predictor(theta, beta, u)
            current = response.deviance(eta) + float(u @ u)
        for iteration in range(1, MAX_ITERATIONS + 1):
            rows = response.evaluate(eta)
            if eta_start is None or iteration > 1:
                current = rows.deviance + float(u @ u)
            working = rows.working_response - response.offset
            if update_beta:
                gram = self.builder.build(working, rows.working_weights)
            else:
                gram = self.builder.build(
                    working - self.x @ beta, rows.working_weights, x=self._no_columns
                )
            self.predictor.set_gram(gram)
            solution = solve_at(self.predictor, theta, reml=False)
            if not np.isfinite(solution.ld_l2) or not np.all(np.isfinite(solution.u)):
                raise PirlsError("the penalised weighted least-squares system could not be solved")
            ld_l2 = solution.ld_l2
            new_beta = solution.beta if update_beta else beta
            new_u = solution.u
            if not np.isfinite(current):
                # first step from mustart: take it whole, as lme4 does
                beta, u = new_beta, new_u
                eta = self.linear_predictor(theta, beta, u)
                continue
            step_beta, step_u = new_beta - beta, new_u - u
            value = np.inf
            for _ in range(MAX_STEP_HALVINGS + 1):
                cand_beta, cand_u = beta + step_beta, u + step_u
                cand_eta = self.linear_predictor(theta, cand_beta, cand_u)
                value = np.inf
                if response.valid(cand_eta):
                    value = response.deviance(cand_eta) + float(cand_u @ cand_u)
                    if value <= current:
                        break
                step_beta, step_u = step_beta / 2.0, step_u / 2.0
            if value > current or current - value <= PIRLS_TOLERANCE * abs(current):
                # No step lowers the penalised deviance (beyond rounding): stop at the
                # current point, whose factor this iteration computed.
                converged = value - current <= PIRLS_DOUBT * abs(current)
                return PirlsState(theta, beta, u, rows, current, ld_l2, solution.rx, iteration,
                                  bool(converged))
            beta, u, eta = cand_beta, cand_u, cand_eta
        rows = response.evaluate(eta)
        return PirlsState(theta, beta, u, rows, rows.deviance + float(u @ u), ld_l2, solution.rx,
                          MAX_ITERATIONS, False)


def laplace_deviance(response: GlmResponse, state: PirlsState) -> float:
    """lme4's nAGQ = 1 objective: -2 log p(y | mu) + log|L|^2 + |u|^2."""
    return response.minus_two_loglik(state.rows) + state.ld_l2 + float(state.u @ state.u)
