"""BLAS threads: one for small dense work, all for large.

On small systems a multi-threaded BLAS spends more on waking its threads
than on the arithmetic, and on a busy machine a wake-up can cost
milliseconds per call. Fits of small models therefore run with one BLAS
thread; large dense blocks keep them all.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from threadpoolctl import threadpool_limits

#: Dense block width from which BLAS threads pay for themselves.
MULTITHREAD_MIN_SIZE = 1000


def blas_threads_for(dense_size: int) -> AbstractContextManager:
    """A context limiting BLAS to one thread when ``dense_size`` is small."""
    if dense_size >= MULTITHREAD_MIN_SIZE:
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
