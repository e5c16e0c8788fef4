"""Benchmarks for interlace_nb: simulators, a problem registry, a runner, micro-benchmarks.

Run ``python -m benchmarks.run --help`` from the repository root. Nothing here
is imported by the library or by the test suite (``testpaths = ["tests"]``).
"""
