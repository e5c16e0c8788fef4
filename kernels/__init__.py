"""Numba kernels: plain functions on NumPy arrays, free of front-end imports.

Every kernel has a slow, obvious twin in ``tests/naive.py`` that the tests
compare it with.
"""
