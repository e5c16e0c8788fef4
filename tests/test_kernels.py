"""Each Numba kernel against its NumPy twin in ``naive.py``.

Every kernel gets a tiny hand-made case with the answer written out, then
random cases over several seeds: terms with p = 1, 2, 3 columns, several
terms, levels of different terms that never meet in a row, and thetas with
zeros. The last section checks the engine pieces built from the kernels
(Gram assembly, the scaled system, CHOLMOD's factor + selected inversion)
against dense matrices.
"""

from __future__ import annotations

import naive
import numpy as np
import pytest
import scipy.sparse as sp
from interlace_nb.kernels import effects, gram, lambda_ops, selinv
from numpy.testing import assert_allclose, assert_array_equal
from sksparse import cholmod

from interlace_nb.predictor import (
    GramBuilder,
    GramSystem,
    Predictor,
    build_gram,
    build_layout,
)
from interlace_nb.terms import RandomTerm

SEEDS = [0, 1, 2, 3, 4]
#: (p_k per term, levels per term) of the random designs.
DESIGNS = [
    ([1], [5]),
    ([2], [4]),
    ([3], [3]),
    ([1, 1], [6, 4]),
    ([2, 1], [5, 7]),
    ([1, 3, 2], [4, 3, 6]),
    ([3, 2, 1, 2], [2, 5, 9, 3]),
]


# ----------------------------------------------------------------- helpers


def random_design(rng: np.random.Generator, sizes: list[int], n_levels: list[int], n: int = 60):
    """Codes and covariates for random terms.

    Term 0's codes are random; every later term's level is tied to term 0's
    (a few neighbours only), so many level pairs never occur together. The
    last level of the last term is never used at all.
    """
    codes, zs = [], []
    base = rng.integers(0, n_levels[0], n)
    base[: n_levels[0]] = np.arange(n_levels[0])
    for k, (p, nl) in enumerate(zip(sizes, n_levels, strict=True)):
        if k == 0:
            c = base
        else:
            c = (base * 2 + rng.integers(0, 2, n)) % nl
        if k == len(sizes) - 1 and nl > 2:
            c = np.where(c == nl - 1, 0, c)
        z = rng.normal(size=(n, p))
        z[:, 0] = 1.0  # an intercept column first, as in most terms
        codes.append(np.ascontiguousarray(c, dtype=np.int64))
        zs.append(np.ascontiguousarray(z))
    return codes, zs


def random_theta(rng: np.random.Generator, sizes: list[int], zero_fraction: float = 0.3):
    """Diagonal entries >= 0 (some exactly 0), off-diagonal entries of any sign (some 0)."""
    lower = naive.theta_lower(sizes)
    theta = np.where(lower == 0.0, rng.uniform(0.0, 2.0, lower.size), rng.normal(size=lower.size))
    theta[rng.uniform(size=lower.size) < zero_fraction] = 0.0
    return theta


def block_complete_csc(dense: np.ndarray, sizes, n_levels, codes) -> sp.csc_matrix:
    """``dense`` stored on Z'Z's block-complete pattern, explicit zeros kept.

    Block (level a of term s, level b of term t) is stored in full when some
    row has both levels (every level's own diagonal block when it has a row).
    """
    lay = naive.layout(sizes, n_levels)
    q = lay.q
    mask = np.zeros((q, q), dtype=bool)
    for i in range(len(codes[0])):
        cols = []
        for k, p in enumerate(sizes):
            start = lay.term_col_offset[k] + codes[k][i] * p
            cols.extend(range(start, start + p))
        mask[np.ix_(cols, cols)] = True
    return masked_csc(dense, mask)


def masked_csc(dense: np.ndarray, mask: np.ndarray) -> sp.csc_matrix:
    """CSC of ``dense`` storing exactly the entries of ``mask`` (zeros included), sorted."""
    indptr, indices, data = [0], [], []
    for c in range(dense.shape[1]):
        rows = np.flatnonzero(mask[:, c])
        indices.extend(rows)
        data.extend(dense[rows, c])
        indptr.append(len(indices))
    return sp.csc_matrix(
        (np.array(data), np.array(indices, dtype=np.int64), np.array(indptr, dtype=np.int64)),
        shape=dense.shape,
    )


def filled_lower(matrix: np.ndarray, structure: np.ndarray) -> sp.csc_matrix:
    """Cholesky factor of an SPD matrix stored on the symbolic (filled) pattern of ``structure``.

    The pattern comes from the elimination game: eliminating column j joins
    every pair of its below-diagonal rows. It may hold numerical zeros (as a
    real factor does when some theta entries are zero).
    """
    n = matrix.shape[0]
    pattern = np.tril(structure.astype(bool))
    for j in range(n):
        rows = np.flatnonzero(pattern[j + 1 :, j]) + j + 1
        pattern[np.ix_(rows, rows)] |= np.tril(np.ones((len(rows), len(rows)), dtype=bool))
    np.fill_diagonal(pattern, True)
    lower = np.linalg.cholesky(matrix)
    assert not np.any(lower[~pattern]), "the factor has fill outside the symbolic pattern"
    return masked_csc(lower, pattern)


def metadata(lay) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return lay.col_block_start, lay.col_pos, lay.col_block_size, lay.col_t_offset


# ----------------------------------------------------- gram: hand-made cases


def test_unique_level_pairs_by_hand() -> None:
    codes_a = np.array([1, 0, 1, 2, 0], dtype=np.int64)
    codes_b = np.array([0, 1, 0, 1, 1], dtype=np.int64)
    # pairs (1,0), (0,1), (1,0), (2,1), (0,1) -> sorted (0,1), (1,0), (2,1)
    pair_a, pair_b, row_pair = gram.unique_level_pairs(codes_a, codes_b, 3, 2)
    assert_array_equal(pair_a, [0, 1, 2])
    assert_array_equal(pair_b, [1, 0, 1])
    assert_array_equal(row_pair, [1, 0, 1, 2, 0])
    for got, want in zip(
        (pair_a, pair_b, row_pair), naive.unique_level_pairs(codes_a, codes_b, 3, 2), strict=True
    ):
        assert_array_equal(got, want)


def test_unique_level_pairs_same_term_is_diagonal() -> None:
    codes = np.array([2, 0, 2, 2], dtype=np.int64)
    pair_a, pair_b, row_pair = gram.unique_level_pairs(codes, codes, 3, 3)
    assert_array_equal(pair_a, [0, 2])
    assert_array_equal(pair_b, [0, 2])
    assert_array_equal(row_pair, [1, 0, 1, 1])


def test_accumulate_pair_blocks_by_hand() -> None:
    row_pair = np.array([0, 1, 0], dtype=np.int64)
    z_a = np.array([[1.0], [2.0], [3.0]])
    z_b = np.array([[1.0, 10.0], [1.0, 20.0], [1.0, 30.0]])
    weights = np.array([1.0, 0.5, 2.0])
    blocks = np.ones((2, 1, 2))  # the kernel adds to what is there
    gram.accumulate_pair_blocks(row_pair, z_a, z_b, weights, blocks)
    # pair 0: rows 0, 2 -> 1*1*[1, 10] + 2*3*[1, 30] = [7, 190]; pair 1: 0.5*2*[1, 20]
    assert_allclose(blocks, [[[8.0, 191.0]], [[2.0, 21.0]]])
    assert_allclose(
        blocks, naive.accumulate_pair_blocks(row_pair, z_a, z_b, weights, np.ones((2, 1, 2)))
    )


def test_accumulate_z_cross_by_hand() -> None:
    codes = np.array([1, 0, 1], dtype=np.int64)
    z = np.array([[1.0, 2.0], [1.0, -1.0], [1.0, 3.0]])
    weights = np.array([2.0, 1.0, 1.0])
    dense = np.array([[1.0, 0.0], [5.0, 1.0], [2.0, 4.0]])
    out = np.zeros((4, 2))
    gram.accumulate_z_cross(codes, z, weights, dense, out)
    # level 0 (row 1): [5, 1] and -[5, 1];
    # level 1 (rows 0, 2): 2*[1, 0] + [2, 4] and 4*[1, 0] + 3*[2, 4]
    assert_allclose(out, [[5.0, 1.0], [-5.0, -1.0], [4.0, 4.0], [10.0, 12.0]])


def test_weighted_crossprod_by_hand() -> None:
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[1.0], [-1.0]])
    got = gram.weighted_crossprod(a, b, np.array([2.0, 1.0]))
    assert_allclose(got, [[2.0 - 3.0], [4.0 - 4.0]])


# ------------------------------------------------------ gram: random cases


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("sizes,n_levels", DESIGNS)
def test_gram_kernels_random(seed: int, sizes: list[int], n_levels: list[int]) -> None:
    rng = np.random.default_rng(seed)
    codes, zs = random_design(rng, sizes, n_levels)
    n = len(codes[0])
    weights = rng.uniform(0.2, 3.0, n)
    for a in range(len(sizes)):
        for b in range(a, len(sizes)):
            got = gram.unique_level_pairs(codes[a], codes[b], n_levels[a], n_levels[b])
            want = naive.unique_level_pairs(codes[a], codes[b], n_levels[a], n_levels[b])
            for g, w in zip(got, want, strict=True):
                assert_array_equal(g, w)
            pair_a, pair_b, row_pair = got
            start = rng.normal(size=(len(pair_a), sizes[a], sizes[b]))
            blocks = start.copy()
            gram.accumulate_pair_blocks(row_pair, zs[a], zs[b], weights, blocks)
            assert_allclose(
                blocks, naive.accumulate_pair_blocks(row_pair, zs[a], zs[b], weights, start),
                rtol=1e-12, atol=1e-12,
            )
    dense = rng.normal(size=(n, 3))
    for k, (p, nl) in enumerate(zip(sizes, n_levels, strict=True)):
        start = rng.normal(size=(nl * p, 3))
        out = start.copy()
        gram.accumulate_z_cross(codes[k], zs[k], weights, dense, out)
        assert_allclose(
            out, naive.accumulate_z_cross(codes[k], zs[k], weights, dense, start),
            rtol=1e-12, atol=1e-12,
        )
    a_mat = rng.normal(size=(n, 4))
    assert_allclose(
        gram.weighted_crossprod(a_mat, dense, weights),
        naive.weighted_crossprod(a_mat, dense, weights), rtol=1e-12, atol=1e-12,
    )


def test_gram_kernels_empty_rows() -> None:
    empty = np.zeros(0, dtype=np.int64)
    pair_a, pair_b, row_pair = gram.unique_level_pairs(empty, empty, 3, 2)
    assert len(pair_a) == len(pair_b) == len(row_pair) == 0
    assert gram.weighted_crossprod(np.zeros((0, 2)), np.zeros((0, 3)), np.zeros(0)).shape == (2, 3)


@pytest.mark.parametrize("seed", range(3))
def test_accumulate_weighted_crossprod_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(30, 2))
    weights, start = rng.uniform(0.5, 2.0, size=30), rng.normal(size=(3, 2))
    out = start.copy()
    gram.accumulate_weighted_crossprod(a, b, weights, out)
    assert_allclose(out, naive.accumulate_weighted_crossprod(a, b, weights, start), rtol=1e-12)
    # two calls on a split of the rows give the same bits as one call on all rows
    split = start.copy()
    gram.accumulate_weighted_crossprod(a[:11], b[:11], weights[:11], split)
    gram.accumulate_weighted_crossprod(a[11:], b[11:], weights[11:], split)
    assert_array_equal(split, out)


@pytest.mark.parametrize("seed", range(5))
def test_csc_from_pair_blocks_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = np.array([2, 1, 3, 1], dtype=np.int64)
    n_levels = np.array([7, 4, 7, 5], dtype=np.int64)  # terms 0 and 2 share a factor
    lay = naive.layout(sizes.tolist(), n_levels.tolist())
    blk_a, blk_b, la_all, lb_all, vals, counts = [], [], [], [], [], []
    for a in range(4):
        for b in range(a, 4):
            if a == b or {a, b} == {0, 2}:  # one factor: a level meets only itself
                la = lb = np.arange(n_levels[a])
            else:
                cells = rng.random((n_levels[a], n_levels[b])) < 0.5
                la, lb = (np.asarray(v, dtype=np.int64) for v in np.nonzero(cells))
            block = rng.normal(size=(len(la), sizes[a], sizes[b]))
            if a == b:
                block = block + block.transpose(0, 2, 1)  # symmetric diagonal blocks
            blk_a.append(a)
            blk_b.append(b)
            la_all.append(la)
            lb_all.append(lb)
            vals.append(block.ravel())
            counts.append(len(la) * sizes[a] * sizes[b])
    pair_start = np.concatenate([[0], np.cumsum([len(v) for v in la_all])]).astype(np.int64)
    value_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    args = (np.array(blk_a), np.array(blk_b), pair_start, value_start,
            np.concatenate(la_all).astype(np.int64), np.concatenate(lb_all).astype(np.int64),
            np.concatenate(vals), lay.term_col_offset, sizes, n_levels)
    indptr, indices, data = gram.csc_from_pair_blocks(
        np.array(blk_a), np.array(blk_b), la_all, lb_all, vals, lay.term_col_offset, sizes,
        n_levels,
    )
    got = sp.csc_matrix((data, indices, indptr), shape=(lay.q, lay.q))
    want = naive.csc_from_pair_blocks(*args)
    assert_allclose(got.toarray(), want, rtol=0, atol=0)
    assert_allclose(want, want.T, rtol=0, atol=0)
    for col in range(lay.q):  # rows strictly increasing in each column: sorted, no duplicates
        assert (np.diff(indices[indptr[col] : indptr[col + 1]]) > 0).all()


def test_merge_keyed_blocks_by_hand() -> None:
    keys, blocks = gram.merge_keyed_blocks(
        np.array([1, 4, 6]), np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
        np.array([0, 4, 9]), np.array([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]]),
    )
    assert_array_equal(keys, [0, 1, 4, 6, 9])
    assert_array_equal(blocks, [[10, 20], [1, 2], [33, 44], [5, 6], [50, 60]])


@pytest.mark.parametrize("seed", range(6))
def test_merge_keyed_blocks_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    width = int(rng.integers(1, 5))
    sides = []
    for _ in range(2):
        n = int(rng.integers(0, 30))
        keys = np.unique(rng.integers(0, 40, size=n)).astype(np.int64)
        sides += [keys, rng.normal(size=(len(keys), width))]
    got = gram.merge_keyed_blocks(*sides)
    want = naive.merge_keyed_blocks(*sides)
    assert_array_equal(got[0], want[0])
    assert_allclose(got[1], want[1], rtol=1e-15)
    assert got[1].shape == (len(got[0]), width)


# ------------------------------------------------ lambda_ops: hand-made cases


def test_fill_t_flat_by_hand() -> None:
    sizes = [2, 1, 3]
    lay = naive.layout(sizes, [1, 1, 1])
    theta = np.arange(1.0, 11.0)
    t_flat = np.full(lay.t_flat_size, 99.0)  # stale values must be overwritten
    lambda_ops.fill_t_flat(theta, lay.term_theta_offset, lay.term_size, lay.term_t_offset, t_flat)
    want = np.concatenate([
        [1.0, 0.0, 2.0, 3.0],  # [[1, 0], [2, 3]]
        [4.0],
        [5.0, 0.0, 0.0, 6.0, 8.0, 0.0, 7.0, 9.0, 10.0],  # [[5, 0, 0], [6, 8, 0], [7, 9, 10]]
    ])
    assert_array_equal(t_flat, want)
    assert_array_equal(
        want,
        naive.fill_t_flat(theta, lay.term_theta_offset, lay.term_size, lay.term_t_offset,
                          lay.t_flat_size),
    )


def test_lambda_products_by_hand() -> None:
    # one term, p = 2, two levels, T = [[1, 0], [2, 3]]
    lay = naive.layout([2], [2])
    t_flat = np.array([1.0, 0.0, 2.0, 3.0])
    dense = np.array([[1.0], [1.0], [2.0], [-1.0]])
    out = np.full_like(dense, np.nan)
    lambda_ops.lambda_t_times(dense, *metadata(lay), t_flat, out)
    # T' [1, 1] = [3, 3]; T' [2, -1] = [0, -3]
    assert_allclose(out, [[3.0], [3.0], [0.0], [-3.0]])
    lambda_ops.lambda_times(dense, *metadata(lay), t_flat, out)
    # T [1, 1] = [1, 5]; T [2, -1] = [2, 1]
    assert_allclose(out, [[1.0], [5.0], [2.0], [1.0]])


def test_scale_sparse_gram_by_hand() -> None:
    # one term, p = 2, one level: A = [[4, 1], [1, 2]], T = [[1, 0], [2, 3]]
    # A T = [[6, 3], [5, 6]], T' A T = [[16, 15], [15, 18]]
    lay = naive.layout([2], [1])
    a = sp.csc_matrix(np.array([[4.0, 1.0], [1.0, 2.0]]))
    t_flat = np.array([1.0, 0.0, 2.0, 3.0])
    out = np.empty(a.nnz)
    lambda_ops.scale_sparse_gram(
        a.indptr.astype(np.int64), a.indices.astype(np.int64), a.data, *metadata(lay), t_flat, out,
        2,
    )
    assert_allclose(out, [16.0, 15.0, 15.0, 18.0])


def test_scale_sparse_gram_two_terms_by_hand() -> None:
    # term 0: p = 1, T = [[2]], 1 level (col 0); term 1: p = 2, T = [[1, 0], [-1, 1]] (cols 1, 2)
    lay = naive.layout([1, 2], [1, 1])
    dense = np.array([[3.0, 1.0, 2.0], [1.0, 5.0, 0.0], [2.0, 0.0, 1.0]])
    a = block_complete_csc(dense, [1, 2], [1, 1], [np.array([0]), np.array([0])])
    t_flat = np.array([2.0, 1.0, 0.0, -1.0, 1.0])
    out = np.empty(a.nnz)
    lambda_ops.scale_sparse_gram(
        a.indptr.astype(np.int64), a.indices.astype(np.int64), a.data, *metadata(lay), t_flat, out,
        3,
    )
    lam = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 1.0]])
    want = lam.T @ dense @ lam  # [[12, -2, 4], [-2, 6, -1], [4, -1, 1]]
    assert_allclose(want, [[12.0, -2.0, 4.0], [-2.0, 6.0, -1.0], [4.0, -1.0, 1.0]])
    assert_allclose(sp.csc_matrix((out, a.indices, a.indptr), shape=(3, 3)).toarray(), want)


# --------------------------------------------------- lambda_ops: random cases


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("sizes,n_levels", DESIGNS)
def test_lambda_kernels_random(seed: int, sizes: list[int], n_levels: list[int]) -> None:
    rng = np.random.default_rng(100 + seed)
    lay = naive.layout(sizes, n_levels)
    theta = random_theta(rng, sizes)
    t_flat = np.full(lay.t_flat_size, np.nan)
    lambda_ops.fill_t_flat(theta, lay.term_theta_offset, lay.term_size, lay.term_t_offset, t_flat)
    assert_array_equal(
        t_flat,
        naive.fill_t_flat(theta, lay.term_theta_offset, lay.term_size, lay.term_t_offset,
                          lay.t_flat_size),
    )
    # the metadata route and the theta route give the same Lambda
    assert_array_equal(
        naive.lambda_from_metadata(*metadata(lay), t_flat),
        naive.dense_lambda(theta, sizes, n_levels),
    )

    dense = rng.normal(size=(lay.q, 3))
    out = np.full_like(dense, np.nan)
    lambda_ops.lambda_t_times(dense, *metadata(lay), t_flat, out)
    assert_allclose(out, naive.lambda_t_times(dense, *metadata(lay), t_flat),
                    rtol=1e-13, atol=1e-13)
    lambda_ops.lambda_times(dense, *metadata(lay), t_flat, out)
    assert_allclose(out, naive.lambda_times(dense, *metadata(lay), t_flat),
                    rtol=1e-13, atol=1e-13)

    codes, zs = random_design(rng, sizes, n_levels)
    z = naive.dense_z(codes, zs, n_levels)
    w = rng.uniform(0.2, 3.0, z.shape[0])
    a = block_complete_csc(z.T @ (w[:, None] * z), sizes, n_levels, codes)
    indptr = a.indptr.astype(np.int64)
    indices = a.indices.astype(np.int64)
    out_data = np.full(a.nnz, np.nan)
    # the blocked path's partial rescale: after the first term, upper triangle only
    first_end = int(lay.term_col_offset[1]) if len(sizes) > 1 else lay.q
    partial = np.full(a.nnz, np.nan)
    lambda_ops.scale_sparse_gram(indptr, indices, a.data, *metadata(lay), t_flat, partial,
                                 first_end)
    want = naive.scale_sparse_gram(indptr, indices, a.data, *metadata(lay), t_flat, first_end)
    assert_allclose(partial, want, rtol=1e-12, atol=1e-12)  # NaN where nothing is written
    for bands in ([0, lay.q], [0, 1, lay.q // 2, lay.q]):  # in parallel, band by band
        by_bands = np.full(a.nnz, np.nan)
        lambda_ops.scale_sparse_gram_parallel(indptr, indices, a.data, *metadata(lay), t_flat,
                                              by_bands, first_end, np.array(bands))
        np.testing.assert_array_equal(by_bands, partial)
    weights = rng.normal(size=a.nnz)
    serial = np.full(len(t_flat), np.nan)
    lambda_ops.scale_sparse_gram_gradient(indptr, indices, a.data, *metadata(lay), t_flat,
                                          weights, serial)
    for bands in ([0, lay.q], [0, 1, lay.q // 2, lay.q]):  # per-band sums, added after
        by_bands = np.full(len(t_flat), np.nan)
        lambda_ops.scale_sparse_gram_gradient_parallel(
            indptr, indices, a.data, *metadata(lay), t_flat, weights, by_bands,
            np.array(bands))
        assert_allclose(by_bands, serial, rtol=1e-12, atol=1e-12 * np.abs(serial).max())
    lambda_ops.scale_sparse_gram(indptr, indices, a.data, *metadata(lay), t_flat, out_data,
                                 lay.q)
    want = naive.scale_sparse_gram(indptr, indices, a.data, *metadata(lay), t_flat)
    assert_allclose(out_data, want, rtol=1e-12, atol=1e-12)
    # and the stored pattern holds all of Lambda' A Lambda (nothing falls outside it)
    lam = naive.dense_lambda(theta, sizes, n_levels)
    full = lam.T @ a.toarray() @ lam
    assert_allclose(sp.csc_matrix((out_data, indices, indptr), shape=a.shape).toarray(), full,
                    rtol=1e-12, atol=1e-12)


def test_lambda_kernels_zero_theta_give_zero() -> None:
    sizes, n_levels = [2, 3], [3, 2]
    lay = naive.layout(sizes, n_levels)
    t_flat = np.full(lay.t_flat_size, np.nan)
    theta = np.zeros(lay.n_theta)
    lambda_ops.fill_t_flat(theta, lay.term_theta_offset, lay.term_size, lay.term_t_offset, t_flat)
    dense = np.ones((lay.q, 2))
    out = np.full_like(dense, np.nan)
    lambda_ops.lambda_t_times(dense, *metadata(lay), t_flat, out)
    assert_array_equal(out, 0.0)
    lambda_ops.lambda_times(dense, *metadata(lay), t_flat, out)
    assert_array_equal(out, 0.0)


# --------------------------------------------------- selinv: hand-made cases


def test_takahashi_inverse_by_hand() -> None:
    # L = [[2, 0], [1, 1]]: L L' = [[4, 2], [2, 2]], inverse [[0.5, -0.5], [-0.5, 1]]
    lower = sp.csc_matrix(np.array([[2.0, 0.0], [1.0, 1.0]]))
    got = selinv.takahashi_inverse(
        lower.indptr.astype(np.int64), lower.indices.astype(np.int64), lower.data
    )
    assert_allclose(got, [0.5, -0.5, 1.0])


def test_takahashi_inverse_skips_entries_off_the_pattern() -> None:
    # arrow: L = [[1, 0, 0], [0, 2, 0], [1, 1, 1]]; (1, 0) is not stored.
    dense_l = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
    lower = sp.csc_matrix(dense_l)
    got = selinv.takahashi_inverse(
        lower.indptr.astype(np.int64), lower.indices.astype(np.int64), lower.data
    )
    inverse = np.linalg.inv(dense_l @ dense_l.T)
    # pattern (col-major): (0,0), (2,0), (1,1), (2,1), (2,2)
    assert_allclose(got, [inverse[0, 0], inverse[2, 0], inverse[1, 1], inverse[2, 1],
                          inverse[2, 2]], rtol=1e-14)
    assert_allclose(inverse[2, 2], 1.0)  # (L L')^{-1}[2, 2] = 1 / L[2, 2]^2
    assert_allclose(inverse[0, 0], 2.0)


def test_lookup_symmetric_by_hand() -> None:
    lower = sp.csc_matrix(np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [3.0, 4.0, 5.0]]))
    args = (lower.indptr.astype(np.int64), lower.indices.astype(np.int64), lower.data)
    assert selinv.lookup_symmetric(*args, 2, 0) == 3.0
    assert selinv.lookup_symmetric(*args, 0, 2) == 3.0
    assert selinv.lookup_symmetric(*args, 1, 2) == 4.0
    assert selinv.lookup_symmetric(*args, 2, 2) == 5.0
    assert np.isnan(selinv.lookup_symmetric(*args, 1, 0))
    assert np.isnan(selinv.lookup_symmetric(*args, 0, 1))
    for r in range(3):
        for c in range(3):
            assert_array_equal(selinv.lookup_symmetric(*args, r, c),
                               naive.lookup_symmetric(*args, r, c))


def test_diagonal_blocks_by_hand() -> None:
    # values of a full 3 x 3 symmetric matrix S on its lower triangle; columns of the
    # "factor" are permuted: unpermuted column c sits at inverse_perm[c].
    s = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [3.0, 5.0, 6.0]])
    lower = sp.csc_matrix(np.tril(s))
    args = (lower.indptr.astype(np.int64), lower.indices.astype(np.int64), lower.data)
    inverse_perm = np.array([2, 0, 1], dtype=np.int64)
    block_start = np.array([0, 2], dtype=np.int64)  # block 0: cols 0-1 (p=2); block 1: col 2
    block_size = np.array([2, 1], dtype=np.int64)
    out = np.full((2, 2, 2), -7.0)
    selinv.diagonal_blocks(*args, inverse_perm, block_start, block_size, out)
    # block 0 -> factor positions (2, 0): [[S22, S20], [S02, S00]] = [[6, 3], [3, 1]]
    assert_allclose(out[0], [[6.0, 3.0], [3.0, 1.0]])
    # block 1 -> position 1: S11 = 4; the rest of the slot is untouched
    assert out[1, 0, 0] == 4.0
    assert_allclose(out[1, 1, :], -7.0)
    want = naive.diagonal_blocks(*args, inverse_perm, block_start, block_size)
    assert_allclose(out[0], want[0])
    assert out[1, 0, 0] == want[1, 0, 0]


# ------------------------------------------------------ selinv: random cases


def check_selected_inverse(lower: sp.csc_matrix, perm: np.ndarray, system: np.ndarray,
                           sizes: list[int], n_levels: list[int]) -> None:
    """Takahashi + diagonal_blocks on a factor of P system P' against dense inverses."""
    lay = naive.layout(sizes, n_levels)
    indptr = lower.indptr.astype(np.int64)
    indices = lower.indices.astype(np.int64)
    got = selinv.takahashi_inverse(indptr, indices, lower.data)
    want = naive.takahashi_inverse(indptr, indices, lower.data)
    assert_allclose(got, want, rtol=1e-9, atol=1e-11)

    inverse_perm = np.empty_like(perm)
    inverse_perm[perm] = np.arange(lay.q)
    starts = np.concatenate(
        [lay.term_col_offset[k] + np.arange(nl) * p
         for k, (p, nl) in enumerate(zip(sizes, n_levels, strict=True))]
    ).astype(np.int64)
    block_size = np.concatenate(
        [np.full(nl, p) for p, nl in zip(sizes, n_levels, strict=True)]
    ).astype(np.int64)
    p_max = max(sizes)
    out = np.full((len(starts), p_max, p_max), np.nan)
    selinv.diagonal_blocks(indptr, indices, got, inverse_perm, starts, block_size, out)
    ref = naive.diagonal_blocks(indptr, indices, got, inverse_perm, starts, block_size)
    assert_allclose(out, ref, equal_nan=True)
    # and they are the diagonal blocks of the unpermuted system's inverse
    sys_inv = np.linalg.inv(system)
    for blk, (start, p) in enumerate(zip(starts, block_size, strict=True)):
        assert_allclose(out[blk, :p, :p], sys_inv[start : start + p, start : start + p],
                        rtol=1e-9, atol=1e-11)
    rng = np.random.default_rng(len(indices))
    for _ in range(20):
        r, c = rng.integers(0, lay.q, 2)
        assert_array_equal(selinv.lookup_symmetric(indptr, indices, got, r, c),
                           naive.lookup_symmetric(indptr, indices, got, r, c))


def random_system(seed: int, sizes: list[int], n_levels: list[int]):
    """A = Lambda'Z'WZ Lambda + I (dense), the block-complete structure of Z'Z, levels used."""
    rng = np.random.default_rng(seed)
    codes, zs = random_design(rng, sizes, n_levels)
    codes, n_levels = used_levels(codes, n_levels)  # every level has a row, as in a fit
    z = naive.dense_z(codes, zs, n_levels)
    w = rng.uniform(0.2, 3.0, z.shape[0])
    lam = naive.dense_lambda(random_theta(rng, sizes), sizes, n_levels)
    system = lam.T @ z.T @ (w[:, None] * z) @ lam + np.eye(lam.shape[0])
    structure = block_complete_csc(np.ones_like(system), sizes, n_levels, codes).toarray() != 0
    return system, structure, n_levels, rng


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("sizes,n_levels", DESIGNS)
def test_selinv_random(seed: int, sizes: list[int], n_levels: list[int]) -> None:
    system, structure, n_levels, rng = random_system(200 + seed, sizes, n_levels)
    perm = rng.permutation(system.shape[0]).astype(np.int64)
    lower = filled_lower(system[np.ix_(perm, perm)], structure[np.ix_(perm, perm)])
    check_selected_inverse(lower, perm, system, sizes, n_levels)


@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("sizes,n_levels", DESIGNS)
def test_selinv_on_cholmod_factor(seed: int, sizes: list[int], n_levels: list[int]) -> None:
    """The same on the factor CHOLMOD really produces (its ordering, its L pattern)."""
    system, structure, n_levels, _ = random_system(250 + seed, sizes, n_levels)
    factor = cholmod.cholesky(masked_csc(system, structure))  # explicit zeros kept
    lower = factor.L().tocsc()
    lower.sort_indices()
    perm = np.asarray(factor.P(), dtype=np.int64)
    assert_allclose((lower @ lower.T).toarray(), system[np.ix_(perm, perm)], atol=1e-10)
    check_selected_inverse(lower, perm, system, sizes, n_levels)


# ----------------------------------------------------------------- effects


def test_add_random_effects_by_hand() -> None:
    codes = np.array([0, 1, -1, 1], dtype=np.int64)
    z = np.array([[1.0, 2.0], [1.0, 0.5], [1.0, 9.0], [1.0, -1.0]])
    b = np.array([[10.0, 1.0], [-2.0, 4.0]])
    out = np.array([0.0, 1.0, 2.0, 3.0])
    effects.add_random_effects(codes, z, b, out)
    assert_allclose(out, [12.0, 1.0 + -2.0 + 2.0, 2.0, 3.0 + -2.0 - 4.0])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("p", [1, 2, 3])
def test_add_random_effects_random(seed: int, p: int) -> None:
    rng = np.random.default_rng(300 + seed)
    n, n_levels = 50, 7
    codes = rng.integers(-1, n_levels, n).astype(np.int64)  # -1: a level not in the fit
    z = rng.normal(size=(n, p))
    b = rng.normal(size=(n_levels, p))
    start = rng.normal(size=n)
    out = start.copy()
    effects.add_random_effects(codes, z, b, out)
    assert_allclose(out, naive.add_random_effects(codes, z, b, start), rtol=1e-13, atol=1e-13)
    assert_array_equal(out[codes == -1], start[codes == -1])


# ------------------------------------------- engine pieces built on kernels


def make_terms(codes, zs, n_levels, factors=None) -> list[RandomTerm]:
    """RandomTerm objects straight from arrays (no formula or data frame)."""
    factors = factors or [f"g{k}" for k in range(len(codes))]
    return [
        RandomTerm(
            group=f, factors=(f,), lhs="x",
            column_names=tuple(f"c{r}" for r in range(z.shape[1])),
            codes=c, levels=tuple(str(v) for v in range(nl)), z=z, model_spec=None,
        )
        for c, z, nl, f in zip(codes, zs, n_levels, factors, strict=True)
    ]


def used_levels(codes, n_levels):
    """Relabel each term's codes to 0..L-1 over the levels actually used (as the front end)."""
    out_codes, out_levels = [], []
    for c, _ in zip(codes, n_levels, strict=True):
        present, relabelled = np.unique(c, return_inverse=True)
        out_codes.append(relabelled.astype(np.int64))
        out_levels.append(len(present))
    return out_codes, out_levels


def check_engine(rng, codes, zs, n_levels, factorization, factors=None) -> None:
    """Layout, Gram blocks, the scaled system's factor, solves and inverse blocks vs dense."""
    sizes = [z.shape[1] for z in zs]
    terms = make_terms(codes, zs, n_levels, factors)
    lay = build_layout(terms)
    ref_lay = naive.layout(sizes, n_levels)
    for name in ("term_col_offset", "term_size", "term_theta_offset", "term_t_offset",
                 "col_block_start", "col_pos", "col_block_size", "col_t_offset"):
        assert_array_equal(getattr(lay, name), getattr(ref_lay, name), err_msg=name)
    assert (lay.q, lay.n_theta, lay.t_flat_size) == (ref_lay.q, ref_lay.n_theta,
                                                      ref_lay.t_flat_size)

    n = len(codes[0])
    x = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.normal(size=n)
    w = rng.uniform(0.2, 3.0, n)
    gs: GramSystem = build_gram(terms, lay, x, y, w)
    z = naive.dense_z(codes, zs, n_levels)
    assert_allclose(gs.ztz.toarray(), z.T @ (w[:, None] * z), rtol=1e-12, atol=1e-12)
    assert_allclose(gs.ztx, z.T @ (w[:, None] * x), rtol=1e-12, atol=1e-12)
    assert_allclose(gs.zty, z.T @ (w * y), rtol=1e-12, atol=1e-12)
    assert_allclose(gs.xtx, x.T @ (w[:, None] * x), rtol=1e-12)
    assert_allclose(gs.xty, x.T @ (w * y), rtol=1e-12)
    assert_allclose(gs.yty, y @ (w * y), rtol=1e-12)
    assert gs.sum_log_weights == pytest.approx(np.log(w).sum(), rel=1e-13)
    check_gram_builder(terms, lay, x, y, w, gs)

    pred = Predictor(terms, lay, gs, factorization)
    assert pred.factorization == factorization
    theta = random_theta(rng, sizes)
    pred.update(theta)
    lam = naive.dense_lambda(theta, sizes, n_levels)
    system = lam.T @ z.T @ (w[:, None] * z) @ lam + np.eye(lay.q)
    assert_allclose(pred.logdet, np.linalg.slogdet(system)[1], rtol=1e-11, atol=1e-11)
    rhs = lam.T @ z.T @ (w[:, None] * np.column_stack([x, y]))
    assert_allclose(pred.scaled_rhs, rhs, rtol=1e-11, atol=1e-11)
    u = rng.normal(size=lay.q)
    assert_allclose(pred.lambda_times(u), lam @ u, rtol=1e-13, atol=1e-13)
    # forward/backward: c'c = r' A^-1 r and backward(forward(r)) = A^-1 r
    half = pred.system.forward(rhs)
    assert_allclose(half.T @ half, rhs.T @ np.linalg.solve(system, rhs), rtol=1e-10, atol=1e-10)
    assert_allclose(pred.system.backward(half), np.linalg.solve(system, rhs),
                    rtol=1e-10, atol=1e-10)
    sys_inv = np.linalg.inv(system)
    for k, (p, nl) in enumerate(zip(sizes, n_levels, strict=True)):
        blocks = pred.inverse_diagonal_blocks(k)
        assert blocks.shape == (nl, p, p)
        for lvl in range(nl):
            s0 = lay.term_col_offset[k] + lvl * p
            assert_allclose(blocks[lvl], sys_inv[s0 : s0 + p, s0 : s0 + p],
                            rtol=1e-9, atol=1e-11)


def check_gram_builder(terms, lay, x, y, w, gs: GramSystem) -> None:
    """GramBuilder's refill: its kernel against the twin; its GramSystem build_gram's, bit
    for bit."""
    builder = GramBuilder(terms, lay, x)
    got = builder.build(y, w)
    for name in ("ztx", "zty", "xtx", "xty", "yty", "n", "sum_log_weights"):
        assert_array_equal(getattr(got, name), getattr(gs, name), err_msg=name)
    assert_array_equal(got.ztz.indptr, gs.ztz.indptr)
    assert_array_equal(got.ztz.indices, gs.ztz.indices)
    assert_array_equal(got.ztz.data, gs.ztz.data)
    no_columns = np.zeros((len(y), 0))
    fixed = builder.build(y, w, x=no_columns, prior_weights=False)
    assert_array_equal(fixed.ztz.data, gs.ztz.data)
    assert_array_equal(fixed.zty, gs.zty)
    assert fixed.ztx.shape == (lay.q, 0) and fixed.xtx.shape == (0, 0)
    assert np.isnan(fixed.sum_log_weights)
    for xx in (x, no_columns):
        p, nnz = xx.shape[1], len(gs.ztz.data)
        out = (np.full(nnz, np.nan), np.full((lay.q, p), np.nan), np.full(lay.q, np.nan),
               np.full((p, p), np.nan), np.full(p, np.nan))
        args = (builder._entry_position, builder._entry_z, builder._unit_z, builder._codes,
                builder._z, lay.term_col_offset, w, xx, y)
        yty = gram.refill_gram(*args, *out)
        want = naive.refill_gram(*args, nnz, lay.q)
        for g, wnt in zip((*out, yty), want, strict=True):
            assert_allclose(g, wnt, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("factorization", ["cholmod", "blocked"])
@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("sizes,n_levels", DESIGNS)
def test_engine_pieces_against_dense(
    seed: int, sizes: list[int], n_levels: list[int], factorization: str
) -> None:
    rng = np.random.default_rng(400 + seed)
    codes, zs = random_design(rng, sizes, n_levels, n=80)
    codes, n_levels = used_levels(codes, n_levels)
    check_engine(rng, codes, zs, n_levels, factorization)


@pytest.mark.parametrize("factorization", ["cholmod", "blocked"])
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_engine_terms_sharing_a_factor(seed: int, factorization: str) -> None:
    """(1 | g) + (0 + x | g) + (1 + x | h) + (x2 | g): same-factor pairs take a shortcut."""
    rng = np.random.default_rng(500 + seed)
    n = 90
    g = rng.permutation(np.arange(n) % 7)
    h = rng.permutation(np.arange(n) % 4)
    x = rng.normal(size=n)
    ones = np.ones(n)
    zs = [ones[:, None], x[:, None], np.column_stack([ones, x]),
          np.column_stack([ones, rng.normal(size=n)])]
    codes = [g, g, h, g]
    check_engine(rng, [c.astype(np.int64) for c in codes], [np.ascontiguousarray(z) for z in zs],
                 [7, 7, 4, 7], factorization, factors=["g", "g", "h", "g"])


def test_unique_level_pairs_many_rows() -> None:
    """Counting sorts on a bigger input: 20,000 rows, 300 x 50 levels, some pairs absent."""
    rng = np.random.default_rng(9)
    a = rng.integers(0, 300, 20_000).astype(np.int64)
    b = ((a * 7 + rng.integers(0, 5, 20_000)) % 50).astype(np.int64)
    got = gram.unique_level_pairs(a, b, 300, 50)
    want = naive.unique_level_pairs(a, b, 300, 50)
    for g_arr, w_arr in zip(got, want, strict=True):
        assert_array_equal(g_arr, w_arr)


def test_choose_factorization_by_size_memory_and_fill() -> None:
    from interlace_nb.linalg import MAX_DENSE_SIZE, dense_size_limit
    from interlace_nb.predictor import choose_factorization

    def terms_for(q1: int, m: int) -> list[RandomTerm]:
        ones = [np.ones((1, 1)), np.ones((1, 1))]
        return make_terms([np.zeros(1, dtype=np.int64)] * 2, ones, [q1, m])

    def pattern(q1: int, m: int, met: int) -> np.ndarray:
        """Z'Z column pointers: each first-term level meets ``met`` later columns."""
        counts = np.concatenate([np.full(q1, met + 1), np.ones(m, dtype=np.int64)])
        return np.concatenate([[0], np.cumsum(counts)])

    small = terms_for(8000, MAX_DENSE_SIZE)
    assert choose_factorization(small, build_layout(small), "auto", pattern(8000, 6000, 1)) \
        == "blocked"
    wide = terms_for(8000, 7000)  # dense block above MAX_DENSE_SIZE, within the memory limit
    assert 7000 <= dense_size_limit()
    lay = build_layout(wide)
    assert choose_factorization(wide, lay, "auto") == "blocked"  # before the Gram blocks
    assert choose_factorization(wide, lay, "auto", pattern(8000, 7000, 2)) == "cholmod"
    assert choose_factorization(wide, lay, "auto", pattern(8000, 7000, 100)) == "blocked"
    assert choose_factorization(wide, lay, "cholmod", pattern(8000, 7000, 100)) == "cholmod"
    huge = terms_for(100, dense_size_limit() + 1)
    assert choose_factorization(huge, build_layout(huge), "auto") == "cholmod"
    with pytest.raises(ValueError, match="factorization"):
        choose_factorization(wide, lay, "dense")
