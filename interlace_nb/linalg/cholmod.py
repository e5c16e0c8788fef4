"""CHOLMOD (through scikit-sparse): analyse a pattern once, refactor many times."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from sksparse.cholmod import CholmodNotPositiveDefiniteError, analyze


class SparseCholesky:
    """Factor ``A + I`` for matrices that share one sparsity pattern.

    The fill-reducing ordering and symbolic analysis are done once in the
    constructor; ``refactor`` redoes only the numeric factorisation.
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, q: int):
        self.indptr = indptr
        self.indices = indices
        self.q = q
        pattern = sp.csc_matrix((np.ones(len(indices)), indices, indptr), shape=(q, q))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._factor = analyze(pattern)

    def refactor(self, data: np.ndarray) -> None:
        """Numerically factor ``A + I`` where A has the stored pattern and ``data``."""
        matrix = sp.csc_matrix((data, self.indices, self.indptr), shape=(self.q, self.q))
        try:
            self._factor.cholesky_inplace(matrix, beta=1.0)
        except CholmodNotPositiveDefiniteError as err:  # A + I is SPD in exact arithmetic
            raise FloatingPointError(f"CHOLMOD lost positive definiteness: {err}") from err

    def logdet(self) -> float:
        """log det(A + I) from the current factor."""
        return float(self._factor.logdet())

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """(A + I)^{-1} rhs."""
        return self._factor(rhs)

    def lower_factor(self) -> tuple[sp.csc_matrix, np.ndarray]:
        """L (simplicial, CSC, sorted) and the permutation P with P (A+I) P' = L L'."""
        lower = self._factor.copy().L().tocsc()  # L() converts in place: work on a copy
        lower.sort_indices()
        return lower, np.asarray(self._factor.P(), dtype=np.int64)
