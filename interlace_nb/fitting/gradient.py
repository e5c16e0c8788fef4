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

The average information (AI-REML's matrix, as in ASReml) approximates the
criterion's Hessian from the same solution at the cost of one forward solve
with n_theta columns. With V = sigma^2 H, H = W^-1 + Z Lambda Lambda'Z',
H_k = Z(dLambda_k Lambda' + Lambda dLambda_k')Z', e = P_H y the weighted
residual, s_k = e'H_k e = -d pwrss and Q_kl = (H_k e)'P_H(H_l e):

    AI_kl = dof (Q_kl / pwrss - s_k s_l / pwrss^2)

(twice the average information of the variance parameters, with sigma^2
profiled out). H_k e = Z a_k with a_k = dLambda_k u + Lambda dLambda_k' Z'We, so
Q needs only Gram products and L^-1 Lambda'G a_k. It is positive
semi-definite, and equals the Hessian in expectation; at the optimum the terms
it leaves out vanish for scalar terms (the criterion is homogeneous in each).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular

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


def _theta_rows(predictor: Predictor) -> list[tuple[slice, slice]]:
    """Per theta entry (T's row i, column j): the rows of u that are i and j in
    every level block of its term (dLambda_k maps u[rows_j] to rows_i)."""
    lay = predictor.layout
    rows = []
    for k, row, col in theta_positions(predictor):
        size = int(lay.term_size[k])
        start = int(lay.term_col_offset[k])
        stop = start + size * predictor.terms[k].n_levels
        rows.append((slice(start + row, stop, size), slice(start + col, stop, size)))
    return rows


def _z_residual(predictor: Predictor, solution: LmmSolution) -> np.ndarray:
    """Z'W(y - X beta - Z Lambda u) at the solution, from the Gram blocks."""
    gram = predictor.gram
    return (gram.zty - gram.ztx @ solution.beta
            - gram.ztz @ predictor.lambda_times(solution.u))


def criterion_and_gradient(
    predictor: Predictor, theta: np.ndarray, reml: bool
) -> tuple[float, np.ndarray]:
    """The profiled criterion at ``theta`` and its exact gradient (nan if not finite)."""
    solution = solve_at(predictor, np.asarray(theta, dtype=float), reml)
    return solution.objective, gradient_at(predictor, solution, reml)


def gradient_at(predictor: Predictor, solution: LmmSolution, reml: bool) -> np.ndarray:
    """The criterion's exact gradient at the predictor's theta, where ``solution`` was
    solved (nan if the criterion is not finite there)."""
    if not np.isfinite(solution.objective):
        return np.full(len(predictor.theta), np.nan)
    return _gradient(predictor, solution, reml, _z_residual(predictor, solution))


def gradient_and_information(
    predictor: Predictor, solution: LmmSolution, reml: bool
) -> tuple[np.ndarray, np.ndarray]:
    """gradient_at and average_information at one solution, Z'W e computed once."""
    if not np.isfinite(solution.objective):
        n_theta = len(predictor.theta)
        return np.full(n_theta, np.nan), np.full((n_theta, n_theta), np.nan)
    z_resid = _z_residual(predictor, solution)
    return (_gradient(predictor, solution, reml, z_resid),
            _information(predictor, solution, reml, z_resid))


def _gradient(
    predictor: Predictor, solution: LmmSolution, reml: bool, z_resid: np.ndarray
) -> np.ndarray:
    """gradient_at, given Z'W e at a solution with a finite criterion."""
    gram, lay = predictor.gram, predictor.layout
    n, p = gram.n, gram.xtx.shape[0]
    dof = n - p if reml else n
    u = solution.u
    if reml and p:
        v = predictor.system.backward(np.ascontiguousarray(solution.half[:, :p]))
        rx_inv = np.linalg.inv(solution.rx)
        k_mat = v @ (rx_inv @ rx_inv.T)
        g_lambda_k = gram.ztz @ predictor.lambda_times(k_mat)
    d_t_flat = predictor.scaled_gram_gradient(predictor.system.inverse_on_pattern())
    grad = np.zeros(len(predictor.theta))
    for idx, ((k, row, col), (rows_i, rows_j)) in enumerate(
        zip(theta_positions(predictor), _theta_rows(predictor), strict=True)
    ):
        size = int(lay.term_size[k])
        d_logdet = float(d_t_flat[int(lay.term_t_offset[k]) + row * size + col])
        d_pwrss = -2.0 * float(z_resid[rows_i] @ u[rows_j])
        value = d_logdet + dof * d_pwrss / solution.pwrss
        if reml and p:
            value += -2.0 * float(np.sum(gram.ztx[rows_i] * k_mat[rows_j]))
            value += 2.0 * float(np.sum(g_lambda_k[rows_i] * v[rows_j]))
        grad[idx] = value
    return grad


def average_information(predictor: Predictor, solution: LmmSolution, reml: bool) -> np.ndarray:
    """The average-information approximation of the criterion's Hessian in theta
    (formula above; nan when the criterion is not finite)."""
    if not np.isfinite(solution.objective):
        n_theta = len(predictor.theta)
        return np.full((n_theta, n_theta), np.nan)
    return _information(predictor, solution, reml, _z_residual(predictor, solution))


def _information(
    predictor: Predictor, solution: LmmSolution, reml: bool, z_resid: np.ndarray
) -> np.ndarray:
    """average_information, given Z'W e at a solution with a finite criterion."""
    n_theta = len(predictor.theta)
    gram = predictor.gram
    n, p = gram.n, gram.xtx.shape[0]
    dof = n - p if reml else n
    u = solution.u
    q = predictor.layout.q
    d_lambda_u = np.zeros((q, n_theta))
    d_lambda_t_z = np.zeros((q, n_theta))
    s = np.empty(n_theta)
    for idx, (rows_i, rows_j) in enumerate(_theta_rows(predictor)):
        d_lambda_u[rows_i, idx] += u[rows_j]
        d_lambda_t_z[rows_j, idx] += z_resid[rows_i]
        s[idx] = 2.0 * float(z_resid[rows_i] @ u[rows_j])
    a = d_lambda_u + predictor.lambda_times(d_lambda_t_z)
    g_a = np.asarray(gram.ztz @ a)
    f = predictor.system.forward(predictor.lambda_t_times(g_a))
    q_mat = a.T @ g_a - f.T @ f
    if p:
        x_cross = gram.ztx.T @ a - solution.half[:, :p].T @ f
        z = solve_triangular(solution.rx, x_cross, trans="T", lower=False)
        q_mat -= z.T @ z
    pwrss = solution.pwrss
    info = dof * (q_mat / pwrss - np.outer(s, s) / pwrss**2)
    return (info + info.T) / 2.0
