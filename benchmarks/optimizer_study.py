"""Evaluations and accuracy of optimiser set-ups on the lme4 reference cases and benchmarks.

Counts are deterministic, so this measures counts, not times:

    python -m benchmarks.optimizer_study                    # the 22 reference cases
    python -m benchmarks.optimizer_study crossed_100k,insteval

Methods: ``bobyqa`` (lme4's set-up), ``newuoa`` (unconstrained, then rectified as
MixedModels.jl does), ``lbfgsb`` (L-BFGS-B with the exact gradient), ``ai_newton``
(Newton steps on the average information, then one on the check's Hessian; its
count includes the check's gradients). Each row gives
function and gradient evaluations, the criterion minus the reference one and the
largest |theta - theta_ref| (reference: lme4 for the test cases; lme4's criterion
and our BOBYQA theta for the benchmarks).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

import interlace_nb as ib
from interlace_nb.fitting.gradient import criterion_and_gradient
from interlace_nb.fitting.optimize import (
    minimize_ai_newton,
    minimize_bobyqa,
    minimize_lbfgsb,
    minimize_newuoa,
)

#: lme4's criterion on the benchmark problems (benchmarks/results, lme4 1.1.31).
LME4_BENCH = {
    "crossed_100k": (291551.4766714081, 30),
    "crossed_1m": (2909767.2139160032, 33),
    "insteval": (237733.8341290671, 68),
    "insteval_service": (237658.609452955, 158),
}

METHODS = ("bobyqa", "newuoa", "lbfgsb", "ai_newton")


def run(model: ib.LinearMixedModel, method: str) -> tuple[np.ndarray, float, int, int, str]:
    """(theta, criterion, function and gradient evaluations, status) of one method."""
    theta0, lower = model.default_start(), model.theta_lower
    if method == "bobyqa":
        result = minimize_bobyqa(model.objective, theta0, lower)
    elif method == "newuoa":
        result = minimize_newuoa(model.objective, theta0, [t.size for t in model.terms])
    elif method == "ai_newton":
        result = minimize_ai_newton(model.objective_gradient_information,
                                    model.objective_and_gradient, theta0, lower)
    else:
        result = minimize_lbfgsb(
            lambda t: criterion_and_gradient(model.predictor, t, model.reml), theta0, lower
        )
    theta = np.maximum(result.x, lower)
    return theta, model.objective(theta), result.n_evals, result.n_gradients, result.status


def study(models: dict[str, tuple[ib.LinearMixedModel, float, np.ndarray | None, int]]) -> None:
    """Print one row per (model, method)."""
    print("| case | lme4 evals | method | f evals | g evals | criterion - ref | max dtheta "
          "| status |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (model, ref_crit, ref_theta, ref_evals) in models.items():
        thetas = {}
        for method in METHODS:
            theta, crit, n_f, n_g, status = run(model, method)
            thetas[method] = theta
            base = ref_theta if ref_theta is not None else thetas["bobyqa"]
            dtheta = float(np.max(np.abs(theta - base)))
            print(f"| {name} | {ref_evals} | {method} | {n_f} | {n_g} | {crit - ref_crit:.2e} "
                  f"| {dtheta:.1e} | {status} |", flush=True)


def reference_models() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import load_dataset, load_reference_cases

    out = {}
    for name, case in sorted(load_reference_cases().items()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ib.LinearMixedModel(
                case["formula"], load_dataset(case["data"]), reml=case["reml"],
                weights=case["weights"], offset=case["offset"],
            )
        crit = case["reml_criterion"] if case["reml"] else case["deviance"]
        out[name] = (model, crit, np.array(case["theta"]), case["n_evals"])
    return out


def benchmark_models(names: str) -> dict:
    from .registry import get_problems

    out = {}
    for problem in get_problems(names):
        model = ib.LinearMixedModel(problem.formula, problem.load(), reml=problem.reml)
        crit, evals = LME4_BENCH.get(problem.name, (np.nan, 0))
        out[problem.name] = (model, crit, None, evals)
    return out


def gradient_cost(model: ib.LinearMixedModel, repeats: int = 5) -> float:
    """Time of value plus gradient over time of the value alone (best of ``repeats`` each)."""
    theta = model.default_start()
    model.objective(theta)
    criterion_and_gradient(model.predictor, theta, model.reml)
    value, both = np.inf, np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        model.objective(theta)
        value = min(value, time.perf_counter() - started)
        started = time.perf_counter()
        criterion_and_gradient(model.predictor, theta, model.reml)
        both = min(both, time.perf_counter() - started)
    return both / value


if __name__ == "__main__":
    names = [a for a in sys.argv[1:] if not a.startswith("--")]
    if names:
        models = benchmark_models(names[0])
    else:
        models = reference_models()
    study(models)
    if "--cost" in sys.argv:
        for name, (model, *_rest) in models.items():
            print(f"{name}: value+gradient / value = {gradient_cost(model):.2f}")
