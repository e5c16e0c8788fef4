"""Random-effects terms: level codes, per-row covariates and the theta layout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RandomTerm:
    """One ``(lhs | group)`` term as the engine sees it.

    ``z`` holds the term's ``p`` covariate columns for every row (a column of
    ones for an intercept); ``codes`` the row's level, 0..n_levels-1. A streamed
    design keeps no rows: there both have length 0.
    """

    group: str
    factors: tuple[str, ...]
    lhs: str
    column_names: tuple[str, ...]
    codes: np.ndarray
    levels: tuple[str, ...]
    z: np.ndarray
    model_spec: object

    @property
    def size(self) -> int:
        """Number of random effects per level (p)."""
        return self.z.shape[1]

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def n_theta(self) -> int:
        """Entries of the lower-triangular relative covariance factor."""
        return self.size * (self.size + 1) // 2

    def theta_lower(self) -> np.ndarray:
        """0 for diagonal entries (column-major lower triangle), -inf elsewhere."""
        p = self.size
        diagonal = [row == col for col in range(p) for row in range(col, p)]
        return np.where(diagonal, 0.0, -np.inf)

    def theta_start(self) -> np.ndarray:
        """lme4's start: the identity."""
        return (self.theta_lower() == 0.0).astype(float)

    def theta_names(self) -> list[tuple[str, str]]:
        """(row term, column term) name pairs for each theta entry."""
        names, p = self.column_names, self.size
        return [(names[row], names[col]) for col in range(p) for row in range(col, p)]


def lme4_term_order(terms: list[RandomTerm]) -> list[RandomTerm]:
    """Order terms as lme4's mkReTrms does.

    Only when some term has more levels than the one before it, lme4 reorders
    by decreasing level count using ``rev(order(nl))``, which also reverses the
    order of ties. Matching it keeps theta and the output in lme4's order.
    """
    n_levels = [t.n_levels for t in terms]
    if not any(b > a for a, b in zip(n_levels[:-1], n_levels[1:], strict=True)):
        return list(terms)
    ascending = sorted(range(len(terms)), key=lambda k: n_levels[k])
    return [terms[k] for k in reversed(ascending)]
