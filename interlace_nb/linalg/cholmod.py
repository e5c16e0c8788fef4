"""CHOLMOD (through scikit-sparse): analyse a pattern once, refactor many times."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from sksparse.cholmod import CholmodNotPositiveDefiniteError, analyze

from ..kernels import selinv


class SparseCholesky:
    """Factor ``A + I`` for matrices that share one sparsity pattern.

    The fill-reducing ordering and symbolic analysis are done once in the
    constructor; ``factor`` redoes only the numeric factorisation.
    """

    name = "cholmod"

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, q: int):
        self.indptr = indptr
        self.indices = indices
        self.q = q
        pattern = sp.csc_matrix((np.ones(len(indices)), indices, indptr), shape=(q, q))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._factor = analyze(pattern)

    def factor(self, data: np.ndarray) -> float:
        """Factor ``A + I`` (A with the stored pattern and ``data``); return log det."""
        matrix = sp.csc_matrix((data, self.indices, self.indptr), shape=(self.q, self.q))
        try:
            self._factor.cholesky_inplace(matrix, beta=1.0)
        except CholmodNotPositiveDefiniteError:
            return float("nan")
        return float(self._factor.logdet())

    def forward(self, rhs: np.ndarray) -> np.ndarray:
        """c = L^-1 P rhs, so that rhs' (A+I)^-1 rhs = c'c."""
        return self._factor.solve_L(self._factor.apply_P(rhs), use_LDLt_decomposition=False)

    def backward(self, w: np.ndarray) -> np.ndarray:
        """u = P' L^-T w: with w = forward(r), u = (A+I)^-1 r."""
        return self._factor.apply_Pt(self._factor.solve_Lt(w, use_LDLt_decomposition=False))

    def inverse_diagonal_blocks(self, block_starts: np.ndarray, block_size: int) -> np.ndarray:
        """Diagonal blocks of (A+I)^-1 by selected inversion (Takahashi) on L's pattern."""
        indptr, indices, values, inverse_perm = self._selected_inverse()
        out = np.empty((len(block_starts), block_size, block_size))
        selinv.diagonal_blocks(
            indptr, indices, values, inverse_perm, block_starts,
            np.full(len(block_starts), block_size, dtype=np.int64), out,
        )
        return out

    def _selected_inverse(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(A+I)^-1 on the factor's pattern (Takahashi): indptr, indices, values, P^-1."""
        lower = self._factor.copy().L().tocsc()  # L() converts in place: work on a copy
        lower.sort_indices()
        perm = np.asarray(self._factor.P(), dtype=np.int64)
        indptr = lower.indptr.astype(np.int64)
        indices = lower.indices.astype(np.int64)
        values = selinv.takahashi_inverse(indptr, indices, lower.data)
        inverse_perm = np.empty_like(perm)
        inverse_perm[perm] = np.arange(len(perm))
        return indptr, indices, values, inverse_perm

    def inverse_on_pattern(self) -> np.ndarray:
        """Entries of (A+I)^-1 on A's stored (full symmetric) pattern, laid out as its data."""
        indptr, indices, values, inverse_perm = self._selected_inverse()
        cols = np.repeat(np.arange(self.q, dtype=np.int64), np.diff(self.indptr))
        out = np.empty(len(self.indices))
        selinv.gather_symmetric(
            indptr, indices, values, inverse_perm, np.asarray(self.indices, dtype=np.int64),
            cols, out,
        )
        return out
