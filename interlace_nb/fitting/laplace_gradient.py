"""The exact gradient of the Laplace deviance in (theta, beta), for canonical links.

The Laplace deviance is f = D(eta) + |u|^2 + log|A| at the conditional modes
u*(theta, beta), with A = Lambda'Z'WZ Lambda + I, W the working weights at
eta = X beta + Z Lambda u* (+ offset) and D the deviance. With a canonical
link the working weights are the observed information, so A is also the
Hessian of the penalised deviance in u and u* moves with the parameters as
du* = -A^-1 dg, g = u - Lambda'Z's (s = w (z - eta), the score per row).

Write h_i = (Z Lambda)_i A^-1 (Z Lambda)_i' (the row's quadratic form of
A^-1), v = w' h (w' = dw/deta), a = A^-1 Lambda'Z'v, zeta = Z Lambda a and
rho = v - 2 s - w zeta. Then

    df/dbeta        = X' rho
    df/dtheta_(r,c) = sum_l (Z'rho)_(l,r) u_(l,c) + sum_l (Z's)_(l,r) a_(l,c)
                      + tr(A^-1 dA/dtheta_(r,c)) at fixed W

where (r, c) is the theta entry's place in its term's T and l runs over the
term's levels. The first two lines collect the envelope theorem for
D + |u|^2 (the terms in s) and the change of log|A| through the weights
(v, with the adjoint solve a for du*); the trace is the LMM's (gradient.py),
from A^-1 on A's pattern. One gradient costs a selected inversion, one
solve and a few passes over the rows: about two factorisations.
"""

from __future__ import annotations

import numpy as np

from ..kernels import laplace
from .gradient import theta_positions
from .pirls import Pirls, PirlsState


class LaplaceGradient:
    """Gradient of the Laplace deviance for one model; the row pattern is found once."""

    def __init__(self, pirls: Pirls):
        self.pirls = pirls
        predictor = pirls.predictor
        layout = predictor.layout
        columns = [
            layout.term_col_offset[k] + term.codes[:, None] * term.size + np.arange(term.size)
            for k, term in enumerate(pirls.terms)
        ]
        self._row_columns = np.ascontiguousarray(np.column_stack(columns), dtype=np.int64)
        self._positions = laplace.row_pattern_positions(
            np.asarray(predictor.gram.ztz.indptr, dtype=np.int64),
            np.asarray(predictor.gram.ztz.indices, dtype=np.int64), self._row_columns,
        )
        if (self._positions < 0).any():
            raise AssertionError("a row's level pair is missing from A's pattern")

    def _row_values(self) -> np.ndarray:
        """The nonzeros of each row of Z Lambda (n x m), at the predictor's theta."""
        predictor = self.pirls.predictor
        layout = predictor.layout
        blocks = []
        for k, term in enumerate(self.pirls.terms):
            p = term.size
            start = layout.term_t_offset[k]
            t = predictor.t_flat[start : start + p * p].reshape(p, p)
            blocks.append(term.z @ t)
        return np.ascontiguousarray(np.column_stack(blocks))

    def __call__(self, state: PirlsState, *, beta_inside: bool = False) -> np.ndarray:
        """df/d(theta, beta) at ``state``; call right after the PIRLS run that returned
        it (the predictor must hold that run's final factor and Gram blocks).

        ``beta_inside`` (nAGQ = 0: PIRLS optimised beta with u) gives df/dtheta
        alone, with beta following theta through the joint system.
        """
        pirls = self.pirls
        predictor = pirls.predictor
        response = pirls.response
        predictor.set_theta(state.theta)
        rows = state.rows
        weights = rows.working_weights
        score = response.score(rows)
        inverse = predictor.system.inverse_on_pattern()
        leverage = np.empty(len(weights))
        laplace.row_quadratic_forms(inverse, self._positions, self._row_values(), leverage)
        v = response.weight_derivative(rows) * leverage
        adjoint_rhs = pirls.lambda_z_transpose(v, state.theta)
        if beta_inside:
            adjoint, c = pirls.solve_joint(adjoint_rhs, pirls.x.T @ v, state)
            fixed_part = pirls.x @ c
        else:
            adjoint, fixed_part = pirls.solve_spd(adjoint_rhs), 0.0
        zeta = pirls.random_part(state.theta, adjoint) + fixed_part
        rho = v - 2.0 * score - weights * zeta
        z_rho = pirls.z_transpose(rho)
        z_score = pirls.z_transpose(score)
        explicit = predictor.scaled_gram_gradient(inverse)
        layout = predictor.layout
        u = state.u
        grad_theta = np.zeros(len(state.theta))
        for idx, (k, row, col) in enumerate(theta_positions(predictor)):
            size = int(layout.term_size[k])
            start = int(layout.term_col_offset[k])
            stop = start + size * pirls.terms[k].n_levels
            rows_r = slice(start + row, stop, size)
            rows_c = slice(start + col, stop, size)
            grad_theta[idx] = (
                float(z_rho[rows_r] @ u[rows_c]) + float(z_score[rows_r] @ adjoint[rows_c])
                + float(explicit[int(layout.term_t_offset[k]) + row * size + col])
            )
        if beta_inside:
            return grad_theta
        return np.concatenate([grad_theta, pirls.x.T @ rho])
