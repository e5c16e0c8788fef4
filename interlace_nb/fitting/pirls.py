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
from scipy.linalg import cho_solve

from ..kernels import effects, gram, lambda_ops
from ..predictor import GramBuilder, Predictor
from ..response.glm import GlmResponse, RowState
from .lmm import solve_at

#: PIRLS stops when the full step moves no mode or coefficient by more than this
#: (relative to the largest). A criterion on the penalised deviance alone, which is
#: flat at the modes, would leave u with only half the digits, and the Laplace
#: deviance, which is not flat there, would carry that error.
STEP_TOLERANCE = 1e-12
#: A final step that still lowers the penalised deviance by more than this
#: (relative) means PIRLS did not converge.
PIRLS_DOUBT = 1e-7
#: Increases of the penalised deviance this small (relative) are rounding, not
#: divergence: the step is taken rather than halved ten times for nothing.
ROUNDING = 1e-13
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
        #: the terms with the engine's level numbering, in which u lives
        self.terms = builder.terms
        self._no_columns = np.zeros((x.shape[0], 0))

    def linear_predictor(self, theta: np.ndarray, beta: np.ndarray, u: np.ndarray) -> np.ndarray:
        """offset + X beta + Z Lambda(theta) u."""
        return self._add_random_part(theta, u, self.response.offset + self.x @ beta)

    def _add_random_part(self, theta: np.ndarray, u: np.ndarray, fixed: np.ndarray) -> np.ndarray:
        """fixed + Z Lambda(theta) u (a new array)."""
        predictor = self.predictor
        predictor.set_theta(theta)
        eta = fixed.copy()
        b = predictor.lambda_times(u)
        for k, term in enumerate(self.terms):
            start = predictor.layout.term_col_offset[k]
            block = b[start : start + term.n_levels * term.size].reshape(term.n_levels, -1)
            effects.add_random_effects(term.codes, term.z, np.ascontiguousarray(block), eta)
        return eta

    def follow(
        self, state: PirlsState, theta: np.ndarray, beta: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(u, beta) moved to first order to new (theta, beta), with the factor PIRLS left
        at ``state``: du = A^-1 (dLambda'Z's - Lambda'Z'W (Z dLambda u + X dbeta)), where
        dLambda = Lambda(theta) - Lambda(theta_state) (Lambda is linear in theta), s the
        score and A = Lambda'Z'WZ Lambda + I the Hessian of the penalised deviance in u
        (for canonical links; a Fisher-scoring step otherwise). With ``beta`` None
        (nAGQ = 0: beta inside PIRLS) beta moves too, through the joint system.

        A warm start that saves PIRLS iterations when the optimiser moves far.
        Call it right after the run that returned ``state`` (the factor is its).
        """
        rows = state.rows
        weights = rows.working_weights
        score = self.response.score(rows)
        moved = self.random_part(theta, state.u) - self.random_part(state.theta, state.u)
        if beta is not None:
            moved += self.x @ (beta - state.beta)
        rhs = self.lambda_z_transpose(score, theta) - self.lambda_z_transpose(
            score + weights * moved, state.theta
        )
        if beta is not None:
            return state.u + self.solve_spd(rhs), beta
        du, dbeta = self.solve_joint(rhs, -self.x.T @ (weights * moved), state)
        return state.u + du, state.beta + dbeta

    def solve_joint(
        self, rhs_u: np.ndarray, rhs_beta: np.ndarray, state: PirlsState
    ) -> tuple[np.ndarray, np.ndarray]:
        """Solve PIRLS's joint system [[A, F], [F', X'WX]] [a; c] = [rhs_u; rhs_beta]
        (F = Lambda'Z'WX) with the factor of A and R_X (R_X'R_X = X'WX - F'A^-1 F), as a
        run with beta inside PIRLS leaves them. Returns (a, c)."""
        p = self.x.shape[1]
        f = self.predictor.scaled_rhs[:, :p]
        solved = self.solve_spd(np.column_stack([rhs_u, f]))
        c = cho_solve((state.rx, False), rhs_beta - f.T @ solved[:, 0])
        return solved[:, 0] - solved[:, 1:] @ c, c

    def penalized_deviance(self, theta: np.ndarray, beta: np.ndarray, u: np.ndarray) -> float:
        """D(y, mu) + |u|^2 at (theta, beta, u); inf outside the family's domain."""
        rows = self.response.evaluate_checked(self.linear_predictor(theta, beta, u))
        return rows.deviance + float(u @ u)

    def z_transpose(self, values: np.ndarray) -> np.ndarray:
        """Z' values (length q, engine order)."""
        layout = self.predictor.layout
        out = np.zeros((layout.q, 1))
        column = values.reshape(-1, 1)
        ones = np.ones(len(values))
        for k, term in enumerate(self.terms):
            start = layout.term_col_offset[k]
            stop = start + term.size * term.n_levels
            gram.accumulate_z_cross(term.codes, term.z, ones, column, out[start:stop])
        return out[:, 0]

    def lambda_z_transpose(self, values: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Lambda(theta)' Z' values."""
        layout = self.predictor.layout
        self.predictor.set_theta(theta)
        raw = self.z_transpose(values).reshape(-1, 1)
        out = np.empty_like(raw)
        lambda_ops.lambda_t_times(
            raw, layout.col_block_start, layout.col_pos, layout.col_block_size,
            layout.col_t_offset, self.predictor.t_flat, out,
        )
        return out[:, 0]

    def solve_spd(self, rhs: np.ndarray) -> np.ndarray:
        """A^-1 rhs (a vector or columns) with the factor the predictor holds
        (A = Lambda'Z'WZ Lambda + I)."""
        system = self.predictor.system
        solved = system.backward(system.forward(rhs.reshape(len(rhs), -1)))
        return solved.reshape(rhs.shape)

    def random_part(self, theta: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Z Lambda(theta) u per row."""
        return self._add_random_part(theta, u, np.zeros(self.x.shape[0]))

    def same_effects(
        self, u: np.ndarray, theta_old: np.ndarray, theta_new: np.ndarray
    ) -> np.ndarray:
        """u' with Lambda(theta_new) u' = Lambda(theta_old) u: the same random effects b.

        A better warm start than u itself when theta moves: the data pin down b,
        not u. Terms whose new T is singular keep their u.
        """
        layout = self.predictor.layout
        if theta_old.shape != theta_new.shape:
            return u
        out = u.copy()
        for k, term in enumerate(self.terms):
            t_old = _lower_factor(theta_old, layout.term_theta_offset[k], term.size)
            t_new = _lower_factor(theta_new, layout.term_theta_offset[k], term.size)
            diagonal = np.abs(np.diag(t_new))
            if diagonal.min() <= 1e-10 * max(1.0, diagonal.max()):
                continue
            start = layout.term_col_offset[k]
            block = u[start : start + term.n_levels * term.size].reshape(term.n_levels, -1)
            mapping = np.linalg.solve(t_new, t_old)
            out[start : start + term.n_levels * term.size] = (block @ mapping.T).ravel()
        return out

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

        Each iteration factors at the current working weights and solves for
        the full step, which is halved until the penalised deviance does not
        increase. PIRLS stops when the full step is below STEP_TOLERANCE and
        keeps the current point, so the factor and the modes belong together.
        """
        response = self.response
        theta = np.asarray(theta, dtype=float)
        fixed = None if update_beta else response.offset + self.x @ beta
        if eta_start is not None:
            rows = response.evaluate(eta_start)
            current = np.inf
        else:
            eta = self.linear_predictor(theta, beta, u) if fixed is None else (
                self._add_random_part(theta, u, fixed)
            )
            rows = response.evaluate_checked(eta)
            if not np.isfinite(rows.deviance) and np.any(u):
                # the warm start leaves the domain at these parameters: start from u = 0
                u = np.zeros_like(u)
                eta = self.linear_predictor(theta, beta, u) if fixed is None else fixed.copy()
                rows = response.evaluate_checked(eta)
            if not np.isfinite(rows.deviance):
                raise PirlsError("the linear predictor leaves the family's domain here")
            current = rows.deviance + float(u @ u)
        for iteration in range(1, MAX_ITERATIONS + 1):
            working = rows.working_response - response.offset
            if update_beta:
                gram = self.builder.build(working, rows.working_weights, prior_weights=False)
            else:
                gram = self.builder.build(
                    working - self.x @ beta, rows.working_weights, x=self._no_columns,
                    prior_weights=False,
                )
            self.predictor.set_gram(gram)
            solution = solve_at(self.predictor, theta, reml=False)
            if not np.isfinite(solution.ld_l2) or not np.all(np.isfinite(solution.u)):
                raise PirlsError("the penalised weighted least-squares system could not be solved")
            ld_l2 = solution.ld_l2
            new_beta = solution.beta if update_beta else beta
            step_beta, step_u = new_beta - beta, solution.u - u
            if np.isfinite(current):
                size = max(_max_abs(step_u), _max_abs(step_beta))
                if size <= STEP_TOLERANCE * max(1.0, _max_abs(u), _max_abs(beta)):
                    return PirlsState(theta, beta, u, rows, current, ld_l2, solution.rx,
                                      iteration, True)
            # first step from mustart: taken whole, as lme4 does (current is inf)
            allowed = current + ROUNDING * abs(current)
            for _ in range(MAX_STEP_HALVINGS + 1):
                cand_beta, cand_u = beta + step_beta, u + step_u
                if fixed is None:
                    cand_eta = self.linear_predictor(theta, cand_beta, cand_u)
                else:
                    cand_eta = self._add_random_part(theta, cand_u, fixed)
                cand_rows = response.evaluate_checked(cand_eta)
                value = cand_rows.deviance + float(cand_u @ cand_u)
                if value <= allowed and np.isfinite(value):
                    break
                step_beta, step_u = step_beta / 2.0, step_u / 2.0
            if not np.isfinite(current) and not np.isfinite(value):
                raise PirlsError(
                    "the first PIRLS step from the starting values leaves the family's domain "
                    "(e.g. a negative mean with an identity or sqrt link)"
                )
            if not value <= allowed:
                # No step lowers the penalised deviance: stop at the current point,
                # whose factor this iteration computed; fine if only rounding is left.
                converged = value - current <= PIRLS_DOUBT * abs(current)
                return PirlsState(theta, beta, u, rows, current, ld_l2, solution.rx, iteration,
                                  bool(converged))
            beta, u, rows, current = cand_beta, cand_u, cand_rows, value
        return PirlsState(theta, beta, u, rows, current, ld_l2, solution.rx, MAX_ITERATIONS,
                          False)


def _lower_factor(theta: np.ndarray, offset: int, size: int) -> np.ndarray:
    """A term's lower-triangular T from its theta entries (column-major, as lme4)."""
    t = np.zeros((size, size))
    rows, cols = np.tril_indices(size)
    order = np.lexsort((rows, cols))  # column by column
    t[rows[order], cols[order]] = theta[offset : offset + len(order)]
    return t


def _max_abs(values: np.ndarray) -> float:
    return float(np.abs(values).max()) if values.size else 0.0


def laplace_deviance(response: GlmResponse, state: PirlsState) -> float:
    """lme4's nAGQ = 1 objective: -2 log p(y | mu) + log|L|^2 + |u|^2."""
    return response.minus_two_loglik(state.rows) + state.ld_l2 + float(state.u @ state.u)


def agq_deviance(pirls: Pirls, state: PirlsState, n_nodes: int) -> float:
    """lme4's adaptive Gauss-Hermite deviance for one scalar random-effects term.

    Per group g, with conditional mode u_g, conditional sd s_g = 1/L_gg and
    D_g(u) = sum of the group's deviance residuals + u^2, the integral
    int exp(-D_g(u)/2) du / sqrt(2 pi) is approximated by Gauss-Hermite nodes
    z_k centred at u_g and scaled by s_g. The value is on lme4's scale:
    log|L|^2 + sum_g D_g(u_g) - 2 sum_g log(sum_k w_k exp(-(D_g(u_k) - D_g(u_g))/2
    + z_k^2/2)), which is -2 log L minus the saturated model's -2 log L.
    """
    term = pirls.terms[0]
    theta = float(state.theta[0])
    codes = term.codes
    z = term.z[:, 0]
    rows = state.rows
    n_levels = term.n_levels
    diag = 1.0 + theta * theta * np.bincount(
        codes, weights=rows.working_weights * z * z, minlength=n_levels
    )
    sd = 1.0 / np.sqrt(diag)
    u = state.u
    devc0 = np.bincount(codes, weights=rows.deviance_terms, minlength=n_levels) + u * u
    nodes, weights = np.polynomial.hermite_e.hermegauss(n_nodes)
    weights = weights / np.sqrt(2.0 * np.pi)
    mult = np.zeros(n_levels)
    shift_per_row = theta * z * sd[codes]
    for node, weight in zip(nodes, weights, strict=True):
        if node == 0.0:
            mult += weight
            continue
        shifted = pirls.response.evaluate(rows.eta + node * shift_per_row)
        u_node = u + node * sd
        devc = np.bincount(codes, weights=shifted.deviance_terms, minlength=n_levels)
        devc += u_node * u_node
        mult += weight * np.exp(-(devc - devc0) / 2.0 + node * node / 2.0)
    return float(np.log(diag).sum() + devc0.sum() - 2.0 * np.log(mult).sum())
