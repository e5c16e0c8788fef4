"""Shared fixtures: reference data sets and lme4's committed results."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import polars as pl

REFERENCE_DIR = Path(__file__).parent / "reference"
DATA_DIR = REFERENCE_DIR / "data"

#: Columns that are factors in R: read them as strings so levels match.
FACTOR_COLUMNS = {
    "sleepstudy.csv": ["Subject"],
    "InstEval.csv": ["s", "d", "studage", "lectage", "service", "dept"],
    "Penicillin.csv": ["plate", "sample"],
    "Pastes.csv": ["batch", "cask", "sample"],
    "Dyestuff.csv": ["Batch"],
    "Dyestuff2.csv": ["Batch"],
    "cbpp.csv": ["herd", "period"],
    "grouseticks.csv": ["INDEX", "BROOD", "YEAR", "LOCATION"],
    "VerbAgg.csv": ["id", "item", "Gender", "btype", "situ"],
}


@cache
def load_reference_cases() -> dict[str, dict]:
    cases = json.loads((REFERENCE_DIR / "lmm_reference.json").read_text())
    return {case["name"]: case for case in cases}


@cache
def load_dataset(file_name: str) -> pl.DataFrame:
    overrides = {name: pl.String for name in FACTOR_COLUMNS.get(file_name, [])}
    return pl.read_csv(DATA_DIR / file_name, schema_overrides=overrides)


def r_name(name: str) -> str:
    """formulaic's column name as R prints it: Intercept -> (Intercept), c[T.b] -> cb."""
    if name == "Intercept":
        return "(Intercept)"
    return re.sub(r"([\w.]+)\[T\.(.+?)\]", r"\1\2", name)
