"""Peak memory and time of one fit from a parquet file, in memory against streamed.

Each mode runs in a fresh process: import, warm up the Numba kernels on a
tiny model, note the peak RSS (baseline), then build and fit the model from
``pl.scan_parquet(path)`` and note the peak RSS again. Prints a markdown
table and the JSON lines.

    python -m benchmarks.streaming --rows 10000000 --data /tmp/crossed_10m.parquet
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

FORMULA = "y ~ x + (1 | s) + (1 | i)"


def _worker(path: str, streaming: bool, batch_size: int | None) -> dict:
    import warnings

    import polars as pl

    import interlace_nb as ib

    from .worker import peak_rss_mb, warm_up

    warm_up()
    baseline = peak_rss_mb()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        kwargs = {"streaming": True, "batch_size": batch_size} if streaming else {}
        model = ib.LinearMixedModel(FORMULA, pl.scan_parquet(path), **kwargs)
        setup = time.perf_counter() - t0
        setup_peak = peak_rss_mb()
        t0 = time.perf_counter()
        model.fit()
        fit = time.perf_counter() - t0
    return {
        "mode": f"streaming (batch {batch_size or 'default'})" if streaming else "in memory",
        "nobs": model.nobs,
        "setup_s": round(setup, 2),
        "fit_s": round(fit, 2),
        "baseline_mb": round(baseline),
        "setup_peak_mb": round(setup_peak),
        "peak_mb": round(peak_rss_mb()),
        "criterion": model.reml_criterion,
        "theta": model.theta.tolist(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--data", default="/tmp/interlace_crossed_10m.parquet")
    parser.add_argument("--batch-size", type=int, action="append")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        path, mode, batch = args.worker
        size = None if batch == "default" else int(batch)
        print(json.dumps(_worker(path, mode == "streaming", size)))
        return
    data = Path(args.data)
    if not data.exists():
        from .simulate import simulate_crossed

        t0 = time.perf_counter()
        simulate_crossed(args.rows, 20_000, 2_000, seed=1).write_parquet(data)
        print(f"simulated {args.rows:,} rows into {data} in {time.perf_counter() - t0:.1f} s")
    runs = [("memory", "default")]
    runs += [("streaming", str(b)) for b in (args.batch_size or ["default"])]
    results = []
    for mode, batch in runs:
        command = [sys.executable, "-m", "benchmarks.streaming", "--worker", str(data), mode,
                   batch]
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    print("\n| mode | rows | setup s | fit s | peak MB (after warm-up) | setup peak MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['mode']} | {r['nobs']:,} | {r['setup_s']} | {r['fit_s']} | "
              f"{r['peak_mb']} ({r['baseline_mb']}) | {r['setup_peak_mb']} |")


if __name__ == "__main__":
    main()
