"""Blocked Cholesky for crossed designs: block-diagonal first term, dense Schur rest.

See kernels/blocked.py for the algebra. All fill lands in one dense
(q - q1) x (q - q1) block, factored by LAPACK; the first term's levels, the
bulk of q, cost O(nnz) per evaluation.
"""

from __future__ import annotations

import math
import os

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from ..kernels import blocked, tiled

#: Dense Schur blocks up to this size always take the blocked path (m^3/3 flops).
MAX_DENSE_SIZE = 6000

#: Wider blocks may take this much memory (8 m^2 bytes), and at most a quarter of the RAM.
MAX_DENSE_BYTES = 4 * 2**30

#: Multiply-adds in the Schur downdate above which the parallel kernels pay off. With
#: Numba's workers passive (interlace_nb/__init__.py) InstEval's 2.5 million took 6.4
#: against 12.9 ms, its gradient's pass over the first term 7.8 against 15 ms.
PARALLEL_DOWNDATE_WORK = 1_000_000

#: Rows and columns of a tile of the dense block in the tiled kernels (kernels/tiled.py).
#: On B5's 16,000-wide block, quiet machine, the tiled downdate took 14.7-16.5 s with
#: tiles of 512 (2 MiB), 18.5-19.7 s with 256 (one 512 KiB L2), 19.0-19.6 s with 384
#: and 33 s with 1024, against 45 s level by level; 512 also merges the level lists
#: a third as often.
TILE_SIZE = 512

#: Dense blocks from this width on take the tiled kernels. Below it S fits in the
#: last-level cache: on B2 (2,000 wide) tiles made values 5% faster but the gradient's
#: pass slower (L-BFGS-B fit 6.97 against 6.33 s), on B3 and B4 fits within noise.
TILED_MIN_SIZE = 8000


def dense_size_limit() -> int:
    """Widest dense Schur block the automatic choice accepts, from MAX_DENSE_BYTES and RAM."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        ram = 4 * MAX_DENSE_BYTES
    return max(MAX_DENSE_SIZE, int(math.sqrt(min(MAX_DENSE_BYTES, ram / 4) / 8)))


def balanced_column_bounds(m: int, n_bands: int, work: np.ndarray | None = None) -> np.ndarray:
    """Column bands of an upper triangle holding about equal work.

    ``work[c]`` is column c's share (default: c + 1, a full triangle); a band
    holds at least one column.
    """
    if m == 0:
        return np.zeros(1, dtype=np.int64)
    n_bands = max(1, min(n_bands, m))
    if work is None:
        bounds = np.round(m * np.sqrt(np.arange(n_bands + 1) / n_bands)).astype(np.int64)
        return np.unique(bounds)
    cumulative = np.cumsum(work, dtype=float)
    targets = cumulative[-1] * np.arange(1, n_bands) / n_bands
    inner = np.searchsorted(cumulative, targets, side="right")
    return np.unique(np.concatenate([[0], np.clip(inner, 1, m - 1), [m]])).astype(np.int64)


def rows_below_first_term(indptr: np.ndarray, q1: int, p1: int) -> np.ndarray:
    """Each first-term level's rows below q1 (the other terms' levels it meets)."""
    starts = np.arange(0, q1, p1)
    return (indptr[starts + 1] - indptr[starts] - p1).astype(float)


def downdate_work(indptr: np.ndarray, q1: int, p1: int) -> float:
    """Multiply-adds in the Schur downdate: a level with r rows below q1 takes
    r (r + 1) / 2 products of p1-vectors."""
    rows_below = rows_below_first_term(indptr, q1, p1)
    return float(np.sum(rows_below * (rows_below + 1.0) / 2.0)) * p1 * p1


def downdate_column_work(
    indptr: np.ndarray, indices: np.ndarray, q1: int, p1: int, m: int
) -> np.ndarray:
    """Updates per Schur column in the downdate: a level's k-th row below q1 takes k."""
    first = indptr[np.arange(0, q1, p1)] + p1
    lengths = indptr[np.arange(0, q1, p1) + 1] - first
    offsets = np.cumsum(lengths) - lengths
    entries = np.repeat(first - offsets, lengths) + np.arange(lengths.sum())
    rank = np.arange(lengths.sum()) - np.repeat(offsets, lengths) + 1.0
    return np.bincount(indices[entries] - q1, weights=rank, minlength=m)


def _triangular_solve(upper: np.ndarray, rhs: np.ndarray, transpose: bool) -> np.ndarray:
    """Solve U x = rhs (or U' x = rhs) with LAPACK's trtrs.

    Called directly: scipy's solve_triangular wrapper costs about a
    millisecond per call on small systems when BLAS threads are busy.
    """
    solution, info = lapack.dtrtrs(upper, rhs, lower=0, trans=int(transpose))
    if info != 0:
        raise FloatingPointError(f"triangular solve failed (LAPACK info {info})")
    return solution


def _symmetrize_from_upper(matrix: np.ndarray, step: int = 512) -> None:
    """Copy the upper triangle onto the lower one in place, a band of rows at a time."""
    m = matrix.shape[0]
    for start in range(0, m, step):
        stop = min(start + step, m)
        block = matrix[start:stop, start:stop]
        block[...] = np.triu(block) + np.triu(block, 1).T
        matrix[stop:, start:stop] = matrix[start:stop, stop:].T


def mirror_positions(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """For a symmetric CSC pattern: where entry k's transpose (j, i) is stored."""
    n = len(indptr) - 1
    numbered = sp.csc_matrix((np.arange(1, len(indices) + 1, dtype=float), indices, indptr),
                             shape=(n, n))
    return (numbered.T.tocsc().sorted_indices().data - 1).astype(np.int64)


class TileLayout:
    """The first term's rows below q1 regrouped by tile block (kernels/tiled.py), with
    bands of column blocks of about equal work for the parallel kernels."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, q1: int, p1: int, m: int,
                 tile_size: int, n_bands: int):
        self.tile_size = tile_size
        n_blocks = -(-m // tile_size)
        (self.seg_ptr, self.seg_level, self.seg_entry, self.entry_row, self.entry_position,
         downdate_work) = tiled.block_layout(indptr, indices, q1, p1, tile_size, n_blocks)
        self.downdate_bands = balanced_column_bounds(n_blocks, n_bands, downdate_work)
        # the inverse pass reads, for each row in a column block, all of its level's rows
        sizes = np.diff(self.seg_entry).astype(float)
        level_rows = np.bincount(self.seg_level, weights=sizes, minlength=q1 // p1)
        block_of_segment = np.repeat(np.arange(n_blocks), np.diff(self.seg_ptr))
        inverse_work = np.bincount(block_of_segment, weights=sizes * level_rows[self.seg_level],
                                   minlength=n_blocks)
        self.inverse_bands = balanced_column_bounds(n_blocks, n_bands, inverse_work)
        self.values = np.empty((len(self.entry_row), p1))

    def downdate(self, l21: np.ndarray, schur: np.ndarray) -> None:
        """schur -= L21 L21' (upper triangle), tile by tile."""
        np.take(l21, self.entry_position, out=self.values, mode="clip")  # valid by construction
        tiled.downdate_schur_tiled(self.seg_ptr, self.seg_level, self.seg_entry,
                                   self.entry_row, self.values, self.tile_size,
                                   self.downdate_bands, schur)

    def schur_inverse_times_rows(self, w: np.ndarray, schur_inverse: np.ndarray,
                                 out: np.ndarray) -> None:
        """out = -S^-1[R_j, R_j] W_j below each first-term level's block (pattern layout)."""
        np.take(w, self.entry_position, out=self.values, mode="clip")
        y = np.zeros_like(self.values)
        tiled.schur_inverse_times_rows(self.seg_ptr, self.seg_level, self.seg_entry,
                                       self.entry_row, self.values, self.tile_size,
                                       self.inverse_bands, schur_inverse, y)
        out[self.entry_position] = -y


class BlockedCholesky:
    """Factor ``A + I`` split after the first term's ``q1`` columns (blocks of ``p1``)."""

    name = "blocked"

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, q: int, q1: int, p1: int,
                 n_bands: int = 16):
        self.indptr = indptr.astype(np.int64, copy=False)
        self.indices = indices if indices.dtype in (np.int32, np.int64) else (
            indices.astype(np.int64))
        self.q = q
        self.q1 = q1
        self.p1 = p1
        self.m = q - q1
        self._l11 = np.zeros((q1 // p1, p1, p1))
        self._l21 = np.zeros(len(indices))
        self._schur = np.zeros((self.m, self.m), order="F")
        self._schur_inverse_cache: np.ndarray | None = None
        self._schur_inverse_symmetric = False
        self._later_columns: tuple[np.ndarray, ...] | None = None
        self.parallel_downdate = downdate_work(self.indptr, q1, p1) > PARALLEL_DOWNDATE_WORK
        self.tiled = self.parallel_downdate and self.m >= TILED_MIN_SIZE
        # the selected inverse's pass over the first term's levels does the same work,
        # level by level (rows below q1 squared)
        rows_below = rows_below_first_term(self.indptr, q1, p1)
        self._level_bounds = balanced_column_bounds(q1 // p1, n_bands, rows_below**2 + 1.0)
        # the factor's and the solves' passes over the first term: work in proportion
        # to its rows
        self._solve_bounds = balanced_column_bounds(q1 // p1, n_bands, rows_below + 1.0)
        if self.tiled:
            self._tiles = TileLayout(self.indptr, self.indices, q1, p1, self.m, TILE_SIZE,
                                     n_bands)
        elif self.parallel_downdate:
            column_work = downdate_column_work(self.indptr, self.indices, q1, p1, self.m)
            self._column_bounds = balanced_column_bounds(self.m, n_bands, column_work)

    def factor(self, data: np.ndarray) -> float:
        """Factor ``A + I``; return log det (nan when not positive definite)."""
        self._schur_inverse_cache = None
        arguments = (self.indptr, self.indices, data, self.q1, self.p1, self._l11, self._l21)
        if self.parallel_downdate:
            logdet = blocked.factor_first_term_parallel(*arguments, self._solve_bounds)
        else:
            logdet = blocked.factor_first_term(*arguments)
        if not np.isfinite(logdet):
            return float("nan")
        if self.m:
            blocked.fill_schur(self.indptr, self.indices, data, self.q1, self._schur)
            if self.tiled:
                self._tiles.downdate(self._l21, self._schur)
            elif self.parallel_downdate:
                blocked.downdate_schur_parallel(
                    self.indptr, self.indices, self._l21, self.q1, self.p1,
                    self._column_bounds, self._schur,
                )
            else:
                blocked.downdate_schur(
                    self.indptr, self.indices, self._l21, self.q1, self.p1, self._schur
                )
            _, info = lapack.dpotrf(self._schur, lower=0, clean=0, overwrite_a=1)
            if info != 0:
                return float("nan")
            logdet += 2.0 * float(np.log(np.diag(self._schur)).sum())
        return logdet

    def forward(self, rhs: np.ndarray) -> np.ndarray:
        """c = L^-1 rhs (no permutation: the blocks are the ordering)."""
        rhs = np.ascontiguousarray(rhs.reshape(self.q, -1))
        c = np.empty_like(rhs)
        r2 = rhs[self.q1 :].copy()
        arguments = (self.indptr, self.indices, self._l11, self._l21, self.q1, self.p1, rhs, c,
                     r2)
        if self.parallel_downdate:
            blocked.forward_first_term_parallel(*arguments, self._solve_bounds)
        else:
            blocked.forward_first_term(*arguments)
        if self.m:
            c[self.q1 :] = _triangular_solve(self._schur, r2, transpose=True)
        return c

    def backward(self, w: np.ndarray) -> np.ndarray:
        """u = L^-T w."""
        shape = w.shape
        w = np.ascontiguousarray(w.reshape(self.q, -1))
        u = np.empty_like(w)
        if self.m:
            u[self.q1 :] = _triangular_solve(self._schur, w[self.q1 :], transpose=False)
        u2 = np.ascontiguousarray(u[self.q1 :])
        u1 = np.empty((self.q1, w.shape[1]))
        arguments = (self.indptr, self.indices, self._l11, self._l21, self.q1, self.p1,
                     np.ascontiguousarray(w[: self.q1]), u2, u1)
        if self.parallel_downdate:
            blocked.backward_first_term_parallel(*arguments, self._solve_bounds)
        else:
            blocked.backward_first_term(*arguments)
        u[: self.q1] = u1
        return u.reshape(shape)

    def _schur_inverse(self, symmetric: bool = True) -> np.ndarray:
        """S^-1 (dense, Fortran order), computed once per factorisation and kept.

        With ``symmetric=False`` only the upper triangle is guaranteed.
        """
        if self._schur_inverse_cache is None:
            if not self.m:
                return np.zeros((0, 0), order="F")
            inverse, info = lapack.dpotri(self._schur, lower=0)
            if info != 0:
                raise FloatingPointError("could not invert the Schur block")
            self._schur_inverse_cache = inverse
            self._schur_inverse_symmetric = False
        if symmetric and not self._schur_inverse_symmetric:
            _symmetrize_from_upper(self._schur_inverse_cache)
            self._schur_inverse_symmetric = True
        return self._schur_inverse_cache

    def inverse_diagonal_blocks(self, block_starts: np.ndarray, block_size: int) -> np.ndarray:
        """Diagonal blocks of (A+I)^-1 at the given (unpermuted) column starts."""
        s_inv = self._schur_inverse()
        if len(block_starts) and block_starts[0] < self.q1:
            blocks = np.empty((self.q1 // self.p1, self.p1, self.p1))
            blocked.first_term_inverse_blocks(
                self.indptr, self.indices, self._l11, self._l21, self.q1, self.p1,
                np.ascontiguousarray(s_inv), blocks,
            )
            return blocks[block_starts // self.p1]
        out = np.empty((len(block_starts), block_size, block_size))
        for k, start in enumerate(block_starts):
            rows = slice(start - self.q1, start - self.q1 + block_size)
            out[k] = s_inv[rows, rows]
        return out

    def _later_column_entries(self) -> tuple[np.ndarray, ...]:
        """Where the stored entries of columns >= q1 come from, found once.

        Rows >= q1: the upper triangle of S^-1 (row, column); rows < q1: the
        mirrored entry in a first-term column.
        """
        cols = np.repeat(np.arange(self.q), np.diff(self.indptr))
        later = np.flatnonzero(cols >= self.q1)
        rows = self.indices[later]
        in_schur = rows >= self.q1
        r2, c2 = rows[in_schur] - self.q1, cols[later][in_schur] - self.q1
        mirrored = later[~in_schur]
        mirror = mirror_positions(self.indptr, self.indices)[mirrored]
        return later[in_schur], np.minimum(r2, c2), np.maximum(r2, c2), mirrored, mirror

    def inverse_on_pattern(self) -> np.ndarray:
        """Entries of (A+I)^-1 on A's stored (full symmetric) pattern, laid out as its data."""
        s_inv = self._schur_inverse(symmetric=self.tiled)
        out = np.zeros(len(self.indices))
        if self.tiled:
            w = np.empty(int(self.indptr[self.q1]))
            tiled.rows_times_inverse_l11(
                self.indptr, self._l11, self._l21, self.p1, self._level_bounds, w
            )
            self._tiles.schur_inverse_times_rows(w, s_inv, out)
            tiled.level_own_blocks(self.indptr, self._l11, self.p1, self._level_bounds, w, out)
        elif self.parallel_downdate:
            blocked.first_term_inverse_columns_parallel(
                self.indptr, self.indices, self._l11, self._l21, self.q1, self.p1, s_inv,
                self._level_bounds, out,
            )
        else:
            blocked.first_term_inverse_columns(
                self.indptr, self.indices, self._l11, self._l21, self.q1, self.p1, s_inv, out
            )
        if self._later_columns is None:
            self._later_columns = self._later_column_entries()
        dense_at, dense_row, dense_col, mirrored, mirror = self._later_columns
        out[dense_at] = s_inv[dense_row, dense_col]
        out[mirrored] = out[mirror]
        return out
