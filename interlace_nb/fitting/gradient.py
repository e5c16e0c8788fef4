"""The exact gradient of the profiled criterion with respect to theta.

With A = Lambda'G Lambda + I (G = Z'WZ), F = Lambda'Z'WX, V = A^-1 F,
C = R_X'R_X = X'WX - F'V, K = V C^-1, r the weighted residual at the
conditional modes u and beta, and dLambda_k the derivative of Lambda in
theta_k (a 1 at T's entry (i, j) in every level block of its term):

    d log|A|     = tr(A^-1 dA),  dA = dLambda'G Lambda + Lambda'G dLambda
    d pwrss      = -2 r'WZ dLambda u                       (envelope theorem)
    d log|R_X|^2 = -2 tr(K' dLambda'Z'WX) + 2 tr(K' Lambda'G dLambda V)

and the criterion's derivative is d log|A| + dof d pwrss / pwrss (+ d log|R_X|^2
for REML). Only tr(A^-1 dA) is expensive: it needs A^-1 on A's sparsity
pattern, which both factorisations give by selected inversion (blocked: the
dense Schur inverse plus one pass over the first term's columns; CHOLMOD:
Takahashi on the factor); one more pass over the pattern contracts it with
the derivatives of Lambda'G Lambda in every entry of the T blocks.
"""

from __future__ import annotations

import numpy as np

from ..predictor import Predictor
from .lmm import LmmSolution, solve_at


def theta_positions(predictor: Predictor) -> list[tuple[int, int, int]]:
    """(term, row, column) of T for each theta entry, in theta's order."""
    positions = []
    for k, term in enumerate(predictor.terms):
        for col in range(term.size):
            for row in range(col, term.size):
                positions.append((k, row, col))
    return positions


def criterion_and_gradient(
    predictor: Predictor, theta: np.ndarray, reml: bool
) -> tuple[float, np.ndarray]:
    """The profiled criterion at ``theta`` and its exact gradient (nan if not finite)."""
    solution = solve_at(predictor, np.asarray(theta, dtype=float), reml)
    return solution.objective, gradient_at(predictor, solution, reml)


def gradient_at(predictor: Predictor, solution: LmmSolution, reml: bool) -> np.ndarray:
    """The criterion's exact gradient at the predictor's theta, where ``solution`` was
    solved (nan if the criterion is not finite there)."""
    theta = predictor.theta
    if not np.isfinite(solution.objective):
        return np.full(len(theta), np.nan)
    gram, lay = predictor.gram, predictor.layout
    n, p = gram.n, gram.xtx.shape[0]
    dof = n - p if reml else n
    ztz = gram.ztz
    u, beta = solution.u, solution.beta
    z_resid = gram.zty - gram.ztx @ beta - ztz @ predictor.lambda_times(u)
    if reml and p:
        f = predictor.scaled_rhs[:, :p]
        v = predictor.system.backward(predictor.system.forward(f))
        rx_inv = np.linalg.inv(solution.rx)
        k_mat = v @ (rx_inv @ rx_inv.T)
        g_lambda_k = ztz @ predictor.lambda_times(k_mat)
    d_t_flat = predictor.scaled_gram_gradient(predictor.system.inverse_on_pattern())
    grad = np.zeros(len(theta))
    for idx, (k, row, col) in enumerate(theta_positions(predictor)):
        size = int(lay.term_size[k])
        d_logdet = float(d_t_flat[int(lay.term_t_offset[k]) + row * size + col])
        start = int(lay.term_col_offset[k])
        stop = start + size * predictor.terms[k].n_levels
        rows_i = slice(start + row, stop, size)
        rows_j = slice(start + col, stop, size)
        d_pwrss = -2.0 * float(z_resid[rows_i] @ u[rows_j])
        value = d_logdet + dof * d_pwrss / solution.pwrss
        if reml and p:
            value += -2.0 * float(np.sum(gram.ztx[rows_i] * k_mat[rows_j]))
            value += 2.0 * float(np.sum(g_lambda_k[rows_i] * v[rows_j]))
        grad[idx] = value
    return grad
