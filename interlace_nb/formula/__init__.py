"""lme4 bar syntax: split a formula into its fixed part and random terms."""

from .parse import FormulaError, ParsedFormula, RandomTermSpec, parse_formula

__all__ = ["FormulaError", "ParsedFormula", "RandomTermSpec", "parse_formula"]
