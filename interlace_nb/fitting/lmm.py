"""The profiled REML criterion and ML deviance of a linear mixed model.

Definitions follow lme4 (and MixedModels.jl) so values compare number for
number: with L L' = P (Lambda'Z'WZ Lambda + I) P' and R_X'R_X the Schur
complement of X'WX,

    ML:   log|L|^2 - sum(log w) + n (1 + log(2 pi pwrss / n))
    REML: log|L|^2 - sum(log w) + log|R_X|^2 + (n - p)(1 + log(2 pi pwrss / (n - p)))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

from ..predictor import Predictor

LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class LmmSolution:
    """Everything the criterion at one theta determines."""

    objective: float
    beta: np.ndarray
    u: np.ndarray
    pwrss: float
    ld_l2: float
    ld_rx2: float
    rx: np.ndarray
    #: L^-1 (Lambda'Z'WX, Lambda'Z'Wy), which the gradient and the information reuse
    half: np.ndarray

    def sigma2(self, n: int, p: int, reml: bool) -> float:
        """The profiled residual variance at this theta."""
        return self.pwrss / (n - p if reml else n)


def solve_at(predictor: Predictor, theta: np.ndarray, reml: bool) -> LmmSolution:
    """Factor at ``theta`` and return the profiled criterion and its pieces."""
    predictor.update(theta)
    gram = predictor.gram
    p = gram.xtx.shape[0]
    n = gram.n
    q = predictor.layout.q
    ld_l2 = predictor.logdet
    if not np.isfinite(ld_l2):
        return _failed(p, q)
    half = predictor.system.forward(predictor.scaled_rhs)
    cross = half.T @ half
    if p:
        rx, info = lapack.dpotrf(gram.xtx - cross[:p, :p], lower=0, clean=1)
        if info != 0:
            return _failed(p, q)
        c_beta, _ = lapack.dtrtrs(rx, gram.xty - cross[:p, p], lower=0, trans=1)
        beta, _ = lapack.dtrtrs(rx, c_beta, lower=0, trans=0)
        ld_rx2 = 2.0 * float(np.log(np.diag(rx)).sum())
        pwrss = gram.yty - cross[p, p] - float(c_beta @ c_beta)
    else:
        rx = np.zeros((0, 0))
        beta = np.zeros(0)
        ld_rx2 = 0.0
        pwrss = gram.yty - cross[0, 0]
    if not pwrss > 0.0:
        return _failed(p, q)
    u = predictor.system.backward(half[:, p] - half[:, :p] @ beta)
    objective = profiled_criterion(ld_l2, ld_rx2, pwrss, n, p, gram.sum_log_weights, reml)
    return LmmSolution(objective, beta, u, float(pwrss), ld_l2, ld_rx2, rx, half)


def profiled_criterion(
    ld_l2: float, ld_rx2: float, pwrss: float, n: int, p: int, sum_log_weights: float, reml: bool
) -> float:
    """The REML criterion or ML deviance from the factor's pieces (formulas above)."""
    dof = n - p if reml else n
    value = ld_l2 - sum_log_weights + dof * (1.0 + LOG_2PI + np.log(pwrss / dof))
    return float(value + ld_rx2 if reml else value)


def _failed(p: int, q: int) -> LmmSolution:
    return LmmSolution(np.inf, np.full(p, np.nan), np.full(q, np.nan), np.nan, np.nan, np.nan,
                       np.full((p, p), np.nan), np.full((q, p + 1), np.nan))


def objective_at(predictor: Predictor, theta: np.ndarray, reml: bool) -> float:
    """The criterion alone, as the optimiser sees it."""
    return solve_at(predictor, theta, reml).objective
