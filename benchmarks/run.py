"""Benchmark runner: interlace_nb against lme4 on the registry's problems.

    python -m benchmarks.run [--problems a,b] [--repeats N] [--no-lme4] [--out DIR]

For each problem the data are simulated (or read) once and written to a
temporary parquet file (for interlace_nb) and CSV (for R). Every repeat is a
fresh process, so peak memory is per fit. interlace_nb's Numba kernels are
compiled once, into a fresh cache, before any timing (reported as the
warm-up); each worker then loads them from that cache on a tiny model before
its timed fit. Medians over repeats are appended to DIR/<date>_<gitsha>.csv
(the history) and written as a markdown table to DIR/latest.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .registry import REPO_ROOT, Problem, get_problems

R_SCRIPT = Path(__file__).resolve().parent / "lme4_fit.R"
GNU_TIME = Path("/usr/bin/time")
TIMEOUT_SECONDS = 3600

FIELDS = [
    "timestamp", "git_sha", "git_dirty", "host", "cpus", "threads", "problem", "label", "n_rows",
    "formula", "reml", "tool", "repeats", "setup_s", "fit_s", "total_s", "total_s_min",
    "total_s_max", "n_evals",
    "n_calls", "eval_s", "time_per_eval_s", "peak_mb", "baseline_mb", "delta_mb", "criterion",
    "speedup_vs_lme4", "criterion_diff", "max_theta_diff", "max_beta_diff", "warmup_s",
    "compile_s", "loadavg_before", "loadavg_after", "note",
]


def git_state() -> tuple[str, bool]:
    """Short commit hash and whether tracked files differ from it."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
            text=True, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "nogit", False
    return sha, bool(dirty)


THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")


def child_env(numba_cache: Path, threads: int | None) -> dict[str, str]:
    """Environment for workers and Rscript: a private Numba cache, optional thread cap."""
    env = dict(os.environ)
    if threads:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    env["NUMBA_CACHE_DIR"] = str(numba_cache)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def run_worker(args: list[str], env: dict[str, str]) -> dict:
    """Run benchmarks.worker in a fresh interpreter; its last stdout line is JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.worker", *args], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=TIMEOUT_SECONDS,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_lme4(csv_path: Path, problem: Problem, env: dict[str, str]) -> dict:
    """One lmer() (or glmer()) fit in a fresh Rscript, under /usr/bin/time -v when available."""
    command = [
        "Rscript", str(R_SCRIPT), str(csv_path), problem.formula,
        "TRUE" if problem.reml else "FALSE", ",".join(problem.r_factors),
        problem.family, str(problem.nagq),
    ]
    if GNU_TIME.exists():
        command = [str(GNU_TIME), "-v", *command]
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"Rscript failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out: dict = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT\t"):
            _, key, value = (line.split("\t", 2) + [""])[:3]
            out[key] = value.strip()
    result = {
        "total_s": float(out["elapsed_s"]),
        "n_evals": int(out["n_evals"]),
        "criterion": float(out["criterion"]),
        "theta": [float(v) for v in out["theta"].split(";")],
        "beta": [float(v) for v in out["beta"].split(";")],
        "baseline_mb": float(out["baseline_mb"]),
        "peak_mb": float(out["peak_mb"]),
        "note": f"lme4 {out['lme4_version']}, {out['reader']}",
    }
    for line in proc.stderr.splitlines():
        if "Maximum resident set size" in line:  # GNU time, KiB
            result["peak_mb"] = float(line.rsplit(":", 1)[1]) / 1024.0
    result["delta_mb"] = result["peak_mb"] - result["baseline_mb"]
    result["time_per_eval_s"] = result["total_s"] / result["n_evals"]
    if out.get("messages"):
        result["note"] += f"; {out['messages']}"
    return result


def median_row(runs: list[dict]) -> dict:
    """Median of each numeric field over repeats; lists and text from the first run."""
    row: dict = {}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[key] = statistics.median(r[key] for r in runs)
        else:
            row[key] = value
    totals = [r["total_s"] for r in runs]
    row["total_s_min"], row["total_s_max"] = min(totals), max(totals)
    row["repeats"] = len(runs)
    return row


def max_abs_diff(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        return float("nan")
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) if a else 0.0


def benchmark_problem(
    problem: Problem, repeats: int, with_lme4: bool, env: dict[str, str], tmp: Path
) -> list[dict]:
    """Measured rows (interlace_nb and, if run, lme4) for one problem."""
    load_before = os.getloadavg()[0]
    data = problem.load()
    parquet_path = tmp / f"{problem.name}.parquet"
    data.write_parquet(parquet_path)
    spec = json.dumps({"data": str(parquet_path), "formula": problem.formula,
                       "reml": problem.reml, "family": problem.family, "nagq": problem.nagq})
    threads = env.get("OPENBLAS_NUM_THREADS", "default")
    base = {"threads": threads, "problem": problem.name, "label": problem.label,
            "n_rows": data.height,
            "formula": problem.formula, "reml": problem.reml, "loadavg_before": load_before}
    lme4_note = ""
    if with_lme4 and shutil.which("Rscript") is None:
        with_lme4, lme4_note = False, "lme4 skipped: Rscript not found"
    if with_lme4:
        csv_path = tmp / f"{problem.name}.csv"
        data.write_csv(csv_path)
    ours, theirs = [], []
    for k in range(repeats):  # interleaved, so that load from elsewhere hits both alike
        ours.append(run_worker([spec], env))
        print(f"  interlace_nb {problem.name} #{k + 1}: {ours[-1]['total_s']:.2f} s", flush=True)
        if with_lme4:
            theirs.append(run_lme4(csv_path, problem, env))
            print(f"  lme4 {problem.name} #{k + 1}: {theirs[-1]['total_s']:.2f} s", flush=True)
    load_after = os.getloadavg()[0]
    ours_row = {**base, "tool": "interlace_nb", **median_row(ours), "loadavg_after": load_after}
    ours_row["time_per_eval_s"] = ours_row["fit_s"] / max(ours_row["n_calls"], 1)
    notes = ours_row.pop("warnings") + ([] if ours_row["converged"] else ["not converged"])
    ours_row["note"] = "; ".join(notes + ([lme4_note] if lme4_note else []))
    if not with_lme4:
        return [ours_row]
    lme4_row = {**base, "tool": "lme4", **median_row(theirs), "loadavg_after": load_after}
    ours_row["speedup_vs_lme4"] = lme4_row["total_s"] / ours_row["total_s"]
    ours_row["criterion_diff"] = ours_row["criterion"] - lme4_row["criterion"]
    ours_row["max_theta_diff"] = max_abs_diff(ours_row["theta"], lme4_row["theta"])
    ours_row["max_beta_diff"] = max_abs_diff(ours_row["beta"], lme4_row["beta"])
    return [ours_row, lme4_row]


def fmt(value: object, digits: int = 2) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if not np.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: list[dict], header: str) -> str:
    """A markdown summary: one line per problem, both tools side by side."""
    by_problem: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_problem.setdefault(row["problem"], {})[row["tool"]] = row
    lines = [
        header,
        "",
        "| problem | rows | interlace_nb setup s | fit s | total s | evals | ms/eval "
        "| peak MB (delta) | lme4 s | lme4 evals | lme4 peak MB (delta) | lme4 / interlace_nb "
        "| criterion diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, tools in by_problem.items():
        ours = tools["interlace_nb"]
        theirs = tools.get("lme4", {})
        lines.append(
            "| " + " | ".join([
                f"{ours['label']} {name}".strip() if ours.get("label") else name,
                f"{ours['n_rows']:,}",
                fmt(ours["setup_s"]),
                fmt(ours["fit_s"]),
                fmt(ours["total_s"]),
                fmt(ours["n_evals"], 0),
                fmt(1000 * ours["eval_s"], 1),
                f"{ours['peak_mb']:.0f} ({ours['delta_mb']:.0f})",
                fmt(theirs.get("total_s")),
                fmt(theirs.get("n_evals"), 0),
                f"{theirs['peak_mb']:.0f} ({theirs['delta_mb']:.0f})" if theirs else "",
                fmt(ours.get("speedup_vs_lme4"), 1),
                f"{ours['criterion_diff']:.1e}" if "criterion_diff" in ours else "",
            ]) + " |"
        )
    notes = [f"- {r['problem']} ({r['tool']}): {r['note']}" for r in rows if r.get("note")]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], out_dir: Path, stamp: dict) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{stamp['timestamp'][:10]}_{stamp['git_sha']}.csv"
    if csv_path.exists() and csv_path.read_text().split("\n", 1)[0].strip() != ",".join(FIELDS):
        clock = stamp["timestamp"][11:19].replace(":", "")
        csv_path = csv_path.with_name(f"{csv_path.stem}_{clock}.csv")
    new_file = not csv_path.exists()
    with csv_path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        for row in rows:
            writer.writerow({**stamp, **row})
    loads = [r[k] for r in rows for k in ("loadavg_before", "loadavg_after") if k in r]
    header = (
        f"Run {stamp['timestamp']} at {stamp['git_sha']}{' (dirty)' if stamp['git_dirty'] else ''}"
        f" on {stamp['host']} ({stamp['cpus']} CPUs); medians of {rows[0]['repeats']} fresh-process"
        f" repeats; thread cap: {rows[0]['threads']}; Numba compile (excluded):"
        f" {stamp['compile_s']:.1f} s; 1-min load average {min(loads):.1f}-{max(loads):.1f}."
    )
    md_path = out_dir / "latest.md"
    md_path.write_text(markdown_table(rows, header))
    return csv_path, md_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", help="comma-separated problem names (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process fits per tool")
    parser.add_argument("--no-lme4", action="store_true", help="skip the lme4 comparison")
    parser.add_argument(
        "--threads", type=int, help="cap BLAS/OpenMP/Numba threads of both tools (default: none)"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    problems = get_problems(args.problems)
    sha, dirty = git_state()
    stamp = {
        "timestamp": dt.datetime.now().isoformat(timespec="seconds"),
        "git_sha": sha,
        "git_dirty": dirty,
        "host": platform.node(),
        "cpus": os.cpu_count(),
    }
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="interlace_bench_") as tmp_name:
        tmp = Path(tmp_name)
        env = child_env(tmp / "numba_cache", args.threads)
        warm = run_worker(["--warmup-only"], env)
        stamp["compile_s"] = warm["warmup_s"]
        print(f"warm-up (Numba compile into a fresh cache): {warm['warmup_s']:.1f} s", flush=True)
        for problem in problems:
            print(f"{problem.name}: {problem.formula}", flush=True)
            rows += benchmark_problem(problem, args.repeats, not args.no_lme4, env, tmp)
    csv_path, md_path = write_results(rows, args.out, stamp)
    print(md_path.read_text())
    print(f"appended to {csv_path}")


if __name__ == "__main__":
    main()
