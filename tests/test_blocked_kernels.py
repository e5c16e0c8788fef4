"""The blocked-Cholesky kernels (and gram._counting_order) against their NumPy twins.

``kernels/blocked.py`` splits the scaled system A + I after the first term:
L11 blockwise, L21 = A21 L11^-T, S = A22 + I - L21 L21' (dense upper
triangle, Fortran order). Each kernel is checked on a tiny system with the
numbers written out, then on the real inputs a model builds from small random
crossed designs (first-term sizes p1 = 1, 2, 3 with one to three other terms,
some on the first term's own grouping factor), against the twins in
``naive.py`` and against dense NumPy algebra on A + I itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import naive
import numpy as np
import polars as pl
import pytest
from interlace_nb.kernels import blocked, gram, lambda_ops, tiled
from numpy.testing import assert_allclose, assert_array_equal

import interlace_nb
from interlace_nb.linalg.blocked import (
    TileLayout,
    balanced_column_bounds,
    downdate_column_work,
    downdate_work,
)

TOL = {"rtol": 1e-12, "atol": 1e-12}

# ----------------------------------------------------------------- inputs


@dataclass(frozen=True)
class BlockedInput:
    """The scaled, block-complete CSC of A (no identity) and where the first term ends."""

    indptr: np.ndarray
    indices: np.ndarray
    scaled: np.ndarray
    q1: int
    p1: int
    logdet: float  # the predictor's log det(A + I), for an end-to-end check

    @property
    def q(self) -> int:
        return len(self.indptr) - 1

    @property
    def m(self) -> int:
        return self.q - self.q1

    @property
    def dense(self) -> np.ndarray:
        """A + I, dense."""
        return naive.csc_dense(self.indptr, self.indices, self.scaled) + np.eye(self.q)


#: (formula, p1 of the first term after lme4's reordering). g1 has the most levels.
FORMULAS = [
    ("y ~ x + (1 | g1) + (1 | g2)", 1),
    ("y ~ x + (1 | g1) + (1 + x | g2) + (1 | g3)", 1),
    ("y ~ x + (1 | g1) + (0 + x | g1) + (1 | g2) + (1 + x2 | g3)", 1),
    ("y ~ x + (1 + x | g1) + (1 | g2)", 2),
    ("y ~ x + (1 + x | g1) + (0 + x2 | g1) + (1 + x2 | g2) + (1 | g3)", 2),
    ("y ~ x + (1 + x + x2 | g1) + (1 | g2)", 3),
    ("y ~ x + (1 + x + x2 | g1) + (1 + x | g2) + (1 | g3)", 3),
]
SEEDS = [0, 1, 2]


def crossed_frame(seed: int, n: int = 70, n_levels: tuple[int, int, int] = (12, 5, 4)):
    """A random crossed design: g2's level tied to g1's (many pairs never meet), g3 free."""
    rng = np.random.default_rng(seed)
    l1, l2, l3 = n_levels
    g1 = rng.integers(0, l1, n)
    g1[:l1] = np.arange(l1)  # every level present
    g2 = (g1 * 2 + rng.integers(0, 2, n)) % l2
    g2[:l2] = np.arange(l2)
    g3 = rng.integers(0, l3, n)
    g3[:l3] = np.arange(l3)
    return pl.DataFrame({
        "y": rng.normal(size=n),
        "x": rng.normal(size=n),
        "x2": rng.normal(size=n),
        "g1": [f"a{v:03d}" for v in g1],
        "g2": [f"b{v:03d}" for v in g2],
        "g3": [f"c{v:03d}" for v in g3],
    })


def random_theta(rng: np.random.Generator, theta_lower: np.ndarray) -> np.ndarray:
    """Diagonal in [0.2, 2) (some 0), off-diagonal of either sign (some 0)."""
    diagonal = theta_lower == 0.0
    theta = np.where(diagonal, rng.uniform(0.2, 2.0, theta_lower.size),
                     rng.normal(size=theta_lower.size))
    theta[rng.uniform(size=theta_lower.size) < 0.15] = 0.0
    return theta


@cache
def model_input(formula: str, seed: int, n: int = 70,
                n_levels: tuple[int, int, int] = (12, 5, 4)) -> BlockedInput:
    """The predictor's scaled system for ``formula`` on a random crossed frame."""
    m = interlace_nb.LinearMixedModel(formula, crossed_frame(seed, n, n_levels))
    theta = random_theta(np.random.default_rng(1000 + seed), m.theta_lower)
    pred = m.predictor
    pred.update(theta)
    first = m.terms[0]
    lay = pred.layout
    scaled = np.empty_like(pred._scaled_data)  # all of it: the predictor skips what blocked skips
    lambda_ops.scale_sparse_gram(
        pred._indptr, pred._indices, pred._ztz_data, lay.col_block_start, lay.col_pos,
        lay.col_block_size, lay.col_t_offset, pred.t_flat, scaled, lay.q,
    )
    return BlockedInput(
        indptr=pred._indptr.copy(),
        indices=pred._indices.copy(),
        scaled=scaled,
        q1=first.size * first.n_levels,
        p1=first.size,
        logdet=pred.logdet,
    )


def hand_input() -> BlockedInput:
    """Four columns: term 0 (p1 = 1, levels at cols 0, 1), term 1 (p = 1, levels at 2, 3).

    Level 0 of term 0 meets level 0 of term 1 only; level 1 meets both. Stored
    A (no identity), full symmetric, block-complete:

        [[3, 0, 2, 0],
         [0, 8, 3, 6],
         [2, 3, 5, 0],
         [0, 6, 0, 8]]
    """
    indptr = np.array([0, 2, 5, 8, 10], dtype=np.int64)
    indices = np.array([0, 2, 1, 2, 3, 0, 1, 2, 1, 3], dtype=np.int64)
    scaled = np.array([3.0, 2.0, 8.0, 3.0, 6.0, 2.0, 3.0, 5.0, 6.0, 8.0])
    return BlockedInput(indptr, indices, scaled, q1=2, p1=1, logdet=float(np.log(576.0)))


# ---------------------------------------------------------- kernel runners


def run_factor(inp: BlockedInput):
    """factor_first_term on NaN-filled outputs (so slots it never writes stay NaN)."""
    l11 = np.full((inp.q1 // inp.p1, inp.p1, inp.p1), np.nan)
    l21 = np.full(len(inp.indices), np.nan)
    logdet = blocked.factor_first_term(inp.indptr, inp.indices, inp.scaled, inp.q1, inp.p1,
                                       l11, l21)
    return logdet, l11, l21


def run_schur(inp: BlockedInput, l21: np.ndarray, fill_value: float = 7.0):
    """fill_schur then downdate_schur on a Fortran buffer pre-filled with ``fill_value``."""
    start = np.full((inp.m, inp.m), fill_value, order="F")
    filled = start.copy(order="F")
    blocked.fill_schur(inp.indptr, inp.indices, inp.scaled, inp.q1, filled)
    downdated = filled.copy(order="F")
    blocked.downdate_schur(inp.indptr, inp.indices, l21, inp.q1, inp.p1, downdated)
    return start, filled, downdated


def symmetric_from_upper(upper: np.ndarray) -> np.ndarray:
    return np.triu(upper) + np.triu(upper, 1).T


# ------------------------------------------------------------ hand-made case


def test_hand_made_system() -> None:
    inp = hand_input()
    a = inp.dense
    assert_array_equal(a, [[4, 0, 2, 0], [0, 9, 3, 6], [2, 3, 6, 0], [0, 6, 0, 9]])

    # L11 = diag(2, 3); L21 = A21 L11^-T = [[2/2, 3/3], [0, 6/3]] = [[1, 1], [0, 2]]
    logdet, l11, l21 = run_factor(inp)
    assert logdet == pytest.approx(2.0 * np.log(6.0), rel=1e-15)
    assert_array_equal(l11, [[[2.0]], [[3.0]]])
    # slots: col 0 row 2 -> 1; col 1 rows 2, 3 -> 1, 2; nothing else written
    assert_array_equal(l21, [np.nan, 1.0, np.nan, 1.0, 2.0] + [np.nan] * 5)
    twin_logdet, twin_l11, twin_l21 = naive.factor_first_term(
        inp.indptr, inp.indices, inp.scaled, inp.q1, inp.p1)
    assert twin_logdet == pytest.approx(logdet, rel=1e-15)
    assert_array_equal(twin_l11, l11)
    assert_array_equal(twin_l21, l21)

    # A22 + I = diag(6, 9) (the (2, 3) entry is not stored); S = A22 + I - L21 L21'
    #         = [[6 - 2, 0 - 2], [., 9 - 4]] = [[4, -2], [-2, 5]] = U'U, U = [[2, -1], [0, 2]]
    start, filled, downdated = run_schur(inp, l21)
    assert_array_equal(filled, [[6.0, 0.0], [7.0, 9.0]])  # lower triangle left alone
    assert_array_equal(downdated, [[4.0, -2.0], [7.0, 5.0]])
    assert_array_equal(naive.fill_schur(inp.indptr, inp.indices, inp.scaled, inp.q1, start),
                       filled)
    assert_array_equal(naive.downdate_schur(inp.indptr, inp.indices, l21, inp.q1, filled),
                       downdated)
    for bounds in ([0, 2], [0, 1, 2], [0, 0, 1, 1, 2]):
        parallel = filled.copy(order="F")
        blocked.downdate_schur_parallel(inp.indptr, inp.indices, l21, inp.q1, inp.p1,
                                        np.array(bounds, dtype=np.int64), parallel)
        assert_array_equal(parallel, downdated)
    for tile_size in (1, 2, 5):
        for n_bands in (1, 2, 4):
            tiles = TileLayout(inp.indptr, inp.indices, inp.q1, inp.p1, 2, tile_size, n_bands)
            by_tiles = filled.copy(order="F")
            tiles.downdate(l21, by_tiles)
            assert_array_equal(by_tiles, downdated)
    upper = np.array([[2.0, -1.0], [0.0, 2.0]])
    assert_array_equal(upper.T @ upper, symmetric_from_upper(downdated))
    assert logdet + 2.0 * np.log(4.0) == pytest.approx(inp.logdet, rel=1e-15)  # det = 36 * 16

    # forward: rhs = [2, 3, 4, 5] -> c1 = [1, 1]; r2 = [4, 5] - L21 c1 = [2, 3]
    rhs = np.array([[2.0], [3.0], [4.0], [5.0]])
    c1 = np.empty((2, 1))
    r2 = rhs[2:].copy()
    blocked.forward_first_term(inp.indptr, inp.indices, l11, l21, inp.q1, inp.p1, rhs, c1, r2)
    assert_array_equal(c1, [[1.0], [1.0]])
    assert_array_equal(r2, [[2.0], [3.0]])
    twin_c1, twin_r2 = naive.forward_first_term(inp.indptr, inp.indices, l11, l21, inp.q1, rhs,
                                                rhs[2:])
    assert_array_equal(twin_c1, c1)
    assert_array_equal(twin_r2, r2)

    # backward: w1 = [3, 8], u2 = [1, 2]: w1 - L21' u2 = [3 - 1, 8 - 5] = [2, 3] -> u1 = [1, 1]
    w1 = np.array([[3.0], [8.0]])
    u2 = np.array([[1.0], [2.0]])
    u1 = np.full((2, 1), np.nan)
    blocked.backward_first_term(inp.indptr, inp.indices, l11, l21, inp.q1, inp.p1, w1, u2, u1)
    assert_array_equal(u1, [[1.0], [1.0]])
    assert_array_equal(naive.backward_first_term(inp.indptr, inp.indices, l11, l21, inp.q1,
                                                 w1, u2), u1)

    # S^-1 = [[5, 2], [2, 4]] / 16; (A^-1)_00 = (1 + 5/16) / 4 = 21/64,
    # (A^-1)_11 = (1 + [1, 2] S^-1 [1, 2]') / 9 = (1 + 29/16) / 9 = 5/16
    s_inv = np.array([[5.0, 2.0], [2.0, 4.0]]) / 16.0
    out = np.full((2, 1, 1), np.nan)
    blocked.first_term_inverse_blocks(inp.indptr, inp.indices, l11, l21, inp.q1, inp.p1, s_inv,
                                      out)
    assert_allclose(out.ravel(), [21.0 / 64.0, 5.0 / 16.0], rtol=1e-15)
    assert_allclose(np.diag(np.linalg.inv(a))[:2], [21.0 / 64.0, 5.0 / 16.0], rtol=1e-14)
    assert_allclose(naive.first_term_inverse_blocks(inp.indptr, inp.indices, l11, l21, inp.q1,
                                                    inp.p1, s_inv), out, rtol=1e-15)


# ---------------------------------------------------------- _small_cholesky


def test_small_cholesky_by_hand() -> None:
    # [[4, 2], [2, 5]] = L L', L = [[2, 0], [1, 2]]; the upper entry is zeroed
    block = np.array([[4.0, 2.0], [2.0, 5.0]])
    assert blocked._small_cholesky(block, 2)
    assert_array_equal(block, [[2.0, 0.0], [1.0, 2.0]])
    # [[2, 3], [3, 2]] has determinant -5
    assert not blocked._small_cholesky(np.array([[2.0, 3.0], [3.0, 2.0]]), 2)
    assert not blocked._small_cholesky(np.array([[0.0]]), 1)
    assert naive.small_cholesky(np.array([[2.0, 3.0], [3.0, 2.0]]))[1] is False


@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_small_cholesky_random(p: int) -> None:
    rng = np.random.default_rng(p)
    for _ in range(10):
        root = rng.normal(size=(p, p))
        spd = root @ root.T + 0.1 * np.eye(p)
        block = spd.copy()
        block[np.triu_indices(p, 1)] = np.nan  # only the lower triangle may be read
        assert blocked._small_cholesky(block, p)
        lower, ok = naive.small_cholesky(spd)
        assert ok
        assert_allclose(block, lower, rtol=1e-13, atol=1e-13)
        indefinite = spd - 2.0 * np.linalg.eigvalsh(spd).max() * np.eye(p)
        assert not blocked._small_cholesky(indefinite.copy(), p)
        assert naive.small_cholesky(indefinite)[1] is False


# ---------------------------------------------------------- random systems


def check_blocked_kernels(inp: BlockedInput) -> None:
    """Every blocked kernel on ``inp`` against its twin and against dense A + I."""
    a = inp.dense
    q, q1, p1, m = inp.q, inp.q1, inp.p1, inp.m
    n_levels = q1 // p1
    # the layout the kernels assume: in a first-term column, the level's own p1 rows, then >= q1
    for c in range(q1):
        rows = inp.indices[inp.indptr[c] : inp.indptr[c + 1]]
        level = c // p1
        assert_array_equal(rows[:p1], np.arange(level * p1, level * p1 + p1))
        assert np.all(rows[p1:] >= q1)

    # factor_first_term
    logdet, l11, l21 = run_factor(inp)
    twin_logdet, twin_l11, twin_l21 = naive.factor_first_term(
        inp.indptr, inp.indices, inp.scaled, q1, p1)
    assert logdet == pytest.approx(twin_logdet, rel=1e-13, abs=1e-13)
    assert_allclose(l11, twin_l11, **TOL)  # zeros above the diagonal written too
    assert_allclose(l21, twin_l21, equal_nan=True, **TOL)  # written exactly on L21's slots
    assert_array_equal(np.isnan(l21), ~naive.first_term_l21_slots(inp.indptr, inp.indices, q1))
    for j in range(n_levels):
        rows = slice(j * p1, (j + 1) * p1)
        assert_allclose(l11[j], np.linalg.cholesky(a[rows, rows]), **TOL)
    l21_full = naive.l21_dense(inp.indptr, inp.indices, l21, q1)
    l11_full = naive.l11_dense(l11)
    assert_allclose(l21_full @ l11_full.T, a[q1:, :q1], **TOL)  # L21 L11' = A21
    l21 = np.nan_to_num(l21)  # as BlockedCholesky holds it: zeros off the slots

    # fill_schur, downdate_schur: upper triangle only, the lower one left as it was
    start, filled, downdated = run_schur(inp, l21)
    assert filled.flags.f_contiguous and downdated.flags.f_contiguous
    assert_array_equal(filled, naive.fill_schur(inp.indptr, inp.indices, inp.scaled, q1, start))
    assert_allclose(downdated, naive.downdate_schur(inp.indptr, inp.indices, l21, q1, filled),
                    **TOL)
    assert_array_equal(np.tril(downdated, -1), np.tril(start, -1))
    schur = symmetric_from_upper(downdated)
    assert_allclose(schur, a[q1:, q1:] - l21_full @ l21_full.T, **TOL)

    # the parallel downdate: same operations in the same order per entry, so equal
    work = downdate_column_work(inp.indptr, inp.indices, q1, p1, m)
    assert_array_equal(work, naive.downdate_column_work(inp.indptr, inp.indices, q1, p1, m))
    splits = {tuple(balanced_column_bounds(m, b)) for b in (1, 2, 3, 4, 7, 16, m)}
    splits |= {tuple(balanced_column_bounds(m, b, work)) for b in (1, 2, 3, 16, m)}
    splits |= {(0, 1, m), (0, m - 1, m), (0, 0, m // 2, m // 2, m)}
    for bounds in sorted(splits):
        parallel = filled.copy(order="F")
        blocked.downdate_schur_parallel(inp.indptr, inp.indices, l21, q1, p1,
                                        np.array(bounds, dtype=np.int64), parallel)
        assert_array_equal(parallel, downdated, err_msg=f"bands {bounds}")

    # the tiled downdate: the same products, each entry taking its levels in the same
    # order, so equal bit for bit, whatever the tiles and the bands of column blocks
    rows_below = np.diff(inp.indptr)[0:q1:p1] - p1
    assert downdate_work(inp.indptr, q1, p1) == pytest.approx(work.sum() * p1 * p1)
    for tile_size in sorted({1, 2, 3, 7, max(1, m // 2), m, m + 3} - {0}):
        for n_bands in (1, 2, 3, 16):
            tiles = TileLayout(inp.indptr, inp.indices, q1, p1, m, tile_size, n_bands)
            assert tiles.entry_row.max(initial=-1) < tile_size
            assert len(tiles.entry_row) == int(rows_below.sum())
            by_tiles = filled.copy(order="F")
            tiles.downdate(l21, by_tiles)
            assert_array_equal(by_tiles, downdated, err_msg=f"tiles {tile_size}, {n_bands} bands")

    # L = [[L11, 0], [L21, U']] is the Cholesky factor of A + I
    upper = np.linalg.cholesky(schur).T
    lower = np.block([[l11_full, np.zeros((q1, m))], [l21_full, upper.T]])
    assert_allclose(lower @ lower.T, a, rtol=1e-11, atol=1e-11)
    total = logdet + 2.0 * np.log(np.diag(upper)).sum()
    assert total == pytest.approx(np.linalg.slogdet(a)[1], rel=1e-11, abs=1e-11)
    assert total == pytest.approx(inp.logdet, rel=1e-11, abs=1e-11)

    # forward / backward substitution
    rng = np.random.default_rng(q)
    rhs = rng.normal(size=(q, 3))
    c1 = np.full((q1, 3), np.nan)
    r2 = rhs[q1:].copy()
    blocked.forward_first_term(inp.indptr, inp.indices, l11, l21, q1, p1, rhs, c1, r2)
    twin_c1, twin_r2 = naive.forward_first_term(inp.indptr, inp.indices, l11, l21, q1, rhs,
                                                rhs[q1:])
    assert_allclose(c1, twin_c1, **TOL)
    assert_allclose(r2, twin_r2, **TOL)
    c = np.vstack([c1, np.linalg.solve(upper.T, r2)])
    assert_allclose(lower @ c, rhs, rtol=1e-10, atol=1e-10)  # c = L^-1 rhs

    w = rng.normal(size=(q, 2))
    u2 = np.linalg.solve(upper, w[q1:])
    u1 = np.full((q1, 2), np.nan)
    blocked.backward_first_term(inp.indptr, inp.indices, l11, l21, q1, p1,
                                np.ascontiguousarray(w[:q1]), u2, u1)
    assert_allclose(u1, naive.backward_first_term(inp.indptr, inp.indices, l11, l21, q1,
                                                  w[:q1], u2), **TOL)
    assert_allclose(lower.T @ np.vstack([u1, u2]), w, rtol=1e-10, atol=1e-10)  # u = L^-T w

    # the parallel passes over level ranges: factor and backward write each level's own
    # entries, so equal; forward sums the ranges' parts of r2 after, so to rounding
    for bounds in sorted({tuple(balanced_column_bounds(n_levels, b)) for b in (1, 2, 3, 16)}
                         | {(0, 0, n_levels), (0, n_levels - 1, n_levels)}):
        level_bounds = np.array(bounds, dtype=np.int64)
        l11_par = np.zeros_like(l11)
        l21_par = np.full(len(inp.indices), np.nan)
        logdet_par = blocked.factor_first_term_parallel(
            inp.indptr, inp.indices, inp.scaled, q1, p1, l11_par, l21_par, level_bounds)
        assert logdet_par == pytest.approx(logdet, rel=1e-13, abs=1e-13)
        assert_array_equal(l11_par, l11)
        assert_array_equal(np.nan_to_num(l21_par), l21)
        c1_par = np.full((q1, 3), np.nan)
        r2_par = rhs[q1:].copy()
        blocked.forward_first_term_parallel(inp.indptr, inp.indices, l11, l21, q1, p1, rhs,
                                            c1_par, r2_par, level_bounds)
        assert_array_equal(c1_par, c1)
        assert_allclose(r2_par, r2, rtol=1e-12, atol=1e-12)
        u1_par = np.full((q1, 2), np.nan)
        blocked.backward_first_term_parallel(inp.indptr, inp.indices, l11, l21, q1, p1,
                                             np.ascontiguousarray(w[:q1]), u2, u1_par,
                                             level_bounds)
        assert_array_equal(u1_par, u1)

    # diagonal blocks of (A + I)^-1 for the first term
    s_inv = np.linalg.inv(schur) if m else np.zeros((0, 0))
    out = np.full((n_levels, p1, p1), np.nan)
    blocked.first_term_inverse_blocks(inp.indptr, inp.indices, l11, l21, q1, p1, s_inv, out)
    assert_allclose(out, naive.first_term_inverse_blocks(inp.indptr, inp.indices, l11, l21, q1,
                                                         p1, s_inv), rtol=1e-11, atol=1e-12)
    a_inv = np.linalg.inv(a)
    for j in range(n_levels):
        rows = slice(j * p1, (j + 1) * p1)
        assert_allclose(out[j], a_inv[rows, rows], rtol=1e-10, atol=1e-12)

    # A^-1 in the first term's columns on the pattern; the parallel pass over level
    # ranges does the same operations per column, so it is equal
    s_inv_f = np.asfortranarray(s_inv)
    columns = np.zeros(len(inp.indices))
    blocked.first_term_inverse_columns(inp.indptr, inp.indices, l11, l21, q1, p1, s_inv_f,
                                       columns)
    first_cols = np.repeat(np.arange(q), np.diff(inp.indptr))[: inp.indptr[q1]]
    assert_allclose(columns[: inp.indptr[q1]], a_inv[inp.indices[: inp.indptr[q1]], first_cols],
                    rtol=1e-10, atol=1e-12)
    for bounds in ([0, n_levels], [0, 1, n_levels], [0, n_levels // 2, n_levels // 2, n_levels]):
        parallel = np.zeros(len(inp.indices))
        blocked.first_term_inverse_columns_parallel(
            inp.indptr, inp.indices, l11, l21, q1, p1, s_inv_f, np.array(bounds, dtype=np.int64),
            parallel,
        )
        assert_array_equal(parallel, columns, err_msg=f"levels {bounds}")
    # the tiled pass (both triangles of S^-1; sums in another order): equal to rounding
    if m == 0:
        return
    s_inv_full = np.asfortranarray((s_inv + s_inv.T) / 2.0)
    first = slice(0, int(inp.indptr[q1]))
    for tile_size in sorted({1, 3, max(1, m // 2), m + 3}):
        for bounds in ([0, n_levels], [0, 1, n_levels], [0, n_levels // 2, n_levels]):
            level_bounds = np.array(bounds, dtype=np.int64)
            tiles = TileLayout(inp.indptr, inp.indices, q1, p1, m, tile_size, 3)
            w = np.full(int(inp.indptr[q1]), np.nan)
            tiled.rows_times_inverse_l11(inp.indptr, l11, l21, p1, level_bounds, w)
            by_tiles = np.zeros(len(inp.indices))
            tiles.schur_inverse_times_rows(w, s_inv_full, by_tiles)
            tiled.level_own_blocks(inp.indptr, l11, p1, level_bounds, w, by_tiles)
            assert_allclose(by_tiles[first], columns[first], rtol=1e-12, atol=1e-13,
                            err_msg=f"tiles {tile_size}, levels {bounds}")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("formula,p1", FORMULAS)
def test_blocked_kernels_random(formula: str, p1: int, seed: int) -> None:
    inp = model_input(formula, seed)
    assert inp.p1 == p1 and inp.q1 == 12 * p1 and inp.m > 0
    check_blocked_kernels(inp)


@pytest.mark.parametrize("p1", [1, 2, 3])
def test_blocked_kernels_wide_schur_block(p1: int) -> None:
    """More levels in the other terms (m in the 60s-90s), so the column bands really split."""
    effects = ["1", "1 + x", "1 + x + x2"][p1 - 1]
    inp = model_input(f"y ~ x + ({effects} | g1) + (1 + x | g2) + (1 | g3)", 7,
                      n=200, n_levels=(40, 25, 15))
    assert inp.p1 == p1 and inp.m == 65
    check_blocked_kernels(inp)


def test_blocked_kernels_single_term() -> None:
    """No other term: the Schur block is empty and the first term is all of A."""
    inp = model_input("y ~ x + (1 + x | g1)", 3)
    assert (inp.p1, inp.q1, inp.m) == (2, 24, 0)
    check_blocked_kernels(inp)


# --------------------------------------------------- not positive definite


def test_factor_first_term_not_positive_definite_by_hand() -> None:
    inp = hand_input()
    scaled = inp.scaled.copy()
    scaled[2] = -1.0  # level 1's diagonal: -1 + 1 = 0
    bad = BlockedInput(inp.indptr, inp.indices, scaled, inp.q1, inp.p1, float("nan"))
    logdet, _, _ = run_factor(bad)
    assert np.isnan(logdet)
    assert np.isnan(naive.factor_first_term(bad.indptr, bad.indices, scaled, 2, 1)[0])
    # a NaN entry (NaN <= 0 is False) still ends in a nan log det
    scaled = inp.scaled.copy()
    scaled[0] = np.nan
    logdet, _, _ = run_factor(BlockedInput(inp.indptr, inp.indices, scaled, 2, 1, 0.0))
    assert np.isnan(logdet)


@pytest.mark.parametrize("formula,p1", FORMULAS[::2])
def test_factor_first_term_not_positive_definite_random(formula: str, p1: int) -> None:
    inp = model_input(formula, 0)
    logdet, _, _ = run_factor(inp)
    assert np.isfinite(logdet)
    for level in (0, inp.q1 // p1 - 1):
        scaled = inp.scaled.copy()
        c0 = level * p1
        first = inp.indptr[c0]  # the block's (0, 0) entry: rows start at the level's own
        scaled[first] = -5.0
        if p1 > 1:  # and make the block indefinite through its off-diagonal too
            scaled[first + 1] = scaled[inp.indptr[c0 + 1]] = 10.0
        bad = BlockedInput(inp.indptr, inp.indices, scaled, inp.q1, p1, float("nan"))
        logdet, _, _ = run_factor(bad)
        assert np.isnan(logdet), f"level {level}"
        halves = np.array([0, level + 1, inp.q1 // p1], dtype=np.int64)  # bad level in one
        assert np.isnan(blocked.factor_first_term_parallel(
            bad.indptr, bad.indices, scaled, inp.q1, p1, np.zeros((inp.q1 // p1, p1, p1)),
            np.zeros(len(scaled)), halves))
        assert np.isnan(naive.factor_first_term(bad.indptr, bad.indices, scaled, inp.q1, p1)[0])


# ---------------------------------------------------- gram._counting_order


def test_counting_order_by_hand() -> None:
    codes = np.array([2, 0, 1, 0, 2, 1, 0], dtype=np.int64)
    got = gram._counting_order(codes, 3, np.arange(7, dtype=np.int64))
    assert_array_equal(got, [1, 3, 6, 2, 5, 0, 4])
    # ties keep order_in's order, not the row order
    order_in = np.array([6, 4, 3, 0, 1, 5, 2], dtype=np.int64)
    got = gram._counting_order(codes, 3, order_in)
    assert_array_equal(got, [6, 3, 1, 5, 2, 4, 0])
    assert_array_equal(got, naive.counting_order(codes, 3, order_in))
    # a level nobody uses (level 3 of 5), and an empty input
    got = gram._counting_order(np.array([4, 0, 4, 1], dtype=np.int64), 5,
                               np.array([3, 2, 1, 0], dtype=np.int64))
    assert_array_equal(got, [1, 3, 2, 0])
    assert gram._counting_order(codes, 3, np.zeros(0, dtype=np.int64)).shape == (0,)


@pytest.mark.parametrize("seed", SEEDS)
def test_counting_order_is_a_stable_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for n, n_levels in ((1, 1), (50, 3), (500, 40), (2000, 7)):
        codes = rng.integers(0, n_levels, n).astype(np.int64)
        for order_in in (rng.permutation(n), rng.choice(n, n // 2 + 1, replace=False),
                         rng.integers(0, n, n)):  # a permutation, a subset, repeats
            order_in = order_in.astype(np.int64)
            got = gram._counting_order(codes, n_levels, order_in)
            assert_array_equal(got, naive.counting_order(codes, n_levels, order_in))
            assert np.all(np.diff(codes[got]) >= 0)
            for level in range(n_levels):  # each level's rows in order_in's order
                assert_array_equal(got[codes[got] == level], order_in[codes[order_in] == level])
