"""Gram blocks of the random-effects design, built in passes over the rows.

A random-effects term k has a level code per row and ``p_k`` covariate
columns (``z_k``, an n x p_k array). Its columns in Z are level-major: level
``l`` owns columns ``offset_k + l * p_k + r`` for ``r < p_k``.
"""

import numpy as np
from numba.typed import List

from .config import kernel


@kernel
def _counting_order(codes, n_levels, order_in):
    """Stable counting sort of ``order_in`` by ``codes[order_in]``: O(n + levels)."""
    counts = np.zeros(n_levels + 1, dtype=np.int64)
    for i in range(order_in.shape[0]):
        counts[codes[order_in[i]] + 1] += 1
    for level in range(n_levels):
        counts[level + 1] += counts[level]
    order_out = np.empty_like(order_in)
    for i in range(order_in.shape[0]):
        row = order_in[i]
        level = codes[row]
        order_out[counts[level]] = row
        counts[level] += 1
    return order_out


@kernel
def unique_level_pairs(codes_a, codes_b, n_levels_a, n_levels_b):
    """Distinct (level_a, level_b) pairs of the rows and each row's pair index.

    Returns ``(pair_a, pair_b, row_pair)`` with pairs sorted by level_a, then
    level_b. Two stable counting sorts (by b, then by a) order the rows in
    O(n + levels), with no comparison sort.
    """
    n = codes_a.shape[0]
    order = np.arange(n)
    order = _counting_order(codes_b, n_levels_b, order)
    order = _counting_order(codes_a, n_levels_a, order)
    row_pair = np.empty(n, dtype=np.int64)
    n_pairs = 0
    last_a = -1
    last_b = -1
    for j in range(n):
        row = order[j]
        if codes_a[row] != last_a or codes_b[row] != last_b:
            n_pairs += 1
            last_a = codes_a[row]
            last_b = codes_b[row]
        row_pair[row] = n_pairs - 1
    pair_a = np.empty(n_pairs, dtype=np.int64)
    pair_b = np.empty(n_pairs, dtype=np.int64)
    for i in range(n):
        pair_a[row_pair[i]] = codes_a[i]
        pair_b[row_pair[i]] = codes_b[i]
    return pair_a, pair_b, row_pair


@kernel
def accumulate_pair_blocks(row_pair, z_a, z_b, weights, blocks_out):
    """blocks_out[pair] += w_i * outer(z_a[i], z_b[i]) for each row i."""
    n = row_pair.shape[0]
    p_a = z_a.shape[1]
    p_b = z_b.shape[1]
    for i in range(n):
        pair = row_pair[i]
        w = weights[i]
        for r in range(p_a):
            wa = w * z_a[i, r]
            for c in range(p_b):
                blocks_out[pair, r, c] += wa * z_b[i, c]


@kernel
def accumulate_z_cross(codes, z, weights, dense, out):
    """out[level * p + r, j] += w_i * z[i, r] * dense[i, j]: one term's rows of Z'WD."""
    n = codes.shape[0]
    p = z.shape[1]
    m = dense.shape[1]
    for i in range(n):
        base = codes[i] * p
        w = weights[i]
        for r in range(p):
            wz = w * z[i, r]
            for j in range(m):
                out[base + r, j] += wz * dense[i, j]


@kernel
def weighted_crossprod(a, b, weights):
    """A'WB for dense row-major A (n x p) and B (n x m)."""
    n = a.shape[0]
    p = a.shape[1]
    m = b.shape[1]
    out = np.zeros((p, m))
    for i in range(n):
        w = weights[i]
        for r in range(p):
            wa = w * a[i, r]
            for c in range(m):
                out[r, c] += wa * b[i, c]
    return out


@kernel
def merge_keyed_blocks(keys_a, blocks_a, keys_b, blocks_b):
    """Union of two strictly increasing key lists; blocks of a key in both are summed.

    ``blocks_*`` hold one row per key (n x m). Returns ``(keys, blocks)``,
    sorted, in O(len(a) + len(b)).
    """
    n_a = keys_a.shape[0]
    n_b = keys_b.shape[0]
    m = blocks_a.shape[1]
    i = 0
    j = 0
    n = 0
    while i < n_a or j < n_b:
        if j == n_b or (i < n_a and keys_a[i] < keys_b[j]):
            i += 1
        elif i == n_a or keys_b[j] < keys_a[i]:
            j += 1
        else:
            i += 1
            j += 1
        n += 1
    keys = np.empty(n, dtype=np.int64)
    blocks = np.empty((n, m))
    i = 0
    j = 0
    for k in range(n):
        if j == n_b or (i < n_a and keys_a[i] < keys_b[j]):
            keys[k] = keys_a[i]
            for c in range(m):
                blocks[k, c] = blocks_a[i, c]
            i += 1
        elif i == n_a or keys_b[j] < keys_a[i]:
            keys[k] = keys_b[j]
            for c in range(m):
                blocks[k, c] = blocks_b[j, c]
            j += 1
        else:
            keys[k] = keys_a[i]
            for c in range(m):
                blocks[k, c] = blocks_a[i, c] + blocks_b[j, c]
            i += 1
            j += 1
    return keys, blocks


@kernel
def accumulate_weighted_crossprod(a, b, weights, out):
    """out += A'WB for dense row-major A (n x p) and B (n x m), rows summed in order."""
    n = a.shape[0]
    p = a.shape[1]
    m = b.shape[1]
    for i in range(n):
        w = weights[i]
        for r in range(p):
            wa = w * a[i, r]
            for c in range(m):
                out[r, c] += wa * b[i, c]


@kernel
def _level_starts(levels, n_levels):
    """Start of each level's entries once ``levels`` is sorted (length n_levels + 1)."""
    ptr = np.zeros(n_levels + 1, dtype=np.int64)
    for i in range(levels.shape[0]):
        ptr[levels[i] + 1] += 1
    for level in range(n_levels):
        ptr[level + 1] += ptr[level]
    return ptr


@kernel
def csc_column_counts(blk_a, blk_b, level_a, level_b, term_size, term_n_levels,
                      term_col_offset):
    """Entries per column of full-symmetric Z'WZ (see fill_csc_from_pair_blocks)."""
    q = 0
    for t in range(term_size.shape[0]):
        q += term_size[t] * term_n_levels[t]
    counts = np.zeros(q, dtype=np.int64)
    for k in range(blk_a.shape[0]):
        a = blk_a[k]
        b = blk_b[k]
        la = level_a[k]
        lb = level_b[k]
        for i in range(la.shape[0]):
            first = term_col_offset[a] + la[i] * term_size[a]
            for r in range(term_size[a]):
                counts[first + r] += term_size[b]
            if a != b:
                first = term_col_offset[b] + lb[i] * term_size[b]
                for c in range(term_size[b]):
                    counts[first + c] += term_size[a]
    return counts


@kernel
def fill_csc_from_pair_blocks(blk_a, blk_b, level_a, level_b, values, term_col_offset,
                              term_size, term_n_levels, indptr, indices, data):
    """Fill Z'WZ's CSC arrays column by column, each column's rows in increasing order.

    Column (t, level, r) takes, block by block in (a, b) order, the entries
    of blocks (a, t) with a < t whose level_b is ``level`` (found through a
    stable counting sort, so by level_a) and then those of blocks (t, b)
    whose level_a is ``level`` (stored contiguously, by level_b): the rows
    come out sorted and every write is sequential. Block (a, b) pair i with
    value B (p_a x p_b) holds entry ((a, la, r), (b, lb, c)) = B[r, c] and,
    for a != b, its mirror with the same value.
    """
    n_blocks = blk_a.shape[0]
    ptr_a_list = []
    ptr_b_list = []
    order_b_list = []
    for k in range(n_blocks):
        ptr_a_list.append(_level_starts(level_a[k], term_n_levels[blk_a[k]]))
        ptr_b = _level_starts(level_b[k], term_n_levels[blk_b[k]])
        ptr_b_list.append(ptr_b)
        order_b_list.append(_counting_order(
            level_b[k], term_n_levels[blk_b[k]], np.arange(level_b[k].shape[0])
        ))
    for t in range(term_size.shape[0]):
        p_t = term_size[t]
        for level in range(term_n_levels[t]):
            for r in range(p_t):
                pos = indptr[term_col_offset[t] + level * p_t + r]
                for k in range(n_blocks):
                    a = blk_a[k]
                    b = blk_b[k]
                    p_a = term_size[a]
                    p_b = term_size[b]
                    width = p_a * p_b
                    vals = values[k]
                    if b == t and a != b:
                        la = level_a[k]
                        ptr = ptr_b_list[k]
                        order = order_b_list[k]
                        for j in range(ptr[level], ptr[level + 1]):
                            i = order[j]
                            first = term_col_offset[a] + la[i] * p_a
                            base = i * width + r
                            for c in range(p_a):
                                indices[pos] = first + c
                                data[pos] = vals[base + c * p_b]
                                pos += 1
                    if a == t:
                        lb = level_b[k]
                        ptr = ptr_a_list[k]
                        for i in range(ptr[level], ptr[level + 1]):
                            first = term_col_offset[b] + lb[i] * p_b
                            base = i * width
                            for c in range(p_b):
                                indices[pos] = first + c
                                # a == b: entry ((t, l, c), (t, l, r)) is B[c, r] itself
                                data[pos] = vals[base + (c * p_b + r if a == b else r * p_b + c)]
                                pos += 1


def csc_from_pair_blocks(blk_a, blk_b, level_a, level_b, values, term_col_offset, term_size,
                         term_n_levels, index_dtype=np.int64):
    """Full-symmetric Z'WZ in CSC form, rows sorted, from its blocks between terms a <= b.

    Block k joins terms ``blk_a[k] <= blk_b[k]``, blocks sorted by (a, b);
    its pairs are ``level_a[k]``/``level_b[k]`` (sorted by level_a, then
    level_b), pair i's p_a x p_b block row-major at ``values[k][i * p_a * p_b:]``
    (one array per block: nothing is concatenated). A block with a < b
    also gives its transpose. Returns ``(indptr, indices, data)``, the
    indices of ``index_dtype`` (int32 halves them when they fit).
    """
    level_a = List([np.ascontiguousarray(v, dtype=np.int64) for v in level_a])
    level_b = List([np.ascontiguousarray(v, dtype=np.int64) for v in level_b])
    values = List([np.ascontiguousarray(v, dtype=np.float64).ravel() for v in values])
    counts = csc_column_counts(blk_a, blk_b, level_a, level_b, term_size, term_n_levels,
                               term_col_offset)
    indptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=index_dtype)
    data = np.empty(indptr[-1])
    fill_csc_from_pair_blocks(blk_a, blk_b, level_a, level_b, values, term_col_offset,
                              term_size, term_n_levels, indptr, indices, data)
    return indptr, indices, data


@kernel
def refill_gram(entry_position, entry_z, unit_z, codes, z, term_col_offset, weights, x, y,
                ztz_data, ztx, zty, xtx, xty):
    """All Gram blocks of [Z X y] under ``weights`` on a fixed pattern; returns y'Wy.

    Term t has level codes ``codes[t]`` and covariates ``z[t]`` (n x p_t).
    Z'WZ's values go straight into its CSC ``ztz_data``: with
    ``(a, r, b, c) = entry_z[e]``, row i adds ``w_i * z[a][i, r] * z[b][i, c]``
    to ``ztz_data[entry_position[e, i]]`` for every entry e (both triangles
    listed), so no add waits on another random read. With ``unit_z`` (every
    covariate is 1: intercept-only terms) the products with z are skipped.
    Z'WX, Z'Wy, X'WX and X'Wy go to ``ztx``, ``zty``, ``xtx``, ``xty``. Every
    output is overwritten and sums its rows in row order with the arithmetic
    of accumulate_pair_blocks, accumulate_z_cross and weighted_crossprod.
    Z'WZ, each term's Z'W[X y] and [X y]'W[X y] take separate loops over the
    rows: mixing their scattered adds in one loop is several times slower.
    """
    ztz_data[:] = 0.0
    ztx[:] = 0.0
    zty[:] = 0.0
    n = weights.shape[0]
    n_entries = entry_position.shape[0]
    if unit_z:
        for i in range(n):
            w = weights[i]
            for e in range(n_entries):
                ztz_data[entry_position[e, i]] += w
    else:
        for i in range(n):
            w = weights[i]
            for e in range(n_entries):
                z_a = z[entry_z[e, 0]]
                z_b = z[entry_z[e, 2]]
                ztz_data[entry_position[e, i]] += w * z_a[i, entry_z[e, 1]] * z_b[i, entry_z[e, 3]]
    p = x.shape[1]
    for t in range(len(codes)):
        codes_t = codes[t]
        z_t = z[t]
        p_t = z_t.shape[1]
        for i in range(n):
            w = weights[i]
            base = term_col_offset[t] + codes_t[i] * p_t
            for r in range(p_t):
                wz = w if unit_z else w * z_t[i, r]
                for j in range(p):
                    ztx[base + r, j] += wz * x[i, j]
                zty[base + r] += wz * y[i]
    # one pass per entry of [X y]'W[X y]: each sum stays in a register
    for r in range(p):
        for c in range(p):
            total = 0.0
            for i in range(n):
                total += weights[i] * x[i, r] * x[i, c]
            xtx[r, c] = total
        total = 0.0
        for i in range(n):
            total += weights[i] * x[i, r] * y[i]
        xty[r] = total
    yty = 0.0
    for i in range(n):
        yty += weights[i] * y[i] * y[i]
    return yty
