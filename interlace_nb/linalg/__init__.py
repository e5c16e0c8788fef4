"""Factorisations of the scaled random-effects system; the only place that imports CHOLMOD."""

from .blocked import MAX_DENSE_SIZE, BlockedCholesky
from .cholmod import SparseCholesky

__all__ = ["MAX_DENSE_SIZE", "BlockedCholesky", "SparseCholesky"]
