"""One place for the Numba options every kernel uses."""

from numba import njit

#: cache=True keeps compile time off every run after the first; the numpy
#: error model keeps division semantics the same as the NumPy twins.
NJIT_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}


def kernel(func):
    """Compile ``func`` with the project's Numba options."""
    return njit(**NJIT_OPTIONS)(func)
