"""Factorisations of the scaled random-effects system; the only place that imports CHOLMOD."""

from .blocked import MAX_DENSE_SIZE, BlockedCholesky, dense_size_limit
from .cholmod import SparseCholesky
from .threads import blas_threads_for

__all__ = [
    "MAX_DENSE_SIZE", "BlockedCholesky", "SparseCholesky", "blas_threads_for", "dense_size_limit",
]
