"""The only place that imports the CHOLMOD binding."""

from .cholmod import SparseCholesky

__all__ = ["SparseCholesky"]
