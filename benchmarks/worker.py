"""One measured interlace_nb fit, run in a fresh process by benchmarks.run.

Order: import, warm up Numba on a tiny model (loads or compiles the kernels;
timed apart), read the data, note the peak RSS so far (baseline), then time
model construction and ``fit()``, note the peak RSS again. Prints one JSON
line on stdout.

    python -m benchmarks.worker '{"data": "x.parquet", "formula": "...", "reml": true}'
    python -m benchmarks.worker --warmup-only
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

started = time.perf_counter()

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

import interlace_nb  # noqa: E402
from interlace_nb import predictor  # noqa: E402
from interlace_nb.linalg import blocked  # noqa: E402

from .simulate import simulate_crossed  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - started

#: Exercises every kernel the LMM fit uses (scalar and 2 x 2 blocks).
WARMUP_FORMULA = "y ~ x + (1 + x|s) + (1|i)"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def warm_up() -> float:
    """Fit a tiny model so that compile / cache-load time stays out of the timings.

    The parallel and tiled kernels large models take are compiled (or loaded)
    too: the same model once more on each of those paths.
    """
    t0 = time.perf_counter()
    data = simulate_crossed(2_000, 40, 20, seed=0, sd_slope=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = interlace_nb.LinearMixedModel(WARMUP_FORMULA, data, reml=True).fit()
        model.ranef()
        model.fittedvalues  # noqa: B018
        for tiled_from in (10**9, 0):
            with _large_model_paths(tiled_from):
                interlace_nb.LinearMixedModel(WARMUP_FORMULA, data, reml=True).fit()
        binary = simulate_crossed(2_000, 40, 20, seed=0, response="bernoulli")
        for n_agq in (0, 1):
            interlace_nb.glmm("y ~ x + (1|s) + (1|i)", binary, family="binomial", nAGQ=n_agq)
    return time.perf_counter() - t0


@contextmanager
def _large_model_paths(tiled_from: int) -> Iterator[None]:
    """Thresholds at zero: a tiny model takes the parallel kernels (the tiled ones from
    a dense block ``tiled_from`` wide)."""
    saved = (blocked.PARALLEL_DOWNDATE_WORK, blocked.TILED_MIN_SIZE,
             predictor.PARALLEL_SCALE_ENTRIES)
    blocked.PARALLEL_DOWNDATE_WORK, blocked.TILED_MIN_SIZE = -1, tiled_from
    predictor.PARALLEL_SCALE_ENTRIES = 0
    try:
        yield
    finally:
        (blocked.PARALLEL_DOWNDATE_WORK, blocked.TILED_MIN_SIZE,
         predictor.PARALLEL_SCALE_ENTRIES) = saved


def measure(spec: dict) -> dict:
    """Time construction and fit of the model ``spec`` describes."""
    warmup_seconds = warm_up()
    t0 = time.perf_counter()
    data = pl.read_parquet(spec["data"])
    load_seconds = time.perf_counter() - t0
    baseline = peak_rss_mb()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        family = spec.get("family", "gaussian")
        t0 = time.perf_counter()
        if family == "gaussian":
            model = interlace_nb.LinearMixedModel(spec["formula"], data, reml=spec["reml"])
            objectives = ["objective"]
        else:
            model = interlace_nb.GeneralizedLinearMixedModel(
                spec["formula"], data, family=family, nAGQ=spec.get("nagq", 1)
            )
            objectives = ["objective", "_stage0_objective"]
        setup_seconds = time.perf_counter() - t0
        calls = [0]
        objective = model.objective
        for name in objectives:  # counts the derivative checks too
            setattr(model, name, _counting(getattr(model, name), calls))
        t0 = time.perf_counter()
        model.fit()
        fit_seconds = time.perf_counter() - t0
    peak = peak_rss_mb()

    theta = model.theta
    at_optimum = theta
    if family != "gaussian" and model.n_agq > 0:
        at_optimum = np.concatenate([theta, model.beta])
    eval_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        objective(at_optimum)
        eval_times.append(time.perf_counter() - t0)
    if family != "gaussian":
        criterion = model.objective_value
    else:
        criterion = model.reml_criterion if spec["reml"] else model.deviance
    return {
        "import_s": IMPORT_SECONDS,
        "warmup_s": warmup_seconds,
        "load_s": load_seconds,
        "setup_s": setup_seconds,
        "fit_s": fit_seconds,
        "total_s": setup_seconds + fit_seconds,
        "n_evals": model.n_evals,
        "n_calls": calls[0],
        "eval_s": float(np.median(eval_times)),
        "criterion": float(criterion),
        "theta": theta.tolist(),
        "beta": model.beta.tolist(),
        "baseline_mb": baseline,
        "peak_mb": peak,
        "delta_mb": peak - baseline,
        "converged": model.converged,
        "warnings": sorted({str(w.message) for w in caught}),
    }


def _counting(function, calls: list[int]):
    def counted(params: np.ndarray) -> float:
        calls[0] += 1
        return function(params)

    return counted


def main(argv: list[str]) -> None:
    if argv == ["--warmup-only"]:
        result = {"import_s": IMPORT_SECONDS, "warmup_s": warm_up()}
    else:
        result = measure(json.loads(argv[0]))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
