"""BLAS threads: one for small dense work, for large work as many as there are free cores.

On small systems a multi-threaded BLAS spends more on waking its threads
than on the arithmetic. On a busy machine it is worse: OpenBLAS's threads
spin while they wait for each other, and with the other core of a 2-core
machine taken, a 2,000-wide Cholesky ran 1.2 to 2 times slower on two
threads than on one (about ten times with both cores loaded;
docs/benchmarks.md). Large dense blocks therefore get as many BLAS threads
as there are cores that no other runnable thread holds, at least one; a
lower limit set by the user (OPENBLAS_NUM_THREADS, threadpoolctl) is kept.

Idle OpenBLAS threads also spin for about 0.1 s after every call, and on two
cores that halves the speed of the parallel Numba kernels run in between
(docs/design.md, "Threads"). interlace_nb sets OPENBLAS_THREAD_TIMEOUT before
SciPy's OpenBLAS loads; NumPy's own copy (in numpy.libs, loaded before us)
only sees small products during a fit, so it is held to one thread, which
never wakes a spinning worker.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

#: Dense block width from which BLAS threads pay for themselves.
MULTITHREAD_MIN_SIZE = 1000
#: Samples of the run queue (the fewest runnable threads counts): a momentary
#: wake-up elsewhere is not a busy core.
RUN_QUEUE_SAMPLES = 5
RUN_QUEUE_INTERVAL = 0.002


def blas_threads_for(dense_size: int) -> AbstractContextManager:
    """A context limiting BLAS to one thread for small dense blocks, else to the free
    cores (never raising the current limit); NumPy's private OpenBLAS gets one."""
    wanted = 1 if dense_size < MULTITHREAD_MIN_SIZE else free_cores()
    blas = ThreadpoolController().select(user_api="blas")
    numpy_private = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    stack = ExitStack()
    for lib in blas.lib_controllers:
        limit = 1 if Path(lib.filepath).resolve().parent == numpy_private else wanted
        if limit < lib.num_threads:
            stack.enter_context(blas.select(filepath=lib.filepath).limit(limits=limit))
    return stack


def free_cores() -> int:
    """Cores not held by other runnable threads (at least one). The 1-minute load
    average would lag: right after another job ends it still counts it."""
    cores = os.cpu_count() or 1
    runnable = []
    for sample in range(RUN_QUEUE_SAMPLES):
        count = runnable_threads()
        if count is None:
            return cores
        runnable.append(count)
        if sample + 1 < RUN_QUEUE_SAMPLES:
            time.sleep(RUN_QUEUE_INTERVAL)
    others = max(0, min(runnable) - 1)  # this thread is runnable too
    return int(min(cores, max(1, cores - others)))


def runnable_threads() -> int | None:
    """Runnable threads on the machine now (Linux's /proc/loadavg), None if unknown."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None
