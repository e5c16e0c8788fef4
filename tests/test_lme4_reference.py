"""Fits compared with lme4's, case by case, from the committed reference JSON.

Tolerances (issue 2): criterion within 1e-6 relative of lme4's or lower;
fixed effects 1e-5 relative; standard errors 1e-3 relative; standard
deviations and correlations 1e-3; conditional modes within 2e-3 of the
largest mode.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import load_dataset, load_reference_cases, r_name

import interlace_nb as ib

CASES = load_reference_cases()


def _fit(case: dict) -> ib.LinearMixedModel:
    data = load_dataset(case["data"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ib.lmm(
            case["formula"], data, reml=case["reml"], weights=case["weights"],
            offset=case["offset"],
        )


@pytest.fixture(scope="module", params=sorted(CASES))
def fitted(request: pytest.FixtureRequest) -> tuple[dict, ib.LinearMixedModel]:
    case = CASES[request.param]
    return case, _fit(case)


def _criterion(model: ib.LinearMixedModel) -> float:
    return model.reml_criterion if model.reml else model.deviance


def test_objective_matches_lme4_at_pinned_theta(fitted):
    case, model = fitted
    for point in case["objective_at"]:
        ours = model.objective(np.array(point["theta"], dtype=float))
        assert ours == pytest.approx(point["value"], rel=1e-9, abs=0), point["label"]


def test_criterion_as_good_as_lme4(fitted):
    case, model = fitted
    theirs = case["reml_criterion"] if case["reml"] else case["deviance"]
    assert (_criterion(model) - theirs) / abs(theirs) < 1e-6


def test_fewer_evaluations_than_lme4(fitted):
    """The default optimiser, Newton steps on the average information with the exact
    gradient, then one on the check's Hessian, needs fewer calls, the convergence
    check's included, than lme4's BOBYQA without it
    (test_ai_newton_on_the_reference_cases counts them all)."""
    case, model = fitted
    assert model.optimizer == "ai_newton"
    assert model.n_evals < case["n_evals"]


def test_fixed_effects_and_standard_errors(fitted):
    case, model = fitted
    names = [r_name(n) for n in model.design.x_names]
    assert names == case["fixef_names"]
    scale = np.maximum(np.abs(case["fixef"]), np.array(case["se"]))
    np.testing.assert_array_less(np.abs(model.beta - case["fixef"]), 1e-5 * scale)
    np.testing.assert_allclose(model.bse.to_numpy(), case["se"], rtol=1e-3)


def test_variance_components(fitted):
    case, model = fitted
    ours = model.varcorr()
    theirs = case["varcorr"]
    assert ours.height == len(theirs)
    for row, ref in zip(ours.iter_rows(named=True), theirs, strict=True):
        assert row["group"] == ref["grp"].removesuffix(".1")
        assert (row["term1"] and r_name(row["term1"])) == ref["var1"]
        assert (row["term2"] and r_name(row["term2"])) == ref["var2"]
        if ref["var2"] is None:
            assert row["sdcor"] == pytest.approx(ref["sdcor"], rel=1e-3, abs=1e-6)
        else:
            assert row["sdcor"] == pytest.approx(ref["sdcor"], abs=1e-3)


def test_conditional_modes_and_sds(fitted):
    case, model = fitted
    ours = model.ranef()
    theirs = case["ranef"]
    assert ours.height == len(theirs)
    ref = {(r["grpvar"], r["term"], r["grp"]): r for r in theirs}
    largest = max(abs(r["condval"]) for r in theirs)
    worst_mode = worst_sd = 0.0
    for row in ours.iter_rows(named=True):
        r = ref[(row["group"], r_name(row["term"]), row["level"])]
        worst_mode = max(worst_mode, abs(row["estimate"] - r["condval"]))
        worst_sd = max(worst_sd, abs(row["cond_sd"] - r["condsd"]) / max(r["condsd"], 1e-12))
    assert worst_mode <= 2e-3 * max(largest, 1e-8)
    assert worst_sd <= 2e-3


def test_fit_statistics(fitted):
    case, model = fitted
    stats = model.fit_stats().row(0, named=True)
    assert stats["nobs"] == case["nobs"]
    assert stats["ngroups"] == case["ngroups"]
    assert stats["singular"] == case["singular"]
    assert stats["converged"]
    assert model.sigma == pytest.approx(case["sigma"], rel=1e-3)
    for key in ("loglik", "aic", "bic", "deviance"):
        assert stats[key] == pytest.approx(case[key], rel=1e-6), key


@pytest.mark.parametrize(
    "name", ["synth_crossed_large_reml", "synth_slopes_reml", "synth_nested_reml", "insteval_reml"]
)
def test_cholmod_path_matches_lme4_on_large_q(name: str) -> None:
    """The general sparse path, forced, reaches lme4's optimum on the large designs too."""
    case = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ib.lmm(
            case["formula"], load_dataset(case["data"]), reml=case["reml"],
            weights=case["weights"], offset=case["offset"], factorization="cholmod",
        )
    assert model.fit_stats()["factorization"][0] == "cholmod"
    theirs = case["reml_criterion"] if case["reml"] else case["deviance"]
    assert (_criterion(model) - theirs) / abs(theirs) < 1e-6
    scale = np.maximum(np.abs(case["fixef"]), np.array(case["se"]))
    np.testing.assert_array_less(np.abs(model.beta - case["fixef"]), 1e-5 * scale)
    ours = model.ranef()
    ref = {(r["grpvar"], r["term"], r["grp"]): r for r in case["ranef"]}
    largest = max(abs(r["condval"]) for r in case["ranef"])
    for row in ours.iter_rows(named=True):
        r = ref[(row["group"], r_name(row["term"]), row["level"])]
        assert abs(row["estimate"] - r["condval"]) <= 2e-3 * largest
        assert row["cond_sd"] == pytest.approx(r["condsd"], rel=2e-3)


def unfitted_model(case: dict) -> ib.LinearMixedModel:
    """A reference case's model, built (one case has a rank-deficient X: no warning)."""
    data = load_dataset(case["data"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ib.LinearMixedModel(case["formula"], data, reml=case["reml"],
                                   weights=case["weights"], offset=case["offset"])


def test_bobyqa_from_the_variance_ratio_start():
    """BOBYQA's first trust region is a tenth of each theta from lme4's variance-ratio
    start: lme4's criterion, and fewer evaluations in all (lme4 from NLopt's default)."""
    ours, theirs, names = 0, 0, []
    for name, case in sorted(CASES.items()):
        model = unfitted_model(case)
        if model._moment_start() is None:
            continue
        names.append(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rank-deficient X in one case
            model.fit(optimizer="bobyqa")
        reference = case["reml_criterion"] if case["reml"] else case["deviance"]
        assert (_criterion(model) - reference) / abs(reference) < 1e-9, name
        ours += model.n_evals
        theirs += case["n_evals"]
    assert len(names) >= 10
    assert ours < 0.8 * theirs


def test_bobyqa_newton_on_the_reference_cases():
    """BOBYQA to a loose tolerance then Newton steps on the check's derivatives, where
    "auto" takes it without the blocked factorisation (variance-ratio start, at most
    two thetas), here on the reference cases it fits: lme4's criterion or
    lower, no convergence warning, and fewer values with the check included than
    lme4's BOBYQA without it (264 against 360 when written; BOBYQA to lme4's rule
    plus the check took 322)."""
    ours, theirs, names = 0, 0, []
    for name, case in sorted(CASES.items()):
        model = unfitted_model(case)
        if model._moment_start() is None or len(model.theta_lower) > 2:
            continue
        names.append(name)
        calls = [0]
        objective = model._objective  # the optimiser's (the public one adds a shift)

        def counted(theta: np.ndarray, objective=objective, calls=calls) -> float:
            calls[0] += 1
            return objective(theta)

        model._objective = counted
        with warnings.catch_warnings():
            warnings.simplefilter("error", ib.ConvergenceWarning)
            warnings.simplefilter("ignore", ib.SingularFitWarning)  # Dyestuff2
            model.fit(optimizer="bobyqa_newton")
        reference = case["reml_criterion"] if case["reml"] else case["deviance"]
        assert (_criterion(model) - reference) / abs(reference) < 1e-12, name
        ours += calls[0]
        theirs += case["n_evals"]
    assert len(names) >= 10
    assert ours < 0.8 * theirs


def test_ai_newton_on_the_reference_cases():
    """The default optimiser on every reference case: lme4's criterion to 1e-10
    relative or lower, no convergence warning, and a fifth of lme4's evaluations with
    the convergence check's calls included (154 against lme4's 796 without its
    check when written; L-BFGS-B to a loose tolerance and a Newton step took 280)."""
    ours, theirs = 0, 0
    for name, case in sorted(CASES.items()):
        model = unfitted_model(case)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ib.ConvergenceWarning)
            warnings.simplefilter("ignore", ib.SingularFitWarning)  # Dyestuff2
            model.fit()
        reference = case["reml_criterion"] if case["reml"] else case["deviance"]
        assert (_criterion(model) - reference) / abs(reference) < 1e-10, name
        ours += model.n_evals
        theirs += case["n_evals"]
    assert ours < 0.25 * theirs


def test_gradient_optimizers_from_the_variance_ratio_start():
    """Gradient optimisers start from lme4's variance-ratio start carried to every term
    (slopes scaled by their column's root mean square): the same criterion, and
    fewer calls in all than from lme4's identity (69 against 125 when written)."""
    from_ratio, from_identity, names = 0, 0, []
    for name, case in sorted(CASES.items()):
        model = unfitted_model(case)
        if model._moment_start() is not None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit()
            names.append(name)
            criterion = _criterion(model)
            from_ratio += model.n_evals
            model.fit(start=model.default_start())
        assert criterion <= _criterion(model) + 1e-12 * abs(criterion), name
        from_identity += model.n_evals
    assert len(names) >= 6
    assert from_ratio < 0.85 * from_identity
