"""BLAS thread limits chosen from the dense block's size and the machine's load."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from interlace_nb.linalg import threads


def blas_threads() -> int:
    return max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")


@pytest.mark.parametrize(("cores", "runnable", "free"), [
    (2, [1, 1, 2, 1, 1], 2), (2, [2, 2, 3, 2, 2], 1), (2, [5] * 5, 1), (8, [4] * 5, 5),
    (8, [1] * 5, 8), (1, [1] * 5, 1),
])
def test_free_cores_follow_the_run_queue(monkeypatch, cores, runnable, free):
    samples = iter(runnable)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(threads, "runnable_threads", lambda: next(samples))
    assert threads.free_cores() == free


def test_unknown_run_queue_leaves_all_cores(monkeypatch):
    monkeypatch.setattr(threads, "runnable_threads", lambda: None)
    assert threads.free_cores() == (threads.os.cpu_count() or 1)


def test_run_queue_is_read():
    assert threads.runnable_threads() is None or threads.runnable_threads() >= 1


def test_small_blocks_run_on_one_thread_and_limits_are_restored():
    before = blas_threads()
    with threads.blas_threads_for(10):
        assert blas_threads() == 1
    assert blas_threads() == before


def test_a_busy_machine_gets_one_thread_and_a_user_limit_is_kept(monkeypatch):
    monkeypatch.setattr(threads, "runnable_threads", lambda: 64)
    with threads.blas_threads_for(5000):
        assert blas_threads() == 1
    monkeypatch.setattr(threads, "runnable_threads", lambda: 1)
    with threadpool_limits(limits=1, user_api="blas"), threads.blas_threads_for(5000):
        assert blas_threads() == 1
