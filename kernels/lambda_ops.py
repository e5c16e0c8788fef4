"""Apply the relative covariance factor Lambda(theta) to the Gram blocks.

Lambda is block diagonal with one lower-triangular ``p_k x p_k`` block
``T_k`` per level of term k. Per column ``c`` of Z the caller passes
``col_block_start`` (first column of c's level block), ``col_pos`` (c's place
in that block), ``col_block_size`` (p_k) and ``col_t_offset`` (where T_k
starts in the flat, row-major ``t_flat``).
"""


import numpy as np
from numba import njit, prange

from .config import NJIT_OPTIONS, kernel


@kernel
def scale_sparse_gram(indptr, indices, gram_data, col_block_start, col_pos, col_block_size,
                      col_t_offset, t_flat, out_data, dense_from):
    """out = Lambda' A Lambda on A's stored pattern.

    A must be block-complete: whenever one entry of a (level block, level
    block) pair is stored, all are, so every column of a level block has the
    same row pattern and a block's rows are consecutive in each column.

    In columns c >= ``dense_from`` only rows ``dense_from <= i <= c`` are
    written (all that the blocked factorisation reads there); pass the number
    of columns to write every entry.
    """
    _scale_columns(indptr, indices, gram_data, col_block_start, col_pos, col_block_size,
                   col_t_offset, t_flat, out_data, dense_from, 0, indptr.shape[0] - 1)


@njit(parallel=True, **NJIT_OPTIONS)
def scale_sparse_gram_parallel(indptr, indices, gram_data, col_block_start, col_pos,
                               col_block_size, col_t_offset, t_flat, out_data, dense_from,
                               col_bounds):
    """scale_sparse_gram over the column bands ``[col_bounds[b], col_bounds[b+1])`` in
    parallel: each column writes only its own entries."""
    for band in prange(col_bounds.shape[0] - 1):
        _scale_columns(indptr, indices, gram_data, col_block_start, col_pos, col_block_size,
                       col_t_offset, t_flat, out_data, dense_from, col_bounds[band],
                       col_bounds[band + 1])


@kernel
def _scale_columns(indptr, indices, gram_data, col_block_start, col_pos, col_block_size,
                   col_t_offset, t_flat, out_data, dense_from, col_from, col_to):
    """scale_sparse_gram for the columns col_from <= c < col_to."""
    for c in range(col_from, col_to):
        start = indptr[c]
        pc = col_pos[c]
        sc = col_block_size[c]
        c0 = col_block_start[c]
        tc = col_t_offset[c]
        partial = c >= dense_from
        for k in range(start, indptr[c + 1]):
            i = indices[k]
            if partial:
                if i < dense_from:
                    continue
                if i > c:
                    break
            si = col_block_size[i]
            ti = col_t_offset[i]
            if sc == 1 and si == 1:
                # two scalar terms: Lambda's entries are t_i and t_c
                lam_c = t_flat[tc]
                out_data[k] = 0.0 if lam_c == 0.0 else t_flat[ti] * gram_data[k] * lam_c
                continue
            local = k - start
            pi = col_pos[i]
            total = 0.0
            for cc in range(pc, sc):
                lam_c = t_flat[tc + cc * sc + pc]
                if lam_c == 0.0:
                    continue
                col_start = indptr[c0 + cc] + local
                inner = 0.0
                for ii in range(pi, si):
                    inner += t_flat[ti + ii * si + pi] * gram_data[col_start + ii - pi]
                total += inner * lam_c
            out_data[k] = total


@kernel
def scale_sparse_gram_gradient(indptr, indices, gram_data, col_block_start, col_pos,
                               col_block_size, col_t_offset, t_flat, weights, grad_out):
    """grad_out[e] = sum over stored entries of weights * d(Lambda' A Lambda) / d t_flat[e].

    The derivative of scale_sparse_gram's output (every entry written) in each
    entry of the flat T blocks, contracted with ``weights`` in one pass; A as
    there. ``grad_out`` is zeroed first.
    """
    for e in range(grad_out.shape[0]):
        grad_out[e] = 0.0
    _gradient_of_columns(indptr, indices, gram_data, col_block_start, col_pos, col_block_size,
                         col_t_offset, t_flat, weights, grad_out, 0, indptr.shape[0] - 1)


@njit(parallel=True, **NJIT_OPTIONS)
def scale_sparse_gram_gradient_parallel(indptr, indices, gram_data, col_block_start, col_pos,
                                        col_block_size, col_t_offset, t_flat, weights, grad_out,
                                        col_bounds):
    """scale_sparse_gram_gradient over the column bands ``[col_bounds[b],
    col_bounds[b+1])`` in parallel, each into its own copy of grad_out, summed after."""
    n_bands = col_bounds.shape[0] - 1
    parts = np.zeros((n_bands, grad_out.shape[0]))
    for band in prange(n_bands):
        _gradient_of_columns(indptr, indices, gram_data, col_block_start, col_pos,
                             col_block_size, col_t_offset, t_flat, weights, parts[band],
                             col_bounds[band], col_bounds[band + 1])
    for e in range(grad_out.shape[0]):
        total = 0.0
        for band in range(n_bands):
            total += parts[band, e]
        grad_out[e] = total


@kernel
def _gradient_of_columns(indptr, indices, gram_data, col_block_start, col_pos, col_block_size,
                         col_t_offset, t_flat, weights, grad_out, col_from, col_to):
    """Add scale_sparse_gram_gradient's terms of the columns col_from <= c < col_to."""
    for c in range(col_from, col_to):
        start = indptr[c]
        pc = col_pos[c]
        sc = col_block_size[c]
        c0 = col_block_start[c]
        tc = col_t_offset[c]
        for k in range(start, indptr[c + 1]):
            w = weights[k]
            if w == 0.0:
                continue
            i = indices[k]
            local = k - start
            pi = col_pos[i]
            si = col_block_size[i]
            ti = col_t_offset[i]
            for cc in range(pc, sc):
                col_start = indptr[c0 + cc] + local
                lam_c = t_flat[tc + cc * sc + pc] * w
                inner = 0.0
                for ii in range(pi, si):
                    g = gram_data[col_start + ii - pi]
                    inner += t_flat[ti + ii * si + pi] * g
                    grad_out[ti + ii * si + pi] += lam_c * g
                grad_out[tc + cc * sc + pc] += w * inner


@kernel
def lambda_t_times(dense, col_block_start, col_pos, col_block_size, col_t_offset, t_flat, out):
    """out = Lambda' @ dense for a dense q x m array."""
    q = dense.shape[0]
    m = dense.shape[1]
    for c in range(q):
        pc = col_pos[c]
        sc = col_block_size[c]
        c0 = col_block_start[c]
        tc = col_t_offset[c]
        for j in range(m):
            out[c, j] = 0.0
        for cc in range(pc, sc):
            lam = t_flat[tc + cc * sc + pc]
            row = c0 + cc
            for j in range(m):
                out[c, j] += lam * dense[row, j]


@kernel
def lambda_times(dense, col_block_start, col_pos, col_block_size, col_t_offset, t_flat, out):
    """out = Lambda @ dense for a dense q x m array (maps spherical u to b)."""
    q = dense.shape[0]
    m = dense.shape[1]
    for c in range(q):
        pc = col_pos[c]
        sc = col_block_size[c]
        c0 = col_block_start[c]
        tc = col_t_offset[c]
        for j in range(m):
            out[c, j] = 0.0
        for cc in range(0, pc + 1):
            lam = t_flat[tc + pc * sc + cc]
            row = c0 + cc
            for j in range(m):
                out[c, j] += lam * dense[row, j]


@kernel
def fill_t_flat(theta, term_theta_offset, term_size, term_t_offset, t_flat):
    """Write each term's lower-triangular T_k (row-major) from theta.

    theta holds each T_k's lower triangle column by column, as lme4 does.
    """
    for k in range(term_size.shape[0]):
        p = term_size[k]
        pos = term_theta_offset[k]
        base = term_t_offset[k]
        for idx in range(p * p):
            t_flat[base + idx] = 0.0
        for col in range(p):
            for row in range(col, p):
                t_flat[base + row * p + col] = theta[pos]
                pos += 1
