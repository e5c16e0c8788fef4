"""The predictor: Z's layout, Lambda(theta), the Gram blocks and their factor.

The Gram blocks Z'WZ, Z'WX, X'WX, Z'Wy, X'Wy and y'Wy are built once, in
passes over the rows (Numba). Each evaluation afterwards touches only the
q x q system: it rescales Z'WZ by Lambda(theta), refactors it numerically
(symbolic analysis done once) and solves for p + 1 right-hand sides.

For the blocked factorisation the engine numbers the levels of every term
after the first by decreasing row count (``frequency_orders``), so the
busiest rows and columns of the dense Schur block sit together in memory.
This order is internal: the predictor's outputs are in the terms' own order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from .kernels import gram, lambda_ops
from .linalg import MAX_DENSE_SIZE, BlockedCholesky, SparseCholesky, dense_size_limit
from .linalg.blocked import balanced_column_bounds
from .terms import RandomTerm

#: Stored entries of Z'Z from which Lambda's scaling runs on all cores (B2's 2.1
#: million: 4 against 8 ms per evaluation).
PARALLEL_SCALE_ENTRIES = 500_000


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


def level_pairs(
    terms: list[RandomTerm],
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """For each term pair a <= b: the distinct (level_a, level_b) pairs and each row's pair."""
    for a, term_a in enumerate(terms):
        for b in range(a, len(terms)):
            term_b = terms[b]
            if term_b.factors == term_a.factors:
                # one grouping factor: a row meets only its own level
                levels = np.arange(term_a.n_levels, dtype=np.int64)
                yield a, b, levels, levels, term_a.codes
            else:
                yield a, b, *gram.unique_level_pairs(
                    term_a.codes, term_b.codes, term_a.n_levels, term_b.n_levels
                )


class GramBuilder:
    """Builds the Gram blocks for any weights and response on a fixed sparsity pattern.

    The level pairs of crossed terms and the CSC layout of Z'WZ are found
    once; PIRLS then rebuilds the values for new working weights and working
    response at the cost of one pass over the rows, with no sorting.
    """

    def __init__(self, terms: list[RandomTerm], layout: Layout, x: np.ndarray):
        self.terms = terms
        self.layout = layout
        self.x = x
        self._pairs = []  # (a, b, row_pair, block shape)
        rows, cols = [], []
        for a, b, pair_a, pair_b, row_pair in level_pairs(terms):
            term_a, term_b = terms[a], terms[b]
            shape = (len(pair_a), term_a.size, term_b.size)
            ra = layout.term_col_offset[a] + pair_a[:, None] * term_a.size
            ra = ra + np.arange(term_a.size)
            cb = layout.term_col_offset[b] + pair_b[:, None] * term_b.size
            cb = cb + np.arange(term_b.size)
            r = np.broadcast_to(ra[:, :, None], shape).ravel()
            c = np.broadcast_to(cb[:, None, :], shape).ravel()
            rows.append(r)
            cols.append(c)
            if a != b:
                rows.append(c)
                cols.append(r)
            self._pairs.append((a, b, row_pair, shape))
        q = layout.q
        row_idx = np.concatenate(rows)
        col_idx = np.concatenate(cols)
        # Build the pattern with 1-based entry numbers as values, so the CSC
        # data array tells where each accumulated entry lands.
        numbered = sp.csc_matrix(
            (np.arange(1, len(row_idx) + 1, dtype=float), (row_idx, col_idx)), shape=(q, q)
        )
        numbered.sort_indices()
        if numbered.nnz != len(row_idx):
            raise AssertionError("Z'Z assembly produced duplicate entries")
        self.indptr = numbered.indptr
        self.indices = numbered.indices
        self._position = np.empty(len(row_idx), dtype=np.int64)
        self._position[numbered.data.astype(np.int64) - 1] = np.arange(len(row_idx))
        self._refill_plan()

    def _refill_plan(self) -> None:
        """Per row, the CSC position of each of its Z'WZ entries (see gram.refill_gram).

        One int32 (int64 past 2^31 entries) per row and entry: the refill then
        reads no position through the level pair.
        """
        small = np.int32 if len(self._position) < np.iinfo(np.int32).max else np.int64
        positions, z_columns = [], []
        start = 0
        for a, b, row_pair, (n_pairs, p_a, p_b) in self._pairs:
            copies = 1 if a == b else 2
            for copy in range(copies):
                first = start + copy * n_pairs * p_a * p_b + row_pair * (p_a * p_b)
                for r in range(p_a):
                    for c in range(p_b):
                        positions.append(self._position[first + r * p_b + c].astype(small))
                        z_columns.append((a, r, b, c))
            start += copies * n_pairs * p_a * p_b
        self._entry_position = np.array(positions, dtype=small).reshape(len(positions), -1)
        self._entry_z = np.array(z_columns, dtype=np.int64)
        self._codes = tuple(np.ascontiguousarray(t.codes, dtype=np.int64) for t in self.terms)
        self._z = tuple(np.ascontiguousarray(t.z, dtype=float) for t in self.terms)
        self._unit_z = all(bool(np.all(z == 1.0)) for z in self._z)

    def build(
        self, y: np.ndarray, weights: np.ndarray, x: np.ndarray | None = None,
        *, prior_weights: bool = True,
    ) -> GramSystem:
        """All Gram blocks of [Z X y] under ``weights``; Z'WZ full-symmetric, block-complete.

        One pass over the rows (gram.refill_gram) on the pattern found once.
        ``x`` replaces the builder's X (PIRLS with beta held fixed passes no columns).
        PIRLS's working weights are not prior weights: no sum(log w) for them.
        """
        q = self.layout.q
        x = self.x if x is None else x
        p = x.shape[1]
        data = np.empty(len(self._position))
        ztx, zty = np.empty((q, p)), np.empty(q)
        xtx, xty = np.empty((p, p)), np.empty(p)
        yty = gram.refill_gram(
            self._entry_position, self._entry_z, self._unit_z, self._codes, self._z,
            self.layout.term_col_offset, weights, x, y, data, ztx, zty, xtx, xty,
        )
        sum_log_weights = float(np.log(weights).sum()) if prior_weights else float("nan")
        return GramSystem(
            ztz=sp.csc_matrix((data, self.indices, self.indptr), shape=(q, q)),
            ztx=ztx, zty=zty, xtx=xtx, xty=xty, yty=float(yty), n=len(y),
            sum_log_weights=sum_log_weights,
        )


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
    for a, b, pair_a, pair_b, row_pair in level_pairs(terms):
        term_a, term_b = terms[a], terms[b]
        blocks = np.zeros((len(pair_a), term_a.size, term_b.size))
        gram.accumulate_pair_blocks(row_pair, term_a.z, term_b.z, weights, blocks)
        pairs.append(PairBlocks(a, b, pair_a, pair_b, blocks))
    ztxy, xyxy = cross_products(terms, layout, x, y, weights)
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
    nnz = sum(
        len(pair.level_a) * terms[pair.a].size * terms[pair.b].size * (1 if pair.a == pair.b else 2)
        for pair in pairs
    )
    q = layout.q
    small = np.int32 if max(q, nnz) < np.iinfo(np.int32).max else np.int64
    indptr, indices, data = gram.csc_from_pair_blocks(
        np.array([pair.a for pair in pairs], dtype=np.int64),
        np.array([pair.b for pair in pairs], dtype=np.int64),
        [pair.level_a for pair in pairs],
        [pair.level_b for pair in pairs],
        [pair.blocks for pair in pairs],
        layout.term_col_offset,
        layout.term_size,
        np.array([t.n_levels for t in terms], dtype=np.int64),
        index_dtype=small,
    )
    ztz = sp.csc_matrix((data, indices, indptr.astype(small)), shape=(q, q))
    return _gram_system(ztz, ztxy, xyxy, n, sum_log_weights)


def cross_products(
    terms: list[RandomTerm], layout: Layout, x: np.ndarray, y: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Z'W[X y] (q x p+1) and [X y]'W[X y], one pass over the rows per term."""
    xy = y.reshape(-1, 1) if x.shape[1] == 0 else np.column_stack([x, y])
    ztxy = np.zeros((layout.q, xy.shape[1]))
    for k, term in enumerate(terms):
        start = layout.term_col_offset[k]
        stop = start + term.size * term.n_levels
        gram.accumulate_z_cross(term.codes, term.z, weights, xy, ztxy[start:stop])
    return ztxy, gram.weighted_crossprod(xy, xy, weights)


def _gram_system(
    ztz: sp.csc_matrix, ztxy: np.ndarray, xyxy: np.ndarray, n: int, sum_log_weights: float
) -> GramSystem:
    """The GramSystem from Z'WZ and the cross-products of [X y]."""
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


def frequency_orders(
    terms: list[RandomTerm], level_counts: Sequence[np.ndarray] | None = None
) -> list[np.ndarray | None]:
    """Per term, each level's engine position, or None to keep the term's own order.

    Terms on the first term's grouping factor keep it; the others are numbered
    by decreasing row count, ties in level order (terms sharing a factor get
    the same order, which build_gram relies on). ``level_counts`` gives the
    rows per level when the terms hold no rows (streamed fits).
    """
    orders: list[np.ndarray | None] = []
    for k, term in enumerate(terms):
        if term.factors == terms[0].factors:
            orders.append(None)
            continue
        if level_counts is None:
            counts = np.bincount(term.codes, minlength=term.n_levels)
        else:
            counts = np.asarray(level_counts[k])
        by_count = np.argsort(-counts, kind="stable")
        order = np.empty(term.n_levels, dtype=np.int64)
        order[by_count] = np.arange(term.n_levels)
        orders.append(order)
    return orders


def reorder_levels(term: RandomTerm, order: np.ndarray | None) -> RandomTerm:
    """The term with level ``l`` renumbered ``order[l]`` (codes and levels alike)."""
    if order is None:
        return term
    by_position = np.argsort(order)
    return replace(
        term,
        codes=order.astype(term.codes.dtype)[term.codes],
        levels=tuple(term.levels[k] for k in by_position),
    )


def choose_factorization(
    terms: list[RandomTerm], layout: Layout, method: str, ztz_indptr: np.ndarray | None = None
) -> str:
    """'blocked' or 'cholmod' for ``method`` 'auto' (others are returned as they are).

    Blocked when the dense Schur block after the first term has at most
    MAX_DENSE_SIZE columns; up to dense_size_limit() when it will be dense
    anyway: the first term's levels then meet enough later columns that
    their pairs (from Z'Z's pattern ``ztz_indptr``) could fill its triangle.
    Without the pattern, a block within the limit counts as dense.
    """
    if method not in ("auto", "blocked", "cholmod"):
        raise ValueError(f"factorization must be 'auto', 'blocked' or 'cholmod', got {method!r}")
    if method != "auto":
        return method
    first = terms[0]
    q1 = first.size * first.n_levels
    m = layout.q - q1
    if m <= MAX_DENSE_SIZE:
        return "blocked"
    if m > dense_size_limit():
        return "cholmod"
    if ztz_indptr is None:
        return "blocked"
    columns = np.arange(0, q1, first.size)
    met = (ztz_indptr[columns + 1] - ztz_indptr[columns] - first.size).astype(float)
    return "blocked" if float((met * (met + 1.0)).sum()) / 2.0 >= m * (m + 1) / 2.0 else "cholmod"


class Predictor:
    """Lambda(theta), the scaled system and its factor.

    ``update(theta)`` leaves the factor of Lambda'Z'WZ Lambda + I and the
    scaled right-hand sides Lambda'[Z'WX Z'Wy] ready for the deviance. The
    factorisation is CHOLMOD's (any structure) or the blocked one (first
    term block diagonal, dense Schur block for the rest).

    ``gram_system`` is built on the terms' levels renumbered by
    ``level_orders`` (None: as they are); vectors of length q such as u live
    in that engine order, ``user_order`` maps them back.
    """

    def __init__(
        self,
        terms: list[RandomTerm],
        layout: Layout,
        gram_system: GramSystem,
        factorization: str = "auto",
        level_orders: list[np.ndarray | None] | None = None,
    ):
        self.terms = terms
        self.layout = layout
        self.gram = gram_system
        self.level_orders = level_orders or [None] * len(terms)
        self._user_columns = _user_columns(terms, layout, self.level_orders)
        ztz = gram_system.ztz
        self._indptr = ztz.indptr.astype(np.int64)
        self._indices = ztz.indices.astype(np.int64)
        self._ztz_data = ztz.data
        self._scaled_data = np.zeros_like(ztz.data)
        self._scale_bands = None
        if len(ztz.data) >= PARALLEL_SCALE_ENTRIES:
            self._scale_bands = balanced_column_bounds(
                layout.q, 16, np.diff(self._indptr).astype(float) + 1.0
            )
        self._zt_xy = np.column_stack([gram_system.ztx, gram_system.zty])
        self.scaled_rhs = np.empty_like(self._zt_xy)
        self.t_flat = np.zeros(layout.t_flat_size)
        self.factorization = choose_factorization(terms, layout, factorization, ztz.indptr)
        if self.factorization == "blocked":
            first = terms[0]
            self.system = BlockedCholesky(
                self._indptr, self._indices, layout.q, first.size * first.n_levels, first.size
            )
        else:
            self.system = SparseCholesky(ztz.indptr, ztz.indices, layout.q)
        # the blocked factorisation never reads A12 nor A22's lower triangle: skip them
        self._dense_from = self.system.q1 if self.factorization == "blocked" else layout.q
        self.theta: np.ndarray | None = None
        self.logdet = float("nan")

    def set_gram(self, gram_system: GramSystem) -> None:
        """New Gram values on the same pattern (PIRLS: new working weights); call update next."""
        ztz = gram_system.ztz
        if ztz.nnz != len(self._ztz_data) or ztz.shape != (self.layout.q, self.layout.q):
            raise ValueError("set_gram needs Z'WZ with the sparsity pattern the predictor has")
        self.gram = gram_system
        self._ztz_data = ztz.data
        self._zt_xy = np.column_stack([gram_system.ztx, gram_system.zty])
        if self.scaled_rhs.shape != self._zt_xy.shape:
            self.scaled_rhs = np.empty_like(self._zt_xy)
        self.theta = None

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
        arguments = (
            self._indptr, self._indices, self._ztz_data, lay.col_block_start, lay.col_pos,
            lay.col_block_size, lay.col_t_offset, self.t_flat, self._scaled_data,
            self._dense_from,
        )
        if self._scale_bands is None:
            lambda_ops.scale_sparse_gram(*arguments)
        else:
            lambda_ops.scale_sparse_gram_parallel(*arguments, self._scale_bands)
        lambda_ops.lambda_t_times(
            self._zt_xy, lay.col_block_start, lay.col_pos, lay.col_block_size, lay.col_t_offset,
            self.t_flat, self.scaled_rhs,
        )
        self.logdet = self.system.factor(self._scaled_data)
        self.theta = np.array(theta, dtype=float)

    def scaled_gram_gradient(self, weights: np.ndarray) -> np.ndarray:
        """sum(weights * d(Lambda'Z'WZ Lambda)) per entry of the T blocks (t_flat's layout).

        ``weights`` is laid out like Z'WZ's stored (full symmetric) pattern.
        """
        lay = self.layout
        out = np.empty(lay.t_flat_size)
        arguments = (
            self._indptr, self._indices, self._ztz_data, lay.col_block_start, lay.col_pos,
            lay.col_block_size, lay.col_t_offset, self.t_flat, weights, out,
        )
        if self._scale_bands is None:
            lambda_ops.scale_sparse_gram_gradient(*arguments)
        else:
            lambda_ops.scale_sparse_gram_gradient_parallel(*arguments, self._scale_bands)
        return out

    def lambda_times(self, u: np.ndarray) -> np.ndarray:
        """b = Lambda u for the current theta (q rows, any columns)."""
        return self._apply_lambda(lambda_ops.lambda_times, u)

    def lambda_t_times(self, values: np.ndarray) -> np.ndarray:
        """Lambda' values for the current theta (q rows, any columns)."""
        return self._apply_lambda(lambda_ops.lambda_t_times, values)

    def _apply_lambda(self, kernel, values: np.ndarray) -> np.ndarray:
        lay = self.layout
        dense = np.ascontiguousarray(values.reshape(lay.q, -1), dtype=float)
        out = np.empty_like(dense)
        kernel(dense, lay.col_block_start, lay.col_pos, lay.col_block_size, lay.col_t_offset,
               self.t_flat, out)
        return out.reshape(values.shape)

    def relative_covariances(self) -> list[np.ndarray]:
        """T_k T_k' for each term: covariance of its effects in units of sigma^2."""
        out = []
        for k, term in enumerate(self.terms):
            p = term.size
            start = self.layout.term_t_offset[k]
            t = self.t_flat[start : start + p * p].reshape(p, p)
            out.append(t @ t.T)
        return out

    def user_order(self, values: np.ndarray) -> np.ndarray:
        """Rows of a q-row array (engine order) in the terms' own level order."""
        return values if self._user_columns is None else values[self._user_columns]

    def inverse_diagonal_blocks(self, k: int) -> np.ndarray:
        """Diagonal blocks of (Lambda'Z'WZ Lambda + I)^-1 for term k's levels (own order)."""
        term = self.terms[k]
        order = self.level_orders[k]
        positions = np.arange(term.n_levels) if order is None else order
        starts = self.layout.term_col_offset[k] + positions * term.size
        return self.system.inverse_diagonal_blocks(starts.astype(np.int64), term.size)


def _user_columns(
    terms: list[RandomTerm], layout: Layout, orders: list[np.ndarray | None]
) -> np.ndarray | None:
    """Engine column of each column in the terms' own order (None when they agree)."""
    if all(order is None for order in orders):
        return None
    columns = np.arange(layout.q)
    for k, (term, order) in enumerate(zip(terms, orders, strict=True)):
        if order is not None:
            start = layout.term_col_offset[k]
            local = (order[:, None] * term.size + np.arange(term.size)).ravel()
            columns[start : start + local.size] = start + local
    return columns


def predictor_in_engine_order(
    terms: list[RandomTerm],
    layout: Layout,
    gram_system: GramSystem,
    factorization: str = "auto",
    level_counts: Sequence[np.ndarray] | None = None,
) -> Predictor:
    """The predictor for Gram blocks built in the terms' own level order.

    When the blocked factorisation is likely, later factors' levels are
    renumbered by frequency (``frequency_orders``): Z'WZ's rows and columns
    and Z'W[X y]'s rows are permuted once, here.
    """
    _, orders = engine_terms(terms, layout, factorization, level_counts)
    columns = _user_columns(terms, layout, orders)
    if columns is not None:
        engine_to_user = np.empty_like(columns)
        engine_to_user[columns] = np.arange(len(columns))
        ztz = gram_system.ztz[:, engine_to_user][engine_to_user, :].tocsc()
        ztz.sort_indices()
        gram_system = replace(
            gram_system,
            ztz=ztz,
            ztx=np.ascontiguousarray(gram_system.ztx[engine_to_user]),
            zty=np.ascontiguousarray(gram_system.zty[engine_to_user]),
        )
    return Predictor(terms, layout, gram_system, factorization, orders)


def engine_terms(
    terms: list[RandomTerm],
    layout: Layout,
    factorization: str = "auto",
    level_counts: Sequence[np.ndarray] | None = None,
) -> tuple[list[RandomTerm], list[np.ndarray | None]]:
    """The terms with levels renumbered as the engine stores them, and the orders used."""
    likely = choose_factorization(terms, layout, factorization)
    if likely == "blocked":
        orders = frequency_orders(terms, level_counts)
    else:
        orders = [None] * len(terms)
    return [reorder_levels(t, o) for t, o in zip(terms, orders, strict=True)], orders
