"""The theta-free sums of a fit, accumulated over the rows in order, one batch at a time.

Both the in-memory fit (one batch: all rows) and the streamed fit (many
batches) go through :class:`GramAccumulator`. Every sum runs over the rows in
data order into a single accumulator, so the result does not depend on how
the rows are cut into batches: both paths give bit-identical Gram blocks,
starting values and therefore fits.

The response is shifted before anything is summed: Gram blocks are built for
y0 = y - offset - X s0, with s0 the least-squares fit on every k-th complete
row (about ``SHIFT_ROWS`` rows spread over the data, read before the first
batch in both paths), and then moved exactly to the least-squares residual
on all rows. Subtracting the fit
keeps the digits of the penalised residual sum of squares when y has a large
mean.

A response far from 1 in size (beyond 2^+-RESPONSE_EXPONENT_LIMIT on the
sampled rows) is scaled first by a power of two, 2^-k, and so is the offset:
squares and fourth powers of the residuals (pwrss, the average information)
then stay within the double range. Powers of two scale without rounding; the
model maps its estimates back (see ``response_exponent``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .kernels import gram
from .predictor import GramSystem, PairBlocks, assemble_gram, build_layout, engine_terms
from .terms import RandomTerm

if TYPE_CHECKING:
    from .design import Design

#: About this many complete rows, evenly spaced, give the initial shift s0.
SHIFT_ROWS = 10_000

#: Rows per chunk for the row-wise sums (bounds their temporaries; sums are unchanged).
ROW_CHUNK = 1 << 20

#: The response is scaled (by a power of two) when the largest |y - offset| of the
#: sampled rows is below 2^-limit or at least 2^limit. Within, nothing changes: the
#: fourth power of the residual sum of squares, which the average information takes,
#: stays finite and normal for up to 2^40 rows.
RESPONSE_EXPONENT_LIMIT = 128


@dataclass(frozen=True)
class Accumulated:
    """The GramSystem for the shifted response, the shift, and lme4's start statistics.

    ``between_variances`` holds R's var(ave(y, f)) per term, ``response_variance``
    var(y); they give lme4's starting theta for random-intercept models.
    """

    gram: GramSystem
    beta_shift: np.ndarray
    between_variances: np.ndarray
    response_variance: float
    #: rows per level, per term (the engine numbers later factors' levels by these)
    level_counts: tuple[np.ndarray, ...]
    #: the level orders ``gram`` is numbered by (see predictor.engine_terms), or None
    #: when it is in the terms' own order
    level_orders: list[np.ndarray | None] | None = None
    #: the Gram blocks are for y 2^-k and offset 2^-k (``response_exponent``); 0 mostly
    response_exponent: int = 0
    #: the first row's response, on the caller's scale (names a constant response)
    first_response: float = float("nan")


def response_exponent(target: np.ndarray) -> int:
    """k such that the response is fitted as y 2^-k: 0 unless the largest |y - offset|
    of ``target`` (the sampled rows) is outside [2^-limit, 2^limit), RESPONSE_EXPONENT_LIMIT;
    then the exponent that brings it into [0.5, 1)."""
    largest = float(np.max(np.abs(target))) if len(target) else 0.0
    if not (np.isfinite(largest) and largest > 0.0):
        return 0
    _, exponent = np.frexp(largest)  # largest = m 2^exponent with 0.5 <= m < 1
    limit = RESPONSE_EXPONENT_LIMIT
    return 0 if -limit < exponent <= limit else int(exponent)


def sample_step(n: int) -> int:
    """k such that rows 0, k, 2k, ... of n rows are about SHIFT_ROWS rows."""
    return max(1, -(-n // SHIFT_ROWS))


def initial_shift(x: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """s0: weighted least squares of ``target`` (y - offset) on X, over the sampled rows."""
    if x.shape[1] == 0 or len(target) == 0:
        return np.zeros(x.shape[1])
    root_w = np.sqrt(weights)
    coef, *_ = np.linalg.lstsq(x * root_w[:, None], target * root_w, rcond=None)
    return coef


class GramAccumulator:
    """Z'WZ, Z'W[X y0], [X y0]'W[X y0] and the start statistics, summed batch by batch.

    ``x`` always has every fixed-effects column; columns found redundant are
    dropped in :meth:`finish`. Z'WZ's blocks between terms on different
    grouping factors are kept as sorted level-pair keys with one block each;
    a batch that meets new pairs merges them in (zero blocks), then every
    row adds to its pair's block in place. Memory is O(pairs + batch).

    With ``level_orders`` the codes given to :meth:`add` number each term's
    levels by its order (the engine's, see predictor.engine_terms): the Gram
    blocks come out in that order, the start statistics in the terms' own.
    """

    def __init__(
        self,
        terms: list[RandomTerm],
        n_x: int,
        shift0: np.ndarray,
        level_orders: list[np.ndarray | None] | None = None,
        response_exponent: int = 0,
    ):
        self.terms = terms
        #: y and the offset are summed as y 2^-k, offset 2^-k (``shift0`` is for those)
        self.response_exponent = int(response_exponent)
        self.level_orders = level_orders
        self.layout = build_layout(terms)
        self.shift0 = np.asarray(shift0, dtype=float)
        self.n_x = n_x
        pairs = [(a, b) for a in range(len(terms)) for b in range(a, len(terms))]
        self.diagonal = {
            (a, b): np.zeros((terms[a].n_levels, terms[a].size, terms[b].size))
            for a, b in pairs
            if terms[a].factors == terms[b].factors
        }
        self.crossed = {
            (a, b): (np.zeros(0, dtype=np.int64), np.zeros((0, terms[a].size * terms[b].size)))
            for a, b in pairs
            if terms[a].factors != terms[b].factors
        }
        self.ztxy = np.zeros((self.layout.q, n_x + 1))
        self.xyxy = np.zeros((n_x + 1, n_x + 1))
        self.level_stats = [np.zeros((t.n_levels, 2)) for t in terms]
        self.moments = np.zeros((3, 3))
        self.y_ref: float | None = None
        self.first_response = float("nan")
        self.n = 0

    def add(
        self,
        codes: tuple[np.ndarray, ...],
        z: tuple[np.ndarray, ...],
        x: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray,
        offset: np.ndarray,
    ) -> None:
        """Add a batch of rows: level codes and covariates per term, X, y, w, offset."""
        n = len(y)
        if n == 0:
            return
        self._add_pair_blocks(codes, z, weights)
        for start in range(0, n, ROW_CHUNK):
            rows = slice(start, start + ROW_CHUNK)
            self._add_rows(
                tuple(c[rows] for c in codes), tuple(v[rows] for v in z), x[rows], y[rows],
                weights[rows], offset[rows],
            )
        self.n += n

    def _add_pair_blocks(
        self, codes: tuple[np.ndarray, ...], z: tuple[np.ndarray, ...], weights: np.ndarray
    ) -> None:
        """Z'WZ's blocks: every row adds to its level pair's block, in row order."""
        # one memory layout for the kernel (a strided slope column would compile
        # another specialisation in the first fit: 1 s on InstEval with the service slope)
        z = tuple(np.ascontiguousarray(values) for values in z)
        for (a, b), blocks in self.diagonal.items():
            gram.accumulate_pair_blocks(codes[a], z[a], z[b], weights, blocks)
        for (a, b), (keys, blocks) in self.crossed.items():
            n_b = self.terms[b].n_levels
            pair_a, pair_b, row_pair = gram.unique_level_pairs(
                codes[a], codes[b], self.terms[a].n_levels, n_b
            )
            batch_keys = pair_a * n_b
            batch_keys += pair_b
            del pair_a, pair_b
            if len(keys) == 0:  # the first batch (the only one in memory): its pairs
                keys, blocks = batch_keys, np.zeros((len(batch_keys), blocks.shape[1]))
                self.crossed[(a, b)] = (keys, blocks)
                row_global = row_pair
            else:
                where = np.searchsorted(keys, batch_keys)
                found = where < len(keys)
                found[found] = keys[where[found]] == batch_keys[found]
                if not found.all():
                    new = batch_keys[~found]
                    keys, blocks = gram.merge_keyed_blocks(
                        keys, blocks, new, np.zeros((len(new), blocks.shape[1]))
                    )
                    self.crossed[(a, b)] = (keys, blocks)
                    where = np.searchsorted(keys, batch_keys)
                row_global = where[row_pair]
            del batch_keys, row_pair
            shaped = blocks.reshape(len(keys), self.terms[a].size, self.terms[b].size)
            gram.accumulate_pair_blocks(row_global, z[a], z[b], weights, shaped)

    def _add_rows(
        self,
        codes: tuple[np.ndarray, ...],
        z: tuple[np.ndarray, ...],
        x: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray,
        offset: np.ndarray,
    ) -> None:
        """Z'W[X y0], [X y0]'W[X y0], the level sums and moments over some rows, in order."""
        n = len(y)
        if self.y_ref is None:
            self.first_response = float(y[0])
        if self.response_exponent:
            y = np.ldexp(y, -self.response_exponent)
            offset = np.ldexp(offset, -self.response_exponent)
        y0 = y - offset
        for j in range(self.n_x):  # elementwise, so a row's y0 does not depend on its batch
            y0 = y0 - x[:, j] * self.shift0[j]
        xy = np.ascontiguousarray(np.column_stack([x, y0]))
        ones = np.ones(n)
        for k, term in enumerate(self.terms):
            start = self.layout.term_col_offset[k]
            stop = start + term.size * term.n_levels
            gram.accumulate_z_cross(codes[k], z[k], weights, xy, self.ztxy[start:stop])
            gram.accumulate_z_cross(
                codes[k], ones[:, None], ones, np.column_stack([y, ones]), self.level_stats[k]
            )
        gram.accumulate_weighted_crossprod(xy, xy, weights, self.xyxy)
        if self.y_ref is None:
            self.y_ref = float(y[0])
        sums = np.column_stack([ones, y - self.y_ref, np.log(weights)])
        gram.accumulate_weighted_crossprod(sums, sums, ones, self.moments)

    def finish(self, keep: np.ndarray) -> Accumulated:
        """The GramSystem on X's ``keep`` columns, for y minus its least-squares fit on them."""
        p = self.n_x
        keep = np.asarray(keep, dtype=np.int64)
        dropped = np.setdiff1d(np.arange(p), keep)
        s0 = self.shift0
        xtx, xty0, yty0 = self.xyxy[:p, :p], self.xyxy[:p, p], self.xyxy[p, p]
        # y - offset - X_K s = y0 - X d with s = s0[K] + delta
        rhs = xty0[keep] + xtx[np.ix_(keep, dropped)] @ s0[dropped]
        delta = np.linalg.solve(xtx[np.ix_(keep, keep)], rhs) if len(keep) else np.zeros(0)
        d = np.zeros(p)
        d[keep] = delta
        d[dropped] = -s0[dropped]
        k = len(keep)
        xyxy = np.zeros((k + 1, k + 1))
        xyxy[:k, :k] = xtx[np.ix_(keep, keep)]
        xyxy[:k, k] = xyxy[k, :k] = xty0[keep] - xtx[keep] @ d
        xyxy[k, k] = yty0 - 2.0 * d @ xty0 + d @ xtx @ d
        ztxy = np.column_stack([self.ztxy[:, keep], self.ztxy[:, p] - self.ztxy[:, :p] @ d])
        pairs = []
        for a, b in sorted([*self.diagonal, *self.crossed]):
            size_a, size_b = self.terms[a].size, self.terms[b].size
            if (a, b) in self.diagonal:
                levels = np.arange(self.terms[a].n_levels, dtype=np.int64)
                pairs.append(PairBlocks(a, b, levels, levels, self.diagonal[(a, b)]))
            else:
                keys, blocks = self.crossed[(a, b)]
                n_b = self.terms[b].n_levels
                pairs.append(PairBlocks(a, b, keys // n_b, keys % n_b,
                                        blocks.reshape(len(keys), size_a, size_b)))
        self.diagonal, self.crossed = {}, {}  # pairs holds the blocks; free them as it goes
        n = self.n
        sum_log_w = float(self.moments[0, 2])
        gram_system = assemble_gram(self.terms, self.layout, pairs, ztxy, xyxy, n, sum_log_w)
        if self.level_orders is not None:  # the start statistics in the terms' own order
            self.level_stats = [
                stats if order is None else stats[order]
                for stats, order in zip(self.level_stats, self.level_orders, strict=True)
            ]
        return Accumulated(
            gram=gram_system,
            beta_shift=s0[keep] + delta,
            between_variances=self._between_variances(),
            response_variance=self._response_variance(),
            level_counts=tuple(stats[:, 1].copy() for stats in self.level_stats),
            level_orders=self.level_orders,
            response_exponent=self.response_exponent,
            first_response=self.first_response,
        )

    def _response_variance(self) -> float:
        """var(y), n - 1 denominator, from sums of y - y[0] and their squares."""
        n, s1, s2 = self.n, self.moments[0, 1], self.moments[1, 1]
        return float((s2 - s1 * s1 / n) / (n - 1)) if n > 1 else float("nan")

    def _between_variances(self) -> np.ndarray:
        """Per term, R's var(ave(y, f)): the variance of each row's level mean of y."""
        n = self.n
        if n < 2:
            return np.full(len(self.terms), np.nan)
        mean = (self.y_ref or 0.0) + self.moments[0, 1] / n
        out = []
        for stats in self.level_stats:
            sums, counts = stats[:, 0], stats[:, 1]
            out.append(float((counts * (sums / counts - mean) ** 2).sum() / (n - 1)))
        return np.array(out)


def accumulate_in_memory(design: Design, factorization: str = "auto") -> Accumulated:
    """The accumulator a streamed fit feeds batch by batch, fed all rows of a Design at once.

    The levels are numbered as the engine stores them (predictor.engine_terms)
    before anything is summed, so Z'WZ is built in that order and never
    permuted afterwards.
    """
    x = design.x_all
    rows = slice(None, None, sample_step(len(design.y)))
    target = (design.y - design.offset)[rows]
    exponent = response_exponent(target)
    if exponent:
        target = np.ldexp(target, -exponent)
    shift0 = initial_shift(x[rows], target, design.weights[rows])
    terms = list(design.terms)
    inside, orders = engine_terms(terms, build_layout(terms), factorization)
    accumulator = GramAccumulator(terms, x.shape[1], shift0, orders, exponent)
    accumulator.add(
        tuple(t.codes for t in inside), tuple(t.z for t in inside), x, design.y,
        design.weights, design.offset,
    )
    del inside
    return accumulator.finish(design.kept_columns)
