"""Per-row GLM work: mean, working weights, working response and unit deviances.

Families and links are integer codes (below), so one compiled kernel serves
every family-link pair and the Python side only maps names to codes
(``interlace_nb.response.families``). The numerical guards follow R's
``make.link`` and family objects, so that results agree with ``glm`` and
``glmer`` at the edges:

- logit: ``linkinv`` maps eta < -36.04 (``-log(DBL_EPSILON)``) to eps/(1+eps)
  and eta > 36.04 to 1/(1+eps); ``mu.eta`` is ``DBL_EPSILON`` for |eta| > 30;
- probit, cauchit: eta clamped to +-``-q(DBL_EPSILON)`` of the distribution,
  ``mu.eta`` floored at ``DBL_EPSILON``;
- cloglog: mu clamped to [eps, 1 - eps], eta capped at 700 in ``mu.eta``,
  ``mu.eta`` floored at eps;
- log: mu and ``mu.eta`` floored at eps (``pmax(exp(eta), eps)``);
- deviances use ``y * log(y / mu)`` = 0 when y = 0.

The offset is part of eta here; the caller subtracts it from the working
response if it wants z without it (as R's ``glm.fit`` does).
"""

import math

from .config import kernel

# ------------------------------------------------------------------ codes

FAMILY_BINOMIAL = 0
FAMILY_POISSON = 1
FAMILY_GAMMA = 2
FAMILY_INVERSE_GAUSSIAN = 3
FAMILY_GAUSSIAN = 4

LINK_IDENTITY = 0
LINK_LOG = 1
LINK_LOGIT = 2
LINK_PROBIT = 3
LINK_CLOGLOG = 4
LINK_CAUCHIT = 5
LINK_INVERSE = 6
LINK_INVERSE_SQUARED = 7  # R's "1/mu^2"
LINK_SQRT = 8

# --------------------------------------------------------------- constants

DBL_EPSILON = 2.220446049250313e-16
#: logit_linkinv's threshold, -log(DBL_EPSILON), and 1/DBL_EPSILON (R's INVEPS).
LOGIT_THRESH = 36.04365338911715
INVEPS = 1.0 / DBL_EPSILON
#: logit_mu_eta's thresholds (R's THRESH / MTHRESH).
LOGIT_MU_ETA_THRESH = 30.0
#: -qnorm(DBL_EPSILON) and -qcauchy(DBL_EPSILON): the probit/cauchit eta clamps.
PROBIT_THRESH = 8.125890664701906
CAUCHIT_THRESH = 1433540284805664.8
#: cloglog's mu.eta caps eta here before exp(eta).
CLOGLOG_ETA_CAP = 700.0

_INV_SQRT_2PI = 0.3989422804014327
_SQRT_HALF = 0.7071067811865476

# ------------------------------------------------------------ distributions


@kernel
def _pnorm(x):
    """Standard normal CDF, accurate in both tails (erfc)."""
    return 0.5 * math.erfc(-x * _SQRT_HALF)


@kernel
def _dnorm(x):
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


@kernel
def _pcauchy(x):
    """Standard Cauchy CDF as R's pcauchy computes it (atan(1/x) in the tails)."""
    if x > 1.0:
        return 1.0 - math.atan(1.0 / x) / math.pi
    if x < -1.0:
        return -math.atan(1.0 / x) / math.pi
    return 0.5 + math.atan(x) / math.pi


@kernel
def _dcauchy(x):
    return 1.0 / (math.pi * (1.0 + x * x))


@kernel
def _qnorm_approx(p):
    """Inverse normal CDF (Acklam's rational approximation + one Halley step)."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    a0, a1, a2 = -3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02
    a3, a4, a5 = 1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00
    b0, b1, b2 = -5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02
    b3, b4 = 6.680131188771972e01, -1.328068155288572e01
    c0, c1, c2 = -7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00
    c3, c4, c5 = -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00
    d0, d1, d2 = 7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00
    d3 = 3.754408661907416e00
    lo = 0.02425
    if p < lo:
        q = math.sqrt(-2.0 * math.log(p))
        x = (((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5) / (
            (((d0 * q + d1) * q + d2) * q + d3) * q + 1.0
        )
    elif p > 1.0 - lo:
        q = math.sqrt(-2.0 * math.log1p(-p))
        x = -(((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5) / (
            (((d0 * q + d1) * q + d2) * q + d3) * q + 1.0
        )
    else:
        q = p - 0.5
        r = q * q
        x = (
            (((((a0 * r + a1) * r + a2) * r + a3) * r + a4) * r + a5)
            * q
            / (((((b0 * r + b1) * r + b2) * r + b3) * r + b4) * r + 1.0)
        )
    # Halley refinement: relative error ~1e-15 afterwards.
    if p < 0.5:
        e = _pnorm(x) - p
    else:
        e = -(_pnorm(-x) - (1.0 - p))
    u = e * math.sqrt(2.0 * math.pi) * math.exp(0.5 * x * x)
    return x - u / (1.0 + 0.5 * x * u)


# ------------------------------------------------------------------ links


@kernel
def linkinv(link, eta):
    """mu from eta, with R's guards."""
    if link == LINK_IDENTITY:
        return eta
    if link == LINK_LOG:
        return max(math.exp(eta), DBL_EPSILON)
    if link == LINK_LOGIT:
        if eta < -LOGIT_THRESH:
            t = DBL_EPSILON
        elif eta > LOGIT_THRESH:
            t = INVEPS
        else:
            t = math.exp(eta)
        return t / (1.0 + t)
    if link == LINK_PROBIT:
        return _pnorm(min(max(eta, -PROBIT_THRESH), PROBIT_THRESH))
    if link == LINK_CLOGLOG:
        return max(min(-math.expm1(-math.exp(eta)), 1.0 - DBL_EPSILON), DBL_EPSILON)
    if link == LINK_CAUCHIT:
        return _pcauchy(min(max(eta, -CAUCHIT_THRESH), CAUCHIT_THRESH))
    if link == LINK_INVERSE:
        return 1.0 / eta
    if link == LINK_INVERSE_SQUARED:
        return 1.0 / math.sqrt(eta)
    if link == LINK_SQRT:
        return eta * eta
    return math.nan


@kernel
def mu_eta(link, eta):
    """dmu/deta at eta, with R's floors."""
    if link == LINK_IDENTITY:
        return 1.0
    if link == LINK_LOG:
        return max(math.exp(eta), DBL_EPSILON)
    if link == LINK_LOGIT:
        if eta > LOGIT_MU_ETA_THRESH or eta < -LOGIT_MU_ETA_THRESH:
            return DBL_EPSILON
        e = math.exp(eta)
        opexp = 1.0 + e
        return e / (opexp * opexp)
    if link == LINK_PROBIT:
        return max(_dnorm(eta), DBL_EPSILON)
    if link == LINK_CLOGLOG:
        e = min(eta, CLOGLOG_ETA_CAP)
        return max(math.exp(e) * math.exp(-math.exp(e)), DBL_EPSILON)
    if link == LINK_CAUCHIT:
        return max(_dcauchy(eta), DBL_EPSILON)
    if link == LINK_INVERSE:
        return -1.0 / (eta * eta)
    if link == LINK_INVERSE_SQUARED:
        return -1.0 / (2.0 * eta**1.5)
    if link == LINK_SQRT:
        return 2.0 * eta
    return math.nan


@kernel
def linkfun(link, mu):
    """eta from mu (no guards, as R's linkfun)."""
    if link == LINK_IDENTITY:
        return mu
    if link == LINK_LOG:
        return math.log(mu)
    if link == LINK_LOGIT:
        return math.log(mu / (1.0 - mu))
    if link == LINK_PROBIT:
        return _qnorm_approx(mu)
    if link == LINK_CLOGLOG:
        return math.log(-math.log1p(-mu))
    if link == LINK_CAUCHIT:
        return math.tan(math.pi * (mu - 0.5))
    if link == LINK_INVERSE:
        return 1.0 / mu
    if link == LINK_INVERSE_SQUARED:
        return 1.0 / (mu * mu)
    if link == LINK_SQRT:
        return math.sqrt(mu)
    return math.nan


# --------------------------------------------------------------- families


@kernel
def variance(family, mu):
    """The family's variance function V(mu)."""
    if family == FAMILY_BINOMIAL:
        return mu * (1.0 - mu)
    if family == FAMILY_POISSON:
        return mu
    if family == FAMILY_GAMMA:
        return mu * mu
    if family == FAMILY_INVERSE_GAUSSIAN:
        return mu * mu * mu
    if family == FAMILY_GAUSSIAN:
        return 1.0
    return math.nan


@kernel
def _y_log_y(y, mu):
    """y * log(y / mu), 0 when y == 0 (R's y_log_y)."""
    if y != 0.0:
        return y * math.log(y / mu)
    return 0.0


@kernel
def unit_deviance(family, y, mu, wt):
    """Prior-weighted deviance contribution of one row (R's dev.resids)."""
    if family == FAMILY_BINOMIAL:
        return 2.0 * wt * (_y_log_y(y, mu) + _y_log_y(1.0 - y, 1.0 - mu))
    if family == FAMILY_POISSON:
        if y > 0.0:
            return 2.0 * wt * (y * math.log(y / mu) - (y - mu))
        return 2.0 * wt * mu
    if family == FAMILY_GAMMA:
        ratio = 1.0 if y == 0.0 else y / mu
        return -2.0 * wt * (math.log(ratio) - (y - mu) / mu)
    if family == FAMILY_INVERSE_GAUSSIAN:
        d = y - mu
        return wt * d * d / (y * mu * mu)
    if family == FAMILY_GAUSSIAN:
        d = y - mu
        return wt * d * d
    return math.nan


# ----------------------------------------------------------- fused passes


@kernel
def glm_row_pass(family, link, eta, y, prior_weights, mu_out, w_out, z_out, dev_out):
    """One pass over the rows: mu, working weights, working response, deviances.

    mu = linkinv(eta); w = prior * mu.eta^2 / V(mu); z = eta + (y - mu) / mu.eta;
    dev = prior-weighted unit deviance. ``eta`` includes the offset (subtract it
    from ``z_out`` for the working response of the fixed + random part).
    Returns the total deviance.
    """
    if family == FAMILY_BINOMIAL and link == LINK_LOGIT:
        return _logit_binomial_pass(eta, y, prior_weights, mu_out, w_out, z_out, dev_out)
    n = eta.shape[0]
    total = 0.0
    for i in range(n):
        e = eta[i]
        mu = linkinv(link, e)
        d = mu_eta(link, e)
        wt = prior_weights[i]
        mu_out[i] = mu
        w_out[i] = wt * d * d / variance(family, mu)
        z_out[i] = e + (y[i] - mu) / d
        dev = unit_deviance(family, y[i], mu, wt)
        dev_out[i] = dev
        total += dev
    return total


@kernel
def _log1p_unit(x):
    """log(1 + x) for 0 <= x <= 1 to a few ulps, with log's speed (glibc's log1p is slower).

    Goldberg's correction: u = 1 + x rounded, log(u) scaled by x / (u - 1).
    """
    u = 1.0 + x
    if u == 1.0:
        return x
    return math.log(u) * (x / (u - 1.0))


@kernel
def _logit_binomial_pass(eta, y, prior_weights, mu_out, w_out, z_out, dev_out):
    """glm_row_pass for binomial-logit (the common case): one exp and one log per row.

    With s = exp(-|eta|) (|eta| capped at LOGIT_THRESH, s = DBL_EPSILON there:
    linkinv's guard), mu is
    1 / (1 + s) or s / (1 + s), mu.eta = V(mu) = s / (1 + s)^2 (DBL_EPSILON past
    LOGIT_MU_ETA_THRESH, mu_eta's guard), and the unit deviance
    2 wt (y log(y / mu) + (1 - y) log((1 - y) / (1 - mu))) is
    2 wt (log1p(s) + |eta| * (1 - y if eta > 0 else y) + y log y + (1 - y) log(1 - y)),
    the last two terms 0 for y = 0 or 1. The results are linkinv / mu_eta /
    unit_deviance's up to rounding; where mu is near 0 or 1 the working weight and
    the deviance keep the digits that 1 - mu would lose.
    """
    n = eta.shape[0]
    total = 0.0
    for i in range(n):
        e = eta[i]
        a = abs(e)
        if a > LOGIT_THRESH:
            a = LOGIT_THRESH
            s = DBL_EPSILON
        else:
            s = math.exp(-a)
        inv = 1.0 / (1.0 + s)
        mu = inv if e > 0.0 else s * inv
        var = s * inv * inv
        wt = prior_weights[i]
        yi = y[i]
        if a > LOGIT_MU_ETA_THRESH:
            d = DBL_EPSILON
            w = wt * d * d / var
        else:
            d = var
            w = wt * var
        mu_out[i] = mu
        w_out[i] = w
        z_out[i] = e + (yi - mu) / d
        dev = _log1p_unit(s) + a * ((1.0 - yi) if e > 0.0 else yi)
        if yi != 0.0 and yi != 1.0:
            dev += _y_log_y(yi, 1.0) + _y_log_y(1.0 - yi, 1.0)
        dev = 2.0 * wt * dev
        dev_out[i] = dev
        total += dev
    return total


@kernel
def glm_deviance(family, link, eta, y, prior_weights):
    """Total prior-weighted deviance at eta, without writing any row buffers.

    For step-halving, where only the deviance of a trial step is needed.
    """
    n = eta.shape[0]
    total = 0.0
    for i in range(n):
        total += unit_deviance(family, y[i], linkinv(link, eta[i]), prior_weights[i])
    return total


@kernel
def glm_start(family, link, y, prior_weights, mu_out, eta_out):
    """Starting mu and eta as R's family ``initialize`` expressions set them.

    binomial: (prior * y + 0.5) / (prior + 1); poisson: y + 0.1; Gamma,
    inverse Gaussian, gaussian: y. eta = linkfun(mu).
    """
    n = y.shape[0]
    for i in range(n):
        if family == FAMILY_BINOMIAL:
            mu = (prior_weights[i] * y[i] + 0.5) / (prior_weights[i] + 1.0)
        elif family == FAMILY_POISSON:
            mu = y[i] + 0.1
        else:
            mu = y[i]
        mu_out[i] = mu
        eta_out[i] = linkfun(link, mu)


@kernel
def valid_eta_mu(family, link, eta, mu):
    """R's valideta && validmu for every row: False as soon as one row fails.

    PIRLS uses it to halve a step that leaves the family's domain.
    """
    n = eta.shape[0]
    for i in range(n):
        if not _valid_row(family, link, eta[i], mu[i]):
            return False
    return True


@kernel
def _valid_row(family, link, e, m):
    """valideta && validmu for one row."""
    if not math.isfinite(e) or not math.isfinite(m):
        return False
    if link == LINK_INVERSE and e == 0.0:
        return False
    if (link == LINK_INVERSE_SQUARED or link == LINK_SQRT) and e <= 0.0:
        return False
    if family == FAMILY_BINOMIAL and not (0.0 < m < 1.0):
        return False
    if (family == FAMILY_POISSON or family == FAMILY_GAMMA) and m <= 0.0:
        return False
    return True


@kernel
def linkinv_array(link, eta, out):
    """out[i] = linkinv(eta[i]) (predictions on the response scale)."""
    for i in range(eta.shape[0]):
        out[i] = linkinv(link, eta[i])


@kernel
def variance_array(family, mu, out):
    """out[i] = V(mu[i]), the family's variance function (Pearson residuals)."""
    for i in range(mu.shape[0]):
        out[i] = variance(family, mu[i])
