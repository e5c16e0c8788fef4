"""Tile-by-tile kernels for wide dense Schur blocks (thousands of columns).

The downdate S -= L21 L21' adds, for each first-term level, the outer
product of its few rows below q1. Level by level those products land all
over S; once S outgrows the caches (16,000 wide: 2 GB) nearly every write
misses. Here the dense block is cut into square tiles of ``block_size`` rows
and columns, and L21's rows are regrouped by block ("block layout"): for each
block, the levels with rows in it, ascending, and each level's rows there.
A tile (rb, cb) merges the level lists of blocks rb and cb and applies every
common level's products; the tile stays in cache while they land.

Each band of column blocks belongs to one task, so no two tasks write the
same entry and no atomics are needed. Every entry takes its levels in
ascending order, as the level-by-level kernel does: the downdate is bit for
bit the serial one.

Block layout, built once per pattern by ``block_layout``:

- ``seg_ptr[k] : seg_ptr[k+1]``: the segments (one per level) of block k;
- ``seg_level[s]``: the level of segment s; ``seg_entry[s] : seg_entry[s+1]``
  its entries;
- ``entry_row[e]``: the entry's row within its block;
- ``entry_position[e, t]``: its position in the pattern, in the level's
  column t (t < p1).

Values move between the pattern layout and the block layout by indexing with
``entry_position`` (p1 values per entry).
"""

import numpy as np
from numba import njit, prange

from .blocked import _invert_lower, lower_inverse_gram
from .config import NJIT_OPTIONS, kernel


@kernel
def block_layout(indptr, indices, q1, p1, block_size, n_blocks):
    """L21's rows regrouped by block of the dense part (see the module docstring).

    Returns seg_ptr, seg_level, seg_entry, entry_row, entry_position and the
    downdate's multiply-adds per column block (for balancing the bands).
    """
    n_levels = q1 // p1
    seg_count = np.zeros(n_blocks + 1, dtype=np.int64)
    entry_count = np.zeros(n_blocks + 1, dtype=np.int64)
    for j in range(n_levels):
        c0 = j * p1
        last_block = -1
        for pos in range(indptr[c0] + p1, indptr[c0 + 1]):
            k = (indices[pos] - q1) // block_size
            entry_count[k + 1] += 1
            if k != last_block:
                seg_count[k + 1] += 1
                last_block = k
    seg_ptr = np.cumsum(seg_count)
    entry_start = np.cumsum(entry_count)
    n_segs = seg_ptr[n_blocks]
    n_entries = entry_start[n_blocks]
    seg_level = np.empty(n_segs, dtype=np.int64)
    seg_entry = np.empty(n_segs + 1, dtype=np.int64)
    entry_row = np.empty(n_entries, dtype=np.int32)
    entry_position = np.empty((n_entries, p1), dtype=np.int64)
    seg_cursor = seg_ptr[:n_blocks].copy()
    entry_cursor = entry_start[:n_blocks].copy()
    work = np.zeros(n_blocks)
    for j in range(n_levels):
        c0 = j * p1
        last_block = -1
        rows_so_far = 0
        for pos in range(indptr[c0] + p1, indptr[c0 + 1]):
            local = indices[pos] - q1
            k = local // block_size
            if k != last_block:
                seg_level[seg_cursor[k]] = j
                seg_entry[seg_cursor[k]] = entry_cursor[k]
                seg_cursor[k] += 1
                last_block = k
            entry_row[entry_cursor[k]] = local - k * block_size
            for t in range(p1):  # a level's columns share its rows
                entry_position[entry_cursor[k], t] = pos + indptr[c0 + t] - indptr[c0]
            entry_cursor[k] += 1
            rows_so_far += 1
            work[k] += rows_so_far
    seg_entry[n_segs] = n_entries
    return seg_ptr, seg_level, seg_entry, entry_row, entry_position, work


@kernel
def _most_segments(seg_ptr):
    """The most segments any block has."""
    most = 0
    for k in range(seg_ptr.shape[0] - 1):
        most = max(most, seg_ptr[k + 1] - seg_ptr[k])
    return most


@kernel
def _common_levels(seg_ptr, seg_level, rb, cb, pairs):
    """The levels with rows in both blocks rb and cb: their segments (in rb, in cb)
    into ``pairs``, ascending by level (a merge of the two sorted lists); returns
    how many."""
    i = seg_ptr[rb]
    i_end = seg_ptr[rb + 1]
    k = seg_ptr[cb]
    k_end = seg_ptr[cb + 1]
    n = 0
    while i < i_end and k < k_end:
        if seg_level[i] < seg_level[k]:
            i += 1
        elif seg_level[k] < seg_level[i]:
            k += 1
        else:
            pairs[n, 0] = i
            pairs[n, 1] = k
            n += 1
            i += 1
            k += 1
    return n


@kernel
def _downdate_tile(seg_ptr, seg_level, seg_entry, entry_row, values, block_size, rb, cb,
                   schur, pairs):
    """S[block rb, block cb] -= the products of every level with rows in both blocks."""
    p1 = values.shape[1]
    row0 = rb * block_size
    col0 = cb * block_size
    for m in range(_common_levels(seg_ptr, seg_level, rb, cb, pairs)):
        i = pairs[m, 0]
        k = pairs[m, 1]
        b_lo = seg_entry[i]
        for a in range(seg_entry[k], seg_entry[k + 1]):
            column = schur[:, col0 + entry_row[a]]
            stop = a + 1 if rb == cb else seg_entry[i + 1]
            if p1 == 1:
                value = values[a, 0]
                for b in range(b_lo, stop):
                    column[row0 + entry_row[b]] -= value * values[b, 0]
                continue
            for b in range(b_lo, stop):
                total = 0.0
                for t in range(p1):
                    total += values[a, t] * values[b, t]
                column[row0 + entry_row[b]] -= total


@njit(parallel=True, **NJIT_OPTIONS)
def downdate_schur_tiled(seg_ptr, seg_level, seg_entry, entry_row, values, block_size,
                         band_blocks, schur):
    """S -= L21 L21' on the upper triangle of the Fortran-ordered ``schur``, tile by
    tile, in parallel over the bands of column blocks ``band_blocks``.

    ``values`` is L21 in the block layout (entries x p1).
    """
    for band in prange(band_blocks.shape[0] - 1):
        pairs = np.empty((_most_segments(seg_ptr), 2), dtype=np.int64)
        for cb in range(band_blocks[band], band_blocks[band + 1]):
            for rb in range(cb + 1):
                _downdate_tile(seg_ptr, seg_level, seg_entry, entry_row, values, block_size,
                               rb, cb, schur, pairs)


@kernel
def _inverse_tile(seg_ptr, seg_level, seg_entry, entry_row, w, block_size, rb, cb,
                  schur_inverse, y, pairs):
    """y[b] += S^-1[row b, rows of block rb] w for every level's rows b in block cb.

    By symmetry S^-1[b, a] is column a's entry b, so each row a of block rb adds
    its column's entries times w[a]: independent updates of y, where a sum over
    a would wait on each addition in turn.
    """
    p1 = w.shape[1]
    row0 = rb * block_size
    col0 = cb * block_size
    for m in range(_common_levels(seg_ptr, seg_level, rb, cb, pairs)):
        i = pairs[m, 0]
        k = pairs[m, 1]
        b_lo = seg_entry[k]
        b_hi = seg_entry[k + 1]
        for a in range(seg_entry[i], seg_entry[i + 1]):
            column = schur_inverse[:, row0 + entry_row[a]]
            for t in range(p1):
                wa = w[a, t]
                for b in range(b_lo, b_hi):
                    y[b, t] += column[col0 + entry_row[b]] * wa


@njit(parallel=True, **NJIT_OPTIONS)
def schur_inverse_times_rows(seg_ptr, seg_level, seg_entry, entry_row, w, block_size,
                             band_blocks, schur_inverse, y):
    """y = S^-1[R_j, R_j] W_j for every first-term level j, in the block layout.

    ``schur_inverse`` holds both triangles; ``y`` starts at zero. Tile by tile,
    in parallel over bands of column blocks: each task writes only the rows of
    its own column blocks.
    """
    n_blocks = seg_ptr.shape[0] - 1
    for band in prange(band_blocks.shape[0] - 1):
        pairs = np.empty((_most_segments(seg_ptr), 2), dtype=np.int64)
        for cb in range(band_blocks[band], band_blocks[band + 1]):
            for rb in range(n_blocks):
                _inverse_tile(seg_ptr, seg_level, seg_entry, entry_row, w, block_size, rb, cb,
                              schur_inverse, y, pairs)


@njit(parallel=True, **NJIT_OPTIONS)
def rows_times_inverse_l11(indptr, l11, l21, p1, level_bounds, w):
    """W_j = L21_j L11_j^-1 for every first-term level, in the pattern layout (rows
    below each level's own block; other entries of ``w`` are left alone)."""
    for band in prange(level_bounds.shape[0] - 1):
        inv_l = np.empty((p1, p1))
        for j in range(level_bounds[band], level_bounds[band + 1]):
            c0 = j * p1
            n_rows = indptr[c0 + 1] - indptr[c0] - p1
            _invert_lower(l11[j], inv_l)
            for t in range(p1):
                base_t = indptr[c0 + t] + p1
                for a in range(n_rows):
                    acc = 0.0
                    for s in range(t, p1):
                        acc += l21[indptr[c0 + s] + p1 + a] * inv_l[s, t]
                    w[base_t + a] = acc


@njit(parallel=True, **NJIT_OPTIONS)
def level_own_blocks(indptr, l11, p1, level_bounds, w, out):
    """A level's own block of A^-1, L11_j^-T L11_j^-1 + W_j' Y_j, into ``out``, whose
    rows below the block already hold -Y_j (pattern layout, as ``w``)."""
    for band in prange(level_bounds.shape[0] - 1):
        inv_l = np.empty((p1, p1))
        for j in range(level_bounds[band], level_bounds[band + 1]):
            c0 = j * p1
            n_rows = indptr[c0 + 1] - indptr[c0] - p1
            _invert_lower(l11[j], inv_l)
            for t in range(p1):
                start = indptr[c0 + t]
                for s in range(p1):
                    total = lower_inverse_gram(inv_l, s, t)
                    base_s = indptr[c0 + s] + p1
                    for a in range(n_rows):
                        total -= w[base_s + a] * out[start + p1 + a]
                    out[start + s] = total
