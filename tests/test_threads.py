"""BLAS thread limits chosen from the dense block's size and the machine's load."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from interlace_nb.linalg import threads


def blas_threads() -> int:
    return max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")


@pytest.mark.parametrize(("cores", "load", "free"), [
    (2, 0.2, 2), (2, 0.7, 1), (2, 1.0, 1), (2, 4.0, 1), (8, 3.0, 5), (8, 0.0, 8), (1, 0.0, 1),
])
def test_free_cores_follow_the_load(monkeypatch, cores, load, free):
    monkeypatch.setattr(threads.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, load, load))
    assert threads.free_cores() == free


def test_small_blocks_run_on_one_thread_and_limits_are_restored():
    before = blas_threads()
    with threads.blas_threads_for(10):
        assert blas_threads() == 1
    assert blas_threads() == before


def test_a_busy_machine_gets_one_thread_and_a_user_limit_is_kept(monkeypatch):
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    with threads.blas_threads_for(5000):
        assert blas_threads() == 1
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    with threadpool_limits(limits=1, user_api="blas"), threads.blas_threads_for(5000):
        assert blas_threads() == 1
