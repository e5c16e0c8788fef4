"""Per-row pieces of the exact Laplace-deviance gradient of a GLMM.

Row i of Z Lambda has nonzeros only in the columns of its levels (m of them,
the sum of the terms' sizes). The derivative of log|A| through the working
weights needs, per row, the quadratic form of A^-1 in that row:
h_i = (Z Lambda)_i A^-1 (Z Lambda)_i'. Every pair of those columns is an
entry of A's pattern (the row's levels co-occur), so A^-1 on the pattern
(selected inversion) holds all it needs.
"""

import numpy as np

from .config import kernel
from .selinv import csc_position


@kernel
def row_pattern_positions(indptr, indices, row_columns):
    """Index in a CSC pattern's data of entry (row_columns[i, j], row_columns[i, k]).

    ``indices`` must be sorted within each column; -1 where the entry is not stored.
    Returns an n x m x m array.
    """
    n = row_columns.shape[0]
    m = row_columns.shape[1]
    out = np.empty((n, m, m), dtype=np.int64)
    for i in range(n):
        for k in range(m):
            for j in range(m):
                out[i, j, k] = csc_position(indptr, indices, row_columns[i, j], row_columns[i, k])
    return out


@kernel
def row_quadratic_forms(values, positions, row_values, out):
    """out[i] = sum_jk row_values[i, j] * values[positions[i, j, k]] * row_values[i, k]."""
    n = row_values.shape[0]
    m = row_values.shape[1]
    for i in range(n):
        total = 0.0
        for j in range(m):
            inner = 0.0
            for k in range(m):
                inner += values[positions[i, j, k]] * row_values[i, k]
            total += row_values[i, j] * inner
        out[i] = total
