"""lme4 formula syntax through the public API: bar terms, fixed effects, level order.

Equivalences lme4 documents are checked as equal fitted criteria: ``(x | g)``
is ``(1 + x | g)``, ``(1 + x || g)`` is ``(1 | g) + (0 + x | g)`` and
``(1 | a/b)`` is ``(1 | a) + (1 | b:a)``.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import interlace_nb as ib

pytestmark = pytest.mark.filterwarnings("ignore::interlace_nb.SingularFitWarning")


def _frame(n: int = 96, seed: int = 0) -> pl.DataFrame:
    """Crossed g x h, nested b within a, a slope on x and a three-level condition."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    g, h, a, b = i % 8, i % 6, i % 4, (i // 4) % 3
    x = rng.normal(size=n)
    cond = np.array(["a", "b", "c"])[(i // 2) % 3]
    y = (
        1.0
        + 0.5 * x
        + 0.8 * (cond == "b")
        + rng.normal(size=8)[g]
        + 0.7 * rng.normal(size=8)[g] * x
        + rng.normal(size=6)[h]
        + rng.normal(size=4)[a]
        + rng.normal(size=12)[a * 3 + b]
        + 0.5 * rng.normal(size=n)
    )
    return pl.DataFrame(
        {
            "y": y,
            "x": x,
            "pos": np.exp(rng.normal(size=n)),
            "cond": cond,
            "g": [f"g{k}" for k in g],
            "h": h,
            "a": [f"a{k}" for k in a],
            "b": [f"b{k}" for k in b],
            "s": [f"s{k}" for k in i % 5],
        }
    )


DF = _frame()


def _terms(model: ib.LinearMixedModel) -> list[tuple[str, str]]:
    """(group, effect) of each variance in varcorr, Residual left out."""
    vc = model.varcorr().filter(pl.col("term2").is_null() & (pl.col("group") != "Residual"))
    return list(zip(vc["group"].to_list(), vc["term1"].to_list(), strict=True))


# ------------------------------------------------------------------ bar terms
def test_crossed_intercepts_with_fixed_factor():
    m = ib.lmm("y ~ x + cond + (1|g) + (1|h)", DF)
    assert sorted(_terms(m)) == [("g", "Intercept"), ("h", "Intercept")]
    assert list(m.fe_params.index) == ["Intercept", "x", "cond[T.b]", "cond[T.c]"]


def test_correlated_slope():
    m = ib.lmm("y ~ x + (1 + x | g)", DF)
    assert _terms(m) == [("g", "Intercept"), ("g", "x")]
    assert len(m.theta) == 3


def test_slope_without_one_includes_intercept_as_lme4():
    implicit = ib.lmm("y ~ x + (x | g)", DF)
    explicit = ib.lmm("y ~ x + (1 + x | g)", DF)
    assert _terms(implicit) == _terms(explicit)
    assert implicit.reml_criterion == pytest.approx(explicit.reml_criterion, rel=1e-10)


def test_slope_only():
    m = ib.lmm("y ~ x + (0 + x | g)", DF)
    assert _terms(m) == [("g", "x")]
    assert len(m.theta) == 1


def test_double_bar_is_uncorrelated():
    double = ib.lmm("y ~ x + (1 + x || g)", DF)
    split = ib.lmm("y ~ x + (1 | g) + (0 + x | g)", DF)
    assert _terms(double) == [("g", "Intercept"), ("g", "x")]
    assert len(double.theta) == 2
    assert double.reml_criterion == pytest.approx(split.reml_criterion, rel=1e-10)


def test_nesting_expands_as_lme4():
    nested = ib.lmm("y ~ x + (1 | a/b)", DF)
    explicit = ib.lmm("y ~ x + (1 | a) + (1 | b:a)", DF)
    assert sorted(g for g, _ in _terms(nested)) == ["a", "b:a"]
    assert nested.reml_criterion == pytest.approx(explicit.reml_criterion, rel=1e-10)
    b_a = nested.random_effects["b:a"]
    assert len(b_a) == 12 and b_a.index[0] == "b0:a0"


def test_interaction_grouping_factor():
    m = ib.lmm("y ~ x + (1 | a:b)", DF)
    assert _terms(m) == [("a:b", "Intercept")]
    assert m.fit_stats()["ngroups"].struct.field("a:b").item() == 12


def test_several_terms_on_one_factor():
    m = ib.lmm("y ~ x + (1 | g) + (0 + x | g) + (1 | h)", DF)
    assert sorted(_terms(m)) == [("g", "Intercept"), ("g", "x"), ("h", "Intercept")]


def test_four_crossed_factors():
    m = ib.lmm("y ~ x + (1|g) + (1|h) + (1|a) + (1|s)", DF)
    assert sorted(g for g, _ in _terms(m)) == ["a", "g", "h", "s"]


def test_backquoted_names():
    df = DF.rename({"g": "my group", "x": "my x"})
    m = ib.lmm("y ~ `my x` + (1 | `my group`)", df)
    assert _terms(m) == [("my group", "Intercept")]
    assert list(m.fe_params.index) == ["Intercept", "my x"]


# -------------------------------------------------------------- fixed effects
@pytest.mark.parametrize(
    ("rhs", "names"),
    [
        ("x * cond", ["Intercept", "x", "cond[T.b]", "cond[T.c]", "x:cond[T.b]", "x:cond[T.c]"]),
        ("C(cond)", ["Intercept", "C(cond)[T.b]", "C(cond)[T.c]"]),
        ("C(h)", ["Intercept", *[f"C(h)[T.{k}]" for k in range(1, 6)]]),
        ("np.log(pos)", ["Intercept", "np.log(pos)"]),
        ("scale(x)", ["Intercept", "scale(x)"]),
        ("x + I(x ** 2)", ["Intercept", "x", "I(x ** 2)"]),
        ("0 + x", ["x"]),
        ("x - 1", ["x"]),
    ],
)
def test_fixed_effects_through_formulaic(rhs: str, names: list[str]):
    m = ib.lmm(f"y ~ {rhs} + (1 | g)", DF)
    assert list(m.fe_params.index) == names


def test_transforms_match_precomputed_columns():
    by_formula = ib.lmm("y ~ np.log(pos) + scale(x) + (1 | g)", DF)
    x = DF["x"].to_numpy()
    pre = DF.with_columns(
        lp=pl.col("pos").log(), zx=pl.Series((x - x.mean()) / x.std(ddof=1))
    )
    precomputed = ib.lmm("y ~ lp + zx + (1 | g)", pre)
    np.testing.assert_allclose(by_formula.beta, precomputed.beta, rtol=1e-8)


# ---------------------------------------------------------------- level order
def test_enum_order_sets_reference_level():
    df = DF.with_columns(pl.col("cond").cast(pl.Enum(["c", "a", "b"])))
    m = ib.lmm("y ~ cond + (1 | g)", df)
    assert list(m.fe_params.index) == ["Intercept", "cond[T.a]", "cond[T.b]"]


def test_enum_reference_is_first_level_present():
    """An unused first Enum level is dropped (lme4's drop.unused.levels), no zero column."""
    df = DF.with_columns(pl.col("cond").cast(pl.Enum(["z", "c", "a", "b"])))
    m = ib.lmm("y ~ cond + (1 | g)", df)
    assert list(m.fe_params.index) == ["Intercept", "cond[T.a]", "cond[T.b]"]


def test_enum_inside_c_keeps_order():
    df = DF.with_columns(pl.col("cond").cast(pl.Enum(["b", "c", "a"])))
    m = ib.lmm("y ~ C(cond) + (1 | g)", df)
    assert list(m.fe_params.index) == ["Intercept", "C(cond)[T.c]", "C(cond)[T.a]"]


def test_categorical_and_string_factors_are_sorted():
    # Seed the string cache in a different order so physical codes are not sorted.
    pl.Series(["c", "b", "a", "g7", "g3"], dtype=pl.Categorical)
    as_string = ib.lmm("y ~ cond + (1 | g)", DF)
    as_cat = ib.lmm(
        "y ~ cond + (1 | g)",
        DF.with_columns(pl.col("cond").cast(pl.Categorical), pl.col("g").cast(pl.Categorical)),
    )
    assert list(as_cat.fe_params.index) == list(as_string.fe_params.index)
    assert list(as_cat.random_effects["g"].index) == [f"g{k}" for k in range(8)]
    np.testing.assert_allclose(as_cat.beta, as_string.beta, rtol=1e-8)


def test_grouping_levels_follow_enum_order():
    order = [f"g{k}" for k in (5, 2, 7, 0, 1, 3, 6, 4)]
    m = ib.lmm("y ~ x + (1 | g)", DF.with_columns(pl.col("g").cast(pl.Enum(order))))
    assert list(m.random_effects["g"].index) == order
    assert m.ranef()["level"].to_list() == order


def test_integer_grouping_levels_sort_numerically():
    df = DF.with_columns(h=pl.col("h") * 5)  # 0, 5, 10, ... sorts differently as text
    m = ib.lmm("y ~ x + (1 | h)", df)
    assert list(m.random_effects["h"].index) == ["0", "5", "10", "15", "20", "25"]


# ------------------------------------------------------------------ seed call
def test_seed_call():
    df = DF.rename({"y": "rt", "cond": "condition", "g": "subject", "h": "item"})
    m = ib.fit("rt ~ condition", data=df, groups=["subject", "item"])
    ref = ib.lmm("rt ~ condition + (1 | subject) + (1 | item)", df)
    assert sorted(_terms(m)) == [("item", "Intercept"), ("subject", "Intercept")]
    np.testing.assert_allclose(m.beta, ref.beta, rtol=1e-10)


# -------------------------------------------------------------- syntax errors
@pytest.mark.parametrize(
    ("formula", "position", "words"),
    [
        ("y ~ x ** + (1 | g)", 6, "x **"),
        ("y ~ x $ z + (1 | g)", 6, "$"),
        ("y ~ x + (x * | g)", 11, "x *"),
        ("y ~ x + ((1 | g)", 8, "unclosed"),
        ("y ~ np.log(x + (1 | g)", 10, "unclosed"),
        ("y ~ x + (1 | g))", 15, "unmatched"),
        ("y ~ x (1 | g)", 6, "'+'"),
        ("y ~ x + (1 | g]", 14, "does not match"),
        ("y ~ x ++ (1 | g)", 7, "empty term"),
        ("~ x + (1 | g)", 0, "response"),
        ("y ~ x ~ z + (1 | g)", 6, "'~'"),
        ("y ~ x + (1 | np.log(g))", 13, "grouping factor"),
        ("y ~ x + (1 | g) + offset(z)", 18, "offset="),
    ],
)
def test_syntax_error_points_at_position(formula: str, position: int, words: str):
    with pytest.raises(ib.FormulaError) as info:
        ib.lmm(formula, DF)
    assert info.value.position == position
    assert words in str(info.value)
    lines = str(info.value).splitlines()
    assert lines[-2] == f"  {formula}"
    assert lines[-1] == "  " + " " * position + "^"
