"""Where a fit spends its time: cProfile of model construction and of evaluations.

    python -m benchmarks.profile crossed_1m [--evals 5] [--top 15] [--no-fit]

Numba is warmed up first; kernels show up as single opaque calls. Peak
resident memory is printed after each phase; ``--no-fit`` stops after the
profiled evaluations (for problems whose fit takes too long).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import time
import warnings

import numpy as np

import interlace_nb

from .registry import PROBLEMS
from .worker import warm_up


def peak_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def show(profile: cProfile.Profile, top: int) -> None:
    pstats.Stats(profile).strip_dirs().sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("problem", choices=sorted(PROBLEMS))
    parser.add_argument("--evals", type=int, default=5, help="objective evaluations profiled")
    parser.add_argument("--top", type=int, default=15, help="functions shown per profile")
    parser.add_argument("--no-fit", action="store_true", help="stop before the full fit")
    args = parser.parse_args(argv)
    problem = PROBLEMS[args.problem]
    print(f"warm-up {warm_up():.1f} s")
    data = problem.load()
    print(f"data {data.height:,} rows; peak {peak_mb():.0f} MB after loading")

    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    model = interlace_nb.LinearMixedModel(problem.formula, data, reml=problem.reml)
    profile.disable()
    print(f"\n== model construction: {time.perf_counter() - t0:.3f} s, "
          f"{model.predictor.factorization}, dense block {model.predictor.dense_size}; "
          f"peak {peak_mb():.0f} MB")
    show(profile, args.top)

    theta = np.concatenate([t.theta_start() for t in model.terms])
    model.objective(theta)
    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    for _ in range(args.evals):
        model.objective(theta)
    profile.disable()
    per_eval = (time.perf_counter() - t0) / args.evals
    print(f"\n== objective: {1000 * per_eval:.1f} ms per evaluation ({args.evals} at the start); "
          f"peak {peak_mb():.0f} MB")
    show(profile, args.top)
    if args.no_fit:
        return

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit()
    fit_seconds = time.perf_counter() - t0
    print(f"\n== fit: {fit_seconds:.2f} s, {model.n_evals} optimiser evaluations "
          f"({1000 * fit_seconds / model.n_evals:.1f} ms each, derivative checks included)")


if __name__ == "__main__":
    main()
