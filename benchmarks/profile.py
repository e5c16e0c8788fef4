"""Where a fit spends its time: cProfile of model construction and of evaluations.

    python -m benchmarks.profile crossed_1m [--evals 5] [--top 15]

Numba is warmed up first; kernels show up as single opaque calls.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
import warnings

import numpy as np

import interlace_nb

from .registry import PROBLEMS
from .worker import warm_up


def show(profile: cProfile.Profile, top: int) -> None:
    pstats.Stats(profile).strip_dirs().sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("problem", choices=sorted(PROBLEMS))
    parser.add_argument("--evals", type=int, default=5, help="objective evaluations profiled")
    parser.add_argument("--top", type=int, default=15, help="functions shown per profile")
    args = parser.parse_args(argv)
    problem = PROBLEMS[args.problem]
    print(f"warm-up {warm_up():.1f} s")
    data = problem.load()

    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    model = interlace_nb.LinearMixedModel(problem.formula, data, reml=problem.reml)
    profile.disable()
    print(f"\n== model construction: {time.perf_counter() - t0:.3f} s")
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
    print(f"\n== objective: {1000 * per_eval:.1f} ms per evaluation ({args.evals} at the start)")
    show(profile, args.top)

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit()
    fit_seconds = time.perf_counter() - t0
    print(f"\n== fit: {fit_seconds:.2f} s, {model.n_evals} optimiser evaluations "
          f"({1000 * fit_seconds / model.n_evals:.1f} ms each, derivative checks included)")


if __name__ == "__main__":
    main()
