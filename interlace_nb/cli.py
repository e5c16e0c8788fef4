"""Command line: ``interlace-nb demo`` and ``interlace-nb fit DATA_FILE "FORMULA"``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

DEMO_FORMULA = "np.log(rt) ~ condition + frequency + (1 + condition | subject) + (1 | item)"


def _scan(path: str) -> pl.LazyFrame:
    """A lazy scan of a parquet or CSV file (only the formula's columns are read)."""
    file = Path(path)
    if not file.exists():
        raise SystemExit(f"interlace-nb: no such file: {path}")
    suffix = file.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pl.scan_parquet(file)
    if suffix in (".csv", ".tsv", ".txt"):
        return pl.scan_csv(file, separator="\t" if suffix == ".tsv" else ",")
    raise SystemExit(f"interlace-nb: cannot read {path!r}: use a .parquet or .csv file")


def _report(model: object, show_ranef: int) -> None:
    """Print the lme4-style summary and the tidy frames."""
    with pl.Config(tbl_rows=max(show_ranef, 20), tbl_cols=12, tbl_width_chars=120):
        print(model)
        print("\ncoef_table():")
        print(model.coef_table())
        print("\nvarcorr():")
        print(model.varcorr())
        print("\nfit_stats():")
        print(model.fit_stats().unnest("ngroups"))
        if show_ranef:
            print(f"\nranef() (first {show_ranef} rows):")
            print(model.ranef().head(show_ranef))


def _demo(args: argparse.Namespace) -> int:
    from . import lmm
    from .datasets import load_reading_times

    data = load_reading_times()
    print(
        "Demo: simulated self-paced reading times, 56 subjects x 32 items (crossed), "
        f"{data.height} trials.\nlme4 call: lmer({DEMO_FORMULA}, data)\n"
    )
    started = time.perf_counter()
    model = lmm(DEMO_FORMULA, data.lazy())
    print(f"(fitted in {time.perf_counter() - started:.2f} s, including set-up)\n")
    _report(model, args.ranef_rows)
    return 0


def _fit(args: argparse.Namespace) -> int:
    from . import glmm, lmm

    shared = {
        "weights": args.weights,
        "offset": args.offset,
        "na_action": args.na_action,
        "factorization": args.factorization,
    }
    if args.family is not None:
        if args.streaming or args.ml:
            raise SystemExit(
                "interlace-nb: --family fits a GLMM by maximum likelihood in memory; "
                "drop --streaming and --ml"
            )
        model = glmm(
            args.formula,
            _scan(args.data_file),
            family=args.family,
            link=args.link,
            nAGQ=args.nagq,
            **shared,
        )
        _save(model, args)
        return 0
    if args.link is not None or args.nagq != 1:
        raise SystemExit("interlace-nb: --link and --nagq need --family (a GLMM)")
    model = lmm(
        args.formula,
        _scan(args.data_file),
        reml=not args.ml,
        streaming=args.streaming,
        batch_size=args.batch_size,
        **shared,
    )
    _save(model, args)
    return 0


def _save(model: object, args: argparse.Namespace) -> None:
    """Print the report and, with --out-dir, write the tidy frames as CSV."""
    _report(model, args.ranef_rows)
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.coef_table().write_csv(out / "coef_table.csv")
        model.varcorr().write_csv(out / "varcorr.csv")
        model.ranef().write_csv(out / "ranef.csv")
        model.fit_stats().unnest("ngroups").write_csv(out / "fit_stats.csv")
        print(f"\nwrote coef_table.csv, varcorr.csv, ranef.csv, fit_stats.csv to {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interlace-nb",
        description="Linear and generalized linear mixed models in lme4 syntax, from the shell."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit the embedded reading-time data set")
    demo.add_argument("--ranef-rows", type=int, default=10)
    demo.set_defaults(run=_demo)
    fit = sub.add_parser("fit", help="fit FORMULA to a parquet or CSV file")
    fit.add_argument("data_file")
    fit.add_argument("formula", help="lme4 formula, e.g. 'y ~ x + (1 | subject) + (1 | item)'")
    fit.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit.add_argument("--weights", help="column of prior weights")
    fit.add_argument("--offset", help="column of offsets")
    fit.add_argument("--na-action", choices=["omit", "fail"], default="omit")
    fit.add_argument("--factorization", choices=["auto", "blocked", "cholmod"], default="auto")
    fit.add_argument(
        "--streaming", action="store_true",
        help="read the file in row batches (data larger than memory)",
    )
    fit.add_argument("--batch-size", type=int, help="rows per batch with --streaming")
    fit.add_argument(
        "--family",
        help="fit a GLMM (as glmer) of this family: binomial, poisson, Gamma, "
        "inverse.gaussian, gaussian",
    )
    fit.add_argument("--link", help="link function of --family (default: its canonical link)")
    fit.add_argument(
        "--nagq", type=int, default=1,
        help="with --family: 1 Laplace (default), 0 fast mode, >1 adaptive Gauss-Hermite",
    )
    fit.add_argument("--ranef-rows", type=int, default=10)
    fit.add_argument("--out-dir", help="also write the tidy frames as CSV here")
    fit.set_defaults(run=_fit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``interlace-nb`` console script."""
    args = build_parser().parse_args(argv)
    from .data import DataError
    from .formula import FormulaError

    try:
        return args.run(args)
    except (DataError, FormulaError) as err:
        print(f"interlace-nb: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
