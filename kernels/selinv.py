"""Selected inversion: entries of (L L')^{-1} on the pattern of L (Takahashi).

Used for conditional variances of the random effects without ever forming
a dense q x q inverse. Columns are processed from last to first; each needs
only entries of later columns, which the filled pattern of L guarantees to
hold.
"""

import numpy as np

from .config import kernel


@kernel
def takahashi_inverse(indptr, indices, lower_data):
    """Return Z = (L L')^{-1} restricted to L's pattern (same layout as L's data).

    ``L`` is lower triangular CSC with sorted row indices, diagonal first.
    """
    n = indptr.shape[0] - 1
    z = np.zeros(lower_data.shape[0])
    for j in range(n - 1, -1, -1):
        start = indptr[j]
        end = indptr[j + 1]
        ljj = lower_data[start]
        for b in range(start + 1, end):
            k = indices[b]
            lkj = lower_data[b]
            walk = indptr[k]
            walk_end = indptr[k + 1]
            for a in range(b, end):
                i = indices[a]
                while walk < walk_end and indices[walk] < i:
                    walk += 1
                zik = z[walk]
                z[a] += lkj * zik
                if a != b:
                    z[b] += lower_data[a] * zik
        diag_sum = 0.0
        for b in range(start + 1, end):
            z[b] = -z[b] / ljj
            diag_sum += lower_data[b] * z[b]
        z[start] = 1.0 / (ljj * ljj) - diag_sum / ljj
    return z


@kernel
def csc_position(indptr, indices, row, col):
    """Where entry (row, col) sits in a CSC pattern's data (rows sorted per column); -1
    when it is not stored."""
    lo = indptr[col]
    hi = indptr[col + 1]
    while lo < hi:
        mid = (lo + hi) // 2
        if indices[mid] < row:
            lo = mid + 1
        else:
            hi = mid
    if lo < indptr[col + 1] and indices[lo] == row:
        return lo
    return -1


@kernel
def lookup_symmetric(indptr, indices, values, row, col):
    """values at (row, col) of a lower-triangular CSC pattern, by symmetry."""
    if row < col:
        row, col = col, row
    position = csc_position(indptr, indices, row, col)
    return values[position] if position >= 0 else np.nan


@kernel
def diagonal_blocks(indptr, indices, values, inverse_perm, block_start, block_size, out):
    """Gather the p x p diagonal block of each level from the selected inverse.

    ``block_start[l]`` is the first (unpermuted) column of block l;
    ``inverse_perm[c]`` is column c's position in the factor.
    """
    for blk in range(block_start.shape[0]):
        p = block_size[blk]
        for r in range(p):
            for c in range(p):
                out[blk, r, c] = lookup_symmetric(
                    indptr, indices, values,
                    inverse_perm[block_start[blk] + r], inverse_perm[block_start[blk] + c],
                )


@kernel
def gather_symmetric(indptr, indices, values, inverse_perm, rows, cols, out):
    """out[k] = inverse at (rows[k], cols[k]) (unpermuted), read from the selected inverse."""
    for k in range(rows.shape[0]):
        out[k] = lookup_symmetric(
            indptr, indices, values, inverse_perm[rows[k]], inverse_perm[cols[k]]
        )
