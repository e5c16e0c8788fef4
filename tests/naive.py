"""Slow, obvious NumPy twins of the Numba kernels and a dense reference fit.

Every function here builds dense matrices explicitly (Z from codes and
covariates, block-diagonal Lambda from theta, full inverses) so that it is
right by inspection. The kernel tests compare each kernel with its twin; the
property tests compare the sparse engine's criterion, conditional modes and
conditional variances with :func:`dense_criterion`.

Conventions (as in ``kernels/``): term k has ``p_k`` effects per level and its
columns of Z are level-major, level ``l`` owning columns
``offset_k + l * p_k + r``; theta holds each T_k's lower triangle column by
column; ``t_flat`` holds each T_k row-major.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import xlogy

# ----------------------------------------------------------------- layout


@dataclass(frozen=True)
class NaiveLayout:
    """Per-term and per-column metadata, built by hand the obvious way."""

    term_col_offset: np.ndarray
    term_size: np.ndarray
    term_theta_offset: np.ndarray
    term_t_offset: np.ndarray
    col_block_start: np.ndarray
    col_pos: np.ndarray
    col_block_size: np.ndarray
    col_t_offset: np.ndarray
    q: int
    n_theta: int
    t_flat_size: int


def layout(sizes: list[int], n_levels: list[int]) -> NaiveLayout:
    """Column metadata for terms with ``sizes[k]`` effects and ``n_levels[k]`` levels."""
    col_offset, theta_offset, t_offset = [], [], []
    block_start, pos, block_size, col_t = [], [], [], []
    col = theta = t = 0
    for p, nl in zip(sizes, n_levels, strict=True):
        col_offset.append(col)
        theta_offset.append(theta)
        t_offset.append(t)
        for level in range(nl):
            for r in range(p):
                block_start.append(col + level * p)
                pos.append(r)
                block_size.append(p)
                col_t.append(t)
        col += p * nl
        theta += p * (p + 1) // 2
        t += p * p
    i64 = np.int64
    return NaiveLayout(
        term_col_offset=np.array(col_offset, dtype=i64),
        term_size=np.array(sizes, dtype=i64),
        term_theta_offset=np.array(theta_offset, dtype=i64),
        term_t_offset=np.array(t_offset, dtype=i64),
        col_block_start=np.array(block_start, dtype=i64),
        col_pos=np.array(pos, dtype=i64),
        col_block_size=np.array(block_size, dtype=i64),
        col_t_offset=np.array(col_t, dtype=i64),
        q=col,
        n_theta=theta,
        t_flat_size=t,
    )


def theta_to_t(theta: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Each term's lower-triangular T_k, filled column by column from theta."""
    out = []
    pos = 0
    for p in sizes:
        t = np.zeros((p, p))
        for col in range(p):
            for row in range(col, p):
                t[row, col] = theta[pos]
                pos += 1
        out.append(t)
    if pos != len(theta):
        raise ValueError("theta has the wrong length for these term sizes")
    return out


def theta_lower(sizes: list[int]) -> np.ndarray:
    """lme4's bounds: 0 on the diagonal of each T_k, -inf below it."""
    return np.array(
        [0.0 if row == col else -np.inf for p in sizes for col in range(p) for row in range(col, p)]
    )


def dense_lambda(theta: np.ndarray, sizes: list[int], n_levels: list[int]) -> np.ndarray:
    """Block-diagonal Lambda: T_k repeated once per level of term k."""
    blocks = []
    for t, nl in zip(theta_to_t(theta, sizes), n_levels, strict=True):
        blocks.extend([t] * nl)
    q = sum(p * nl for p, nl in zip(sizes, n_levels, strict=True))
    lam = np.zeros((q, q))
    at = 0
    for block in blocks:
        p = block.shape[0]
        lam[at : at + p, at : at + p] = block
        at += p
    return lam


def lambda_from_metadata(col_block_start, col_pos, col_block_size, col_t_offset, t_flat):
    """Dense Lambda from the per-column metadata the kernels take."""
    q = len(col_pos)
    lam = np.zeros((q, q))
    for c in range(q):
        start, r, p, toff = col_block_start[c], col_pos[c], col_block_size[c], col_t_offset[c]
        t = np.asarray(t_flat[toff : toff + p * p]).reshape(p, p)
        for col in range(r + 1):  # row c of Lambda: T[r, col] at column start + col
            lam[c, start + col] = t[r, col]
    return lam


def dense_z_term(codes: np.ndarray, z: np.ndarray, n_levels: int) -> np.ndarray:
    """One term's block of Z: row i has z[i] in the columns of level codes[i]."""
    n, p = z.shape
    out = np.zeros((n, n_levels * p))
    for i in range(n):
        if codes[i] >= 0:
            out[i, codes[i] * p : codes[i] * p + p] = z[i]
    return out


def dense_z(codes_list: list[np.ndarray], z_list: list[np.ndarray], n_levels: list[int]):
    """Z for all terms, columns in term order."""
    return np.hstack(
        [dense_z_term(c, z, nl) for c, z, nl in zip(codes_list, z_list, n_levels, strict=True)]
    )


# ------------------------------------------------------------------ gram.py


def unique_level_pairs(codes_a, codes_b, n_levels_a, n_levels_b):
    """Twin of gram.unique_level_pairs: distinct pairs sorted by (a, b), and each row's pair."""
    assert all(0 <= a < n_levels_a for a in codes_a) and all(0 <= b < n_levels_b for b in codes_b)
    pairs = sorted({(int(a), int(b)) for a, b in zip(codes_a, codes_b, strict=True)})
    index = {pair: k for k, pair in enumerate(pairs)}
    row_pair = np.array([index[(int(a), int(b))] for a, b in zip(codes_a, codes_b, strict=True)],
                        dtype=np.int64)
    pair_a = np.array([a for a, _ in pairs], dtype=np.int64)
    pair_b = np.array([b for _, b in pairs], dtype=np.int64)
    return pair_a, pair_b, row_pair


def accumulate_pair_blocks(row_pair, z_a, z_b, weights, blocks_in):
    """Twin of gram.accumulate_pair_blocks: blocks_in + sum over rows of w z_a z_b'."""
    out = np.array(blocks_in, dtype=float, copy=True)
    for pair in range(out.shape[0]):
        rows = np.flatnonzero(row_pair == pair)
        out[pair] += z_a[rows].T @ np.diag(weights[rows]) @ z_b[rows]
    return out


def accumulate_z_cross(codes, z, weights, dense, out_in):
    """Twin of gram.accumulate_z_cross: out_in + Z_k' W D with Z_k built densely."""
    n_levels = out_in.shape[0] // z.shape[1]
    zk = dense_z_term(codes, z, n_levels)
    return np.array(out_in, dtype=float) + zk.T @ np.diag(weights) @ dense


def weighted_crossprod(a, b, weights):
    """Twin of gram.weighted_crossprod: A' W B."""
    return a.T @ np.diag(weights) @ b


def accumulate_weighted_crossprod(a, b, weights, out_in):
    """Twin of gram.accumulate_weighted_crossprod: out_in + A' W B."""
    return np.array(out_in, dtype=float) + a.T @ np.diag(weights) @ b


def refill_gram(entry_position, entry_z, unit_z, codes, z, term_col_offset, weights, x, y,
                nnz, q):
    """Twin of gram.refill_gram: ``(ztz_data, ztx, zty, xtx, xty, yty)``.

    Z'WZ's data (``nnz`` entries) as one bincount per entry; the rest from
    Z (q columns) built densely.
    """
    assert unit_z == all(np.all(z_t == 1.0) for z_t in z)
    ztz = np.zeros(nnz)
    for e, (a, r, b, c) in enumerate(entry_z):
        ztz += np.bincount(entry_position[e], weights * z[a][:, r] * z[b][:, c], minlength=nnz)
    ends = [*term_col_offset[1:], q]
    zd = dense_z(codes, z, [(ends[t] - term_col_offset[t]) // z_t.shape[1]
                            for t, z_t in enumerate(z)])
    wx, wy = weights[:, None] * x, weights * y
    return ztz, zd.T @ wx, zd.T @ wy, x.T @ wx, x.T @ wy, float(y @ wy)


def csc_from_pair_blocks(blk_a, blk_b, pair_start, value_start, level_a, level_b, values,
                         term_col_offset, term_size, term_n_levels):
    """Twin of gram.csc_from_pair_blocks, as a dense q x q matrix filled entry by entry."""
    q = int(sum(p * nl for p, nl in zip(term_size, term_n_levels, strict=True)))
    dense = np.zeros((q, q))
    for k, (a, b) in enumerate(zip(blk_a, blk_b, strict=True)):
        p_a, p_b = term_size[a], term_size[b]
        for i in range(pair_start[k + 1] - pair_start[k]):
            la, lb = level_a[pair_start[k] + i], level_b[pair_start[k] + i]
            block = values[value_start[k] + i * p_a * p_b:][: p_a * p_b].reshape(p_a, p_b)
            rows = term_col_offset[a] + la * p_a + np.arange(p_a)
            cols = term_col_offset[b] + lb * p_b + np.arange(p_b)
            dense[np.ix_(rows, cols)] += block
            if a != b:
                dense[np.ix_(cols, rows)] += block.T
    return dense


def merge_keyed_blocks(keys_a, blocks_a, keys_b, blocks_b):
    """Twin of gram.merge_keyed_blocks: a dict from key to summed block, read out sorted."""
    total: dict[int, np.ndarray] = {}
    for keys, blocks in ((keys_a, blocks_a), (keys_b, blocks_b)):
        for key, block in zip(keys, blocks, strict=True):
            total[int(key)] = total.get(int(key), 0.0) + np.asarray(block, dtype=float)
    keys = np.array(sorted(total), dtype=np.int64)
    width = blocks_a.shape[1]
    blocks = np.array([total[k] for k in keys.tolist()]).reshape(len(keys), width)
    return keys, blocks


# ------------------------------------------------------------ lambda_ops.py


def fill_t_flat(theta, term_theta_offset, term_size, term_t_offset, t_flat_size):
    """Twin of lambda_ops.fill_t_flat: each T_k written row-major at its offset."""
    out = np.zeros(t_flat_size)
    for k, p in enumerate(term_size):
        p = int(p)
        start = int(term_theta_offset[k])
        t = theta_to_t(np.asarray(theta[start : start + p * (p + 1) // 2]), [p])[0]
        out[term_t_offset[k] : term_t_offset[k] + p * p] = t.ravel()
    return out


def scale_sparse_gram(indptr, indices, gram_data, col_block_start, col_pos, col_block_size,
                      col_t_offset, t_flat, dense_from=None):
    """Twin of lambda_ops.scale_sparse_gram: dense Lambda' A Lambda read on A's pattern;
    NaN where the kernel writes nothing (columns c >= dense_from, rows outside
    [dense_from, c])."""
    q = len(indptr) - 1
    dense_from = q if dense_from is None else dense_from
    a = sp.csc_matrix((gram_data, indices, indptr), shape=(q, q)).toarray()
    lam = lambda_from_metadata(col_block_start, col_pos, col_block_size, col_t_offset, t_flat)
    full = lam.T @ a @ lam
    out = np.full(len(indices), np.nan)
    for c in range(q):
        for k in range(indptr[c], indptr[c + 1]):
            i = indices[k]
            if c < dense_from or dense_from <= i <= c:
                out[k] = full[i, c]
    return out


def lambda_t_times(dense, col_block_start, col_pos, col_block_size, col_t_offset, t_flat):
    """Twin of lambda_ops.lambda_t_times: Lambda' @ dense."""
    lam = lambda_from_metadata(col_block_start, col_pos, col_block_size, col_t_offset, t_flat)
    return lam.T @ dense


def lambda_times(dense, col_block_start, col_pos, col_block_size, col_t_offset, t_flat):
    """Twin of lambda_ops.lambda_times: Lambda @ dense."""
    lam = lambda_from_metadata(col_block_start, col_pos, col_block_size, col_t_offset, t_flat)
    return lam @ dense


# ---------------------------------------------------------------- selinv.py


def takahashi_inverse(indptr, indices, lower_data):
    """Twin of selinv.takahashi_inverse: dense (L L')^{-1} read on L's pattern."""
    n = len(indptr) - 1
    lower = sp.csc_matrix((lower_data, indices, indptr), shape=(n, n)).toarray()
    inverse = np.linalg.inv(lower @ lower.T)
    out = np.empty(len(indices))
    for c in range(n):
        for k in range(indptr[c], indptr[c + 1]):
            out[k] = inverse[indices[k], c]
    return out


def lookup_symmetric(indptr, indices, values, row, col):
    """Twin of selinv.lookup_symmetric: the stored value at (max, min), else NaN."""
    row, col = max(row, col), min(row, col)
    for k in range(indptr[col], indptr[col + 1]):
        if indices[k] == row:
            return float(values[k])
    return float("nan")


def diagonal_blocks(indptr, indices, values, inverse_perm, block_start, block_size):
    """Twin of selinv.diagonal_blocks: each level's p x p block, NaN where not stored."""
    n = len(indptr) - 1
    stored = np.full((n, n), np.nan)
    for c in range(n):
        for k in range(indptr[c], indptr[c + 1]):
            stored[indices[k], c] = values[k]
            stored[c, indices[k]] = values[k]
    p_max = int(max(block_size)) if len(block_size) else 0
    out = np.full((len(block_start), p_max, p_max), np.nan)
    for blk, (start, p) in enumerate(zip(block_start, block_size, strict=True)):
        where = [inverse_perm[start + r] for r in range(p)]
        out[blk, :p, :p] = stored[np.ix_(where, where)]
    return out


# --------------------------------------------------------------- effects.py


def add_random_effects(codes, z, effects, out_in):
    """Twin of effects.add_random_effects: out_in + Z b, rows with code -1 unchanged."""
    n_levels = effects.shape[0]
    b = effects.ravel()
    return np.array(out_in, dtype=float) + dense_z_term(codes, z, n_levels) @ b


# ------------------------------------------------------ the whole criterion


@dataclass(frozen=True)
class DenseFit:
    """The profiled criterion at one theta and what it determines, all dense."""

    objective: float
    beta: np.ndarray
    u: np.ndarray
    b: np.ndarray
    pwrss: float
    sigma2: float
    ld_l2: float
    ld_rx2: float
    lam: np.ndarray
    a: np.ndarray

    @property
    def cond_cov(self) -> np.ndarray:
        """sigma^2 Lambda A^{-1} Lambda' (formed on demand: q x q dense)."""
        return self.sigma2 * self.lam @ np.linalg.inv(self.a) @ self.lam.T

    @property
    def cond_sd(self) -> np.ndarray:
        """Conditional standard deviations of b (sqrt of cond_cov's diagonal)."""
        return np.sqrt(np.maximum(np.diag(self.cond_cov), 0.0))


def dense_criterion(y, x, z, theta, sizes, n_levels, *, reml, weights=None, offset=None):
    """lme4's profiled REML criterion / ML deviance by brute force.

    With A = Lambda'Z'WZ Lambda + I, (u, beta) solve the full mixed model
    equations

        [A              Lambda'Z'WX] [u   ]   [Lambda'Z'W r]
        [X'WZ Lambda    X'WX       ] [beta] = [X'W r       ],   r = y - offset,

    pwrss = ||W^1/2 (r - X beta - Z Lambda u)||^2 + ||u||^2 from the residuals,
    R_X'R_X = X'WX - X'WZ Lambda A^{-1} Lambda'Z'WX and

        ML   = log|A| - sum(log w) + n (1 + log(2 pi pwrss / n))
        REML = log|A| - sum(log w) + log|R_X'R_X| + (n-p)(1 + log(2 pi pwrss / (n-p)))

    The conditional covariance of b = Lambda u is sigma^2 Lambda A^{-1} Lambda'.
    ``z`` may be a dense array or a SciPy sparse matrix (only to make big
    references cheap; the algebra is the same).
    """
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float).reshape(len(y), -1)
    n, p = x.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    r = y if offset is None else y - np.asarray(offset, dtype=float)
    lam = dense_lambda(np.asarray(theta, dtype=float), sizes, n_levels)
    q = lam.shape[0]
    if sp.issparse(z):
        zl = sp.csr_matrix(z) @ sp.csr_matrix(lam)
        a = (zl.T @ sp.diags(w) @ zl).toarray() + np.eye(q)
        zl_wx = np.asarray(zl.T @ (w[:, None] * x))
        zl_wr = np.asarray(zl.T @ (w * r))
    else:
        zl = z @ lam
        a = zl.T @ (w[:, None] * zl) + np.eye(q)
        zl_wx = zl.T @ (w[:, None] * x)
        zl_wr = zl.T @ (w * r)
    sign, ld_l2 = np.linalg.slogdet(a)
    assert sign > 0
    xwx = x.T @ (w[:, None] * x)
    mme = np.block([[a, zl_wx], [zl_wx.T, xwx]])
    rhs = np.concatenate([zl_wr, x.T @ (w * r)])
    coef = np.linalg.solve(mme, rhs)
    coef += np.linalg.solve(mme, rhs - mme @ coef)  # one step of iterative refinement
    u, beta = coef[:q], coef[q:]
    resid = r - x @ beta - zl @ u
    pwrss = float(np.sum(w * resid**2) + u @ u)
    rxtrx = xwx - zl_wx.T @ np.linalg.solve(a, zl_wx)
    if p:
        sign_rx, ld_rx2 = np.linalg.slogdet(rxtrx)
        assert sign_rx > 0
    else:
        ld_rx2 = 0.0
    dof = n - p if reml else n
    objective = ld_l2 - np.log(w).sum() + dof * (1.0 + np.log(2.0 * np.pi * pwrss / dof))
    if reml:
        objective += ld_rx2
    return DenseFit(float(objective), beta, u, lam @ u, pwrss, pwrss / dof, float(ld_l2),
                    float(ld_rx2), lam, a)


# --------------------------------------------------------------- blocked.py
#
# The blocked Cholesky's input is the scaled system A (without the identity)
# as a full symmetric, block-complete CSC (``indptr``, ``indices``, ``scaled``);
# its first ``q1`` columns are the first term's levels, ``p1`` per level. The
# twins build A + I densely and use NumPy's Cholesky, solves and inverses;
# results the kernels store "laid out like ``scaled``" are read back on the
# pattern, with NaN wherever the kernel writes nothing.


def csc_dense(indptr, indices, data) -> np.ndarray:
    """The dense q x q matrix of a CSC (entries not stored are zero)."""
    q = len(indptr) - 1
    out = np.zeros((q, q))
    for c in range(q):
        for k in range(indptr[c], indptr[c + 1]):
            out[indices[k], c] = data[k]
    return out


def first_term_l21_slots(indptr, indices, q1) -> np.ndarray:
    """Boolean mask over ``scaled``'s entries: first-term columns, rows >= q1 (L21's slots)."""
    mask = np.zeros(len(indices), dtype=bool)
    for c in range(q1):
        for k in range(indptr[c], indptr[c + 1]):
            mask[k] = indices[k] >= q1
    return mask


def l21_dense(indptr, indices, l21, q1) -> np.ndarray:
    """The (q - q1) x q1 dense L21 read from its slots in the CSC layout."""
    q = len(indptr) - 1
    out = np.zeros((q - q1, q1))
    for c in range(q1):
        for k in range(indptr[c], indptr[c + 1]):
            if indices[k] >= q1:
                out[indices[k] - q1, c] = l21[k]
    return out


def l11_dense(l11) -> np.ndarray:
    """The block-diagonal q1 x q1 L11 from its per-level blocks."""
    n_levels, p1, _ = l11.shape
    out = np.zeros((n_levels * p1, n_levels * p1))
    for j in range(n_levels):
        out[j * p1 : (j + 1) * p1, j * p1 : (j + 1) * p1] = np.tril(l11[j])
    return out


def small_cholesky(block):
    """Twin of blocked._small_cholesky: (lower factor with zeros above, True) or (None, False)."""
    try:
        return np.linalg.cholesky(np.asarray(block, dtype=float)), True
    except np.linalg.LinAlgError:
        return None, False


def factor_first_term(indptr, indices, scaled, q1, p1):
    """Twin of blocked.factor_first_term: ``(logdet, l11, l21)``.

    A + I dense; L11_j = chol of level j's diagonal block, L21 = A21 L11^-T
    with L11 the block-diagonal of those; ``l21`` is L21 read on its slots in
    ``scaled``'s layout (NaN elsewhere). logdet = 2 sum log diag L11, nan if
    any block is not positive definite (then l11/l21 are None).
    """
    q = len(indptr) - 1
    a = csc_dense(indptr, indices, scaled) + np.eye(q)
    n_levels = q1 // p1
    l11 = np.zeros((n_levels, p1, p1))
    for j in range(n_levels):
        rows = slice(j * p1, (j + 1) * p1)
        lower, ok = small_cholesky(a[rows, rows])
        if not ok:
            return float("nan"), None, None
        l11[j] = lower
    big_l11 = l11_dense(l11)
    l21_full = np.linalg.solve(big_l11, a[q1:, :q1].T).T  # A21 L11^-T
    l21 = np.full(len(indices), np.nan)
    for c in range(q1):
        for k in range(indptr[c], indptr[c + 1]):
            if indices[k] >= q1:
                l21[k] = l21_full[indices[k] - q1, c]
    logdet = 2.0 * float(np.log(np.diag(big_l11)).sum())
    return logdet, l11, l21


def fill_schur(indptr, indices, scaled, q1, schur_in):
    """Twin of blocked.fill_schur: upper triangle of A22 + I over ``schur_in``, lower kept."""
    q = len(indptr) - 1
    a22 = (csc_dense(indptr, indices, scaled) + np.eye(q))[q1:, q1:]
    out = np.array(schur_in, dtype=float, copy=True)
    upper = np.triu(np.ones_like(a22, dtype=bool))
    out[upper] = a22[upper]
    return out


def downdate_schur(indptr, indices, l21, q1, schur_in):
    """Twin of blocked.downdate_schur: ``schur_in - L21 L21'`` on the upper triangle only."""
    low = l21_dense(indptr, indices, l21, q1)
    product = low @ low.T
    out = np.array(schur_in, dtype=float, copy=True)
    upper = np.triu(np.ones_like(product, dtype=bool))
    out[upper] -= product[upper]
    return out


def downdate_column_work(indptr, indices, q1, p1, m):
    """Twin of linalg.blocked.downdate_column_work: per Schur column c, the pairs
    (b <= c) of rows below q1 that a first-term level shares with c."""
    incidence = np.zeros((q1 // p1, m))
    for j in range(q1 // p1):
        incidence[j, indices[indptr[j * p1] + p1 : indptr[j * p1 + 1]] - q1] = 1.0
    return (incidence * np.cumsum(incidence, axis=1)).sum(axis=0)


def forward_first_term(indptr, indices, l11, l21, q1, rhs, r2_in):
    """Twin of blocked.forward_first_term: ``(c1, r2)`` with c1 = L11^-1 rhs[:q1], r2 -= L21 c1."""
    c1 = np.linalg.solve(l11_dense(l11), np.asarray(rhs, dtype=float)[:q1])
    r2 = np.asarray(r2_in, dtype=float) - l21_dense(indptr, indices, l21, q1) @ c1
    return c1, r2


def backward_first_term(indptr, indices, l11, l21, q1, w1, u2):
    """Twin of blocked.backward_first_term: u1 = L11^-T (w1 - L21' u2)."""
    low = l21_dense(indptr, indices, l21, q1)
    return np.linalg.solve(l11_dense(l11).T, np.asarray(w1, dtype=float) - low.T @ u2)


def first_term_inverse_blocks(indptr, indices, l11, l21, q1, p1, schur_inverse):
    """Twin of blocked.first_term_inverse_blocks: diagonal p1 x p1 blocks of

    (A^-1)_11 = L11^-T (I + L21' S^-1 L21) L11^-1,

    formed as full q1 x q1 matrices with an explicit inverse of L11.
    """
    inv_l11 = np.linalg.inv(l11_dense(l11))
    low = l21_dense(indptr, indices, l21, q1)
    full = inv_l11.T @ (np.eye(q1) + low.T @ schur_inverse @ low) @ inv_l11
    n_levels = q1 // p1
    return np.array([full[j * p1 : (j + 1) * p1, j * p1 : (j + 1) * p1] for j in range(n_levels)])


# -------------------------------------------------------- gram._counting_order


def counting_order(codes, n_levels, order_in):
    """Twin of gram._counting_order: ``order_in`` stably sorted by ``codes[order_in]``."""
    order_in = np.asarray(order_in)
    keys = np.asarray(codes)[order_in]
    assert np.all((keys >= 0) & (keys < n_levels))
    return order_in[np.argsort(keys, kind="stable")]


# =================================================================== glm.py
#
# R's family objects written out with NumPy/SciPy, by name: make.link's
# linkfun / linkinv / mu.eta (with its .Machine$double.eps guards), each
# family's variance and dev.resids. Copied from R's src/library/stats/R/family.R
# and src/library/stats/src/family.c, vectorised.

_EPS = np.finfo(float).eps


def _pcauchy_r(x):
    """R's pcauchy: atan(1/x) in the tails keeps relative accuracy there."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore"):
        tail = np.arctan(1.0 / x) / np.pi
    return np.where(x > 1, 1.0 - tail, np.where(x < -1, -tail, 0.5 + np.arctan(x) / np.pi))


def r_linkfun(link, mu):
    """Twin of glm.linkfun: R's ``make.link(link)$linkfun``."""
    from scipy import stats

    mu = np.asarray(mu, dtype=float)
    return {
        "identity": lambda: mu,
        "log": lambda: np.log(mu),
        "logit": lambda: np.log(mu / (1 - mu)),  # qlogis
        "probit": lambda: stats.norm.ppf(mu),
        "cloglog": lambda: np.log(-np.log(1 - mu)),
        "cauchit": lambda: stats.cauchy.ppf(mu),
        "inverse": lambda: 1 / mu,
        "1/mu^2": lambda: 1 / mu**2,
        "sqrt": lambda: np.sqrt(mu),
    }[link]()


def r_linkinv(link, eta):
    """Twin of glm.linkinv: R's ``make.link(link)$linkinv`` with its guards."""
    from scipy import stats

    eta = np.asarray(eta, dtype=float)
    if link == "identity":
        return eta.copy()
    if link == "log":
        return np.maximum(np.exp(eta), _EPS)
    if link == "logit":  # C logit_linkinv
        thresh = -np.log(_EPS)
        tmp = np.where(eta < -thresh, _EPS, np.where(eta > thresh, 1 / _EPS, np.exp(eta)))
        return tmp / (1 + tmp)
    if link == "probit":
        thresh = -stats.norm.ppf(_EPS)
        return stats.norm.cdf(np.clip(eta, -thresh, thresh))
    if link == "cloglog":
        return np.maximum(np.minimum(-np.expm1(-np.exp(eta)), 1 - _EPS), _EPS)
    if link == "cauchit":
        thresh = 1 / np.tan(np.pi * _EPS)  # -qcauchy(eps)
        return _pcauchy_r(np.clip(eta, -thresh, thresh))
    if link == "inverse":
        return 1 / eta
    if link == "1/mu^2":
        return 1 / np.sqrt(eta)
    if link == "sqrt":
        return eta**2
    raise ValueError(link)


def r_mu_eta(link, eta):
    """Twin of glm.mu_eta: R's ``make.link(link)$mu.eta`` (dmu/deta) with its floors."""
    from scipy import stats

    eta = np.asarray(eta, dtype=float)
    if link == "identity":
        return np.ones_like(eta)
    if link == "log":
        return np.maximum(np.exp(eta), _EPS)
    if link == "logit":  # C logit_mu_eta, THRESH = 30
        opexp = 1 + np.exp(eta)
        return np.where(np.abs(eta) > 30, _EPS, np.exp(eta) / opexp**2)
    if link == "probit":
        return np.maximum(stats.norm.pdf(eta), _EPS)
    if link == "cloglog":
        e = np.minimum(eta, 700)
        return np.maximum(np.exp(e) * np.exp(-np.exp(e)), _EPS)
    if link == "cauchit":
        return np.maximum(stats.cauchy.pdf(eta), _EPS)
    if link == "inverse":
        return -1 / eta**2
    if link == "1/mu^2":
        return -1 / (2 * eta**1.5)
    if link == "sqrt":
        return 2 * eta
    raise ValueError(link)


def r_variance(family, mu):
    """Twin of glm.variance: the family's ``variance(mu)``."""
    mu = np.asarray(mu, dtype=float)
    return {
        "binomial": lambda: mu * (1 - mu),
        "poisson": lambda: mu,
        "Gamma": lambda: mu**2,
        "inverse.gaussian": lambda: mu**3,
        "gaussian": lambda: np.ones_like(mu),
    }[family]()


def r_dev_resids(family, y, mu, wt):
    """Twin of glm.unit_deviance: the family's ``dev.resids(y, mu, wt)``."""
    y, mu, wt = (np.asarray(a, dtype=float) for a in (y, mu, wt))

    def y_log_y(a, b):  # C y_log_y: a * log(a / b), 0 when a == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a != 0, a * np.log(a / b), 0.0)

    if family == "binomial":
        return 2 * wt * (y_log_y(y, mu) + y_log_y(1 - y, 1 - mu))
    if family == "poisson":
        r = mu * wt
        with np.errstate(divide="ignore", invalid="ignore"):
            pos = wt * (y * np.log(y / mu) - (y - mu))
        return 2 * np.where(y > 0, pos, r)
    if family == "Gamma":
        with np.errstate(divide="ignore", invalid="ignore"):
            return -2 * wt * (np.log(np.where(y == 0, 1, y / mu)) - (y - mu) / mu)
    if family == "inverse.gaussian":
        return wt * ((y - mu) ** 2) / (y * mu**2)
    if family == "gaussian":
        return wt * ((y - mu) ** 2)
    raise ValueError(family)


def glm_row_pass(family, link, eta, y, prior_weights):
    """Twin of glm.glm_row_pass: ``(mu, w, z, dev, total)`` as R's glm.fit forms them.

    w = prior * mu.eta^2 / variance(mu) (glm.fit's w squared); z = eta + (y - mu) / mu.eta.
    """
    eta = np.asarray(eta, dtype=float)
    mu = r_linkinv(link, eta)
    d = r_mu_eta(link, eta)
    w = prior_weights * d**2 / r_variance(family, mu)
    z = eta + (y - mu) / d
    dev = r_dev_resids(family, y, mu, prior_weights)
    return mu, w, z, dev, float(dev.sum())


def logit_binomial_row_pass(eta, y, prior_weights):
    """Twin of glm._logit_binomial_pass: R's guards, with mu, V(mu) and the deviance written
    in s = exp(-|eta|) so that no 1 - mu loses digits where mu is near 0 or 1.

    mu = 1 / (1 + s) (eta > 0) or s / (1 + s); V = s / (1 + s)^2; the deviance is
    2 wt (-y log(mu) - (1 - y) log(1 - mu) + y log y + (1 - y) log(1 - y)).
    """
    eta = np.asarray(eta, dtype=float)
    saturated = np.abs(eta) > -np.log(_EPS)  # linkinv's guard
    a = np.where(saturated, -np.log(_EPS), np.abs(eta))
    s = np.where(saturated, _EPS, np.exp(-a))
    mu = np.where(eta > 0, 1.0 / (1.0 + s), s / (1.0 + s))
    log_mu = np.where(eta > 0, 0.0, -a) - np.log1p(s)
    log_1m_mu = np.where(eta > 0, -a, 0.0) - np.log1p(s)
    variance = s / (1.0 + s) ** 2
    d = np.where(np.abs(eta) > 30.0, _EPS, variance)  # mu.eta's floor
    w = prior_weights * d**2 / variance
    z = eta + (y - mu) / d
    y_log_y = xlogy(y, y) + xlogy(1.0 - y, 1.0 - y)
    dev = 2.0 * prior_weights * (y_log_y - y * log_mu - (1.0 - y) * log_1m_mu)
    return mu, w, z, dev, float(dev.sum())


def glm_start(family, link, y, prior_weights):
    """Twin of glm.glm_start: ``(mu, eta)`` from R's family ``initialize`` (mustart)."""
    y = np.asarray(y, dtype=float)
    if family == "binomial":
        mu = (prior_weights * y + 0.5) / (prior_weights + 1)
    elif family == "poisson":
        mu = y + 0.1
    else:
        mu = y.copy()
    return mu, r_linkfun(link, mu)


def valid_eta_mu(family, link, eta, mu):
    """Twin of glm.valid_eta_mu: R's valideta(eta) && validmu(mu), plus finiteness."""
    eta, mu = np.asarray(eta, dtype=float), np.asarray(mu, dtype=float)
    ok = bool(np.all(np.isfinite(eta)) and np.all(np.isfinite(mu)))
    if link == "inverse":
        ok = ok and bool(np.all(eta != 0))
    if link in ("1/mu^2", "sqrt"):
        ok = ok and bool(np.all(eta > 0))
    if family == "binomial":
        ok = ok and bool(np.all((mu > 0) & (mu < 1)))
    if family in ("poisson", "Gamma"):
        ok = ok and bool(np.all(mu > 0))
    return ok


# ============================================================ fitting/pirls.py


def r_family_aic(family, y, trials, mu, wt, dev):
    """Twin of GlmResponse.minus_two_loglik: R's ``family$aic(y, n, mu, wt, dev)``."""
    from scipy import stats

    y, mu, wt = (np.asarray(a, dtype=float) for a in (y, mu, wt))
    if family == "binomial":
        m = trials if (trials > 1).any() else wt
        dens = stats.binom.logpmf(np.round(m * y), np.round(m), mu)
        return -2 * np.sum(np.where(m > 0, wt / m, 0.0) * dens)
    if family == "poisson":
        return -2 * np.sum(stats.poisson.logpmf(y, mu) * wt)
    if family == "Gamma":
        disp = dev / wt.sum()
        return -2 * np.sum(stats.gamma.logpdf(y, 1 / disp, scale=mu * disp) * wt) + 2
    if family == "inverse.gaussian":
        disp = dev / wt.sum()
        return wt.sum() * (np.log(disp * 2 * np.pi) + 1) + 3 * np.sum(np.log(y) * wt) + 2
    if family == "gaussian":
        n = len(y)
        return n * (np.log(dev / n * 2 * np.pi) + 1) + 2 - np.sum(np.log(wt))
    raise ValueError(family)


def dense_laplace(family, link, y, x, z_dense, lam, beta, prior_weights, offset, trials=None):
    """Twin of the Laplace deviance: dense Newton (Fisher scoring) for the modes u to
    machine precision, then aic + log det(Lambda'Z'WZ Lambda + I) + |u|^2.

    Returns (deviance, u). No sparse matrices, no factor updates, no warm starts.
    """
    trials = np.ones_like(y) if trials is None else trials
    zl = z_dense @ lam
    fixed = offset + x @ beta
    u = np.zeros(zl.shape[1])

    def pdev(u):
        mu = r_linkinv(link, fixed + zl @ u)
        return r_dev_resids(family, y, mu, prior_weights).sum() + u @ u

    for _ in range(200):
        eta = fixed + zl @ u
        mu = r_linkinv(link, eta)
        d = r_mu_eta(link, eta)
        w = prior_weights * d**2 / r_variance(family, mu)
        working = eta - fixed + (y - mu) / d
        a = zl.T @ (w[:, None] * zl) + np.eye(len(u))
        new_u = np.linalg.solve(a, zl.T @ (w * working))
        step = new_u - u
        while pdev(u + step) > pdev(u) + 1e-13 * abs(pdev(u)) and np.abs(step).max() > 1e-15:
            step = step / 2
        u = u + step
        if np.abs(step).max() < 1e-13 * max(1.0, np.abs(u).max()):
            break
    eta = fixed + zl @ u
    mu = r_linkinv(link, eta)
    d = r_mu_eta(link, eta)
    w = prior_weights * d**2 / r_variance(family, mu)
    dev = r_dev_resids(family, y, mu, prior_weights).sum()
    a = zl.T @ (w[:, None] * zl) + np.eye(len(u))
    aic = r_family_aic(family, y, trials, mu, prior_weights, dev)
    return aic + np.linalg.slogdet(a)[1] + u @ u, u


def row_pattern_positions(indptr, indices, row_columns):
    """Twin: position of (row_columns[i, j], row_columns[i, k]) in the CSC data, by lookup."""
    where = {}
    for col in range(len(indptr) - 1):
        for pos in range(indptr[col], indptr[col + 1]):
            where[(int(indices[pos]), col)] = pos
    n, m = row_columns.shape
    out = np.full((n, m, m), -1, dtype=np.int64)
    for i in range(n):
        for j in range(m):
            for k in range(m):
                out[i, j, k] = where.get((int(row_columns[i, j]), int(row_columns[i, k])), -1)
    return out


def row_leverages(z_lambda_dense, a_dense):
    """Twin of row_quadratic_forms on a whole A^-1: diag(Z Lambda A^-1 Lambda'Z')."""
    return np.einsum("ij,jk,ik->i", z_lambda_dense, np.linalg.inv(a_dense), z_lambda_dense)
