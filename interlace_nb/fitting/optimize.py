"""Minimisers of the profiled criterion over theta, and lme4's convergence checks.

BOBYQA (NLopt, lme4's default and stopping rule), NEWUOA without bounds then
rectified (MixedModels.jl's idea), L-BFGS-B with an exact gradient (SciPy), and
Newton steps on the average information (AI-REML's matrix) with an exact gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import nlopt
import numpy as np
from scipy.optimize import minimize

#: lme4's nloptwrap defaults, plus nloptr's own default xtol_rel (lme4 leaves it set).
XTOL_ABS = 1e-8
XTOL_REL = 1e-4
FTOL_ABS = 1e-8
MAX_EVALS = 100_000
#: Where minimize_lbfgsb probes a diagonal theta that ended at its bound 0.
EDGE_PROBE = 1e-3
#: Step of the convergence check's differences (lme4's deriv12).
CHECK_DELTA = 1e-4
#: BOBYQA's xtol_rel before minimize_bobyqa_newton's Newton steps (B2: 15 values
#: against 21 at lme4's 1e-4).
POLISH_XTOL_REL = 1e-2
#: Distances between thetas are relative to each, not below POLISH_FLOOR.
POLISH_FLOOR = 1e-2
POLISH_MAX_ROUNDS = 3
#: The interpolated step needs well-spread points (condition of the scaled design).
POLISH_MAX_CONDITION = 1e6
#: L-BFGS-B's ftol before minimize_lbfgsb_newton's Newton step (InstEval: 13 calls
#: against 17 at 1e-12, 3e-4 above the optimum).
LBFGSB_POLISH_FTOL = 1e-8
#: minimize_ai_newton hands over to the check's Newton step once a step promises a
#: decrease below this (InstEval with the service slope: 9 calls against 10 at 1e-4;
#: at 1e-3 a reference criterion ended 6.5e-11 relative above lme4's).
AI_NEWTON_TOL = 3e-4
AI_NEWTON_MAX_STEPS = 30
#: A Newton step promising less than this, relative to the criterion, is not taken:
#: the value could not show it (B3: 4.7e-10 on 2.7e6, and the step's value was higher).
ROUNDOFF_DECREASE = 1e-14
AI_NEWTON_MAX_HALVINGS = 10
#: minimize_ai_newton_values takes its last step with central differences once a
#: step promises a decrease below this (forward differences are off by about
#: delta H / 2, too much to go on with).
AI_VALUES_TOL = 10.0
#: An average-information step goes at most this fraction of the way to a bound.
TO_BOUND_FRACTION = 0.5


@dataclass
class OptimResult:
    """Where the optimiser stopped and how."""

    x: np.ndarray
    fun: float
    n_evals: int
    status: str
    messages: list[str] = field(default_factory=list)
    n_gradients: int = 0
    #: the gradient at x (exact, or the check's differences), when the optimiser has it
    grad: np.ndarray | None = None
    #: the check's difference Hessian at x, when the optimiser computed it there
    hess: np.ndarray | None = None


def minimize_bobyqa(
    fun: Callable[[np.ndarray], float],
    x0: np.ndarray,
    lower: np.ndarray,
    *,
    xtol_abs: float = XTOL_ABS,
    ftol_abs: float = FTOL_ABS,
    max_evals: int = MAX_EVALS,
    initial_step: np.ndarray | None = None,
    xtol_rel: float = XTOL_REL,
) -> OptimResult:
    """Minimise ``fun`` from ``x0`` subject to ``x >= lower`` with NLopt's BOBYQA.

    ``initial_step`` sets the first trust region per coordinate (NLopt's default
    is about |x0|, too wide when x0 comes from a good first stage).
    """
    return _nlopt_minimize(nlopt.LN_BOBYQA, fun, x0, lower, xtol_abs=xtol_abs,
                           ftol_abs=ftol_abs, max_evals=max_evals, initial_step=initial_step,
                           xtol_rel=xtol_rel)


def minimize_bobyqa_newton(
    fun: Callable[[np.ndarray], float],
    x0: np.ndarray,
    lower: np.ndarray,
    *,
    initial_step: np.ndarray | None = None,
    delta: float = CHECK_DELTA,
) -> OptimResult:
    """BOBYQA to a loose tolerance, then Newton steps; the check's derivatives come along.

    BOBYQA spends its last third or so of values shrinking its trust region around
    a point it has nearly found. Near the optimum the criterion is close to
    quadratic, so from BOBYQA's point at POLISH_XTOL_REL:

    1. a Newton step on the quadratic through the values nearest to it (one value,
       kept if lower);
    2. the check's difference gradient g and Hessian H there (values lme4's check
       needs anyway). Done if the Newton step they give, -H^-1 g, would lower the
       criterion by at most FTOL_ABS (BOBYQA's own stopping rule). Else the step
       is taken (kept if lower); if lme4's checks pass on g and H, done, since
       the point beyond is closer to the optimum and g and H are the conservative
       report for it; if not, the check again at the new point (at most
       POLISH_MAX_ROUNDS).

    The returned ``grad`` and ``hess`` are the last check's. Where a stencil would
    cross a bound (a theta near 0) BOBYQA goes on to lme4's tolerance instead,
    and the caller does the check.
    """
    history: list[tuple[np.ndarray, float]] = []

    def recorded(x: np.ndarray) -> float:
        value = fun(x)
        history.append((np.array(x, dtype=float), value))
        return value

    loose = minimize_bobyqa(recorded, x0, lower, initial_step=initial_step,
                            xtol_rel=POLISH_XTOL_REL)
    x, value = loose.x, loose.fun
    if np.any(x - delta < lower):
        resumed = minimize_bobyqa(recorded, x, lower,
                                  initial_step=POLISH_XTOL_REL * np.maximum(np.abs(x), delta))
        resumed.n_evals = len(history)
        resumed.messages = loose.messages + resumed.messages
        return resumed
    step = _interpolated_newton_step(history, x, value)
    if step is not None and np.all(x + step - delta >= lower):
        trial = recorded(x + step)
        if trial < value:
            x, value = x + step, trial
    x, value, grad, hess = _polish_with_check_stencil(recorded, x, value, lower, delta)
    return OptimResult(x, value, len(history), loose.status, loose.messages, grad=grad,
                       hess=hess)


def _polish_with_check_stencil(
    fun: Callable[[np.ndarray], float], x: np.ndarray, value: float, lower: np.ndarray,
    delta: float,
) -> tuple[np.ndarray, float, np.ndarray | None, np.ndarray | None]:
    """Newton steps on the check's difference gradient and Hessian (step 2 of
    minimize_bobyqa_newton): (x, value, and the last check's g and H, or None when a
    stencil would cross a bound or the check has to be done again at x)."""
    grad = hess = None
    for _ in range(POLISH_MAX_ROUNDS):
        if np.any(x - delta < lower):
            return x, value, None, None
        grad, hess = finite_difference_derivatives(fun, x, lower, delta, f0=value,
                                                   forward_cross=True)
        step = _newton_step(grad, hess)
        if step is None or -(grad @ step) / 2.0 <= FTOL_ABS:
            break
        trial = fun(np.maximum(x + step, lower))
        if not trial < value:
            break
        x, value = np.maximum(x + step, lower), trial
        if not convergence_messages(grad, hess, np.ones(len(x), dtype=bool)):
            break
        grad = hess = None
    return x, value, grad, hess


def _newton_step(grad: np.ndarray, hess: np.ndarray) -> np.ndarray | None:
    """-H^-1 g, or None when H is not positive definite."""
    try:
        factor = np.linalg.cholesky(hess)
    except np.linalg.LinAlgError:
        return None
    return -np.linalg.solve(factor.T, np.linalg.solve(factor, grad))


def _interpolated_newton_step(
    history: list[tuple[np.ndarray, float]], x: np.ndarray, value: float
) -> np.ndarray | None:
    """The Newton step of the quadratic through ``value`` at ``x`` and the values nearest
    to it, as many as it has free coefficients (distances relative to each theta).

    None when those points determine it badly, its Hessian is not positive definite
    or the step leaves the box they span.
    """
    n = len(x)
    pairs = [(i, j) for i in range(n) for j in range(i + 1)]
    needed = n + len(pairs)
    scale = np.maximum(np.abs(x), POLISH_FLOOR)
    points = np.array([point for point, _ in history])
    values = np.array([v for _, v in history])
    distance = np.abs((points - x) / scale).max(axis=1)
    nearest = [k for k in np.argsort(distance, kind="stable") if distance[k] > 0][:needed]
    if len(nearest) < needed:
        return None
    d = (points[nearest] - x) / scale
    design = np.column_stack(
        [d[:, i] for i in range(n)]
        + [d[:, i] * d[:, j] * (0.5 if i == j else 1.0) for i, j in pairs]
    )
    if not np.linalg.cond(design) < POLISH_MAX_CONDITION:
        return None
    coef = np.linalg.solve(design, values[nearest] - value)
    hess = np.zeros((n, n))
    for k, (i, j) in enumerate(pairs):
        hess[i, j] = hess[j, i] = coef[n + k]
    step = _newton_step(coef[:n], hess)
    if step is None or np.abs(step).max() > np.abs(d).max():
        return None
    return step * scale


def minimize_newuoa(
    fun: Callable[[np.ndarray], float],
    x0: np.ndarray,
    term_sizes: list[int],
    *,
    max_evals: int = MAX_EVALS,
) -> OptimResult:
    """Minimise ``fun`` over theta without bounds (NLopt's NEWUOA), then rectify.

    The criterion depends on each T_k only through T_k T_k', which does not
    change when a column of T_k changes sign, so the unconstrained minimum is
    mapped to lme4's domain (diagonal >= 0) by flipping columns. NEWUOA needs
    two or more parameters; one is left to BOBYQA, also without bounds.
    """
    algorithm = nlopt.LN_NEWUOA if len(x0) > 1 else nlopt.LN_BOBYQA
    result = _nlopt_minimize(algorithm, fun, x0, None, xtol_abs=XTOL_ABS,
                             ftol_abs=FTOL_ABS, max_evals=max_evals)
    result.x = rectify_theta(result.x, term_sizes)
    return result


def rectify_theta(theta: np.ndarray, term_sizes: list[int]) -> np.ndarray:
    """Flip the sign of every column of a T_k whose diagonal entry is negative."""
    out = np.array(theta, dtype=float)
    pos = 0
    for p in term_sizes:
        for col in range(p):
            length = p - col
            if out[pos] < 0:
                out[pos : pos + length] *= -1.0
            pos += length
    return out


def minimize_lbfgsb(
    fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    lower: np.ndarray,
    *,
    ftol: float = 1e-12,
    gtol: float = 1e-6,
    max_evals: int = MAX_EVALS,
) -> OptimResult:
    """Minimise with SciPy's L-BFGS-B from the value and exact gradient, ``x >= lower``.

    Components with lower bound 0 are diagonal thetas, in which the criterion
    is even: its gradient there is 0, so L-BFGS-B cannot leave such a bound by
    itself even when the optimum is inside. Those that end at 0 are probed at
    EDGE_PROBE, one at a time, and the search restarts from the lowest probe
    below the optimum found (lme4's restart_edge does the same after BOBYQA).
    """
    result = _lbfgsb_once(fun_and_grad, x0, lower, ftol, gtol, max_evals)
    for _ in range(len(result.x)):
        at_edge = np.flatnonzero((lower == 0.0) & (result.x == 0.0))
        best, best_value = None, result.fun - 1e-12 * abs(result.fun)
        for k in at_edge:
            probe = result.x.copy()
            probe[k] = EDGE_PROBE
            value = fun_and_grad(probe)[0]
            if value < best_value:
                best, best_value = probe, value
        if best is None:
            result.n_evals += len(at_edge)
            result.n_gradients += len(at_edge)
            break
        restarted = _lbfgsb_once(fun_and_grad, best, lower, ftol, gtol, max_evals)
        restarted.n_evals += result.n_evals + len(at_edge)
        restarted.n_gradients += result.n_gradients + len(at_edge)
        result = restarted
    return result


def minimize_lbfgsb_newton(
    fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    lower: np.ndarray,
    *,
    delta: float = CHECK_DELTA,
) -> OptimResult:
    """L-BFGS-B to a loose tolerance, then one Newton step on the convergence check's
    Hessian; the check's gradient and Hessian come along.

    L-BFGS-B's last calls creep along a badly scaled valley (on InstEval the
    criterion was 3e-4 above its final value with 4 of 17 calls to go). From its
    point at LBFGSB_POLISH_FTOL, _finish_with_checked_newton finishes; if that fails,
    L-BFGS-B goes on from the best point to its usual tolerance, and the caller
    does the check.
    """
    loose = minimize_lbfgsb(fun_and_grad, x0, lower, ftol=LBFGSB_POLISH_FTOL)
    return _finish_with_checked_newton(fun_and_grad, loose, lower, delta)


def minimize_ai_newton(
    fun_grad_info: Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray]],
    fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    lower: np.ndarray,
    *,
    delta: float = CHECK_DELTA,
) -> OptimResult:
    """Newton steps on an approximate Hessian (the average information), then one on
    the convergence check's Hessian; the check's gradient and Hessian come along.

    ``fun_grad_info`` gives the value, the exact gradient and a positive
    semi-definite approximation of the Hessian. Each step solves with it on all
    thetas, goes at most TO_BOUND_FRACTION of the way to a bound, and is halved
    until the value drops. Once a step promises less than AI_NEWTON_TOL,
    _finish_with_checked_newton finishes. L-BFGS-B (minimize_lbfgsb_newton) takes over from
    the best point when a theta starts at its bound, one is held back by its bound
    twice running (the optimum is likely on it), the approximation is singular, or
    halving fails.
    """
    x = np.array(x0, dtype=float)
    calls = 0
    if np.all(x > lower):
        value, grad, info = fun_grad_info(x)
        calls = 1
        held_back = np.zeros(len(x), dtype=bool)
        for _ in range(AI_NEWTON_MAX_STEPS):
            if not np.isfinite(value):
                break
            step = _newton_step(grad, info)
            if step is None:
                break
            if -0.5 * float(grad @ step) < AI_NEWTON_TOL:
                start = OptimResult(x, value, calls, "success", n_gradients=calls, grad=grad)
                return _finish_with_checked_newton(fun_and_grad, start, lower, delta)
            length, limited = _length_within_bounds(x, step, lower)
            if (limited & held_back).any():
                break
            held_back = limited
            accepted = False
            for _ in range(AI_NEWTON_MAX_HALVINGS):
                trial_x = x + length * step
                trial, trial_grad, trial_info = fun_grad_info(trial_x)
                calls += 1
                if trial < value:
                    x, value, grad, info = trial_x, trial, trial_grad, trial_info
                    accepted = True
                    break
                length /= 2.0
            if not accepted:
                break
    resumed = minimize_lbfgsb_newton(fun_and_grad, x, lower, delta=delta)
    resumed.n_evals += calls
    resumed.n_gradients += calls
    return resumed


def minimize_ai_newton_values(
    fun_info: Callable[[np.ndarray], tuple[float, np.ndarray]],
    fun: Callable[[np.ndarray], float],
    x0: np.ndarray,
    lower: np.ndarray,
    *,
    delta: float = CHECK_DELTA,
) -> OptimResult:
    """minimize_ai_newton where a gradient costs many values: the same Newton steps on
    the average information, with gradients from differences of values.

    ``fun_info`` gives the value and the average information, ``fun`` the value
    alone. Forward differences (n values) until a step promises less than
    AI_VALUES_TOL, then one step with central differences (2n), then the check
    stencil's Newton steps as minimize_bobyqa_newton ends. BOBYQA takes over from
    the best point, as there, when a theta comes within the stencil's step of its
    bound, when the information is singular or when halving fails.
    """
    history: list[tuple[np.ndarray, float]] = []

    def recorded(x: np.ndarray) -> float:
        value = fun(x)
        history.append((np.array(x, dtype=float), value))
        return value

    def recorded_info(x: np.ndarray) -> tuple[float, np.ndarray]:
        value, info = fun_info(x)
        history.append((np.array(x, dtype=float), value))
        return value, info

    x = np.array(x0, dtype=float)
    polish = False
    if np.all(x - delta >= lower):
        value, info = recorded_info(x)
        central = False
        for _ in range(AI_NEWTON_MAX_STEPS):
            if not np.isfinite(value) or np.any(x - delta < lower):
                break
            grad = _difference_gradient(recorded, x, value, delta, central)
            step = _newton_step(grad, info)
            if step is None:
                break
            promised = -0.5 * float(grad @ step)
            length, _ = _length_within_bounds(x, step, lower)
            accepted = False
            for _ in range(AI_NEWTON_MAX_HALVINGS):
                trial_x = x + length * step
                trial, trial_info = recorded_info(trial_x)
                if trial < value:
                    x, value, info = trial_x, trial, trial_info
                    accepted = True
                    break
                length /= 2.0
            if not accepted:
                break
            if central:
                polish = True
                break
            central = promised < AI_VALUES_TOL
    if polish and np.all(x - delta >= lower):
        x, value, grad, hess = _polish_with_check_stencil(recorded, x, value, lower, delta)
        return OptimResult(x, value, len(history), "success", grad=grad, hess=hess)
    if not history:  # a theta started at its bound: BOBYQA from the start
        resumed = minimize_bobyqa(recorded, x, lower)
    else:  # near the optimum, or near a bound: a small first trust region
        best_x = min(history, key=lambda pair: pair[1])[0]
        resumed = minimize_bobyqa(
            recorded, best_x, lower,
            initial_step=POLISH_XTOL_REL * np.maximum(np.abs(best_x), delta))
    resumed.n_evals = len(history)
    return resumed


def _difference_gradient(
    fun: Callable[[np.ndarray], float], x: np.ndarray, value: float, delta: float,
    central: bool,
) -> np.ndarray:
    """The gradient by forward (n values) or central (2n) differences with step delta."""
    grad = np.empty(len(x))
    for i in range(len(x)):
        up = x.copy()
        up[i] += delta
        if central:
            down = x.copy()
            down[i] -= delta
            grad[i] = (fun(up) - fun(down)) / (2.0 * delta)
        else:
            grad[i] = (fun(up) - value) / delta
    return grad


def _length_within_bounds(
    x: np.ndarray, step: np.ndarray, lower: np.ndarray
) -> tuple[float, np.ndarray]:
    """The step's length factor (1, or TO_BOUND_FRACTION of the way to the nearest
    bound) and which thetas the full step would have taken past their bound."""
    to_bound = np.full(len(x), np.inf)
    heading = step < 0
    to_bound[heading] = (x[heading] - lower[heading]) / -step[heading]
    return min(1.0, TO_BOUND_FRACTION * float(to_bound.min())), to_bound < 1.0


def _finish_with_checked_newton(
    fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    loose: OptimResult,
    lower: np.ndarray,
    delta: float,
) -> OptimResult:
    """From ``loose`` (a point near the optimum with its exact gradient): the check's
    Hessian (forward differences of n exact gradients, which the check computes
    anyway with four thetas or more) gives a Newton step; the exact gradient at the
    point beyond (one call) and that Hessian are the check there. When the step
    promises only round-off (ROUNDOFF_DECREASE), or does not lower the criterion,
    and lme4's check passes at ``loose`` itself, that point is returned with its own
    check. Otherwise L-BFGS-B goes on from the best point to its usual tolerance,
    and the caller does the check.
    """
    calls = loose.n_evals
    x, value, grad = loose.x, loose.fun, loose.grad
    free = np.ones(len(x), dtype=bool)
    if grad is not None and not np.any(x - delta < lower):
        _, hess = gradient_difference_derivatives(fun_and_grad, x, lower, delta,
                                                  central=False, grad_at_x=grad)
        calls += len(x)
        step = _newton_step(grad, hess)
        passes_here = not convergence_messages(grad, hess, free)
        if (step is not None and passes_here
                and -0.5 * float(grad @ step) <= ROUNDOFF_DECREASE * abs(value)):
            return OptimResult(x, value, calls, loose.status, loose.messages,
                               n_gradients=calls, grad=grad, hess=hess)
        if step is not None:
            trial_x = np.maximum(x + step, lower)
            trial, trial_grad = fun_and_grad(trial_x)
            calls += 1
            if trial < value and not convergence_messages(trial_grad, hess, free):
                return OptimResult(trial_x, float(trial), calls, loose.status, loose.messages,
                                   n_gradients=calls, grad=trial_grad, hess=hess)
            if trial < value:
                x = trial_x
            elif passes_here:
                return OptimResult(x, value, calls, loose.status, loose.messages,
                                   n_gradients=calls, grad=grad, hess=hess)
    resumed = minimize_lbfgsb(fun_and_grad, x, lower)
    resumed.n_evals += calls
    resumed.n_gradients += calls
    resumed.messages = loose.messages + resumed.messages
    return resumed


def _lbfgsb_once(
    fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    lower: np.ndarray,
    ftol: float,
    gtol: float,
    max_evals: int,
) -> OptimResult:
    """One run of SciPy's L-BFGS-B."""
    evals = [0]
    last: dict[str, np.ndarray] = {}

    def wrapped(x: np.ndarray) -> tuple[float, np.ndarray]:
        evals[0] += 1
        value, grad = fun_and_grad(np.array(x))
        if not np.isfinite(value):
            return float(np.finfo(float).max), np.zeros(len(x))
        last["x"], last["grad"] = np.array(x), np.array(grad, dtype=float)
        return float(value), grad

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    res = minimize(wrapped, np.asarray(x0, dtype=float), jac=True, method="L-BFGS-B",
                   bounds=bounds, options={"ftol": ftol, "gtol": gtol, "maxfun": max_evals})
    # status 2: the line search cannot improve the point (usually round-off at the
    # optimum); no message, lme4's gradient check after the fit judges the point
    status = {0: "success", 1: "maxeval"}.get(int(res.status), "roundoff")
    messages = []
    if status == "maxeval":
        messages.append(f"optimiser reached the evaluation limit ({max_evals})")
    x = np.asarray(res.x, dtype=float)
    grad = last["grad"] if "x" in last and np.array_equal(last["x"], x) else None
    return OptimResult(x, float(res.fun), evals[0], status, messages,
                       n_gradients=evals[0], grad=grad)


def _nlopt_minimize(
    algorithm: int,
    fun: Callable[[np.ndarray], float],
    x0: np.ndarray,
    lower: np.ndarray | None,
    *,
    xtol_abs: float,
    ftol_abs: float,
    max_evals: int,
    initial_step: np.ndarray | None = None,
    xtol_rel: float = XTOL_REL,
) -> OptimResult:
    """One NLopt run with lme4's stopping rule; the best point seen is returned."""
    n = len(x0)
    evals = [0]
    best = [np.inf, np.array(x0, dtype=float)]

    def wrapped(x: np.ndarray, grad: np.ndarray) -> float:
        evals[0] += 1
        value = fun(np.array(x))
        if not np.isfinite(value):
            value = np.finfo(float).max
        if value < best[0]:
            best[0], best[1] = value, np.array(x)
        return float(value)

    opt = nlopt.opt(algorithm, n)
    if lower is not None:
        opt.set_lower_bounds(np.asarray(lower, dtype=float))
        opt.set_upper_bounds(np.full(n, np.inf))
    opt.set_min_objective(wrapped)
    opt.set_xtol_abs(xtol_abs)
    opt.set_xtol_rel(xtol_rel)
    opt.set_ftol_abs(ftol_abs)
    opt.set_maxeval(max_evals)
    if initial_step is not None:
        opt.set_initial_step(np.asarray(initial_step, dtype=float))
    messages = []
    try:
        x = opt.optimize(np.asarray(x0, dtype=float))
        fun_value = opt.last_optimum_value()
        code = opt.last_optimize_result()
    except nlopt.RoundoffLimited:
        x, fun_value, code = best[1], best[0], nlopt.ROUNDOFF_LIMITED
        messages.append("optimiser stopped on round-off; best point returned")
    if fun_value > best[0]:
        x, fun_value = best[1], best[0]
    status = {
        nlopt.SUCCESS: "success",
        nlopt.STOPVAL_REACHED: "stopval",
        nlopt.FTOL_REACHED: "ftol",
        nlopt.XTOL_REACHED: "xtol",
        nlopt.MAXEVAL_REACHED: "maxeval",
        nlopt.MAXTIME_REACHED: "maxtime",
        nlopt.ROUNDOFF_LIMITED: "roundoff",
    }.get(code, str(code))
    if status == "maxeval":
        messages.append(f"optimiser reached the evaluation limit ({max_evals})")
    return OptimResult(np.asarray(x, dtype=float), float(fun_value), evals[0], status, messages)


def finite_difference_derivatives(
    fun: Callable[[np.ndarray], float],
    x: np.ndarray,
    lower: np.ndarray,
    delta: float = CHECK_DELTA,
    f0: float | None = None,
    *,
    forward_cross: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian by central differences (lme4's deriv12), clipped at bounds.

    ``f0``, the value at ``x`` when the caller already has it, saves one evaluation.
    ``forward_cross`` takes each off-diagonal entry from one more value, at
    x + delta (e_i + e_j), and the plus points the diagonal needs anyway: error of
    order delta instead of delta^2, and 2n + n(n - 1)/2 values instead of 2n^2.
    """
    n = len(x)
    if f0 is None:
        f0 = fun(x)
    grad = np.zeros(n)
    hess = np.zeros((n, n))
    steps = np.eye(n) * delta

    def value(point: np.ndarray) -> float:
        return fun(np.maximum(point, lower))

    plus = [value(x + steps[i]) for i in range(n)]
    minus = [value(x - steps[i]) for i in range(n)]
    for i in range(n):
        grad[i] = (plus[i] - minus[i]) / (2 * delta)
        hess[i, i] = (plus[i] - 2 * f0 + minus[i]) / delta**2
        for j in range(i):
            fpp = value(x + steps[i] + steps[j])
            if forward_cross:
                hess[i, j] = hess[j, i] = (fpp - plus[i] - plus[j] + f0) / delta**2
                continue
            fmm = value(x - steps[i] - steps[j])
            fpm = value(x + steps[i] - steps[j])
            fmp = value(x - steps[i] + steps[j])
            hess[i, j] = hess[j, i] = (fpp - fpm - fmp + fmm) / (4 * delta**2)
    return grad, hess


def gradient_difference_derivatives(
    fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x: np.ndarray,
    lower: np.ndarray,
    delta: float = CHECK_DELTA,
    *,
    central: bool = True,
    grad_at_x: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact gradient at ``x`` and the Hessian by differences of it, symmetrised.

    Central differences (2n gradients beyond the one at ``x``; forward where
    ``x - delta`` would cross ``lower``) for standard errors; forward ones (n
    gradients, O(delta) error) are enough for lme4's convergence checks, which
    use the Hessian only to scale the gradient and to test its sign. Second
    differences of values would take 2n^2 values. ``grad_at_x`` saves a gradient
    when the caller already has it.
    """
    n = len(x)
    grad = fun_and_grad(x)[1] if grad_at_x is None else np.asarray(grad_at_x, dtype=float)
    hess = np.empty((n, n))
    for i in range(n):
        up = np.array(x, dtype=float)
        up[i] += delta
        _, grad_up = fun_and_grad(up)
        down = np.array(x, dtype=float)
        down[i] -= delta
        if central and down[i] >= lower[i]:
            _, grad_down = fun_and_grad(down)
            hess[:, i] = (grad_up - grad_down) / (2.0 * delta)
        else:
            hess[:, i] = (grad_up - grad) / delta
    return grad, (hess + hess.T) / 2.0


def convergence_messages(
    grad: np.ndarray, hess: np.ndarray, free: np.ndarray, grad_tol: float = 2e-3,
    hess_tol: float = 1e-6,
) -> list[str]:
    """lme4's checkConv on the parameters that are not on their bounds."""
    messages: list[str] = []
    if not free.any():
        return messages
    g = grad[free]
    h = hess[np.ix_(free, free)]
    try:
        upper = np.linalg.cholesky(h).T  # R's chol(): H = R'R
        scaled = np.linalg.solve(upper, g)
        scaled_grad = np.minimum(np.abs(scaled), np.abs(g))
        worst = int(np.argmax(scaled_grad))
        if scaled_grad[worst] > grad_tol:
            messages.append(
                f"Model failed to converge with max|grad| = {scaled_grad[worst]:.6g} "
                f"(tol = {grad_tol}, component {worst + 1})"
            )
    except np.linalg.LinAlgError:
        pass
    eigen = np.linalg.eigvalsh(h)
    if (eigen < -hess_tol).any():
        messages.append(
            "Model failed to converge: degenerate Hessian with "
            f"{int((eigen < -hess_tol).sum())} negative eigenvalues"
        )
    elif eigen.max() <= 0 or eigen.min() / eigen.max() < hess_tol:
        messages.append("Model is nearly unidentifiable: very large eigenvalue ratio")
    return messages
