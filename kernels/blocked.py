"""Blocked Cholesky for crossed designs (MixedModels.jl's layout).

The scaled system A = Lambda'Z'WZ Lambda + I is split after the first term
(the grouping factor with most levels). Its block A11 is block diagonal (one
p1 x p1 block per level, since a row has one level), so

    L11 = chol(A11) blockwise,  L21 = A21 L11^-T (sparse, A21's pattern),
    S   = A22 - L21 L21'        (dense: all fill lands here),  S = U'U (LAPACK).

The dense block is kept as an upper triangle in Fortran order (so L22 = U').

The input is the full symmetric, block-complete CSC of the scaled system
without the identity. In a column of the first term the rows are the level's
own p1 rows, then rows >= q1 (the other terms' levels it meets).
"""

import numpy as np
from numba import njit, prange

from .config import NJIT_OPTIONS, kernel


@kernel
def _small_cholesky(block, p):
    """In-place lower Cholesky of a small p x p SPD block; returns False if not SPD."""
    for j in range(p):
        total = block[j, j]
        for k in range(j):
            total -= block[j, k] * block[j, k]
        if total <= 0.0:
            return False
        diag = np.sqrt(total)
        block[j, j] = diag
        for i in range(j + 1, p):
            acc = block[i, j]
            for k in range(j):
                acc -= block[i, k] * block[j, k]
            block[i, j] = acc / diag
        for i in range(j):
            block[i, j] = 0.0
    return True


@kernel
def factor_first_term(indptr, indices, scaled, q1, p1, l11_out, l21_out):
    """Per level j of the first term: L11_j = chol(A11_j + I), L21_j = A21_j L11_j^-T.

    ``l21_out`` is laid out like ``scaled``; only entries in first-term
    columns at rows >= q1 are written. Returns sum(log diag L11)*2, or nan
    if a block is not positive definite.
    """
    return _factor_levels(indptr, scaled, p1, l11_out, l21_out, 0, q1 // p1)


@njit(parallel=True, **NJIT_OPTIONS)
def factor_first_term_parallel(indptr, indices, scaled, q1, p1, l11_out, l21_out, level_bounds):
    """factor_first_term over level ranges in parallel (each level writes its own
    blocks); the ranges' log determinants are added in range order."""
    n_bands = level_bounds.shape[0] - 1
    logdets = np.zeros(n_bands)
    for band in prange(n_bands):
        logdets[band] = _factor_levels(indptr, scaled, p1, l11_out, l21_out,
                                       level_bounds[band], level_bounds[band + 1])
    total = 0.0
    for band in range(n_bands):
        total += logdets[band]
    return total


@kernel
def _factor_levels(indptr, scaled, p1, l11_out, l21_out, level_from, level_to):
    """factor_first_term for the levels level_from <= j < level_to."""
    logdet = 0.0
    ok = True
    for j in range(level_from, level_to):
        c0 = j * p1
        block = l11_out[j]
        for t in range(p1):
            start = indptr[c0 + t]
            for r in range(p1):
                block[r, t] = scaled[start + r]
            block[t, t] += 1.0
        if not _small_cholesky(block, p1):
            ok = False
            continue
        for t in range(p1):
            logdet += 2.0 * np.log(block[t, t])
        n_rows = indptr[c0 + 1] - indptr[c0] - p1
        for a in range(n_rows):
            # forward substitution: L11_j x = A21_j[a, :]
            for t in range(p1):
                pos = indptr[c0 + t] + p1 + a
                acc = scaled[pos]
                for s in range(t):
                    acc -= block[t, s] * l21_out[indptr[c0 + s] + p1 + a]
                l21_out[pos] = acc / block[t, t]
    if not ok:
        return np.nan
    return logdet


@kernel
def fill_schur(indptr, indices, scaled, q1, schur_out):
    """A22 + I into the upper triangle of the dense m x m ``schur_out`` (m = q - q1).

    The caller passes a Fortran-ordered array, so each column of the upper
    triangle is contiguous: the downdate below then streams through memory.
    """
    q = indptr.shape[0] - 1
    m = q - q1
    for c in range(m):
        for r in range(c + 1):
            schur_out[r, c] = 0.0
    for c in range(q1, q):
        for k in range(indptr[c], indptr[c + 1]):
            r = indices[k]
            if q1 <= r <= c:
                schur_out[r - q1, c - q1] = scaled[k]
        schur_out[c - q1, c - q1] += 1.0


@kernel
def _downdate_band(indptr, indices, l21, q1, p1, lo, hi, schur):
    """S[:, lo:hi] -= (L21 L21')[:, lo:hi] on the upper triangle (lo, hi in q-numbering)."""
    n_levels = q1 // p1
    for j in range(n_levels):
        c0 = j * p1
        first = indptr[c0] + p1
        last = indptr[c0 + 1]
        # rows are sorted: skip to the first row >= lo
        a_lo = first
        a_hi = last
        while a_lo < a_hi:
            mid = (a_lo + a_hi) // 2
            if indices[mid] < lo:
                a_lo = mid + 1
            else:
                a_hi = mid
        for a in range(a_lo, last):
            row = indices[a]
            if row >= hi:
                break
            column = schur[:, row - q1]
            offset_a = a - first
            if p1 == 1:
                value = l21[a]
                for b in range(first, a + 1):
                    column[indices[b] - q1] -= value * l21[b]
                continue
            for b in range(first, a + 1):
                offset_b = b - first
                total = 0.0
                for t in range(p1):
                    base = indptr[c0 + t] + p1
                    total += l21[base + offset_a] * l21[base + offset_b]
                column[indices[b] - q1] -= total


@kernel
def downdate_schur(indptr, indices, l21, q1, p1, schur):
    """S -= L21 L21' on the upper triangle of the Fortran-ordered ``schur``.

    Each first-term level j adds the outer product of its L21 rows; a column
    of ``schur`` is contiguous, so each update streams through memory.
    """
    q = indptr.shape[0] - 1
    _downdate_band(indptr, indices, l21, q1, p1, q1, q, schur)


@njit(parallel=True, **NJIT_OPTIONS)
def downdate_schur_parallel(indptr, indices, l21, q1, p1, col_bounds, schur):
    """downdate_schur split over column bands ``[col_bounds[b], col_bounds[b+1])``.

    Each band is owned by one task, which scans every first-term level and
    applies only the products that land in its columns: no two tasks write
    the same entry, so no atomics. Worth it only for large dense blocks: on
    small ones thread start-up and BLAS threads cost more than the work.
    """
    n_bands = col_bounds.shape[0] - 1
    for band in prange(n_bands):
        _downdate_band(
            indptr, indices, l21, q1, p1, col_bounds[band] + q1, col_bounds[band + 1] + q1, schur
        )


@kernel
def forward_first_term(indptr, indices, l11, l21, q1, p1, rhs, c1_out, r2_out):
    """c1 = L11^-1 r1 blockwise and r2 -= L21 c1 (r2_out starts as rhs[q1:])."""
    _forward_levels(indptr, indices, l11, l21, q1, p1, rhs, c1_out, r2_out, 0, q1 // p1)


@njit(parallel=True, **NJIT_OPTIONS)
def forward_first_term_parallel(indptr, indices, l11, l21, q1, p1, rhs, c1_out, r2_out,
                                level_bounds):
    """forward_first_term over the level ranges ``[level_bounds[b], level_bounds[b+1])``
    in parallel. Each range subtracts its products from its own zeroed copy of r2
    (the dense block's rows only, small); the copies are added in range order."""
    n_bands = level_bounds.shape[0] - 1
    parts = np.zeros((n_bands, r2_out.shape[0], r2_out.shape[1]))
    for band in prange(n_bands):
        _forward_levels(indptr, indices, l11, l21, q1, p1, rhs, c1_out, parts[band],
                        level_bounds[band], level_bounds[band + 1])
    for band in range(n_bands):
        r2_out += parts[band]


@kernel
def _forward_levels(indptr, indices, l11, l21, q1, p1, rhs, c1_out, r2_out, level_from,
                    level_to):
    """forward_first_term for the first term's levels level_from <= j < level_to."""
    m = rhs.shape[1]
    for j in range(level_from, level_to):
        c0 = j * p1
        block = l11[j]
        for col in range(m):
            for t in range(p1):
                acc = rhs[c0 + t, col]
                for s in range(t):
                    acc -= block[t, s] * c1_out[c0 + s, col]
                c1_out[c0 + t, col] = acc / block[t, t]
        first = indptr[c0] + p1
        for a in range(first, indptr[c0 + 1]):
            row = indices[a] - q1
            offset = a - first
            for t in range(p1):
                value = l21[indptr[c0 + t] + p1 + offset]
                for col in range(m):
                    r2_out[row, col] -= value * c1_out[c0 + t, col]


@kernel
def backward_first_term(indptr, indices, l11, l21, q1, p1, w1, u2, u1_out):
    """u1 = L11^-T (w1 - L21' u2) blockwise."""
    _backward_levels(indptr, indices, l11, l21, q1, p1, w1, u2, u1_out, 0, q1 // p1)


@njit(parallel=True, **NJIT_OPTIONS)
def backward_first_term_parallel(indptr, indices, l11, l21, q1, p1, w1, u2, u1_out,
                                 level_bounds):
    """backward_first_term over level ranges in parallel: each level writes its own rows."""
    for band in prange(level_bounds.shape[0] - 1):
        _backward_levels(indptr, indices, l11, l21, q1, p1, w1, u2, u1_out,
                         level_bounds[band], level_bounds[band + 1])


@kernel
def _backward_levels(indptr, indices, l11, l21, q1, p1, w1, u2, u1_out, level_from, level_to):
    """backward_first_term for the first term's levels level_from <= j < level_to."""
    m = w1.shape[1]
    for j in range(level_from, level_to):
        c0 = j * p1
        block = l11[j]
        first = indptr[c0] + p1
        for col in range(m):
            for t in range(p1):
                acc = w1[c0 + t, col]
                base = indptr[c0 + t] + p1
                for a in range(first, indptr[c0 + 1]):
                    acc -= l21[base + a - first] * u2[indices[a] - q1, col]
                u1_out[c0 + t, col] = acc
            for t in range(p1 - 1, -1, -1):
                acc = u1_out[c0 + t, col]
                for s in range(t + 1, p1):
                    acc -= block[s, t] * u1_out[c0 + s, col]
                u1_out[c0 + t, col] = acc / block[t, t]


@kernel
def _invert_lower(block, inv_out):
    """inv_out = block^-1 for a small lower-triangular block (forward substitution)."""
    p = block.shape[0]
    for col in range(p):
        for row in range(p):
            inv_out[row, col] = 0.0
        inv_out[col, col] = 1.0 / block[col, col]
        for row in range(col + 1, p):
            acc = 0.0
            for k in range(col, row):
                acc -= block[row, k] * inv_out[k, col]
            inv_out[row, col] = acc / block[row, row]


@kernel
def lower_inverse_gram(inv_l, s, t):
    """(L^-T L^-1)[s, t] from a small lower-triangular inverse ``inv_l``."""
    total = 0.0
    for k in range(max(s, t), inv_l.shape[0]):
        total += inv_l[k, s] * inv_l[k, t]
    return total


@kernel
def first_term_inverse_blocks(indptr, indices, l11, l21, q1, p1, schur_inverse, out):
    """Diagonal blocks of A^-1 for the first term's levels.

    (A^-1)_jj = L11_j^-T (I + L21_j' S^-1[R_j, R_j] L21_j) L11_j^-1, with
    ``schur_inverse`` the full dense S^-1.
    """
    n_levels = q1 // p1
    middle = np.empty((p1, p1))
    inv_l = np.empty((p1, p1))
    for j in range(n_levels):
        c0 = j * p1
        first = indptr[c0] + p1
        n_rows = indptr[c0 + 1] - first
        for s in range(p1):
            for t in range(p1):
                total = 1.0 if s == t else 0.0
                base_s = indptr[c0 + s] + p1
                base_t = indptr[c0 + t] + p1
                for a in range(n_rows):
                    ra = indices[first + a] - q1
                    la = l21[base_s + a]
                    if la == 0.0:
                        continue
                    for b in range(n_rows):
                        rb = indices[first + b] - q1
                        total += la * schur_inverse[ra, rb] * l21[base_t + b]
                middle[s, t] = total
        # inverse of the small lower-triangular L11_j
        block = l11[j]
        _invert_lower(block, inv_l)
        for s in range(p1):
            for t in range(p1):
                total = 0.0
                for a in range(p1):
                    for b in range(p1):
                        total += inv_l[a, s] * middle[a, b] * inv_l[b, t]
                out[j, s, t] = total


@kernel
def first_term_inverse_columns(indptr, indices, l11, l21, q1, p1, schur_inverse, out):
    """Entries of A^-1 in the first term's columns, on A's stored pattern.

    With W_j = L21_j L11_j^-1 and Y_j = S^-1[R_j, R_j] W_j, a level's own
    block is L11_j^-T L11_j^-1 + W_j' Y_j and its rows R_j below q1 hold
    -Y_j. ``schur_inverse`` is S^-1 in Fortran order, of which only the upper
    triangle is read; ``out`` is laid out like the pattern's data, and
    later columns are left untouched.
    """
    _inverse_columns_of_levels(
        indptr, indices, l11, l21, q1, p1, schur_inverse, 0, q1 // p1, out
    )


@njit(parallel=True, **NJIT_OPTIONS)
def first_term_inverse_columns_parallel(
    indptr, indices, l11, l21, q1, p1, schur_inverse, level_bounds, out
):
    """first_term_inverse_columns over the level ranges ``[level_bounds[b],
    level_bounds[b+1])`` in parallel: each level writes only its own columns."""
    for band in prange(level_bounds.shape[0] - 1):
        _inverse_columns_of_levels(
            indptr, indices, l11, l21, q1, p1, schur_inverse, level_bounds[band],
            level_bounds[band + 1], out,
        )


@kernel
def _inverse_columns_of_levels(
    indptr, indices, l11, l21, q1, p1, schur_inverse, level_from, level_to, out
):
    """first_term_inverse_columns for the first term's levels level_from <= j < level_to."""
    m = schur_inverse.shape[0]
    inv_l = np.empty((p1, p1))
    w = np.empty((m, p1))
    y = np.empty((m, p1))
    for j in range(level_from, level_to):
        c0 = j * p1
        first = indptr[c0] + p1
        n_rows = indptr[c0 + 1] - first
        block = l11[j]
        _invert_lower(block, inv_l)
        for a in range(n_rows):
            for t in range(p1):
                acc = 0.0
                for s in range(t, p1):
                    acc += l21[indptr[c0 + s] + p1 + a] * inv_l[s, t]
                w[a, t] = acc
                y[a, t] = 0.0
        # Y = S^-1[R, R] W from the upper triangle: rows are sorted, so for a <= b
        # S^-1[R_a, R_b] sits in column R_b (contiguous in Fortran order)
        for b in range(n_rows):
            column = schur_inverse[:, indices[first + b] - q1]
            if p1 == 1:
                acc = column[indices[first + b] - q1] * w[b, 0]
                wb = w[b, 0]
                for a in range(b):
                    sab = column[indices[first + a] - q1]
                    acc += sab * w[a, 0]
                    y[a, 0] += sab * wb
                y[b, 0] += acc
                continue
            for a in range(b + 1):
                sab = column[indices[first + a] - q1]
                for t in range(p1):
                    y[b, t] += sab * w[a, t]
                    if a != b:
                        y[a, t] += sab * w[b, t]
        for t in range(p1):
            start = indptr[c0 + t]
            for s in range(p1):
                total = lower_inverse_gram(inv_l, s, t)
                for a in range(n_rows):
                    total += w[a, s] * y[a, t]
                out[start + s] = total
            for a in range(n_rows):
                out[start + p1 + a] = -y[a, t]
