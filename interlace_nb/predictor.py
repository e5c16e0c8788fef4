"""The predictor: Z's layout, Lambda(theta), the Gram blocks and their factor.

The Gram blocks Z'WZ, Z'WX, X'WX, Z'Wy, X'Wy and y'Wy are built once, in
passes over the rows (Numba). Each evaluation afterwards touches only the
q x q system: it rescales Z'WZ by Lambda(theta), refactors it numerically
(symbolic analysis done once) and solves for p + 1 right-hand sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .kernels import gram, lambda_ops
from .linalg import MAX_DENSE_SIZE, BlockedCholesky, SparseCholesky
from .terms import RandomTerm


@dataclass(frozen=True)
class Layout:
    """Where each term's columns sit in Z and its T block in the flat buffer."""

    term_col_offset: np.ndarray
    term_size: np.ndarray
    term_theta_offset: np.ndarray
    term_t_offset: np.ndarray
    col_block_start: np.ndarray
    col_pos: np.ndarray
    col_block_size: np.ndarray
    col_t_offset: np.ndarray
    n_theta: int
    t_flat_size: int

    @property
    def q(self) -> int:
        return len(self.col_pos)


def build_layout(terms: list[RandomTerm]) -> Layout:
    """Column metadata for Z (level-major within each term, terms in order)."""
    sizes = np.array([t.size for t in terms], dtype=np.int64)
    widths = np.array([t.size * t.n_levels for t in terms], dtype=np.int64)
    col_offset = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    theta_offset = np.concatenate([[0], np.cumsum([t.n_theta for t in terms])[:-1]]).astype(
        np.int64
    )
    t_offset = np.concatenate([[0], np.cumsum(sizes**2)[:-1]]).astype(np.int64)
    block_start, pos, block_size, col_t = [], [], [], []
    for k, term in enumerate(terms):
        p = term.size
        local = np.arange(term.n_levels * p)
        pos.append(local % p)
        block_start.append(col_offset[k] + (local // p) * p)
        block_size.append(np.full(local.size, p))
        col_t.append(np.full(local.size, t_offset[k]))
    return Layout(
        term_col_offset=col_offset,
        term_size=sizes,
        term_theta_offset=theta_offset,
        term_t_offset=t_offset,
        col_block_start=np.concatenate(block_start).astype(np.int64),
        col_pos=np.concatenate(pos).astype(np.int64),
        col_block_size=np.concatenate(block_size).astype(np.int64),
        col_t_offset=np.concatenate(col_t).astype(np.int64),
        n_theta=int(sum(t.n_theta for t in terms)),
        t_flat_size=int((sizes**2).sum()),
    )


@dataclass(frozen=True)
class GramSystem:
    """Cross-products of [Z X y] under the prior weights; theta-free."""

    ztz: sp.csc_matrix
    ztx: np.ndarray
    zty: np.ndarray
    xtx: np.ndarray
    xty: np.ndarray
    yty: float
    n: int
    sum_log_weights: float


@dataclass(frozen=True)
class PairBlocks:
    """The nonzero blocks of Z'WZ between terms a <= b: one p_a x p_b block per level pair.

    Pairs are sorted by level of a, then level of b.
    """

    a: int
    b: int
    level_a: np.ndarray
    level_b: np.ndarray
    blocks: np.ndarray


def build_gram(
    terms: list[RandomTerm], layout: Layout, x: np.ndarray, y: np.ndarray, weights: np.ndarray
) -> GramSystem:
    """Build all Gram blocks; Z'WZ stored full-symmetric and block-complete."""
    pairs = []
    for a, term_a in enumerate(terms):
        for b in range(a, len(terms)):
            term_b = terms[b]
            if term_b.factors == term_a.factors:
                # one grouping factor: a row meets only its own level
                pair_a = pair_b = np.arange(term_a.n_levels, dtype=np.int64)
                row_pair = term_a.codes
            else:
                pair_a, pair_b, row_pair = gram.unique_level_pairs(
                    term_a.codes, term_b.codes, term_a.n_levels, term_b.n_levels
                )
            blocks = np.zeros((len(pair_a), term_a.size, term_b.size))
            gram.accumulate_pair_blocks(row_pair, term_a.z, term_b.z, weights, blocks)
            pairs.append(PairBlocks(a, b, pair_a, pair_b, blocks))
    xy = np.column_stack([x, y])
    ztxy = np.zeros((layout.q, xy.shape[1]))
    for k, term in enumerate(terms):
        start = layout.term_col_offset[k]
        stop = start + term.size * term.n_levels
        gram.accumulate_z_cross(term.codes, term.z, weights, xy, ztxy[start:stop])
    xyxy = gram.weighted_crossprod(xy, xy, weights)
    return assemble_gram(
        terms, layout, pairs, ztxy, xyxy, len(y), float(np.log(weights).sum())
    )


def assemble_gram(
    terms: list[RandomTerm],
    layout: Layout,
    pairs: list[PairBlocks],
    ztxy: np.ndarray,
    xyxy: np.ndarray,
    n: int,
    sum_log_weights: float,
) -> GramSystem:
    """The GramSystem from Z'WZ's pair blocks, Z'W[X y] (q x p+1) and [X y]'W[X y]."""
    counts = np.array([len(pair.level_a) for pair in pairs], dtype=np.int64)
    widths = np.array([terms[pair.a].size * terms[pair.b].size for pair in pairs], dtype=np.int64)
    pair_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    value_start = np.concatenate([[0], np.cumsum(counts * widths)[:-1]]).astype(np.int64)
    indptr, indices, data = gram.csc_from_pair_blocks(
        np.array([pair.a for pair in pairs], dtype=np.int64),
        np.array([pair.b for pair in pairs], dtype=np.int64),
        pair_start,
        value_start,
        np.concatenate([pair.level_a for pair in pairs]).astype(np.int64),
        np.concatenate([pair.level_b for pair in pairs]).astype(np.int64),
        np.concatenate([pair.blocks.ravel() for pair in pairs]),
        layout.term_col_offset,
        layout.term_size,
        np.array([t.n_levels for t in terms], dtype=np.int64),
    )
    q = layout.q
    small = np.int32 if max(q, len(data)) < np.iinfo(np.int32).max else np.int64
    ztz = sp.csc_matrix((data, indices.astype(small), indptr.astype(small)), shape=(q, q))
    p = xyxy.shape[0] - 1
    return GramSystem(
        ztz=ztz,
        ztx=np.ascontiguousarray(ztxy[:, :p]),
        zty=np.ascontiguousarray(ztxy[:, p]),
        xtx=xyxy[:p, :p].copy(),
        xty=xyxy[:p, p].copy(),
        yty=float(xyxy[p, p]),
        n=n,
        sum_log_weights=sum_log_weights,
    )


def choose_factorization(terms: list[RandomTerm], layout: Layout, method: str) -> str:
    """'blocked' when the dense Schur block after the first term is small, else 'cholmod'."""
    if method not in ("auto", "blocked", "cholmod"):
        raise ValueError(f"factorization must be 'auto', 'blocked' or 'cholmod', got {method!r}")
    if method != "auto":
        return method
    dense_size = layout.q - terms[0].size * terms[0].n_levels
    return "blocked" if dense_size <= MAX_DENSE_SIZE else "cholmod"


class Predictor:
    """Lambda(theta), the scaled system and its factor.

    ``update(theta)`` leaves the factor of Lambda'Z'WZ Lambda + I and the
    scaled right-hand sides Lambda'[Z'WX Z'Wy] ready for the deviance. The
    factorisation is CHOLMOD's (any structure) or the blocked one (first
    term block diagonal, dense Schur block for the rest).
    """

    def __init__(
        self,
        terms: list[RandomTerm],
        layout: Layout,
        gram_system: GramSystem,
        factorization: str = "auto",
    ):
        self.terms = terms
        self.layout = layout
        self.gram = gram_system
        ztz = gram_system.ztz
        self._indptr = ztz.indptr.astype(np.int64)
        self._indices = ztz.indices.astype(np.int64)
        self._ztz_data = ztz.data
        self._scaled_data = np.empty_like(ztz.data)
        self._zt_xy = np.column_stack([gram_system.ztx, gram_system.zty])
        self.scaled_rhs = np.empty_like(self._zt_xy)
        self.t_flat = np.zeros(layout.t_flat_size)
        self.factorization = choose_factorization(terms, layout, factorization)
        if self.factorization == "blocked":
            first = terms[0]
            self.system = BlockedCholesky(
                self._indptr, self._indices, layout.q, first.size * first.n_levels, first.size
            )
        else:
            self.system = SparseCholesky(ztz.indptr, ztz.indices, layout.q)
        self.theta: np.ndarray | None = None
        self.logdet = float("nan")

    @property
    def dense_size(self) -> int:
        """Width of the largest dense block each factorisation handles (for BLAS threads)."""
        if self.factorization == "blocked":
            return self.system.m
        return self.layout.q

    def set_theta(self, theta: np.ndarray) -> None:
        """Fill T_k blocks from theta."""
        lay = self.layout
        lambda_ops.fill_t_flat(
            np.asarray(theta, dtype=float),
            lay.term_theta_offset,
            lay.term_size,
            lay.term_t_offset,
            self.t_flat,
        )

    def update(self, theta: np.ndarray) -> None:
        """Rescale by Lambda(theta) and refactor; sets ``logdet`` (nan if it failed)."""
        lay = self.layout
        self.set_theta(theta)
        lambda_ops.scale_sparse_gram(
            self._indptr, self._indices, self._ztz_data, lay.col_block_start, lay.col_pos,
            lay.col_block_size, lay.col_t_offset, self.t_flat, self._scaled_data,
        )
        lambda_ops.lambda_t_times(
            self._zt_xy, lay.col_block_start, lay.col_pos, lay.col_block_size, lay.col_t_offset,
            self.t_flat, self.scaled_rhs,
        )
        self.logdet = self.system.factor(self._scaled_data)
        self.theta = np.array(theta, dtype=float)

    def lambda_times(self, u: np.ndarray) -> np.ndarray:
        """b = Lambda u for the current theta."""
        lay = self.layout
        u2 = np.ascontiguousarray(u.reshape(lay.q, -1), dtype=float)
        out = np.empty_like(u2)
        lambda_ops.lambda_times(
            u2, lay.col_block_start, lay.col_pos, lay.col_block_size, lay.col_t_offset,
            self.t_flat, out,
        )
        return out.reshape(u.shape)

    def relative_covariances(self) -> list[np.ndarray]:
        """T_k T_k' for each term: covariance of its effects in units of sigma^2."""
        out = []
        for k, term in enumerate(self.terms):
            p = term.size
            start = self.layout.term_t_offset[k]
            t = self.t_flat[start : start + p * p].reshape(p, p)
            out.append(t @ t.T)
        return out

    def inverse_diagonal_blocks(self, k: int) -> np.ndarray:
        """Diagonal blocks of (Lambda'Z'WZ Lambda + I)^-1 for term k's levels."""
        term = self.terms[k]
        starts = self.layout.term_col_offset[k] + np.arange(term.n_levels) * term.size
        return self.system.inverse_diagonal_blocks(starts.astype(np.int64), term.size)
