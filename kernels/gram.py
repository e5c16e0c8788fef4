"""Gram blocks of the random-effects design, built in passes over the rows.

A random-effects term k has a level code per row and ``p_k`` covariate
columns (``z_k``, an n x p_k array). Its columns in Z are level-major: level
``l`` owns columns ``offset_k + l * p_k + r`` for ``r < p_k``.
"""

import numpy as np

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
def _level_pointers(levels, n_levels, order):
    """Start of each level's entries in ``levels[order]`` (length n_levels + 1)."""
    ptr = np.zeros(n_levels + 1, dtype=np.int64)
    for i in range(order.shape[0]):
        ptr[levels[order[i]] + 1] += 1
    for level in range(n_levels):
        ptr[level + 1] += ptr[level]
    return ptr


@kernel
def _emit_rows(pass_fill, blk_a, blk_b, pair_start, value_start, level_a, level_b, values,
               term_col_offset, term_size, term_n_levels, col_next, indices, data):
    """Walk Z'WZ's entries row by row (see csc_from_pair_blocks); count or fill."""
    n_blocks = blk_a.shape[0]
    n_terms = term_size.shape[0]
    # per block: its pairs ordered by level_a (as stored) and by level_b (counting sort)
    ptr_a_list = []
    order_b_list = []
    ptr_b_list = []
    for k in range(n_blocks):
        lo = pair_start[k]
        hi = pair_start[k + 1]
        own = np.arange(hi - lo)
        la = level_a[lo:hi]
        lb = level_b[lo:hi]
        ptr_a_list.append(_level_pointers(la, term_n_levels[blk_a[k]], own))
        order_b = _counting_order(lb, term_n_levels[blk_b[k]], own)
        order_b_list.append(order_b)
        ptr_b_list.append(_level_pointers(lb, term_n_levels[blk_b[k]], order_b))
    for t in range(n_terms):
        p_t = term_size[t]
        for level in range(term_n_levels[t]):
            for r in range(p_t):
                row = term_col_offset[t] + level * p_t + r
                for k in range(n_blocks):
                    a = blk_a[k]
                    b = blk_b[k]
                    lo = pair_start[k]
                    p_a = term_size[a]
                    p_b = term_size[b]
                    if a == t:
                        ptr = ptr_a_list[k]
                        for i in range(ptr[level], ptr[level + 1]):
                            base = value_start[k] + i * p_a * p_b + r * p_b
                            first = term_col_offset[b] + level_b[lo + i] * p_b
                            for c in range(p_b):
                                col = first + c
                                if pass_fill:
                                    indices[col_next[col]] = row
                                    data[col_next[col]] = values[base + c]
                                col_next[col] += 1
                    if b == t and a != b:
                        ptr = ptr_b_list[k]
                        order = order_b_list[k]
                        for j in range(ptr[level], ptr[level + 1]):
                            i = order[j]
                            first = term_col_offset[a] + level_a[lo + i] * p_a
                            for c in range(p_a):
                                col = first + c
                                if pass_fill:
                                    indices[col_next[col]] = row
                                    data[col_next[col]] = values[
                                        value_start[k] + i * p_a * p_b + c * p_b + r
                                    ]
                                col_next[col] += 1


@kernel
def csc_from_pair_blocks(blk_a, blk_b, pair_start, value_start, level_a, level_b, values,
                         term_col_offset, term_size, term_n_levels):
    """Full-symmetric Z'WZ in CSC form, rows sorted, from its blocks between terms a <= b.

    Block k joins terms ``blk_a[k] <= blk_b[k]``; its pairs are
    ``pair_start[k]:pair_start[k + 1]`` of ``level_a``/``level_b`` (sorted by
    level_a, then level_b), pair i's p_a x p_b block row-major at
    ``values[value_start[k] + i * p_a * p_b:]``. A block with a < b also
    gives its transpose. Entries are written row by row, so each column's
    rows come out sorted. Returns ``(indptr, indices, data)``.
    """
    q = 0
    for t in range(term_size.shape[0]):
        q += term_size[t] * term_n_levels[t]
    counts = np.zeros(q, dtype=np.int64)
    dummy_i = np.zeros(0, dtype=np.int64)
    dummy_d = np.zeros(0)
    _emit_rows(False, blk_a, blk_b, pair_start, value_start, level_a, level_b, values,
               term_col_offset, term_size, term_n_levels, counts, dummy_i, dummy_d)
    indptr = np.zeros(q + 1, dtype=np.int64)
    for col in range(q):
        indptr[col + 1] = indptr[col] + counts[col]
    col_next = indptr[:q].copy()
    indices = np.empty(indptr[q], dtype=np.int64)
    data = np.empty(indptr[q])
    _emit_rows(True, blk_a, blk_b, pair_start, value_start, level_a, level_b, values,
               term_col_offset, term_size, term_n_levels, col_next, indices, data)
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
